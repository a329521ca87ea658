"""The bridge against odd peers, at load, and at shutdown.

A sipp UAC sends broken SIP straight at the bridge; 40 calls (ten times the PyPI
wheel's limit of 4) go through Kamailio to two agent processes at once; a bridge in a
subprocess with calls up is stopped by SIGTERM and must exit 0 (no pjsua2 abort).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.sip import api
from lab.sipp import start_sipp
from tests.sip.conftest import Harness, sip_doc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def box(kamailio, agents):
    harness = Harness(sip_doc(kamailio)).start()
    harness.wait(api.REGISTRATION, ok=True)
    yield harness
    harness.stop()


def _settle(box: Harness, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if not box.bridge.status()["calls"]:
            return
        box.run(0.05)


def test_garbage_from_a_peer_does_not_crash(box, tmp_path):
    port = box.bridge.status()["ports"]["udp"]
    answered = []

    def answer_first(ev):
        box.events.append(ev)
        if ev.kind == api.INCOMING:
            if not answered:
                answered.append(ev.call)
                box.bridge.answer(ev.call)
            else:
                box.bridge.reject(ev.call, 488)

    box.on_event = answer_first
    try:
        with start_sipp("garbage_uac", f"127.0.0.1:{port}", service="2001", timeout=15,
                        workdir=tmp_path) as sipp:
            while sipp.proc.poll() is None:
                box.run(0.05)
            result = sipp.wait()
    finally:
        box.on_event = box.events.append
    assert answered, "the well-formed INVITE never reached call control"
    assert result.ok, result.log("errors") or result.log("screen")
    assert box.wait(api.ENDED, answered[0]).data["code"] == 200
    _settle(box)
    assert box.bridge.status()["calls"] == {}
    call = box.bridge.make_call("fxs1", "agent1")  # still serving
    box.wait(api.ANSWERED, call)
    box.bridge.hangup(call)
    box.wait(api.ENDED, call)


def test_forty_concurrent_calls(box, agents):
    calls = [box.bridge.make_call("fxs1", f"agent{1 + i % 2}") for i in range(40)]
    for call in calls:
        box.wait(api.ANSWERED, call, timeout=15)
    assert len(box.bridge.status()["calls"]) == 40
    for call in calls:
        box.bridge.hangup(call)
    codes = {box.wait(api.ENDED, call, timeout=10).data["code"] for call in calls}
    assert codes == {200}
    _settle(box)
    assert box.bridge.status()["calls"] == {}


def test_sigterm_with_calls_up_exits_zero(kamailio, agents, box):
    box.stop()  # one pjsua2 endpoint at a time: the child gets the machine to itself
    doc = sip_doc(kamailio)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-m", "tests.sip.bridge_child", json.dumps(doc),
                              "4"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # pjlib prints a few lines of its own before logging is configured: skip them.
        lines = iter(child.stdout.readline, "")
        assert any(line.strip() == "UP 4" for line in lines), child.stderr.read()[-2000:]
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == 0, child.stderr.read()[-2000:]
