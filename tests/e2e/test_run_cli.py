"""`branchline run --sim` as a real process: it starts the whole core (registering with
the cloud of its config, or local-only without one), prints what happens, and stops
cleanly on SIGTERM with exit code 0 (pjsua2 shut down without aborting).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from firmware.core.config import ConfigStore
from lab.wait import wait_until
from tests.e2e.conftest import e2e_doc

ROOT = Path(__file__).resolve().parents[2]


def _start(config_dir: Path, data_dir: Path) -> tuple[subprocess.Popen, queue.Queue]:
    env = {k: v for k, v in os.environ.items() if k != "BRANCHLINE_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "firmware", "run", "--sim",
                             "--config-dir", str(config_dir), "--data-dir", str(data_dir),
                             "--duration", "60"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    return proc, lines


def _wait_line(lines: queue.Queue, needle: str, timeout: float = 15.0) -> str:
    seen: list[str] = []

    def found() -> str | None:
        while not lines.empty():
            seen.append(lines.get_nowait())
            if needle in seen[-1]:
                return seen[-1]
        return None
    return wait_until(found, timeout, f"line with {needle!r}", step=0.1,
                      detail=lambda: f"got {seen}")


def _stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        raise AssertionError("branchline run did not stop within 20 s of SIGTERM") from None
    return code, proc.stderr.read()


def test_run_registers_with_the_cloud_and_stops_cleanly_on_sigterm(kamailio, tmp_path):
    ConfigStore(tmp_path / "etc").save(e2e_doc(kamailio), "e2e")
    proc, lines = _start(tmp_path / "etc", tmp_path / "data")
    try:
        assert "branch@cloud.test registered" in _wait_line(lines, "REGISTERED")
        _wait_line(lines, "UP (OPTIONS")
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert "Traceback" not in err and "Assertion" not in err
    assert (tmp_path / "data" / "cdr.db").exists()


def test_run_without_a_cloud_is_local_only_and_says_so(tmp_path):
    proc, lines = _start(tmp_path / "etc", tmp_path / "data")
    try:
        _wait_line(lines, "edge none DOWN")
    finally:
        code, err = _stop(proc)
    assert code == 0, err
    assert "no cloud: no cloud edge configured (sip.edges is empty)" in err
