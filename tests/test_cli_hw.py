"""`branchline hw probe` and `branchline run` as a technician runs them: real subprocesses.

With --sim the probe must show every port of the default config with live state; on
this machine (no /dev/spidev*, no RPi.GPIO, no alsaaudio) the probe on real hardware
must print one line per missing device, exit non-zero, and never show a traceback.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from drivers.bus.spi import SPI_HINT
from firmware.core.config import default_document

ROOT = Path(__file__).resolve().parents[1]
NO_SPI = not Path("/dev/spidev0.0").exists()


def branchline(*args, config_dir, timeout=60):
    env = {**os.environ, "BRANCHLINE_CONFIG_DIR": str(config_dir)}
    env.pop("BRANCHLINE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "firmware", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _rows(stdout):
    lines = stdout.strip().splitlines()
    assert lines[0].split()[:5] == ["PORT", "KIND", "CHIP", "BUS", "STATE"]
    return {ln.split()[0]: ln for ln in lines[1:]}


def test_probe_sim_lists_every_port_with_live_state(tmp_path):
    out = branchline("hw", "probe", "--sim", config_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    rows = _rows(out.stdout)
    assert set(rows) == {"fxs1", "fxs2", "fxo1", "headset"}
    assert rows["fxs1"].split()[1:6] == ["fxs", "slic0", "si3215", "spidev0.0", "on-hook"]
    assert rows["fxs2"].split()[1:6] == ["fxs", "slic1", "si3215", "spidev0.1", "on-hook"]
    assert rows["fxo1"].split()[1:6] == ["fxo", "daa0", "si3050", "spidev0.2", "idle"]
    assert rows["headset"].split()[1:4] == ["headset", "headset", "default"]
    assert "present" in rows["headset"] and "48000 Hz" in rows["headset"]


def test_probe_sim_json_carries_the_drivers_readouts(tmp_path):
    out = branchline("hw", "probe", "--sim", "--json", config_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    ports = {p["port"]: p for p in json.loads(out.stdout)["ports"]}
    for name in ("fxs1", "fxs2"):
        assert ports[name]["chip"] == "si3215" and ports[name]["hook"] == "on"
        assert ports[name]["line_voltage_v"] != 0  # on-hook: battery across tip/ring
        assert ports[name]["loop_current_ma"] == pytest.approx(0, abs=1)
    fxo1 = ports["fxo1"]
    assert fxo1["chip"] == "si3050" and fxo1["hook"] == "on"
    assert fxo1.get("ring", fxo1.get("ringing")) is False
    assert abs(fxo1["line_voltage_v"]) > 20  # idle CO battery
    assert ports["headset"]["present"] is True and ports["headset"]["rate"] == 48000


@pytest.mark.skipif(not NO_SPI, reason="this machine has SPI: the missing-node path cannot happen")
def test_probe_without_sim_names_each_missing_device_in_one_line(tmp_path):
    out = branchline("hw", "probe", config_dir=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stdout + out.stderr
    errors = out.stderr.strip().splitlines()
    for node in ("/dev/spidev0.0", "/dev/spidev0.1", "/dev/spidev0.2"):
        hits = [ln for ln in errors if node in ln]
        assert hits == [f"branchline: {node} not found: {SPI_HINT}"]
    assert len(errors) == len(set(errors))  # each device once
    rows = _rows(out.stdout)
    assert all(rows[p].split()[5] == "failed" for p in ("fxs1", "fxs2", "fxo1"))


def test_probe_with_a_bad_config_file_names_the_field(tmp_path):
    doc = default_document()
    doc["lines"]["fxs1"]["country"] = "XX"
    (tmp_path / "branchline.toml").write_text(tomli_w.dumps(doc))
    out = branchline("hw", "probe", "--sim", config_dir=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("branchline: ") and "lines.fxs1.country" in out.stderr
    assert "'XX'" in out.stderr


def test_run_sim_prints_events_and_stops_after_duration(tmp_path):
    out = branchline("run", "--sim", "--duration", "0.5", config_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "headset" in out.stdout and "PRESENT" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(not NO_SPI, reason="this machine has SPI: the missing-node path cannot happen")
def test_run_without_sim_on_a_machine_without_cards_says_why(tmp_path):
    out = branchline("run", "--duration", "0.2", config_dir=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stdout + out.stderr
    assert "/dev/spidev0.0 not found" in out.stderr
    assert "no line came up" in out.stderr.strip().splitlines()[-1]
    assert "fxs1" in out.stdout and "FAILED" in out.stdout


def test_help_lists_every_command(tmp_path):
    out = branchline("--help", config_dir=tmp_path)
    assert out.returncode == 0
    for command in ("demo", "run", "hw"):
        assert f"    {command} " in out.stdout
