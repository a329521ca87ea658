"""`branchline run --sim --api HOST:PORT` / `--api-socket PATH` as a real process: the
API answers while the core runs, a sim phone goes off hook through it, and the process
still exits 0 at --duration. A non-loopback --api is refused with one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from firmware.api.client import ApiClient, ApiError
from lab.ports import free_port
from lab.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp: Path, *extra: str, duration: float = 8.0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "firmware", "run", "--sim", "--config-dir", str(tmp / "etc"),
           "--data-dir", str(tmp / "data"), "--duration", str(duration), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_up(client: ApiClient, timeout: float = 10.0) -> dict:
    return wait_until(client.status, timeout, "the core's API", step=0.1, retry=(ApiError,))


def test_run_serves_the_api_on_tcp_and_unix(tmp_path):
    port = free_port("tcp")
    sock = tmp_path / "core.sock"
    proc = _run(tmp_path, "--api", f"127.0.0.1:{port}", "--api-socket", str(sock))
    try:
        tcp = ApiClient(tcp=f"127.0.0.1:{port}")
        assert _wait_up(tcp)["box"]["mode"] == "sim"
        assert ApiClient(unix_path=str(sock)).status()["ports"]
        tcp.sim_phone("fxs1", "off_hook")
        wait_until(lambda: any(p["name"] == "fxs1" and p["state"] == "off-hook"
                               for p in tcp.status()["ports"]), 3, "fxs1 off hook", step=0.1)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "OFF-HOOK" in out
    assert not sock.exists()


def test_run_refuses_a_lan_address(tmp_path):
    proc = _run(tmp_path, "--api", "0.0.0.0:8080", duration=1)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "loopback only" in err and "Traceback" not in err
