"""The box's identity towards the fleet broker: a device id, an EC P-256 key made on the box
(0600, it never leaves it), a CSR the platform signs, and the signed certificate, checked
against our key and id before it is installed. Files live in <data_dir>/agent/ (0700):
device-id, device.key, device.csr, device.pem and broker-ca.pem (the pinned broker CA).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

AGENT_DIR = "agent"
ID_FILE, KEY_FILE, CSR_FILE = "device-id", "device.key", "device.csr"
CERT_FILE, CA_FILE = "device.pem", "broker-ca.pem"
PI_SERIAL = Path("/proc/device-tree/serial-number")
MACHINE_ID = Path("/etc/machine-id")
ID_PREFIX = "bl-"
_SERIAL = re.compile(r"[0-9A-Fa-f]{8,32}")


class IdentityError(BranchlineError):
    """A certificate or key that cannot be used; the message says why and what to do."""


def _spki(key: ec.EllipticCurvePublicKey | object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return b""
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _cn(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic: a temp file of `mode` beside `path`, renamed over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask cannot widen it; this also narrows nothing away
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class DeviceIdentity:
    """See the module docstring; `serial_file` and `machine_id_file` are where the id
    comes from (the Pi's serial number first)."""

    def __init__(self, data_dir: Path, *, serial_file: Path = PI_SERIAL,
                 machine_id_file: Path = MACHINE_ID) -> None:
        self.dir = Path(data_dir) / AGENT_DIR
        self.serial_file, self.machine_id_file = serial_file, machine_id_file
        self.key_file, self.cert_file = self.dir / KEY_FILE, self.dir / CERT_FILE
        self.csr_file, self.ca_file = self.dir / CSR_FILE, self.dir / CA_FILE

    def ensure_dir(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        return self.dir

    # ---- the device id ----
    def device_id(self) -> str:
        """The certificate's CN once one is installed; else the id made once and kept."""
        if self.cert_file.exists():
            cn = _cn(self._load_cert(self.cert_file.read_bytes()).subject)
            if cn:
                return cn
        return self.made_id()

    def made_id(self) -> str:
        """"bl-" + the Pi's serial, or a hash of /etc/machine-id, or random; kept in a file."""
        path = self.dir / ID_FILE
        if path.exists():
            text = path.read_text().strip()
            if text:
                return text
        made = ID_PREFIX + self._hardware_id()
        self.ensure_dir()
        _write(path, (made + "\n").encode(), 0o644)
        log.info("agent: device id %s made", made)
        return made

    def _hardware_id(self) -> str:
        serial = _read_text(self.serial_file).strip("\x00 \n").lower()
        if _SERIAL.fullmatch(serial):
            return serial.lstrip("0")[-16:] or serial
        machine = _read_text(self.machine_id_file).strip()
        if machine:
            return hashlib.sha256(machine.encode()).hexdigest()[:16]
        return secrets.token_hex(8)

    # ---- the key and the CSR ----
    def ensure_key(self) -> Path:
        """The device key (EC P-256, PEM, 0600), made on first use; never copied anywhere."""
        if not self.key_file.exists():
            self.ensure_dir()
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            _write(self.key_file, pem, 0o600)
            log.info("agent: device key made (%s)", self.key_file)
        os.chmod(self.key_file, 0o600)
        return self.key_file

    def _key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.ensure_key().read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"{self.key_file}: not an EC key; remove it and a new one "
                                "is made (the certificate must then be issued again)")
        return key

    def csr_pem(self) -> bytes:
        """A certificate signing request for CN = the device id, signed by the device key
        (also written to device.csr for provisioning tools)."""
        key = self._key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.made_id())])
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(
            key, hashes.SHA256())
        pem = csr.public_bytes(serialization.Encoding.PEM)
        _write(self.csr_file, pem, 0o644)
        return pem

    # ---- the certificate and the broker CA ----
    def install_certificate(self, pem: bytes) -> Path:
        """Install the platform-signed certificate, refused unless it carries our public
        key and CN = our device id."""
        cert = self._load_cert(pem)
        if _spki(cert.public_key()) != _spki(self._key().public_key()):
            raise IdentityError("certificate refused: its public key is not this box's key; "
                                "sign this box's CSR (`device.csr`), not another one")
        cn, want = _cn(cert.subject), self.made_id()
        if cn != want:
            raise IdentityError(f"certificate refused: its CN is {cn!r}, this box is {want!r};"
                                " issue it for this device id")
        _write(self.cert_file, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        log.info("agent: device certificate installed for %s (valid until %s)", cn,
                 cert.not_valid_after_utc.date())
        return self.cert_file

    def install_broker_ca(self, pem: bytes) -> Path:
        """Pin the broker's CA (broker-ca.pem)."""
        self._load_cert(pem)
        self.ensure_dir()
        _write(self.ca_file, pem, 0o644)
        return self.ca_file

    def client_files(self) -> tuple[Path, Path] | None:
        """(certificate, key) once a certificate is installed; None before."""
        if self.cert_file.exists() and self.key_file.exists():
            return self.cert_file, self.key_file
        return None

    def broker_ca(self) -> Path | None:
        return self.ca_file if self.ca_file.exists() else None

    @staticmethod
    def _load_cert(pem: bytes) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise IdentityError(f"not a PEM X.509 certificate ({exc}); send the PEM text "
                                "starting with -----BEGIN CERTIFICATE-----") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
