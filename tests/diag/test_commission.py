"""Line commissioning against the twins: each GR-909 condition the SLIC emulator presents
is flagged as exactly its own item; the FXO line's idle volts, loop current, echo path,
caller-ID standard and disconnect signal are measured or learned as the virtual CO
presents them. Fake clock throughout; the procedures run on the reactor as in the core."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from cext import toneplans
from drivers.sim.board import SimBoard
from drivers.sim.echo_paths import erl_db, impulse_response
from firmware.core.config.schema import default_document
from firmware.diag.commission import LineFacts, commission_port, response_span, run_test_call
from foundation.reactor import FakeClock, Reactor


@pytest.fixture
def rig():
    doc = default_document()
    doc["board"]["headset"]["enabled"] = False
    reactor = Reactor(FakeClock())
    board = SimBoard(reactor, doc)
    for driver in board.drivers.values():
        driver.start()
    board.lifeline.energise()  # fxs1's phone on its SLIC, as the running core has it
    reactor.run_for(0.3)
    yield SimpleNamespace(board=board, reactor=reactor, doc=doc, slic=board.emulators["slic0"],
                          co=board.cos["fxo1"], daa=board.emulators["daa0"])
    board.close()


def failed(result) -> list[str]:
    return [i["name"] for i in result["items"] if i["pass"] is False]


def item(result, name) -> dict:
    return next(i for i in result["items"] if i["name"] == name)


# ------------------------------------------------------------------ FXS: GR-909

def test_good_line_passes_every_item(rig):
    res = commission_port(rig, "fxs1")
    assert res["pass"] and failed(res) == []
    assert item(res, "ren")["value"] == pytest.approx(1.0, abs=0.15)
    assert {i["name"] for i in res["items"]} == {
        "hazardous_ac", "hazardous_dc", "foreign_ac", "foreign_dc", "receiver_off_hook",
        "resistive_tip_ring", "resistive_tip_ground", "resistive_ring_ground", "ren"}


@pytest.mark.parametrize("condition, flagged, value", [
    ({"foreign_ac_vrms": 60.0, "foreign_hz": 60.0}, "hazardous_ac", 60.0),
    ({"foreign_ac_vrms": 55.0, "foreign_hz": 50.0}, "hazardous_ac", 55.0),
    ({"foreign_dc_v": 150.0}, "hazardous_dc", None),
    ({"foreign_ac_vrms": 20.0}, "foreign_ac", 20.0),
    ({"foreign_dc_v": 20.0}, "foreign_dc", 20.0),
    ({"r_tip_ring": 10e3}, "resistive_tip_ring", 10e3),
    ({"r_tip_ring": 100e3}, "resistive_tip_ring", 100e3),
    ({"r_tip_ground": 50e3}, "resistive_tip_ground", 50e3),
    ({"r_ring_ground": 100e3}, "resistive_ring_ground", 100e3),
    ({"receiver_off_hook": True}, "receiver_off_hook", None),
    ({"ren": 0.0}, "ren", 0.0),
    ({"ren": 6.0}, "ren", 6.0),
])
def test_each_condition_flags_exactly_its_item(rig, condition, flagged, value):
    rig.slic.set_line(**condition)
    rig.reactor.run_for(0.1)
    res = commission_port(rig, "fxs1")
    assert failed(res) == [flagged] and not res["pass"]
    if value is not None:
        assert item(res, flagged)["value"] == pytest.approx(value, rel=0.25, abs=0.2)


def test_faults_above_the_limit_pass(rig):
    rig.slic.set_line(r_tip_ground=400e3, r_ring_ground=1e6, r_tip_ring=300e3, ren=3.0)
    res = commission_port(rig, "fxs1")
    assert failed(res) == []
    assert item(res, "ren")["value"] == pytest.approx(3.0, abs=0.2)
    assert item(res, "resistive_tip_ground")["value"] == pytest.approx(400e3, rel=0.25)


def test_phone_off_hook_is_not_a_resistive_fault_and_the_port_comes_back(rig):
    phone = rig.board.phones["fxs1"]
    phone.off_hook()
    rig.reactor.run_for(0.2)
    res = commission_port(rig, "fxs1")
    assert failed(res) == ["receiver_off_hook"]
    assert item(res, "receiver_off_hook")["value"] == pytest.approx(6.5, abs=1.0)
    phone.on_hook()
    rig.slic.clear_line()
    rig.reactor.run_for(1.0)
    drv = rig.board.drivers["fxs1"]
    assert drv.linefeed() == "forward_active" and drv.feed()["on_hook_v"] == pytest.approx(48)
    assert drv.line_voltage_v() == pytest.approx(48, abs=1)


def test_missing_phone_fails_ren_only(rig):
    rig.slic.set_line(ren=0.0)
    res = commission_port(rig, "fxs1")
    assert failed(res) == ["ren"] and "no phone" in item(res, "ren")["note"]


# ------------------------------------------------------------------ FXO

@pytest.mark.parametrize("battery, loop_ohm", [(48.0, 1165.0), (52.0, 600.0), (44.0, 1600.0)])
def test_idle_voltage_and_loop_current(rig, battery, loop_ohm):
    rig.co.set_line(battery_v=battery, loop_ohm=loop_ohm)
    res = commission_port(rig, "fxo1")
    expect_ma = 1000 * (battery - 6.0) / (400 + loop_ohm + 50)
    assert res["idle"]["line_voltage_v"] == pytest.approx(battery, abs=1.5)
    assert res["seized"]["loop_current_ma"] == pytest.approx(expect_ma, abs=1.5)


@pytest.fixture
def pipeline_ms(rig):
    """The box's own PCM round trip as the canceller sees it: a one-tap echo path."""
    rig.co.set_echo(impulse_response("flat", erl=10))
    res = commission_port(rig, "fxo1")
    assert res["echo"]["erl_db"] == pytest.approx(10, abs=0.5)
    return res["echo"]["delay_ms"]


