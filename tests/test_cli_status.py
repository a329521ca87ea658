"""`branchline status` against a real core: `branchline run --sim --api ... --api-socket ...`
as its own process (the twins, call control, CDRs in a tmp data dir), asked over loopback
TCP and over the Unix socket, as text and as --json; a local call made through the sim
API shows in the calls table and then as a CDR waiting in the outbox. A core that does
not answer is one line on stderr with exit code 2. The text view of a status document
with a failover and failback in it is checked without a core.

Assumes loopback; every process started here is stopped here (bounded).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.api.client import ApiClient, ApiError
from firmware.cli.status import render
from lab.ports import free_port
from lab.wait import wait_until

ROOT = Path(__file__).resolve().parents[1]
RUN_S = 60.0  # the core stops itself after this, should the test not stop it first


def _cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BRANCHLINE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "firmware", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _until(fn, timeout: float, what: str):
    return wait_until(fn, timeout, what, step=0.1, retry=(ApiError,))


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """(tcp "127.0.0.1:port", socket path): a running `branchline run --sim` core."""
    tmp = tmp_path_factory.mktemp("status")
    tcp, sock = f"127.0.0.1:{free_port('tcp')}", tmp / "core.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware", "run", "--sim", "--config-dir", str(tmp / "etc"),
         "--data-dir", str(tmp / "data"), "--duration", str(RUN_S), "--api", tcp,
         "--api-socket", str(sock)], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        _until(lambda: ApiClient(tcp=tcp).status(), 20, "answer from the core")
        yield tcp, sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _port(api: ApiClient, name: str) -> dict:
    return next(p for p in api.status()["ports"] if p["name"] == name)


def test_status_text_shows_every_section(core):
    tcp, _sock = core
    out = _cli("status", "--api", tcp)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    text = out.stdout
    for head in ("box            branch-01", "wan            ", "survivability  ",
                 "registration   ", "outbox         ", "port     kind", "fxs1     fxs",
                 "fxo1     fxo", "headset  headset"):
        assert head in text, f"{head!r} missing:\n{text}"
    state = next(ln for ln in text.splitlines() if ln.startswith("survivability"))
    assert state.split()[1] in ("CLOUD_PRIMARY", "CLOUD_SECONDARY", "SURVIVABLE"), state


def test_a_local_call_shows_in_calls_then_as_a_cdr_in_the_outbox(core):
    tcp, _sock = core
    api = ApiClient(tcp=tcp)
    before = (api.status()["outbox"]["by_kind"]).get("cdr", 0)
    api.sim_phone("fxs1", "off_hook")
    _until(lambda: _port(api, "fxs1")["state"] == "off-hook", 5, "fxs1 off hook")
    api.sim_phone("fxs1", "dial", digits="202")
    _until(lambda: _port(api, "fxs2")["ringing"], 8, "fxs2 ringing")
    api.sim_phone("fxs2", "off_hook")
    _until(lambda: api.status()["calls"], 5, "a call in the status")
    during = _cli("status", "--api", tcp)
    assert during.returncode == 0, during.stderr
    assert "no active calls" not in during.stdout
    assert any(ln.startswith("fxs1 ") and "local" in ln for ln in during.stdout.splitlines()
               if "dir" not in ln), during.stdout
    api.sim_phone("fxs1", "on_hook")
    api.sim_phone("fxs2", "on_hook")
    _until(lambda: api.status()["outbox"]["by_kind"].get("cdr", 0) > before, 8,
           "the CDR in the outbox")
    after = _cli("status", "--api", tcp)
    line = next(ln for ln in after.stdout.splitlines() if ln.startswith("outbox"))
    assert f"cdr {before + 1}" in line, line


def test_status_json_over_the_unix_socket(core):
    _tcp, sock = core
    out = _cli("status", "--api-socket", str(sock), "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    surv = st["survivability"]
    assert surv["state"] in ("CLOUD_PRIMARY", "CLOUD_SECONDARY", "SURVIVABLE")
    assert isinstance(surv["transitions"], int) and len(surv["recent"]) <= surv["transitions"]
    assert {"since", "last_reason", "edge", "in_fallback", "counters"} <= set(surv)
    for t in surv["recent"]:
        assert {"time", "from", "to", "reason"} <= set(t)
    box = st["outbox"]
    assert box["pending"] == sum(box["by_kind"].values())
    assert box["over_cap"] is False and box["max_bytes"] == 256 * 2**20
    text = _cli("status", "--api-socket", str(sock)).stdout
    assert f"outbox         {box['pending']} pending" in text


@pytest.mark.parametrize("where", ["--api", "--api-socket"])
def test_a_core_that_does_not_answer_is_one_line_and_exit_2(tmp_path, where):
    target = f"127.0.0.1:{free_port('tcp')}" if where == "--api" else str(tmp_path / "no.sock")
    for extra in ((), ("--json",)):
        out = _cli("status", where, target, "--timeout", "2", *extra)
        assert out.returncode == 2
        assert out.stdout == ""
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "does not answer" in lines[0] and target in lines[0], \
            out.stderr


def test_render_a_failover_and_failback():
    st = {"box": {"name": "branch-07", "version": "1.2", "mode": "hw", "uptime_s": 3725},
          "wan": {"state": "up", "edges": [{"uri": "sip:edge1.cloud.test", "ok": True,
                                            "rtt_ms": 12.5}]},
          "survivability": {
              "state": "CLOUD_PRIMARY", "since": 1_700_000_100.0, "for_s": 65.0,
              "transitions": 2, "last_reason": "sip:edge1.cloud.test answered steadily for 30 s",
              "edge": "sip:edge1.cloud.test", "blips": 0, "in_fallback": 1, "callbacks": 1,
              "counters": {"rescued": 1, "callbacks": 1},
              "recent": [{"time": 1_700_000_000.0, "from": "CLOUD_PRIMARY",
                          "to": "SURVIVABLE", "reason": "edge1 stopped answering OPTIONS"},
                         {"time": 1_700_000_100.0, "from": "SURVIVABLE",
                          "to": "CLOUD_PRIMARY", "reason": "edge1 answered steadily for 30 s"}]},
          "registrations": [{"account": "branch@cloud.test", "ok": True, "code": 200,
                             "reason": "OK"}],
          "outbox": {"pending": 7, "bytes": 3 * 2**20, "by_kind": {"cdr": 4, "recording": 1,
                                                                   "state_change": 2},
                     "oldest_age_s": 125.0, "over_cap": True, "max_bytes": 2**20},
          "ports": [], "calls": []}
    text = "\n".join(render(st))
    assert "survivability  CLOUD_PRIMARY for 00:01:05 (since 2023-11-14 22:15:00Z), " \
           "2 transitions" in text
    assert "CLOUD_PRIMARY -> SURVIVABLE: edge1 stopped answering OPTIONS" in text
    assert "SURVIVABLE -> CLOUD_PRIMARY: edge1 answered steadily for 30 s" in text
    assert "1 caller(s) in the local fallback, 1 callback(s); so far: callbacks 1, rescued 1" \
        in text
    assert "registration   branch@cloud.test OK (200 OK)" in text
    assert ("outbox         7 pending (cdr 4, recording 1, state_change 2), 3.0 MB, "
            "oldest 00:02:05 ago; cap 1.0 MB: OVER CAP") in text
    assert "sip:edge1.cloud.test" in text and "12.5 ms" in text
    assert "restart needed" not in text
    st["box"]["restart_required"] = ["sip.edges", "board.chips.slic0.spi_hz"]
    assert "  restart needed for saved settings: sip.edges, board.chips.slic0.spi_hz" in \
        "\n".join(render(st))
    assert render({})  # an empty answer still renders, with dashes
