"""The box's systemd units and supervisord.conf, checked offline: `systemd-analyze verify`
is clean on every unit, `systemd-analyze security --offline=true` stays under the exposure
measured when they were written (the figures go to tests/artifacts/systemd-security.json),
every supervisord program has its restart, stop and log settings and takes its paths from
branchline.env, and the core really needs no writable+executable memory.

systemd is not running here: the units are copied with /opt/branchline pointing at a
folder whose venv is this one, so that verify finds the programs they start."""

from __future__ import annotations

import configparser
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.api.client import ApiClient, ApiError
from firmware.core.config import ConfigStore
from lab.procs import stop_process
from lab.supervisor import PROGRAMS, hang_up, lab_document, place_call
from lab.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
ARTIFACT = ROOT / "tests" / "artifacts" / "systemd-security.json"
UNITS = sorted(p.name for p in SYSTEMD.glob("*.service"))
# measured 2026-12: branchline 2.7, firstboot 2.4, update 1.7, update-confirm 2.0 (RAUC's
# privileged work runs in rauc.service, driven over D-Bus); a little slack, no more
EXPOSURE_MAX = {"branchline.service": 3.0, "branchline-firstboot.service": 2.7,
                "branchline-update.service": 2.0, "branchline-update-confirm.service": 2.3}
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units as installed, with /opt/branchline replaced by a folder that exists."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt install systemd")
    root = tmp_path_factory.mktemp("units")
    prefix = root / "opt" / "branchline"
    prefix.mkdir(parents=True)
    (prefix / "venv").symlink_to(sys.prefix)
    for name in UNITS:
        text = (SYSTEMD / name).read_text().replace("/opt/branchline", str(prefix))
        (root / name).write_text(text)
    return root


def test_there_are_the_units_we_ship() -> None:
    assert set(UNITS) == set(EXPOSURE_MAX)


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_is_clean(installed: Path, unit: str) -> None:
    got = subprocess.run(["systemd-analyze", "verify", str(installed / unit)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert got.returncode == 0 and not (got.stdout + got.stderr).strip(), got.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_stays_low(installed: Path, unit: str) -> None:
    got = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                          str(installed / unit)], capture_output=True, text=True, timeout=60,
                         check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", got.stdout)
    assert found, got.stdout[-500:] + got.stderr
    figure = float(found.group(1))
    print(f"systemd-analyze security {unit}: {figure}")
    _record(unit, figure)
    assert figure <= EXPOSURE_MAX[unit], f"{unit} exposure {figure} > {EXPOSURE_MAX[unit]}"


def _record(unit: str, figure: float) -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    try:
        figures = json.loads(ARTIFACT.read_text())
    except (OSError, ValueError):
        figures = {}
    figures[unit] = figure
    ARTIFACT.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


def _unit(name: str) -> dict[str, list[str]]:
    """key -> values of a unit file (keys may repeat)."""
    values: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_the_gateway_unit_has_the_watchdog_and_the_sandbox() -> None:
    u = _unit("branchline.service")
    for key, value in {"Type": "notify", "NotifyAccess": "all", "WatchdogSec": "30",
                       "Restart": "always", "KillMode": "mixed", "ProtectSystem": "strict",
                       "NoNewPrivileges": "yes", "PrivateTmp": "yes", "DevicePolicy": "closed",
                       "MemoryDenyWriteExecute": "yes", "RuntimeDirectory": "branchline",
                       "LogsDirectory": "branchline",
                       "SystemCallFilter": "@system-service"}.items():
        assert u.get(key) == [value], key
    assert u["EnvironmentFile"] == ["/opt/branchline/systemd/branchline.env"]
    assert "-c /opt/branchline/systemd/supervisord.conf" in u["ExecStart"][0]
    assert set(u["ReadWritePaths"][0].split()) == {"/var/lib/branchline", "/etc/branchline"}
    assert "branchline-firstboot.service" in u["After"][0]
    assert not any("watchdog" in d for d in u["DeviceAllow"])


def test_stop_timeout_covers_every_program_stopping_in_turn() -> None:
    conf = _conf()
    total = sum(int(conf[f"program:{p}"]["stopwaitsecs"]) for p in PROGRAMS)
    assert total < int(_unit("branchline.service")["TimeoutStopSec"][0])


def test_firstboot_runs_once_before_the_gateway() -> None:
    u = _unit("branchline-firstboot.service")
    assert u["ConditionPathExists"] == ["!/var/lib/branchline/firstboot.done"]
    assert "branchline.service" in u["Before"][0]
    assert "branchline firstboot --data-dir /var/lib/branchline" in u["ExecStart"][0]


def test_update_confirm_runs_once_after_the_gateway() -> None:
    u = _unit("branchline-update-confirm.service")
    assert u["Type"] == ["oneshot"] and "branchline.service" in u["After"][0]
    assert "branchline update confirm" in u["ExecStart"][0]


def test_hardware_watchdog_drop_in() -> None:
    text = (SYSTEMD / "system.conf.d" / "branchline-watchdog.conf").read_text()
    assert "[Manager]" in text
    assert re.search(r"^RuntimeWatchdogSec=15$", text, re.M)
    assert re.search(r"^RebootWatchdogSec=2min$", text, re.M)


# ---- supervisord.conf ------------------------------------------------------------------

def _conf() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SYSTEMD / "supervisord.conf")
    return parser


