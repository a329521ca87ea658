"""The Core's own duties, in fake time (no SIP peers): the port states it keeps from call
control (seized, in-call, caller ID), local-only mode without a cloud (extension calls,
numbers out through the PSTN line, the inbound PSTN call refused by the no-cloud
bridge), a CDR store that cannot be opened, and a clean stop.
"""

from __future__ import annotations

import logging

import numpy as np

from cext.dtmf import DtmfDetector
from drivers.sim.board import SimBoard
from firmware.core.config import default_document, validate
from firmware.core.runtime import Core
from foundation.reactor import FakeClock, Reactor
from lab.simcloud import SimCloud

CALLER = {"number": "5551230100", "name": "ACME LTD", "datetime": "11221030", "reason": None}


def _core(tmp_path, bridge=None, data_dir="data"):
    doc = validate(default_document())
    reactor = Reactor(FakeClock())
    board = SimBoard(reactor, doc)
    core = Core(doc, board, reactor, bridge=bridge(reactor) if bridge else None,
                data_dir=tmp_path / data_dir if data_dir else None)
    core.start()
    reactor.run_for(0.3)
    return core, board, reactor


def _dial(reactor, phone, digits: str) -> None:
    phone.off_hook()
    reactor.run_for(0.5)
    reactor.run_until(phone.dial_dtmf(digits) + 0.5)


def test_local_only_extension_call_and_port_states(tmp_path):
    core, board, reactor = _core(tmp_path)
    try:
        assert core.no_cloud.startswith("no cloud edge configured")
        assert not core.status()["cloud_up"]
        _dial(reactor, board.phones["fxs1"], "202")
        reactor.run_for(0.5)
        assert core.cc.ports["fxs2"].state.name == "RINGING"
        board.phones["fxs2"].off_hook()
        reactor.run_for(0.5)
        ports = core.status()["ports"]
        assert ports["fxs1"]["state"] == ports["fxs2"]["state"] == "in-call"
        assert ports["fxs1"]["call"] == "connected" and ports["fxs1"]["erle_db"] is not None
        board.phones["fxs1"].on_hook()
        board.phones["fxs2"].on_hook()
        reactor.run_for(1.2)  # on hook longer than the longest flash
        assert core.status()["ports"]["fxs2"]["state"] == "on-hook"
        cdr = core.cdr.list()[0]
        assert (cdr["direction"], cdr["disposition"], cdr["dnis"]) == ("local", "answered", "202")
    finally:
        core.stop()


def test_local_only_numbers_go_out_the_pstn_line(tmp_path):
    core, board, reactor = _core(tmp_path)
    try:
        co = board.cos["fxo1"]
        _dial(reactor, board.phones["fxs1"], "5551234")
        reactor.run_for(3.0)
        assert co.answered and core.status()["ports"]["fxo1"]["state"] == "seized"
        digits = "".join(d for d, _s, _e in DtmfDetector().process(np.asarray(co.heard)))
        assert digits == "5551234"
        board.phones["fxs1"].on_hook()
        reactor.run_for(1.5)
        assert not co.answered and core.status()["ports"]["fxo1"]["state"] == "idle"
    finally:
        core.stop()


def test_inbound_pstn_call_without_a_cloud_is_refused_and_the_line_left_alone(tmp_path):
    core, board, reactor = _core(tmp_path)
    seen = []
    core.events.subscribe(seen.append)
    try:
        board.cos["fxo1"].ring(callerid=CALLER)
        reactor.run_for(8.0)
        assert not board.cos["fxo1"].answered  # the caller hears it ring on, unanswered
        port = core.gateway.book.ports["fxo1"]
        assert port.caller["number"] == CALLER["number"]
        assert any(e.kind == "caller_id" and e.port == "fxo1" for e in seen)
    finally:
        core.stop()


def test_with_a_cloud_the_line_shows_seized_and_the_caller(tmp_path):
    clouds = []

    def make(reactor):
        clouds.append(SimCloud(reactor))
        return clouds[0]
    core, board, reactor = _core(tmp_path, bridge=make)
    try:
        board.cos["fxo1"].ring(callerid=CALLER)
        reactor.run_for(8.0)
        st = core.status()["ports"]["fxo1"]
        assert st["state"] == "seized" and st["call"] == "connected"
        assert clouds[0].invites[-1].from_number == CALLER["number"]
        assert core.gateway.book.ports["fxo1"].caller["name"] == CALLER["name"]
        board.cos["fxo1"].disconnect("loop_drop")
        reactor.run_for(1.0)
        assert core.status()["ports"]["fxo1"]["state"] == "idle"
    finally:
        core.stop()


def test_a_cdr_store_that_cannot_open_leaves_the_box_running(tmp_path, caplog):
    (tmp_path / "data").write_text("not a directory")
    with caplog.at_level(logging.ERROR):
        core, board, reactor = _core(tmp_path, data_dir="data/inner")
    try:
        assert core.cdr is None and core.status()["cdr"] is None
        assert any("CDRs are off" in r.message for r in caplog.records)
        _dial(reactor, board.phones["fxs1"], "202")
        reactor.run_for(0.5)
        assert core.cc.ports["fxs2"].state.name == "RINGING"
    finally:
        core.stop()
    assert core.cc is None  # stopped; a second stop is harmless
    core.stop()
