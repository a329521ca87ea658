"""`branchline hw selftest` as a technician runs it (real subprocesses), and the board-level
checks of drivers/selftest.py on the twins (in process, fake time).

The command prints one line per check (PASS/FAIL, port, check, what was measured, and the
fix for a failure), exits 0 when all passed and 1 when any failed; `--json` gives the same
checks as a list of objects. On this machine (no /dev/spidev*, no RPi.GPIO, no
alsaaudio) the real-hardware run names each missing device once and exits 2; with a core
answering on its control socket it refuses to touch the chips. In simulation the PCM
clock, each chip's checks and a 1 kHz tone looped back through each line's timeslot are
measured; drivers without selftest()/pcm_loopback(), broken drivers, a chip out of its
slot, a stopped clock and a mangled loopback each give a failed check, never a crash.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cext import g711, toneplans
from cext.tones import ToneGenerator
from drivers import selftest
from drivers.sim.board import SimBoard
from firmware.cli.hw import format_checks
from firmware.cli.hw import selftest as cli_selftest
from firmware.core.config import Config, default_document, validate
from firmware.gateway import Gateway
from foundation.reactor import FakeClock, Reactor

ROOT = Path(__file__).resolve().parents[1]
NO_SPI = not Path("/dev/spidev0.0").exists()
KEYS = {"port", "check", "ok", "detail", "fix"}


def branchline(*args, config_dir, timeout=120):
    env = {**os.environ, "BRANCHLINE_CONFIG_DIR": str(config_dir)}
    env.pop("BRANCHLINE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "firmware", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check_lines(stdout: str) -> list[str]:
    lines = stdout.strip().splitlines()
    assert lines[-1].split()[1] == "checks,"  # the summary: "24 checks, 6 failed"
    return lines[:-1]


def sim_doc() -> dict:
    doc = default_document()
    doc["board"]["headset"]["enabled"] = False
    return validate(doc)


def started(doc: dict | None = None, **kw):
    reactor = Reactor(FakeClock())
    board = SimBoard(reactor, doc or sim_doc(), **kw)
    gateway = Gateway(Config.from_doc(board.doc), board, reactor, media=False, lifeline=False)
    gateway.start()
    reactor.run_for(0.5)
    return reactor, board, gateway


def by_name(results: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["port"], r["check"]): r for r in results}


# ---- the command --------------------------------------------------------------------------

def test_selftest_sim_prints_one_line_per_check_with_the_fix_and_the_exit_status(tmp_path):
    out = branchline("hw", "selftest", "--sim", config_dir=tmp_path)
    assert "Traceback" not in out.stdout + out.stderr
    lines = check_lines(out.stdout)
    verdicts = [ln.split()[0] for ln in lines]
    assert set(verdicts) <= {"PASS", "FAIL"}
    assert all("=> fix: " in ln for ln in lines if ln.startswith("FAIL"))
    assert out.returncode == (1 if "FAIL" in verdicts else 0)
    ports = {ln.split()[1] for ln in lines}
    assert {"board", "fxs1", "fxs2", "fxo1"} <= ports
    assert any(ln.startswith("PASS  board    pclk") for ln in lines)
    for port in ("fxs1", "fxs2", "fxo1"):
        assert any(ln.split()[1:3] == [port, "loopback"] for ln in lines)


def test_selftest_sim_passes_every_check_on_the_twins(tmp_path):
    out = branchline("hw", "selftest", "--sim", config_dir=tmp_path)
    assert out.returncode == 0, out.stdout
    assert out.stdout.strip().splitlines()[-1] == "24 checks, all passed"
    assert "FAIL" not in out.stdout


def test_selftest_sim_json_is_a_list_of_checks_matching_the_exit_status(tmp_path):
    out = branchline("hw", "selftest", "--sim", "--json", config_dir=tmp_path)
    checks = json.loads(out.stdout)
    assert isinstance(checks, list) and checks
    assert all(set(c) == KEYS and isinstance(c["ok"], bool) for c in checks)
    assert all(c["fix"] for c in checks if not c["ok"])
    assert all(c["fix"] == "" for c in checks if c["ok"])
    assert out.returncode == (0 if all(c["ok"] for c in checks) else 1)
    assert by_name(checks)[("board", "pclk")]["ok"]


@pytest.mark.skipif(not NO_SPI, reason="this machine has SPI: the missing-node path cannot happen")
def test_selftest_without_hardware_names_each_missing_device_and_exits_2(tmp_path):
    out = branchline("hw", "selftest", config_dir=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert "Traceback" not in out.stderr
    errors = out.stderr.strip().splitlines()
    assert len(errors) == len(set(errors))  # each device once
    for node in ("/dev/spidev0.0", "/dev/spidev0.1", "/dev/spidev0.2"):
        assert len([ln for ln in errors if f"{node} not found" in ln]) == 1
    assert errors[-1].startswith("branchline: no card to test")


@pytest.mark.parametrize("command", ["selftest", "probe"])
def test_a_running_core_keeps_the_chips(tmp_path, command):
    path = str(tmp_path / "core.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    try:
        out = branchline("hw", command, "--core-socket", path, config_dir=tmp_path)
    finally:
        listener.close()
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"branchline: the core is running (it answers on {path})")
    assert "supervisorctl stop core" in out.stderr


def test_selftest_with_a_bad_config_names_the_field(tmp_path):
    (tmp_path / "branchline.toml").write_text('[board.lifeline]\ngpio = 17\n')
    out = branchline("hw", "selftest", "--sim", config_dir=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("branchline: ") and out.stderr.count("\n") == 1
    assert "board.lifeline.gpio: GPIO 17 is also used by board.chips.slic0" in out.stderr


def test_format_checks_gives_one_line_per_check_and_a_summary():
    text = format_checks([
        {"port": "board", "check": "pclk", "ok": True, "detail": "1600 frames", "fix": ""},
        {"port": "fxs1", "check": "dc-dc", "ok": False, "detail": "DR107=0x00", "fix": "check L1"},
    ])
    assert text.splitlines() == [
        "PASS  board    pclk                   1600 frames",
        "FAIL  fxs1     dc-dc                  DR107=0x00  => fix: check L1",
        "2 checks, 1 failed"]


# ---- the checks on the twins --------------------------------------------------------------

def test_the_daa_loopback_carries_the_tone_through_its_timeslot():
    reactor, board, gateway = started()
    result = selftest.loopback(board, reactor, "fxo1", board.drivers["fxo1"])
    assert result["ok"], result
    assert "timeslot 2" in result["detail"] and "-10.0 dBm0" in result["detail"]
    assert not board.drivers["fxo1"]._reg33 & 0x80  # the loop is opened again
    gateway.stop()


@pytest.mark.parametrize("line", ["fxs1", "fxo1"])
def test_the_loopback_hears_only_the_chips_own_timeslot(line):
    reactor, board, gateway = started()
    elsewhere = SimpleNamespace(pcm={line: board.tdm["branchline"].port(3, line)})  # nobody's slot
    result = selftest.loopback(elsewhere, reactor, line, board.drivers[line])
    assert not result["ok"] and result["detail"] == "nothing came back on timeslot 3"
    assert selftest.loopback(board, reactor, line, board.drivers[line])["ok"]
    gateway.stop()


def test_the_cli_runs_every_check_and_leaves_the_lifeline_released():
    results, problems = cli_selftest(sim_doc(), sim=True)
    assert problems == []
    names = by_name(results)
    assert names[("board", "pclk")]["ok"]
    relay = names[("board", "lifeline relay")]
    assert relay["ok"] and "released" in relay["detail"]
    for port in ("fxs1", "fxs2", "fxo1"):
        assert (port, "loopback") in names
    assert names[("fxo1", "loopback")]["ok"]


def test_a_driver_without_selftest_is_a_failed_check_not_a_crash():
    reactor, board, gateway = started()
    board.drivers["fxs2"] = SimpleNamespace(stop=lambda: None)  # an older driver
    rows = selftest.line_checks(board, reactor, "fxs2")
    assert [(r["check"], r["ok"], r["detail"]) for r in rows] == [
        ("selftest", False, "driver has no selftest"),
        ("loopback", False, "driver has no pcm_loopback")]
    assert all("update the firmware" in r["fix"] for r in rows)
    gateway.stop()


def test_a_driver_whose_selftest_raises_is_a_failed_check():
    def boom():
        raise RuntimeError("register map out of date")

    rows = selftest.driver_checks("fxs1", SimpleNamespace(selftest=boom))
    assert rows[0]["ok"] is False
    assert rows[0]["detail"] == "selftest crashed: RuntimeError: register map out of date"


def test_a_chip_out_of_its_slot_fails_its_checks_and_skips_its_loopback():
    reactor, board, gateway = started(unseated=("daa0",))
    down = {n: p.reason for n, p in gateway.book.ports.items() if p.state == "failed"}
    assert set(down) == {"fxo1"}
    rows = selftest.line_checks(board, reactor, "fxo1", down["fxo1"])
    assert not any(r["ok"] for r in rows) and all(r["fix"] for r in rows)
    assert rows[-1]["check"] == "loopback" and rows[-1]["detail"].startswith("not run")
    gateway.stop()


def test_a_line_whose_bus_never_opened_is_reported_with_its_reason():
    board = SimpleNamespace(drivers={}, errors={"fxs1": "/dev/spidev0.0 not found: fix it"})
    rows = selftest.line_checks(board, None, "fxs1")
    assert rows == [{"port": "fxs1", "check": "bus", "ok": False,
                     "detail": "/dev/spidev0.0 not found: fix it",
                     "fix": "/dev/spidev0.0 not found: fix it"}]


def test_a_stopped_bit_clock_fails_pclk():
    reactor = Reactor(FakeClock())
    board = SimpleNamespace(tdm={"hw:0,0": SimpleNamespace(stream=SimpleNamespace(frames=0))})
    [row] = selftest.pclk_checks(board, reactor)
    assert not row["ok"] and "0 frame syncs" in row["detail"]
    assert row["fix"].startswith("no bit clock")


def test_a_board_without_a_stream_fails_pclk():
    [row] = selftest.pclk_checks(SimpleNamespace(), Reactor(FakeClock()))
    assert not row["ok"] and row["check"] == "pclk"


def tone(seconds: float = 0.5, dbm0: float = selftest.LOOPBACK_DBM0) -> np.ndarray:
    gen = ToneGenerator(toneplans.Tone((selftest.LOOPBACK_HZ,), dbm0), 8000)
    return gen.generate(int(seconds * 8000))


def test_loopback_judge_passes_the_tone_through_g711():
    back = g711.ulaw_decode(g711.ulaw_encode(tone()))
    row = selftest.judge_loopback("fxs1", back, slot=0)
    assert row["ok"], row


def test_loopback_judge_fails_silence_and_a_law_mismatch():
    silent = selftest.judge_loopback("fxs1", np.zeros(4000, np.int16), slot=0)
    assert not silent["ok"] and silent["detail"] == "nothing came back on timeslot 0"
    mangled = g711.alaw_decode(g711.ulaw_encode(tone()))  # the chip in A-law, the Pi in mu-law
    row = selftest.judge_loopback("fxs1", mangled, slot=0)
    assert not row["ok"] and "law" in row["fix"]
    loud = selftest.judge_loopback("fxs1", tone(dbm0=-3.0), slot=0)
    assert not loud["ok"]  # a gain in the loop is a fault too