@pytest.mark.parametrize("spec", [
    {"model": "m1", "erl": 10.0, "delay_ms": 5.0},
    {"model": "m4", "erl": 15.0, "delay_ms": 20.0},
    {"model": "m5", "erl": 6.0, "delay_ms": 0.0},
    {"model": "synthetic", "erl": 8.0, "length_ms": 40.0},
])
def test_echo_path_tail_and_erl(rig, pipeline_ms, spec):
    h = impulse_response(**spec)
    rig.co.set_echo(h)
    echo = commission_port(rig, "fxo1")["echo"]
    _start, true_tail = response_span(h)
    assert echo["tail_ms"] == pytest.approx(pipeline_ms + true_tail, abs=8)
    assert echo["erl_db"] == pytest.approx(erl_db(h), abs=3)
    assert echo["proposed_tail_ms"] >= echo["tail_ms"]


def test_no_echo_proposes_the_shortest_tail(rig):
    echo = commission_port(rig, "fxo1")["echo"]
    assert echo["proposed_tail_ms"] == 16 and echo["erl_db"] > 55


def call_in(rig, style: str, standard: str, tone=None) -> None:
    """The virtual CO rings with caller ID of `standard`, and hangs up with `style`
    one second after the box answers."""
    rig.co.callerid_standard = standard
    rig.reactor.register_timer(lambda t: (rig.co.ring(), math.inf)[1], rig.reactor.now() + 0.5)

    answered_at = []

    def hang_up(t):
        if rig.co.answered and not answered_at:
            answered_at.append(t)
        if answered_at and t - answered_at[0] >= 1.0:
            rig.co.disconnect(style, tone=tone) if style == "tone" else rig.co.disconnect(style)
            return math.inf
        return t + 0.1

    rig.reactor.register_timer(hang_up, rig.reactor.now() + 1.0)


