"""The product's supervisord.conf running for real on this machine (lab.supervisor): every
program comes up; killing a client (web, console, agent, forward) drops no call and it is
back within 5 s; a core whose reactor froze stops feeding the watchdog and is restarted;
SIGTERM to supervisord hangs up the call, writes its CDR, and every process is gone
within the stop times."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from firmware.api.client import ApiClient
from firmware.cdr import CDR_FILE
from lab.supervisor import (
    PROGRAMS,
    STOP_TIMEOUT_S,
    LabSupervisor,
    call_on,
    hang_up,
    place_call,
)
from lab.wait import wait_until

CLIENTS = ("web", "console", "agent", "forward")
BACK_WITHIN_S = 5.0
# the watchdog's --core-timeout 10 s + SIGKILL 3 s after SIGABRT + the core's startsecs 3
FROZEN_CORE_RESTART_S = 30.0


def test_every_program_runs(supervised: LabSupervisor) -> None:
    states = supervised.states()
    assert states == {name: "RUNNING" for name in PROGRAMS}, supervised.describe()
    assert supervised.api.status()["box"]["mode"] == "sim"
    assert supervisorctl_status_ok(supervised)


def supervisorctl_status_ok(box: LabSupervisor) -> bool:
    got = box.supervisorctl("status")
    return got.returncode == 0 and all(
        re.search(rf"^{name}\s+RUNNING", got.stdout, re.M) for name in PROGRAMS)


def _back_running(box: LabSupervisor, name: str, old_pid: int) -> bool:
    info = box.info(name)
    return info["statename"] == "RUNNING" and info["pid"] not in (0, old_pid)


@pytest.mark.parametrize("name", CLIENTS)
def test_killing_a_client_drops_no_call_and_it_comes_back(supervised: LabSupervisor,
                                                          name: str) -> None:
    api = supervised.api
    ended = _ended_calls(api)
    before = place_call(api)
    try:
        old = supervised.kill(name, signal.SIGKILL)
        t0 = time.monotonic()
        wait_until(lambda: _back_running(supervised, name, old), BACK_WITHIN_S,
                   f"{name} RUNNING again", step=0.05, detail=supervised.describe)
        back_s = time.monotonic() - t0
        print(f"{name}: RUNNING again {back_s:.2f} s after SIGKILL")
        after = call_on(api, "fxs1")
        assert after is not None and after["state"] == "connected", api.status()["calls"]
        assert after["remote"] == before["remote"] and after["direction"] == "local"
        # the same call: its duration went on, no call ended in between
        assert after["duration_s"] >= before["duration_s"]
        assert call_on(api, "fxs2") is not None
        assert _ended_calls(api) == ended
        assert supervised.info("core")["statename"] == "RUNNING"
    finally:
        hang_up(api)


def _ended_calls(api: ApiClient) -> int:
    return sum(1 for c in api.cdrs(limit=100)["items"] if c.get("ended"))


def _wait_new_core(box: LabSupervisor, old_pid: int) -> float:
    t0 = time.monotonic()
    wait_until(lambda: _back_running(box, "core", old_pid), FROZEN_CORE_RESTART_S,
               "the frozen core restarted", step=0.2, detail=box.describe)
    box.wait_core()
    return time.monotonic() - t0


def test_a_stopped_core_is_restarted_by_the_watchdog(fresh_box: LabSupervisor) -> None:
    old = fresh_box.kill("core", signal.SIGSTOP)
    took = _wait_new_core(fresh_box, old)
    print(f"SIGSTOPped core replaced after {took:.1f} s")
    assert "core" in fresh_box.program_log("watchdog")
    assert all(state == "RUNNING" for state in fresh_box.states().values())


def test_a_frozen_reactor_is_restarted_and_dumps_its_stacks(fresh_box: LabSupervisor) -> None:
    old = fresh_box.kill("core", signal.SIGUSR2)  # BRANCHLINE_TEST_HOOKS=1: reactor blocks
    # the process lives on (its API threads too): only the missing pings give it away
    assert fresh_box.info("core")["pid"] == old
    took = _wait_new_core(fresh_box, old)
    print(f"frozen reactor replaced after {took:.1f} s")
    log = fresh_box.program_log("core")
    assert "Thread" in log and "most recent call first" in log, log[-2000:]


def _cdr_rows(data: Path) -> list[tuple[str, str | None, float | None]]:
    db = sqlite3.connect(f"file:{data / CDR_FILE}?mode=ro", uri=True)
    try:
        return db.execute("SELECT port, disposition, ended FROM cdr ORDER BY started").fetchall()
    finally:
        db.close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_hangs_up_the_call_and_writes_its_cdr(fresh_box: LabSupervisor) -> None:
    api = fresh_box.api
    place_call(api)
    pids = {name: fresh_box.pid(name) for name in PROGRAMS}
    assert fresh_box.proc is not None
    t0 = time.monotonic()
    fresh_box.proc.send_signal(signal.SIGTERM)
    code = fresh_box.proc.wait(STOP_TIMEOUT_S)
    took = time.monotonic() - t0
    print(f"supervisord stopped every program in {took:.1f} s")
    assert code == 0
    wait_until(lambda: all(_gone(p) for p in pids.values()), 5, "every program gone",
               detail=lambda: {n: p for n, p in pids.items() if not _gone(p)})
    log = (fresh_box.log / "supervisord.log").read_text()
    for name in PROGRAMS:
        assert re.search(rf"stopped: {name} \((exit status 0|terminated by SIGTERM)\)", log), \
            f"{name} did not stop cleanly: {log[-1500:]}"
    assert "SIGKILL" not in log
    rows = _cdr_rows(fresh_box.data)
    ended = [r for r in rows if r[0] == "fxs1"]
    assert ended and ended[-1][1] == "answered" and ended[-1][2] is not None, rows
    core_log = fresh_box.program_log("core")
    assert "call HUNG UP local" in core_log, core_log[-1500:]
