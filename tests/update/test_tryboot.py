"""branchline-tryboot, RAUC's custom backend for the Pi's tryboot: verbs, refusals, atomicity.

These run the installed console script as RAUC does (argv, stdout, exit code) on a plain
folder standing in for the mounted boot-selection partition, with the device-tree flags
written by hand; the Pi firmware model and real RAUC are in test_pifirmware.py/test_rauc.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.update import bootflags
from firmware.update.tryboot import (
    Autoboot,
    SlotState,
    TrybootError,
    parse_autoboot,
    parse_settings,
    render_autoboot,
)
from lab.procs import stop_process
from lab.wait import wait_until

BACKEND = Path(sys.executable).parent / "branchline-tryboot"
COMMITTED_A = Autoboot(2, 3, {"A": SlotState.GOOD, "B": SlotState.BAD})


class Box:
    """A bootsel folder, a tryboot.conf and a device-tree folder; runs the backend."""

    def __init__(self, root: Path) -> None:
        self.bootsel = root / "bootsel"
        self.dt = root / "dt"
        self.bootsel.mkdir()
        self.dt.mkdir()
        self.conf = root / "tryboot.conf"
        self.conf.write_text(f"bootsel={self.bootsel}\nA=2\nB=3\n")
        self.booted(2, tryboot=False)

    @property
    def autoboot(self) -> Path:
        return self.bootsel / "autoboot.txt"

    def write(self, autoboot: Autoboot) -> None:
        self.autoboot.write_text(render_autoboot(autoboot))

    def read(self) -> Autoboot:
        return parse_autoboot(self.autoboot.read_text())

    def booted(self, partition: int, tryboot: bool) -> None:
        (self.dt / "partition").write_bytes(partition.to_bytes(4, "big"))
        (self.dt / "tryboot").write_bytes(int(tryboot).to_bytes(4, "big"))

    def env(self, **env: str) -> dict[str, str]:
        return {"BRANCHLINE_TRYBOOT_CONF": str(self.conf), "BRANCHLINE_DT_DIR": str(self.dt), **env}

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BACKEND), *args], env=self.env(**env), capture_output=True,
                              text=True, timeout=30, check=False)

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(BACKEND), *args], env=self.env(**env),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def box(tmp_path: Path) -> Box:
    assert BACKEND.exists(), "run .venv/bin/pip install -e . --no-deps to make branchline-tryboot"
    made = Box(tmp_path)
    made.write(COMMITTED_A)
    return made


def test_autoboot_round_trips_and_matches_the_documented_layout() -> None:
    text = render_autoboot(COMMITTED_A)
    assert "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n" in text
    assert parse_autoboot(text) == COMMITTED_A
    assert len(text.encode()) <= 512


def test_autoboot_without_our_state_line_reads_as_the_stock_example() -> None:
    stock = "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
    assert parse_autoboot(stock) == Autoboot(3, 2, {})


@pytest.mark.parametrize("text", [
    "", "[all]\nboot_partition=2\n[tryboot]\nboot_partition=3\n",  # no tryboot_a_b
    "[all]\ntryboot_a_b=1\nboot_partition=x\n[tryboot]\nboot_partition=3\n",
    "[all]\ntryboot_a_b=1\nboot_partition=2\n",  # no [tryboot]
    "\x00\x13garbage\n",
])
def test_unparsable_autoboot_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_autoboot(text)


def test_settings_need_a_bootsel_and_two_slots() -> None:
    assert parse_settings("bootsel=/boot/select\nA=2\nB=3\n").slots == {"A": 2, "B": 3}
    with pytest.raises(TrybootError, match="two slots"):
        parse_settings("bootsel=/x\nA=2\n")


def test_get_primary_and_get_state_answer_like_rauc_expects(box: Box) -> None:
    assert box.run("get-primary").stdout == "A\n"
    assert box.run("get-state", "A").stdout == "good\n"
    assert box.run("get-state", "B").stdout == "bad\n"


def test_set_primary_of_the_other_slot_only_sets_the_one_shot_try(box: Box) -> None:
    assert box.run("set-state", "B", "bad").returncode == 0  # what rauc install does first
    assert box.run("set-primary", "B").returncode == 0
    assert box.read() == Autoboot(2, 3, {"A": SlotState.GOOD, "B": SlotState.GOOD})
    assert box.run("get-primary").stdout == "A\n"  # a normal boot still lands on A


def test_mark_good_during_the_trial_of_b_commits(box: Box) -> None:
    box.run("set-primary", "B")
    box.booted(3, tryboot=True)
    result = box.run("set-state", "B", "good")
    assert result.returncode == 0, result.stderr
    assert box.read() == Autoboot(3, 2, {"A": SlotState.GOOD, "B": SlotState.GOOD})
    assert box.run("get-primary").stdout == "B\n"
    box.booted(3, tryboot=False)  # after the commit a normal boot of B: marking good is a no-op
    assert box.run("set-state", "B", "good").returncode == 0


def test_a_commit_outside_a_trial_boot_is_refused(box: Box) -> None:
    box.run("set-primary", "B")
    before = box.autoboot.read_text()
    result = box.run("set-state", "B", "good")  # booted A normally
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "not running a trial boot" in result.stderr
    assert box.autoboot.read_text() == before


def test_mark_bad_of_the_trial_points_tryboot_back_at_the_committed_slot(box: Box) -> None:
    box.run("set-primary", "B")
    box.booted(3, tryboot=True)
    assert box.run("set-state", "B", "bad").returncode == 0
    assert box.read() == Autoboot(2, 2, {"A": SlotState.GOOD, "B": SlotState.BAD})


def test_mark_bad_of_the_committed_slot_falls_back_to_a_good_one(box: Box) -> None:
    box.write(Autoboot(2, 3, {"A": SlotState.GOOD, "B": SlotState.GOOD}))
    assert box.run("set-state", "A", "bad").returncode == 0
    assert box.read().all_partition == 3


def test_mark_bad_refuses_to_leave_no_good_slot(box: Box) -> None:
    result = box.run("set-state", "A", "bad")
    assert result.returncode == 1 and "no other slot is good" in result.stderr
    assert box.read() == COMMITTED_A


def test_mark_bad_of_the_committed_slot_during_a_trial_is_refused(box: Box) -> None:
    box.run("set-primary", "B")
    box.booted(3, tryboot=True)
    result = box.run("set-state", "A", "bad")
    assert result.returncode == 1 and "during a trial boot" in result.stderr


@pytest.mark.parametrize("args", [("get-state", "C"), ("set-primary", "C"), ("set-state", "C", "good")])
def test_unknown_slots_are_refused_in_one_line(box: Box, args: tuple[str, ...]) -> None:
    result = box.run(*args)
    assert result.returncode == 1
    assert result.stderr == "branchline-tryboot: unknown slot 'C': tryboot.conf knows A, B\n"


def test_unknown_verbs_get_the_usage(box: Box) -> None:
    result = box.run("set-state", "A", "maybe")
    assert result.returncode == 1 and "usage: branchline-tryboot" in result.stderr


@pytest.mark.parametrize("content", [None, "boot_partition=2\n", "[all]\ntryboot_a_b=1\nboot_partition=9\n[tryboot]\nboot_partition=3\n"])
def test_missing_or_broken_autoboot_says_how_to_repair(box: Box, content: str | None) -> None:
    box.autoboot.unlink()
    if content is not None:
        box.autoboot.write_text(content)
    result = box.run("get-primary")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "branchline-tryboot init" in result.stderr
    assert "Traceback" not in result.stderr


def test_init_repairs_autoboot(box: Box) -> None:
    box.autoboot.write_text("garbage\n")
    assert box.run("init", "B").returncode == 0
    assert box.read() == Autoboot(3, 3, {"A": SlotState.BAD, "B": SlotState.GOOD})


@pytest.mark.parametrize("point", ["autoboot-temp-written", "autoboot-renamed"])
def test_a_crash_mid_write_leaves_the_old_or_the_new_file_never_a_torn_one(box: Box, point: str) -> None:
    box.run("set-primary", "B")
    box.booted(3, tryboot=True)
    old = box.read()
    result = box.run("set-state", "B", "good", BRANCHLINE_TEST_HOOKS="1", BRANCHLINE_CRASH_AT=point)
    assert result.returncode == -signal.SIGKILL
    expected = old if point == "autoboot-temp-written" else Autoboot(3, 2, {"A": SlotState.GOOD, "B": SlotState.GOOD})
    assert box.read() == expected
    # the next run ignores the left-over temp file and finishes the job
    assert box.run("set-state", "B", "good").returncode == 0
    assert box.read().all_partition == 3


def test_crash_points_need_the_test_hooks_switch(box: Box) -> None:
    result = box.run("set-primary", "B", BRANCHLINE_CRASH_AT="autoboot-temp-written")
    assert result.returncode == 0


HOOKS = {"BRANCHLINE_TEST_HOOKS": "1", "BRANCHLINE_CRASH_AT": "autoboot-temp-written"}


@pytest.mark.parametrize(("verb", "fires_in"), [
    ("set-primary", "set-primary"), ("set-state", "set-state"), ("set-state:bad", "set-state"),
    ("set-state:good", None),  # the install's `set-state B bad` is not mark-good's call
])
def test_the_crash_point_fires_only_in_the_named_verbs_call(
        box: Box, verb: str, fires_in: str | None) -> None:
    hooks = {**HOOKS, "BRANCHLINE_CRASH_VERB": verb}
    calls = [("set-state", "B", "bad"), ("set-primary", "B")]  # what rauc install writes
    codes = {args[0]: box.run(*args, **hooks).returncode for args in calls}
    assert codes == {name: -signal.SIGKILL if name == fires_in else 0 for name, *_ in calls}


def _process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("point", ["autoboot-temp-written", "autoboot-renamed"])
def test_stop_freezes_the_backend_at_the_point_until_it_is_killed(box: Box, point: str) -> None:
    box.run("set-primary", "B")
    box.booted(3, tryboot=True)
    old = box.autoboot.read_text()
    hooks = {**HOOKS, "BRANCHLINE_CRASH_AT": point, "BRANCHLINE_CRASH_VERB": "set-state:good",
             "BRANCHLINE_CRASH_SIGNAL": "STOP"}
    proc = box.start("set-state", "B", "good", **hooks)
    try:
        wait_until(lambda: _process_state(proc.pid) == "T", 10, "the backend to stop itself")
        assert proc.poll() is None  # frozen, not gone
        temp = box.bootsel / "autoboot.txt.new"
        if point == "autoboot-temp-written":  # the new text is in the temp file, not yet live
            assert box.autoboot.read_text() == old and temp.exists()
        else:  # renamed: live, and the temp name is gone
            assert box.read().all_partition == 3 and not temp.exists()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        stop_process(proc, grace=1)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("BRANCHLINE_CRASH_SIGNAL", "HUP", "use KILL or STOP"),
    ("BRANCHLINE_CRASH_VERB", "mark-good", "use one of get-primary"),
    ("BRANCHLINE_CRASH_AT", "somewhere", "is no crash point"),
])
def test_a_mistyped_hook_setting_is_one_line_naming_it(
        box: Box, name: str, value: str, says: str) -> None:
    result = box.run("set-primary", "B", **{**HOOKS, name: value})
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert f"{name}=" in result.stderr and says in result.stderr


def test_a_partial_temp_file_is_ignored(box: Box) -> None:
    (box.bootsel / "autoboot.txt.new").write_text("[all]\ntryboot_a_b=1\nboot_parti")
    assert box.run("get-primary").stdout == "A\n"
    assert box.run("set-primary", "B").returncode == 0
    assert box.read().try_partition == 3


def test_bootflags_read_big_endian_cells(tmp_path: Path) -> None:
    assert not bootflags.tryboot_active(tmp_path) and bootflags.boot_partition(tmp_path) is None
    (tmp_path / "tryboot").write_bytes(b"\x00\x00\x00\x01")
    (tmp_path / "partition").write_bytes(b"\x00\x00\x00\x03")
    assert bootflags.tryboot_active(tmp_path) and bootflags.boot_partition(tmp_path) == 3
    (tmp_path / "partition").write_bytes(b"\x03")
    assert bootflags.boot_partition(tmp_path) is None
