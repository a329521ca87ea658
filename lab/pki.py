"""A throwaway certificate authority for the lab's MQTT broker, made at test time.

EC P-256 everywhere (what a Pi makes quickly at first boot). `Pki(dir)` creates the CA
once (or reuses the one in dir); server() issues the broker's certificate for localhost
and 127.0.0.1 (SAN), client(cn) a device's or the platform's identity, and sign_csr()
enrols a device whose key never left it. Keys are written 0600. Not for production.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.kamailio import LabError

VALID_DAYS = 30


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "branchline lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Pki:
    """A CA in `directory` (ca.pem, ca.key) and the certificates it issues there."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.directory / "ca.pem"
        self.ca_key_file = self.directory / "ca.key"
        if self.ca_file.exists() and self.ca_key_file.exists():
            self._load_ca()
        else:
            self._make_ca()

    def _make_ca(self) -> None:
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateBuilder().subject_name(_name("branchline lab CA"))
                   .issuer_name(_name("branchline lab CA")).public_key(self._ca_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                False, False), critical=True))
        self._ca = builder.sign(self._ca_key, hashes.SHA256())
        _write_key(self.ca_key_file, self._ca_key)
        self.ca_file.write_bytes(_pem(self._ca))

    def _load_ca(self) -> None:
        key = serialization.load_pem_private_key(self.ca_key_file.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise LabError(f"{self.ca_key_file}: not an EC key; delete the directory")
        self._ca_key = key
        self._ca = x509.load_pem_x509_certificate(self.ca_file.read_bytes())

    def _issue(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, *,
               server: bool, days: int, sans: list[x509.GeneralName] | None = None) -> bytes:
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self._ca.subject)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _pem(builder.sign(self._ca_key, hashes.SHA256()))

    def _pair(self, stem: str, cn: str, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] | None = None
        if server:
            sans = [x509.DNSName(cn), x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert_file, key_file = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        _write_key(key_file, key)
        cert_file.write_bytes(self._issue(_name(cn), key.public_key(), server=server,
                                          days=VALID_DAYS, sans=sans))
        return cert_file, key_file

    def server(self, name: str = "localhost") -> tuple[Path, Path]:
        """(cert, key) of a TLS server valid for `name`, localhost and 127.0.0.1."""
        return self._pair(f"server-{name}", name, server=True)

    def client(self, cn: str) -> tuple[Path, Path]:
        """(cert, key) of a client whose certificate's CN is `cn` (a device id, "platform")."""
        return self._pair(f"client-{cn}", cn, server=False)

    def sign_csr(self, csr_pem: bytes, days: int = 365) -> bytes:
        """The PEM certificate for a device's CSR (its CN kept, its signature checked)."""
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise LabError("CSR signature does not verify: the request was altered")
        key = csr.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise LabError("CSR key is not an EC key: the lab CA signs EC P-256 keys only")
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns:
            raise LabError("CSR has no CN: the device id goes in the CN")
        return self._issue(_name(str(cns[0].value)), key, server=False, days=days)
