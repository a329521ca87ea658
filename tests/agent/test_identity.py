"""The device identity: id, key (0600 in a 0700 directory), CSR signed by the lab's CA,
certificate checks with clear refusals, and a real Mosquitto accepting the enrolled box."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.agent.identity import DeviceIdentity, IdentityError
from firmware.agent.link import Link, LinkSettings
from foundation.clock import MonotonicClock
from lab.mosquitto import Mosquitto
from lab.pki import Pki
from lab.wait import wait_until


def _identity(tmp_path: Path, serial: bytes | None = None,
              machine: str | None = None) -> DeviceIdentity:
    tmp_path.mkdir(parents=True, exist_ok=True)
    serial_file, machine_file = tmp_path / "serial-number", tmp_path / "machine-id"
    if serial is not None:
        serial_file.write_bytes(serial)
    if machine is not None:
        machine_file.write_text(machine)
    return DeviceIdentity(tmp_path / "data", serial_file=serial_file,
                          machine_id_file=machine_file)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_device_id_from_the_pi_serial_kept_in_a_file(tmp_path: Path) -> None:
    ident = _identity(tmp_path, serial=b"10000000abcdef12\x00")
    assert ident.device_id() == "bl-10000000abcdef12"
    (tmp_path / "serial-number").write_bytes(b"20000000ffffffff\x00")
    again = DeviceIdentity(tmp_path / "data", serial_file=tmp_path / "serial-number")
    assert again.device_id() == "bl-10000000abcdef12"  # made once, then read from the file
    assert _mode(tmp_path / "data" / "agent") == 0o700


def test_device_id_from_machine_id_else_random(tmp_path: Path) -> None:
    a = _identity(tmp_path / "a", machine="0123456789abcdef0123456789abcdef\n")
    b = _identity(tmp_path / "b", machine="0123456789abcdef0123456789abcdef\n")
    assert a.device_id() == b.device_id() and a.device_id().startswith("bl-")
    c, d = _identity(tmp_path / "c"), _identity(tmp_path / "d")
    assert c.device_id() != d.device_id() and len(c.device_id()) == len("bl-") + 16


def test_key_is_made_once_and_private(tmp_path: Path) -> None:
    ident = _identity(tmp_path, serial=b"10000000abcdef12")
    key = ident.ensure_key()
    first = key.read_bytes()
    assert _mode(key) == 0o600 and b"PRIVATE KEY" in first
    assert ident.ensure_key().read_bytes() == first
    assert ident.client_files() is None and ident.broker_ca() is None


def test_csr_names_the_device_and_is_signed_by_its_key(tmp_path: Path) -> None:
    ident = _identity(tmp_path, serial=b"10000000abcdef12")
    csr = x509.load_pem_x509_csr(ident.csr_pem())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ident.device_id()
    key = serialization.load_pem_private_key(ident.ensure_key().read_bytes(), None)
    assert csr.public_key() == key.public_key()


def test_install_signed_certificate_and_connect_to_the_broker(
        tmp_path: Path, pki: Pki, broker: Mosquitto) -> None:
    ident = _identity(tmp_path, serial=b"10000000c0ffee01")
    path = ident.install_certificate(pki.sign_csr(ident.csr_pem()))
    files = ident.client_files()
    assert files is not None
    cert, key = files
    assert cert == path and key == ident.key_file
    assert ident.device_id() == "bl-10000000c0ffee01"
    ident.install_broker_ca(pki.ca_file.read_bytes())
    link = Link(LinkSettings(device=ident.device_id(), host=broker.host, port=broker.tls_port,
                             ca_file=str(ident.broker_ca()), cert_file=str(cert),
                             key_file=str(key), keepalive_s=10),
                MonotonicClock(), backoff_min_s=0.2, backoff_max_s=1.0)
    link.start()
    try:
        wait_until(lambda: link.connected, 10, "the enrolled box connected",
                   detail=lambda: link.last_error)
    finally:
        link.stop()


def test_certificate_for_another_key_is_refused(tmp_path: Path, pki: Pki) -> None:
    ident = _identity(tmp_path, serial=b"10000000abcdef12")
    other_cert, _other_key = pki.client(ident.device_id())  # right CN, a key made elsewhere
    with pytest.raises(IdentityError, match="public key is not this box's key"):
        ident.install_certificate(other_cert.read_bytes())
    assert ident.client_files() is None


def test_certificate_for_another_device_id_is_refused(tmp_path: Path, pki: Pki) -> None:
    ident = _identity(tmp_path, serial=b"10000000abcdef12")
    key = serialization.load_pem_private_key(ident.ensure_key().read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bl-someone-else")]))
           .sign(key, hashes.SHA256()))
    signed = pki.sign_csr(csr.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(IdentityError, match="CN is 'bl-someone-else', this box is "
                                            "'bl-10000000abcdef12'"):
        ident.install_certificate(signed)
    assert ident.client_files() is None


def test_garbage_is_not_a_certificate(tmp_path: Path) -> None:
    ident = _identity(tmp_path, serial=b"10000000abcdef12")
    with pytest.raises(IdentityError, match="not a PEM X.509 certificate"):
        ident.install_certificate(b"hello")
    with pytest.raises(IdentityError, match="BEGIN CERTIFICATE"):
        ident.install_broker_ca(b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
