"""lab/bundle.py makes what it says: signed plain bundles, and each broken kind broken the
right way (checked with `rauc info` against the test keyring)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lab.bundle import BundleKind, BundlePki, signature_size


def _info(bundle: Path, keyring: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rauc", "info", f"--keyring={keyring}", "--output-format=json", str(bundle)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_good_bundle_verifies_and_carries_version_and_images(bundles: dict[str, Path], pki: BundlePki) -> None:
    done = _info(bundles[BundleKind.GOOD], pki.ca)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["compatible"], info["version"]) == ("branchline-rpi", "2.0.0")
    assert {name for image in info["images"] for name in image} == {"boot", "rootfs"}


def test_older_bundle_is_well_signed(bundles: dict[str, Path], pki: BundlePki) -> None:
    assert json.loads(_info(bundles[BundleKind.OLDER], pki.ca).stdout)["version"] == "0.9.0"


def test_wrongly_signed_verifies_only_against_its_own_ca(bundles: dict[str, Path], pki: BundlePki) -> None:
    assert _info(bundles[BundleKind.WRONGLY_SIGNED], pki.other_ca).returncode == 0
    assert "unable to get local issuer" in _info(bundles[BundleKind.WRONGLY_SIGNED], pki.ca).stderr


def test_unsigned_has_no_signature(bundles: dict[str, Path], pki: BundlePki) -> None:
    assert signature_size(bundles[BundleKind.UNSIGNED]) == 0
    assert "Signature size is 0" in _info(bundles[BundleKind.UNSIGNED], pki.ca).stderr


def test_corrupt_fails_the_content_digest(bundles: dict[str, Path], pki: BundlePki) -> None:
    assert "verification failure" in _info(bundles[BundleKind.CORRUPT], pki.ca).stderr


def test_wrong_compatible_is_well_signed_but_for_another_board(bundles: dict[str, Path], pki: BundlePki) -> None:
    done = _info(bundles[BundleKind.WRONG_COMPATIBLE], pki.ca)
    assert json.loads(done.stdout)["compatible"] == "other-board"


def test_keys_are_private(pki: BundlePki) -> None:
    assert pki.key.stat().st_mode & 0o077 == 0 and pki.other_key.stat().st_mode & 0o077 == 0
