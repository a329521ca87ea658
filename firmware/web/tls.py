"""The web page's TLS: a self-signed certificate made on first start and the cheroot
adapter that serves it. EC P-256 key and certificate (CN and SAN: the box name, its .local
name and IP addresses; ten years) in data_dir/tls-key.pem and tls-cert.pem (0600); the
SHA-256 fingerprint in data_dir/tls-fingerprint, which the serial console prints so a
technician can check the browser's warning against it. Existing files are reused."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

from cheroot.ssl.builtin import BuiltinSSLAdapter
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.auth import write_private

log = logging.getLogger(__name__)

KEY_FILE = "tls-key.pem"
CERT_FILE = "tls-cert.pem"
FINGERPRINT_FILE = "tls-fingerprint"
VALID_DAYS = 3650


def ensure_certificate(data_dir: str | os.PathLike, name: str,
                       ips: list[str] | None = None) -> tuple[Path, Path, str]:
    """(cert path, key path, SHA-256 fingerprint), generating them when missing."""
    d = Path(data_dir)
    cert_path, key_path = d / CERT_FILE, d / KEY_FILE
    if not (cert_path.exists() and key_path.exists()):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        key, cert = _generate(name, ips or local_ips())
        write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        log.info("made a self-signed certificate for %s in %s", name, cert_path)
    fp = fingerprint(cert_path.read_bytes())
    write_private(d / FINGERPRINT_FILE, (fp + "\n").encode())
    return cert_path, key_path, fp


def fingerprint(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def local_ips() -> list[str]:
    """The box's addresses as far as the resolver knows them, loopback included."""
    ips = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            ips.add(str(info[4][0]).split("%")[0])
    return sorted(ips)


def _generate(name: str,
              ips: list[str]) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "branchline")])
    alt: list[x509.GeneralName] = [x509.DNSName(name), x509.DNSName(f"{name}.local")]
    for ip in ips:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            continue
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


class LazyTls(BuiltinSSLAdapter):
    """cheroot's TLS (1.2 or later: ssl.create_default_context's floor) with the handshake
    left to the worker thread, not done in the accepting thread: a client that connects
    and says nothing blocks nobody."""

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return tls, {"wsgi.url_scheme": "https", "HTTPS": "on"}