@pytest.mark.parametrize("style", ["loop_drop", "reversal", "tone"])
def test_disconnect_style_learned(rig, style):
    call_in(rig, style, "bell202")
    out = run_test_call(rig, "fxo1", rig.board.drivers["fxo1"], rig.board.pcm["fxo1"], 30)
    assert out["answered"] and out["disconnect"]["signal"] == style
    if style == "tone":
        assert out["disconnect"]["freqs_hz"] == [480, 620]
        assert out["disconnect"]["cadence_ms"] == [pytest.approx(500, abs=60)] * 2


def test_unknown_disconnect_tone_cadence_is_learned(rig):
    tone = toneplans.Tone((425.0,), -15.0, (0.25, 0.25))
    call_in(rig, "tone", "bell202", tone)
    out = run_test_call(rig, "fxo1", rig.board.drivers["fxo1"], rig.board.pcm["fxo1"], 30)
    hang = out["disconnect"]
    assert hang["signal"] == "tone" and hang["tone"] is None
    assert hang["freqs_hz"] == [pytest.approx(425, abs=8)]
    assert hang["cadence_ms"] == [pytest.approx(250, abs=40)] * 2


@pytest.mark.parametrize("standard", ["bell202", "v23", "dtmf"])
def test_callerid_standard_recognised(rig, standard):
    call_in(rig, "loop_drop", standard)
    out = run_test_call(rig, "fxo1", rig.board.drivers["fxo1"], rig.board.pcm["fxo1"], 30)
    assert out["callerid"]["standard"] == standard
    assert out["callerid"]["number"] == "2015550123"


@pytest.fixture
def sim_caller(rig):
    from firmware.cli.commission import _sim_caller

    _sim_caller(rig.reactor, rig.board, "fxo1")


def test_learned_facts_are_kept_and_proposed(rig, tmp_path, sim_caller):
    rig.data_dir = tmp_path
    rig.co.callerid_standard = "v23"
    res = commission_port(rig, "fxo1", test_call_s=30)  # the CLI's --sim caller drives the CO
    assert res["test_call"]["disconnect"] == {"signal": "loop_drop"}
    assert res["proposed"] == {"lines.fxo1.disconnect": ["loop_drop"], "country.callerid": "v23"}
    assert res["advice"]["echo_tail_ms"] in (16, 32, 64, 128)
    again = LineFacts(tmp_path).get("fxo1")
    assert again["disconnect"]["signal"] == "loop_drop" and again["callerid"]["standard"] == "v23"


def test_no_call_within_the_wait_is_reported(rig):
    out = run_test_call(rig, "fxo1", rig.board.drivers["fxo1"], rig.board.pcm["fxo1"], 2)
    assert not out["answered"] and "no call" in out["note"]


def test_unplugged_line_and_unknown_port_are_one_line_errors(rig):
    from firmware.diag.commission import CommissionError

    rig.co.connect_line(False)
    rig.reactor.run_for(0.2)
    with pytest.raises(CommissionError, match="plugged in"):
        commission_port(rig, "fxo1")
    with pytest.raises(CommissionError, match="no such port"):
        commission_port(rig, "fxs9")


def test_cli_commission_fxs_and_fxo(tmp_path, capsys):
    from firmware.cli import main

    env_args = ["--sim", "--config-dir", str(tmp_path / "etc")]
    assert main(["commission", "fxs1", *env_args]) == 0
    assert "fxs1: line good" in capsys.readouterr().out
    assert main(["commission", "fxo1", *env_args, "--json", "--test-call", "30",
                 "--data-dir", str(tmp_path / "data")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_call"]["callerid"]["standard"] == "bell202"
    assert out["learned"]["disconnect"]["signal"] == "loop_drop"
    assert main(["commission", "fxs9", *env_args]) == 2
    assert "no such port" in capsys.readouterr().err
