"""The update policy's refusals with real RAUC (`rauc info` checks the CMS signature
against the keyring; the bundles are built with `rauc bundle` from keys made at test
time): unsigned, signed by a CA the box does not trust, changed after signing, made for
another board, not newer than the running version. Each is one line naming the fix, its
Reason, refused before anything is queued and recorded as FAILED. allow_downgrade lifts
the version rule only; force lifts nothing here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.api.client import ApiClient
from firmware.update.rauc import Rauc, Reason, UpdateError
from firmware.update.service import UpdateService
from firmware.update.state import Phase
from foundation.reactor import FakeClock
from lab.wait import wait_until
from tests.update.updaterig import Signer, make_bundle

RUNNING = "2.0.0"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Signer]:
    d = tmp_path_factory.mktemp("keys")
    return Signer(d, "fleet"), Signer(d, "stranger")


@pytest.fixture
def service(tmp_path: Path, keys: tuple[Signer, Signer]) -> Iterator[UpdateService]:
    # no core answers: an accepted bundle waits (calls may be up), nothing installs
    api = ApiClient(unix_path=str(tmp_path / "no-core.sock"), timeout=1)
    svc = UpdateService(tmp_path / "data", Rauc(), lambda: api, FakeClock(),
                        keyring=keys[0].ca, compatible="branchline-rpi",
                        reboot=lambda tryboot: None, config_dir=tmp_path / "etc",
                        retry_s=0.05, version=lambda: RUNNING)
    yield svc
    svc.close()


def _refused(svc: UpdateService, bundle: Path, *, force: bool = False) -> UpdateError:
    with pytest.raises(UpdateError) as err:
        svc.submit(bundle, "console", force=force)
    state = svc.status()
    assert state["phase"] == Phase.FAILED and state["reason"] == err.value.reason
    assert state["message"] == str(err.value) and "\n" not in str(err.value)
    return err.value


def test_unsigned_bundle(service: UpdateService, tmp_path: Path) -> None:
    err = _refused(service, make_bundle(tmp_path / "u.raucb", "2.1.0", None), force=True)
    assert err.reason == Reason.UNSIGNED
    assert str(err) == "bundle is not signed: get the signed .raucb from the release"


def test_signed_by_a_ca_the_box_does_not_trust(service: UpdateService, tmp_path: Path,
                                               keys: tuple[Signer, Signer]) -> None:
    err = _refused(service, make_bundle(tmp_path / "s.raucb", "2.1.0", keys[1]), force=True)
    assert err.reason == Reason.BAD_SIGNATURE
    assert str(err).startswith("signed by a certificate this box does not trust")
    assert "unable to get local issuer certificate" in str(err)


def test_changed_after_signing(service: UpdateService, tmp_path: Path,
                               keys: tuple[Signer, Signer]) -> None:
    bundle = make_bundle(tmp_path / "t.raucb", "2.1.0", keys[0])
    with bundle.open("r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff\xff\xff")
    err = _refused(service, bundle)
    assert err.reason == Reason.CORRUPT
    assert "changed after it was signed" in str(err) and "download it again" in str(err)


def test_not_a_bundle_and_no_file(service: UpdateService, tmp_path: Path) -> None:
    junk = tmp_path / "junk.raucb"
    junk.write_bytes(bytes(range(256)) * 400)
    err = _refused(service, junk)
    assert err.reason == Reason.CORRUPT and "not a RAUC bundle" in str(err)
    err = _refused(service, tmp_path / "missing.raucb")
    assert err.reason == Reason.CORRUPT and "missing.raucb: no such file" in str(err)


def test_made_for_another_board(service: UpdateService, tmp_path: Path,
                                keys: tuple[Signer, Signer]) -> None:
    bundle = make_bundle(tmp_path / "b.raucb", "2.1.0", keys[0], compatible="other-board")
    err = _refused(service, bundle, force=True)
    assert err.reason == Reason.WRONG_BOARD
    assert str(err) == ("made for board other-board, this box is branchline-rpi: get the "
                        "bundle built for branchline-rpi")


@pytest.mark.parametrize("version, words", [("1.9.0", "is older than the running 2.0.0"),
                                            ("2.0.0", "is the version running")])
def test_downgrade_needs_allow_downgrade_not_force(service: UpdateService, tmp_path: Path,
                                                   keys: tuple[Signer, Signer], version: str,
                                                   words: str) -> None:
    bundle = make_bundle(tmp_path / "d.raucb", version, keys[0])
    err = _refused(service, bundle, force=True)
    assert err.reason == Reason.DOWNGRADE
    assert words in str(err) and "allow_downgrade" in str(err)
    state = service.submit(bundle, "console", allow_downgrade=True)
    assert state["version_to"] == version and state["version_from"] == RUNNING
    wait_until(lambda: service.status()["phase"] == Phase.WAITING, 10, "waiting")
    service.cancel()


def test_newer_signed_bundle_is_accepted_and_queued(service: UpdateService, tmp_path: Path,
                                                    keys: tuple[Signer, Signer]) -> None:
    bundle = make_bundle(tmp_path / "g.raucb", "2.1.0", keys[0])
    state = service.submit(bundle, "web", job="job-7")
    assert state["phase"] == Phase.CHECKING and state["version_to"] == "2.1.0"
    assert state["job"] == "job-7" and state["source"] == "web"
    assert "signed, for branchline-rpi" in state["message"]
    wait_until(lambda: service.status()["phase"] == Phase.WAITING, 10, "waiting for the core")
    waiting = service.status()
    assert waiting["reason"] == Reason.CALLS_UP and "does not answer" in waiting["message"]
    assert service.cancel()["phase"] == Phase.IDLE


def test_rauc_missing_is_one_line(tmp_path: Path, keys: tuple[Signer, Signer]) -> None:
    assert shutil.which("no-such-rauc") is None
    with pytest.raises(UpdateError) as err:
        Rauc(binary="no-such-rauc").info(tmp_path / "x.raucb", keys[0].ca)
    assert "not installed; install Debian's rauc" in str(err.value)