def _env_names() -> set[str]:
    lines = (SYSTEMD / "branchline.env").read_text().splitlines()
    return {ln.split("=", 1)[0] for ln in lines if "=" in ln and not ln.startswith("#")}


def test_the_programs_and_their_order() -> None:
    conf = _conf()
    programs = {s.split(":", 1)[1]: int(conf[s]["priority"])
                for s in conf.sections() if s.startswith("program:")}
    assert programs == {"watchdog": 1, "core": 10, "web": 20, "console": 20, "agent": 30,
                        "forward": 30}
    assert set(programs) == set(PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_each_program_restarts_stops_and_logs(name: str) -> None:
    p = _conf()[f"program:{name}"]
    assert p["autorestart"] == "true" and p["autostart"] == "true"
    assert 1 <= int(p["startsecs"]) <= 3, "RUNNING again within 5 s needs startsecs <= 3"
    assert int(p["startretries"]) >= 10
    assert p["stopsignal"] == "TERM" and int(p["stopwaitsecs"]) >= 5
    assert p["stopasgroup"] == "true" and p["killasgroup"] == "true"
    assert p["redirect_stderr"] == "true"
    assert p["stdout_logfile"] == f"%(ENV_BRANCHLINE_LOG)s/{name}.log"
    assert p["stdout_logfile_maxbytes"].endswith("MB") and int(p["stdout_logfile_backups"]) >= 2
    assert p["user"].startswith(("%(ENV_BRANCHLINE_", "root"))
    assert p["command"].startswith("%(ENV_BRANCHLINE_PREFIX)s/venv/bin/branchline ")


def test_core_has_time_to_hang_up_and_the_watchdog_contract() -> None:
    core = _conf()["program:core"]
    assert int(core["stopwaitsecs"]) >= 20
    assert core["user"] == "%(ENV_BRANCHLINE_CORE_USER)s"
    env = core["environment"]
    assert 'NOTIFY_SOCKET="%(ENV_BRANCHLINE_RUN)s/notify.sock"' in env
    assert 'WATCHDOG_USEC="2000000"' in env and 'WATCHDOG_PID=""' in env
    assert "BRANCHLINE_TEST_HOOKS" not in env
    assert "--socket %(ENV_BRANCHLINE_RUN)s/notify.sock" in _conf()["program:watchdog"]["command"]


@pytest.mark.parametrize("name", ["web", "console", "agent"])
def test_update_sources_reach_the_update_service(name: str) -> None:
    assert "--update-socket %(ENV_BRANCHLINE_RUN)s/update.sock" in \
        _conf()[f"program:{name}"]["command"]


def test_clients_run_as_the_unprivileged_user() -> None:
    conf = _conf()
    for name in ("web", "console", "agent", "forward"):
        assert conf[f"program:{name}"]["user"] == "%(ENV_BRANCHLINE_USER)s", name


def test_supervisord_itself_logs_capped_and_listens_privately() -> None:
    conf = _conf()
    sup = conf["supervisord"]
    assert sup["logfile"] == "%(ENV_BRANCHLINE_LOG)s/supervisord.log"
    assert sup["logfile_maxbytes"].endswith("MB") and int(sup["logfile_backups"]) >= 2
    assert conf["unix_http_server"]["file"] == "%(ENV_BRANCHLINE_RUN)s/supervisor.sock"
    assert conf["unix_http_server"]["chmod"] == "0700"
    assert "update" not in conf.sections() and "program:update" not in conf.sections()


def test_every_path_comes_from_branchline_env() -> None:
    text = (SYSTEMD / "supervisord.conf").read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith(";"))
    assert not re.search(r"(?<![\w)])/(opt|var|run|etc|dev)/", body), "a literal box path"
    used = set(re.findall(r"%\(ENV_(\w+)\)s", body))
    assert used <= _env_names(), used - _env_names()


