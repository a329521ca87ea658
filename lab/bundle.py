"""RAUC bundles for the update tests, signed by a throwaway PKI made at test time.

`make_pki(dir)` makes a test CA with a release-signing certificate, and a second, unrelated
CA with its own signer (for "wrongly signed"). `BundleMaker(dir, pki).build(kind, version)`
runs the real `rauc bundle --cert --key` on a folder with manifest.raucm (compatible, version,
format=plain), boot.vfat (raw FAT image), root.ext4 (ext4 with /etc/branchline-release
VERSION=<v> and a marker) and hook.sh: a slot-post-install hook that points the freshly
written boot slot's cmdline.txt at its own root (a bundle is the same for A and B; RAUC 1.8
gives the hook RAUC_SLOT_DEVICE and RAUC_SLOT_BOOTNAME, src/install.c). Plain format only:
verity bundles need device-mapper, which this kernel lacks. No key is ever committed.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab.kamailio import LabError
from lab.slots import make_boot_image, make_root_image

COMPATIBLE = "branchline-rpi"
VALID_DAYS = 30

HOOK = """#!/bin/sh
# slot-post-install of the boot slot: cmdline.txt must name the root paired with this slot.
set -e
[ "$1" = slot-post-install ] || exit 0
[ "$RAUC_SLOT_CLASS" = boot ] || exit 0
case "$RAUC_SLOT_BOOTNAME" in
  A) root=/dev/mmcblk0p5 ;;
  B) root=/dev/mmcblk0p6 ;;
  *) echo "hook: unknown slot '$RAUC_SLOT_BOOTNAME'" >&2; exit 1 ;;
esac
export MTOOLS_SKIP_CHECK=1
tmp=$(mktemp)
mtype -i "$RAUC_SLOT_DEVICE" ::cmdline.txt | sed "s|@ROOT@|$root|; s|@SLOT@|$RAUC_SLOT_BOOTNAME|" > "$tmp"
mcopy -o -i "$RAUC_SLOT_DEVICE" "$tmp" ::cmdline.txt
rm -f "$tmp"
"""


class BundleKind(StrEnum):
    GOOD = "good"
    UNSIGNED = "unsigned"              # the signature stripped: a bare squashfs
    WRONGLY_SIGNED = "wrongly-signed"  # signed by a CA the box does not trust
    WRONG_COMPATIBLE = "wrong-compatible"
    OLDER = "older"                    # well signed, just an older version (our policy refuses)
    CORRUPT = "corrupt"                # payload bytes changed after signing


@dataclass(frozen=True)
class BundlePki:
    ca: Path          # the keyring the box trusts
    cert: Path        # release signer, issued by ca
    key: Path
    other_ca: Path    # an unrelated CA and its signer
    other_cert: Path
    other_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "branchline lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          issuer_key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    usage = x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                          crl_sign=ca, encipher_only=False, decipher_only=False)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(issuer_key, hashes.SHA256()))


def _write(path: Path, cert: x509.Certificate | None = None,
           key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    return path


def _authority(folder: Path, prefix: str, ca_cn: str, signer_cn: str) -> tuple[Path, Path, Path]:
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _write(folder / f"{prefix}ca.pem", _cert(ca_cn, ca_key, ca_cn, ca_key, ca=True))
    cert = _write(folder / f"{prefix}signer.pem", _cert(signer_cn, key, ca_cn, ca_key, ca=False))
    return ca, cert, _write(folder / f"{prefix}signer.key", key=key)


def make_pki(folder: Path) -> BundlePki:
    """The test CA and release signer, plus an unrelated CA and signer."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, cert, key = _authority(folder, "", "branchline lab update CA", "branchline lab release")
    other = _authority(folder, "other-", "somebody else's CA", "somebody else's release")
    return BundlePki(ca, cert, key, *other)


def manifest(version: str, compatible: str = COMPATIBLE) -> str:
    return (f"[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat=plain\n\n"
            "[hooks]\nfilename=hook.sh\n\n[image.boot]\nfilename=boot.vfat\nhooks=post-install\n\n"
            "[image.rootfs]\nfilename=root.ext4\n")


def signature_size(bundle: Path) -> int:
    """A plain bundle ends with the CMS signature and its size as a big-endian u64."""
    with open(bundle, "rb") as src:
        src.seek(-8, os.SEEK_END)
        return int.from_bytes(src.read(8), "big")


class BundleMaker:
    """Builds bundles of each kind in `folder` with the real `rauc bundle`."""

    def __init__(self, folder: Path, pki: BundlePki) -> None:
        self.folder = folder
        self.pki = pki
        folder.mkdir(parents=True, exist_ok=True)

    def content(self, version: str, compatible: str = COMPATIBLE, marker: str = "") -> Path:
        """The bundle's input folder for `version`."""
        src = self.folder / f"content-{version}-{compatible}"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        make_boot_image(src / "boot.vfat", version)
        make_root_image(src / "root.ext4", version, marker or f"built {version}")
        (src / "manifest.raucm").write_text(manifest(version, compatible))
        (src / "hook.sh").write_text(HOOK)
        (src / "hook.sh").chmod(0o755)
        return src

    def sign(self, src: Path, out: Path, other: bool = False) -> Path:
        cert, key = (self.pki.other_cert, self.pki.other_key) if other else (self.pki.cert, self.pki.key)
        out.unlink(missing_ok=True)
        done = subprocess.run(["rauc", "bundle", f"--cert={cert}", f"--key={key}", str(src), str(out)],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise LabError(f"rauc bundle failed: {done.stderr.strip()} (apt-get install rauc squashfs-tools)")
        return out

    def build(self, kind: BundleKind = BundleKind.GOOD, version: str = "2.0.0", marker: str = "") -> Path:
        """A bundle of `kind`; OLDER is simply a signed bundle with the given (older) version."""
        compatible = "other-board" if kind is BundleKind.WRONG_COMPATIBLE else COMPATIBLE
        src = self.content(version, compatible, marker)
        out = self.folder / f"{kind}-{version}.raucb"
        self.sign(src, out, other=kind is BundleKind.WRONGLY_SIGNED)
        if kind is BundleKind.UNSIGNED:
            strip_signature(out)
        elif kind is BundleKind.CORRUPT:
            corrupt_payload(out)
        return out


def strip_signature(bundle: Path) -> None:
    """Cut the CMS signature and its size off: what is left is the bare squashfs."""
    size = bundle.stat().st_size - signature_size(bundle) - 8
    with open(bundle, "r+b") as out:
        out.truncate(size)


def corrupt_payload(bundle: Path) -> None:
    """Flip bytes in the middle of the signed squashfs (the signature stays as it was)."""
    payload = bundle.stat().st_size - signature_size(bundle) - 8
    with open(bundle, "r+b") as out:
        out.seek(payload // 2)
        chunk = out.read(32)
        out.seek(payload // 2)
        out.write(bytes(b ^ 0xFF for b in chunk))
