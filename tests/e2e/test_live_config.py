"""Saved settings reach a running core (firmware/core/liveconfig.py), in fake time: a new
extension rings at once, a shorter flash window turns the same hook flash into a hang-up,
a new dial plan refuses what the old one sent out, new FXO ring validation is written to
the chip; settings that need a restart are reported and left as they run, and saving the
running values again clears the report.
"""

from __future__ import annotations

import copy

import pytest

from drivers.chips import si3050_regs as R
from drivers.sim.board import SimBoard
from firmware.core.config import default_document, validate
from firmware.core.liveconfig import split
from firmware.core.runtime import Core
from foundation.events import FLASH, ON_HOOK
from foundation.reactor import FakeClock, Reactor


@pytest.fixture
def box(tmp_path):
    doc = validate(default_document())
    reactor = Reactor(FakeClock())
    board = SimBoard(reactor, doc)
    core = Core(doc, board, reactor, data_dir=tmp_path / "data")
    core.start()
    reactor.run_for(0.3)
    yield core, board, reactor
    core.stop()


def _changed(core, **paths) -> dict:
    """A validated copy of the running document with dotted paths set."""
    doc = copy.deepcopy(core.doc)
    for path, value in paths.items():
        *parents, key = path.split("__")
        table = doc
        for p in parents:
            table = table.setdefault(p, {})
        table[key] = value
    return validate(doc)


def _dial(reactor, phone, digits: str) -> None:
    phone.off_hook()
    reactor.run_for(0.5)
    reactor.run_until(phone.dial_dtmf(digits) + 0.5)


def _hook_events(board) -> list[str]:
    """The hook events of fxs1 from now on, as the driver reports them."""
    seen: list[str] = []
    board.subscribe(lambda e: seen.append(e.kind) if e.port == "fxs1"
                    and e.kind in (FLASH, ON_HOOK) else None)
    return seen


def test_a_new_extension_rings_at_once(box):
    core, board, reactor = box
    assert core.apply_config(_changed(core, lines__fxs2__extension="299")) == []
    assert core.status()["restart_required"] == []
    _dial(reactor, board.phones["fxs1"], "299")
    reactor.run_for(0.5)
    assert core.cc.ports["fxs2"].state.name == "RINGING"
    board.phones["fxs1"].on_hook()
    reactor.run_for(1.5)
    assert core.cc.ports["fxs2"].state.name == "IDLE"


def test_a_shorter_flash_window_makes_the_same_flash_a_hang_up(box):
    core, board, reactor = box
    phone = board.phones["fxs1"]
    phone.off_hook()
    reactor.run_for(0.5)
    seen = _hook_events(board)
    reactor.run_until(phone.flash(500) + 0.3)
    assert seen == [FLASH]  # 500 ms is inside the default 100-800 ms

    assert core.apply_config(_changed(core, lines__fxs1__flash_max_ms=300)) == []
    assert core.board.drivers["fxs1"].flash_max == pytest.approx(0.3)
    seen = _hook_events(board)
    reactor.run_until(phone.flash(500) + 0.3)
    assert seen == [ON_HOOK]


def test_a_new_dial_plan_applies_to_the_next_call(box):
    core, board, reactor = box
    co = board.cos["fxo1"]
    assert core.apply_config(_changed(core, calls__dialplan="9xxx|*xx")) == []
    _dial(reactor, board.phones["fxs1"], "5551234")
    reactor.run_for(5.0)
    assert not co.answered  # the old plan sent 7 digits out of the PSTN line
    assert core.cc.ports["fxs1"].state.name in ("REORDER", "BUSY", "FAILED")
    board.phones["fxs1"].on_hook()
    reactor.run_for(1.5)


def test_fxo_ring_validation_is_rewritten_to_the_chip(box):
    core, _board, _reactor = box
    daa = core.board.drivers["fxo1"]
    before = daa._read(R.RING_VALID2) & 0x07
    assert core.apply_config(_changed(core, lines__fxo1__ring_min_ms=500,
                                      lines__fxo1__disconnect=["reversal"])) == []
    assert daa._read(R.RING_VALID2) & 0x07 == R.rcc_code(500) != before
    assert daa.disconnect_signals == {"reversal"}


def test_survivability_timers_reach_the_state_machine(box):
    core, _board, _reactor = box
    assert core.apply_config(_changed(core, survive__failback_stable_s=7.0,
                                      survive__blip_window_s=4.0)) == []
    assert core.cc.survive.state.stable_s == 7.0
    assert core.cc.survive.cfg.blip_window_s == 4.0


def test_restart_settings_are_reported_and_left_running(box):
    core, _board, _reactor = box
    running = copy.deepcopy(core.doc)
    new = _changed(core, sip__edges=["sip:edge1.example.com"], sip__domain="example.com",
                   board__chips__slic0__spi_hz=1_000_000, country__code="uk",
                   lines__fxs1__name="Lobby")
    restart = core.apply_config(new)
    assert set(restart) == {"sip.edges", "sip.domain", "board.chips.slic0.spi_hz",
                            "country.code"}
    assert core.status()["restart_required"] == restart
    assert core.doc["sip"] == running["sip"] and core.doc["board"] == running["board"]
    assert core.doc["lines"]["fxs1"]["name"] == "Lobby"  # the live one was taken
    assert core.cc.ports["fxs1"].label == "Lobby"
    assert core.apply_config(validate(running)) == []
    assert core.status()["restart_required"] == []


def test_adding_or_removing_a_line_needs_a_restart():
    running = validate(default_document())
    fewer = copy.deepcopy(running)
    del fewer["lines"]["fxs2"]
    live, restart = split(["lines.fxs2.name", "lines.fxs2.extension"], running, fewer)
    assert live == [] and restart == ["lines.fxs2.name", "lines.fxs2.extension"]
    live, restart = split(["lines.fxs1.kind", "lines.fxs1.flash_max_ms"], running, running)
    assert live == ["lines.fxs1.flash_max_ms"] and restart == ["lines.fxs1.kind"]
