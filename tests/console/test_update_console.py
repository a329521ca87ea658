"""The serial console as a source of updates: a real `branchline console` on a real pty,
a real sim core and a real update service (`branchline update serve`) driving the real
`rauc service` on a private bus over one loop-device SD card for the module (lab/updatesvc.py
RaucBox; its `systemctl` is a shim recording the reboot). Bad bundles are refused with their
reason; a good one on the "USB stick" installs into slot B with its progress printed, ends
REBOOTING and asks for `reboot "0 tryboot"`. The tests run in file order and share one
console session.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.api.client import ApiClient
from lab.procs import stop_process
from lab.slots import BOOT_B
from lab.updatesvc import RaucBox, UpdateService, signed_bundle
from lab.wait import wait_until
from tests.console.conftest import PY, ROOT, Core, Terminal
from tests.update.fixtures import serve
from tests.update.updaterig import Signer, make_bundle

PASSWORD = "correct-horse-7"
PROMPT = r"# $"


class UpdateConsole:
    """`branchline console` with --update-socket; stop() ends it."""

    def __init__(self, tmp: Path, core: Core, socket: Path) -> None:
        self.data_dir, self.log = tmp / "console-data", tmp / "console.log"
        self.term = Terminal(tmp / "ttyCONSOLE")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PY, "-m", "firmware", "console", "--tty", str(tmp / "ttyCONSOLE"),
                 "--api", core.listen, "--data-dir", str(self.data_dir),
                 "--update-socket", str(socket)],
                cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        stop_process(self.proc)
        self.term.unplug()


@pytest.fixture(scope="module")
def service(core: Core, signer: Signer, box: RaucBox,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpdateService]:
    yield from serve(core.listen, signer, box, tmp_path_factory)


@pytest.fixture(scope="module")
def term(core: Core, service: UpdateService,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    console = UpdateConsole(tmp_path_factory.mktemp("console"), core, service.socket)
    t = console.term
    t.expect(r"setup code: $", 20)
    t.line((console.data_dir / "setup-code").read_text().strip())
    t.expect(r"new admin password: $")
    t.line(PASSWORD)
    t.expect(r"again: $")
    t.line(PASSWORD)
    t.expect(PROMPT)
    yield t
    console.stop()


@pytest.fixture(scope="module")
def usb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The USB stick's mount point (a folder: the console only needs the path)."""
    return tmp_path_factory.mktemp("media-usb")


def test_missing_bundle_is_one_clear_line(term: Terminal) -> None:
    out = term.command("update install /nonexistent/branchline-9.0.raucb")
    assert ("% /nonexistent/branchline-9.0.raucb: no such file; is the USB stick plugged "
            "in and mounted?") in out
    assert "Traceback" not in out and "internal error" not in out
    assert "% branchline.raucb: give the bundle's full path" in term.command(
        "update install branchline.raucb")
    assert '% incomplete command "update install"' in term.command("update install")


def test_unsigned_bundle_is_refused_with_its_reason(term: Terminal, usb: Path,
                                                    service: UpdateService) -> None:
    bundle = make_bundle(usb / "unsigned-9.0.raucb", "9.0", None)
    out = term.command(f"update install {bundle}")
    assert "% update install refused (unsigned): bundle is not signed" in out
    st = service.client.status()
    assert st["source"] == "console" and st["reason"] == "unsigned"
    out = term.command("update status")
    assert "phase          FAILED" in out and "reason         unsigned" in out


def test_waiting_install_is_watched_then_cancelled(term: Terminal, usb: Path,
                                                   service: UpdateService, signer: Signer,
                                                   core: Core) -> None:
    api = ApiClient(tcp=core.listen)
    bundle = make_bundle(usb / "branchline-9.1.raucb", "9.1", signer)
    api.sim_phone("fxs1", "off_hook")
    api.sim_phone("fxs1", "dial", digits="202")
    wait_until(lambda: api.status()["calls"], 10, "a call up")
    try:
        term.drain(0.05)
        term.line(f"update install {bundle}")
        out = term.expect(r"update: WAITING .*calls_up", 30)
        assert "press Ctrl-C to stop watching" in out
        term.send("x")  # other keys do not stop the watching
        term.send(b"\x03")
        assert "stopped watching; the update goes on" in term.expect(PROMPT)
        assert service.client.status()["phase"] == "WAITING"
        assert "phase          WAITING" in term.command("update status")
        assert "update cancelled" in term.command("update cancel")
        assert service.client.status()["phase"] == "IDLE"
    finally:
        api.sim_phone("fxs1", "on_hook")


PROGRESS = re.compile(r"update: (\w+)\s+(\d+)%")


def test_install_from_the_usb_stick_prints_progress_then_reboots(
        term: Terminal, usb: Path, service: UpdateService, signer: Signer, held: RaucBox,
        core: Core) -> None:
    """`update install <path>` on the real RAUC: the install is held at its first write to
    the boot selection until the console has printed an INSTALLING line with a progress
    between 0 and 100 (so the lines are seen rising, not only 0 and 100), then runs on."""
    bundle = signed_bundle(usb / "branchline-2.0.0.raucb", "2.0.0", signer.cert, signer.key)
    api = ApiClient(tcp=core.listen)
    wait_until(lambda: not api.status()["calls"], 10, "the last test's call gone")
    term.drain(0.05)
    term.line(f"update install {bundle}")
    try:
        out = term.expect(r"update: INSTALLING\s+[1-9]\d?%[^\r]*\r\n", 60)
        assert held.holding(), "the install went past the hold"
    finally:
        held.release()
    out += term.expect(r"update: REBOOTING .*the box reboots into the new firmware\r\n.*"
                       + PROMPT, 60)
    assert "accepted; the update service installs it" in out
    seen = [(phase, int(pct)) for phase, pct in PROGRESS.findall(out)]
    values = [pct for _phase, pct in seen]
    assert values == sorted(values) and seen[-1] == ("REBOOTING", 100), seen
    assert any(p == "INSTALLING" and 0 < v < 100 for p, v in seen), seen
    st = service.client.status()
    assert (st["phase"], st["source"], st["version_to"]) == ("REBOOTING", "console", "2.0.0")
    assert st["bundle"] == str(bundle)
    assert service.reboot_requests() == ["reboot 0 tryboot"]
    assert "set-primary B" in held.backend_calls()
    assert held.disk.release("B") == "2.0.0"  # RAUC wrote slot B's root
    autoboot = (held.disk.bootsel / "autoboot.txt").read_text()
    assert f"[tryboot]\nboot_partition={BOOT_B}" in autoboot, autoboot
    assert "phase          REBOOTING  100%" in term.command("update status")