# ---- MemoryDenyWriteExecute=yes ----------------------------------------------------------

MDWE_EXEC = ("import ctypes, os, sys\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n"
             f"if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:\n"
             "    sys.exit('PR_SET_MDWE refused: errno %d' % ctypes.get_errno())\n"
             "os.execv(sys.argv[1], sys.argv[1:])\n")


def test_the_core_needs_no_writable_executable_memory(tmp_path: Path) -> None:
    """What MemoryDenyWriteExecute=yes enforces (kernel >= 6.3's PR_SET_MDWE, kept across
    exec): the sim core (pjsua2, NumPy, the Cython DSP) places and ends a call under it.
    The real drivers (spidev, RPi.GPIO, pyalsaaudio) only run on the Pi."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(66, 0, 0, 0, 0) < 0:  # PR_GET_MDWE
        pytest.fail("this kernel has no PR_SET_MDWE (Linux >= 6.3 needed for this check)")
    ConfigStore(tmp_path / "etc").save(lab_document(), "mdwe")
    sock = tmp_path / "core.sock"
    branchline = Path(sys.prefix) / "bin" / "branchline"
    proc = subprocess.Popen([sys.executable, "-c", MDWE_EXEC, str(branchline), "run", "--sim",
                             "--config-dir", str(tmp_path / "etc"), "--data-dir",
                             str(tmp_path / "data"), "--api-socket", str(sock)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "NOTIFY_SOCKET": ""})
    try:
        api = ApiClient(unix_path=str(sock))
        wait_until(api.status, 30, "the core under MDWE", step=0.1, retry=(ApiError,))
        place_call(api)
        hang_up(api)
    finally:
        stop_process(proc, grace=30)
        out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, out[-2000:]
    assert "call ANSWERED" in out and "call HUNG UP" in out, out[-2000:]


def _env_values() -> dict[str, str]:
    lines = (SYSTEMD / "branchline.env").read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if "=" in ln and not ln.startswith("#"))


def test_device_access_is_the_cores_user_only() -> None:
    """Two users sharing one group (tests/supervise/test_users.py runs it for real)."""
    env = _env_values()
    assert env["BRANCHLINE_CORE_USER"] != env["BRANCHLINE_USER"]
    assert env["BRANCHLINE_GROUP"]
    conf = _conf()
    assert conf["supervisord"]["umask"] == "027"
    for name in ("core", "web", "console", "agent", "forward"):
        assert conf[f"program:{name}"]["umask"] == "007", name
    assert "--socket-group" not in conf["program:watchdog"]["command"]  # the folder's group
    for unit in ("branchline.service", "branchline-update.service"):
        text = (SYSTEMD / unit).read_text()
        assert "ExecStartPre=+/bin/chgrp ${BRANCHLINE_GROUP} /run/branchline" in text, unit
        assert "RuntimeDirectoryMode=3770" in text, unit
    firstboot = (SYSTEMD / "branchline-firstboot.service").read_text()
    assert ("--owner ${BRANCHLINE_USER} --core-user ${BRANCHLINE_CORE_USER} "
            "--group ${BRANCHLINE_GROUP}") in firstboot
