"""The power-fail lifeline on the twins: the relay driver (drivers/lifeline.py), its coil
and contacts (drivers/sim/lifeline_sim.py) and the core's hooks (firmware/gateway.py).

The SimBoard is built with the relay's contacts between the phone on fxs1 and the CO on
fxo1. With the core stopped the phone is on the PSTN: off hook it hears the CO's dial
tone (350+440 Hz in the US plan, measured with cext.cpt and a projection on each
component) and the CO sees its loop. With the core running the phone is on its SLIC: it
hears the box's dial tone and the CO sees no loop. A reactor that stops toggling the
relay's GPIO (pulse drive) drops the relay within the card's monostable time; stopping
the Gateway or a failed lifeline port gives the phone back to the PSTN. Fake time.
"""

from __future__ import annotations

import numpy as np
import pytest

from cext.cpt import CallProgressDetector
from drivers.bus.gpio import SimGpio
from drivers.lifeline import TOGGLE_S, Lifeline, Relay
from drivers.sim.board import SimBoard
from drivers.sim.lifeline_sim import SimRelay
from firmware.core.config import Config, ConfigError, default_document, validate
from firmware.core.runtime import Core
from firmware.gateway import Gateway
from foundation import events as ev
from foundation.events import LineEvent
from foundation.reactor import FakeClock, Reactor

RATE = 8000
HOLD_S = 1.0  # the default board.lifeline.pulse_hold_ms


def make_doc(**lifeline) -> dict:
    doc = default_document()
    doc["board"]["headset"]["enabled"] = False
    doc["board"]["lifeline"].update(lifeline)
    return validate(doc)


def make_board(doc: dict | None = None, **kw) -> tuple[Reactor, SimBoard]:
    reactor = Reactor(FakeClock())
    return reactor, SimBoard(reactor, doc or make_doc(), lifeline_bypass=True, **kw)


def tone_level(x: np.ndarray, hz: float) -> float:
    """RMS of the `hz` component (projection on cos/sin)."""
    x = np.asarray(x, dtype=float)
    t = np.arange(len(x)) / RATE
    c, s = np.dot(x, np.cos(2 * np.pi * hz * t)), np.dot(x, np.sin(2 * np.pi * hz * t))
    return float(np.hypot(c, s) * np.sqrt(2) / max(len(x), 1))


def sine(hz: float, seconds: float, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.round(amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def hears_dial_tone(samples: np.ndarray, country: str = "us") -> bool:
    events = CallProgressDetector(country).process(np.asarray(samples, dtype=np.int16))
    return any(e.tone == "dial" for e in events)


def us_dial_tone_components(samples: np.ndarray) -> tuple[float, float, float]:
    """(350 Hz rms, 440 Hz rms, overall rms) of the last second."""
    tail = np.asarray(samples[-RATE:], dtype=float)
    return tone_level(tail, 350.0), tone_level(tail, 440.0), float(np.sqrt(np.mean(tail ** 2)))


def off_hook_and_listen(reactor: Reactor, phone, seconds: float = 2.0) -> np.ndarray:
    before = len(phone.heard)
    phone.off_hook()
    reactor.run_for(seconds)
    return phone.heard[before:]


# ---- the relay's twin ----------------------------------------------------------------------

def test_level_drive_follows_the_pin():
    reactor, gpio = Reactor(FakeClock()), SimGpio()
    relay = SimRelay(reactor, gpio, 26, drive="level")
    lifeline = Lifeline(gpio, reactor, make_doc(drive="level")["board"]["lifeline"])
    assert not relay.energised
    lifeline.energise()
    reactor.run_for(5.0)
    assert relay.energised and gpio.level(26)
    lifeline.release("test")
    assert not relay.energised and lifeline.state is Relay.RELEASED


def test_pulse_drive_holds_while_toggled_and_drops_within_the_hold_time_when_it_stops():
    reactor, gpio = Reactor(FakeClock()), SimGpio()
    relay = SimRelay(reactor, gpio, 26, drive="pulse", hold_s=HOLD_S)
    lifeline = Lifeline(gpio, reactor, make_doc(drive="pulse", pulse_hold_ms=1000)["board"]["lifeline"])
    lifeline.energise()
    reactor.run_for(10.0)
    assert relay.energised and relay.changes == [(True, 1000.0)]  # never dropped meanwhile
    gpio.write(26, True)  # the core hangs with the pin high: no more edges
    reactor.unregister_timer(lifeline.toggle_timer)
    hung_at = reactor.now()
    reactor.run_for(HOLD_S + 2 * TOGGLE_S)
    assert not relay.energised
    dropped_at = relay.changes[-1][1]
    assert hung_at < dropped_at <= hung_at + HOLD_S


def test_a_pin_stuck_high_from_the_start_never_holds_the_relay():
    reactor, gpio = Reactor(FakeClock()), SimGpio()
    relay = SimRelay(reactor, gpio, 26, drive="pulse", hold_s=HOLD_S)
    gpio.setup_output(26, True)
    reactor.run_for(3.0)
    assert not relay.energised


# ---- the phone on the PSTN while the core is stopped ----------------------------------------

def test_core_stopped_the_phone_on_fxs1_hears_the_cos_dial_tone():
    reactor, board = make_board()
    co, phone = board.cos["fxo1"], board.phones["fxs1"]
    heard = off_hook_and_listen(reactor, phone)
    assert co.state == "dialtone" and co.answered  # the phone closed the CO's loop
    assert hears_dial_tone(heard)
    f350, f440, total = us_dial_tone_components(heard)
    assert f350 > 0.3 * total and f440 > 0.3 * total
    assert f350 ** 2 + f440 ** 2 > 0.9 * total ** 2  # nothing else on the line
    assert board.drivers["fxs1"].status()["hook"] == "on"  # the SLIC never saw the loop


def test_core_stopped_the_co_rings_the_phone_and_the_phone_answers_it():
    reactor, board = make_board()
    co, phone = board.cos["fxo1"], board.phones["fxs1"]
    co.ring(callerid=None)
    reactor.run_for(1.0)
    assert phone.is_ringing
    phone.off_hook()
    reactor.run_for(0.5)
    assert not phone.is_ringing and co.state == "call"  # ring trip through the relay
    co.play(sine(1000.0, 3.0))
    phone.speak(sine(600.0, 3.0))
    reactor.run_for(1.5)
    assert tone_level(phone.heard[-RATE // 2:], 1000.0) > 3000  # far end -> phone
    assert tone_level(co.heard[-RATE // 2:], 600.0) > 3000  # phone -> far end


def test_the_other_fxs_phone_is_not_on_the_relay():
    reactor, board = make_board()
    heard = off_hook_and_listen(reactor, board.phones["fxs2"])
    assert board.cos["fxo1"].state == "idle"
    assert not hears_dial_tone(heard)  # no core: nobody gives fxs2 a dial tone


# ---- the core running: the phone is on its SLIC --------------------------------------------

def start_core(board: SimBoard, reactor: Reactor) -> Core:
    core = Core(board.doc, board, reactor)
    core.start()
    reactor.run_for(0.5)
    return core


def test_core_running_the_phone_hears_the_boxs_dial_tone_and_the_co_sees_no_loop():
    reactor, board = make_board()
    core = start_core(board, reactor)
    assert board.lifeline.state is Relay.ENERGISED and board.relay.energised
    co = board.cos["fxo1"]
    heard = off_hook_and_listen(reactor, board.phones["fxs1"])
    assert core.gateway.book.ports["fxs1"].state == "off-hook"  # the SLIC saw the loop
    assert co.state == "idle" and not co.answered
    assert not [what for what, _t in co.events if what == "seized"]
    assert hears_dial_tone(heard)  # the box's, through the SLIC and the PCM
    core.stop()


def test_the_boxs_dial_tone_is_not_the_cos(tmp_path):
    """A German CO (425 Hz) behind a US box (350+440 Hz) tells the two apart."""
    doc = default_document()
    doc["board"]["headset"]["enabled"] = False
    doc["lines"]["fxo1"]["country"] = "de"
    reactor, board = make_board(validate(doc))
    phone = board.phones["fxs1"]
    heard = off_hook_and_listen(reactor, phone)
    assert hears_dial_tone(heard, "de") and not hears_dial_tone(heard, "us")
    phone.on_hook()
    core = start_core(board, reactor)
    heard = off_hook_and_listen(reactor, phone)
    assert hears_dial_tone(heard, "us") and not hears_dial_tone(heard, "de")
    core.stop()


def test_a_hung_reactor_drops_the_relay_and_the_phone_gets_the_co_again():
    reactor, board = make_board()
    core = start_core(board, reactor)
    phone, co = board.phones["fxs1"], board.cos["fxo1"]
    off_hook_and_listen(reactor, phone, 1.0)
    assert co.state == "idle"
    reactor.unregister_timer(board.lifeline.toggle_timer)  # the reactor stops toggling
    hung_at = reactor.now()
    reactor.run_for(HOLD_S + 0.1)
    energised, when = board.relay.changes[-1]
    assert not energised and when <= hung_at + HOLD_S
    heard = off_hook_and_listen(reactor, phone, 2.0)  # already off hook: keep listening
    assert co.state == "dialtone" and hears_dial_tone(heard)
    core.stop()


# ---- releases ------------------------------------------------------------------------------

def test_core_stop_gives_the_phone_back_to_the_pstn():
    reactor, board = make_board()
    core = start_core(board, reactor)
    assert board.relay.energised
    core.stop()
    reactor.run_for(HOLD_S + 0.1)
    assert not board.relay.energised
    heard = off_hook_and_listen(reactor, board.phones["fxs1"])
    assert board.cos["fxo1"].state == "dialtone" and hears_dial_tone(heard)


def test_gateway_stop_releases_the_relay():
    reactor, board = make_board()
    gateway = Gateway(Config.from_doc(board.doc), board, reactor)
    gateway.start()
    reactor.run_for(0.5)
    assert board.lifeline.energised and board.relay.energised
    gateway.stop()
    assert board.lifeline.state is Relay.RELEASED
    assert not board.gpio.level(board.lifeline.pin)  # the feed stops at once...
    reactor.run_for(HOLD_S + 0.1)
    assert not board.relay.energised  # ...and the monostable lets go within its time
    heard = off_hook_and_listen(reactor, board.phones["fxs1"])
    assert hears_dial_tone(heard)


def test_level_drive_releases_at_once_on_stop():
    reactor, board = make_board(make_doc(drive="level"))
    gateway = Gateway(Config.from_doc(board.doc), board, reactor)
    gateway.start()
    reactor.run_for(0.5)
    assert board.relay.energised
    gateway.stop()
    assert not board.relay.energised


def test_a_failed_fxs_port_never_energises_the_relay():
    reactor, board = make_board(unseated=("slic0",))
    gateway = Gateway(Config.from_doc(board.doc), board, reactor)
    gateway.start()
    reactor.run_for(0.5)
    assert gateway.book.ports["fxs1"].state == "failed"
    assert board.lifeline.state is Relay.RELEASED and "fxs1" in board.lifeline.reason
    assert not board.relay.energised
    heard = off_hook_and_listen(reactor, board.phones["fxs1"])
    assert hears_dial_tone(heard)  # the branch still has its phone
    gateway.stop()


@pytest.mark.parametrize("port", ["fxs1", "fxo1"])
def test_a_lifeline_port_failing_later_releases_the_relay(port):
    reactor, board = make_board()
    gateway = Gateway(Config.from_doc(board.doc), board, reactor)
    gateway.start()
    reactor.run_for(0.5)
    assert board.lifeline.energised
    board.emit(LineEvent(port, ev.CHIP_FAILED, reactor.now(), {"error": "test: chip gone"}))
    assert board.lifeline.state is Relay.RELEASED
    assert board.lifeline.reason == f"{port} failed: test: chip gone"
    gateway.stop()


def test_fxs2_failing_keeps_the_relay():
    reactor, board = make_board()
    gateway = Gateway(Config.from_doc(board.doc), board, reactor)
    gateway.start()
    reactor.run_for(0.5)
    board.emit(LineEvent("fxs2", ev.CHIP_FAILED, reactor.now(), {"error": "test"}))
    assert board.lifeline.energised
    gateway.stop()


def test_a_disabled_lifeline_builds_nothing():
    reactor, board = make_board(make_doc(enabled=False))
    assert board.lifeline is None and board.relay is None
    gateway = Gateway(Config.from_doc(board.doc), board, reactor)
    gateway.start()
    reactor.run_for(0.3)
    gateway.stop()


def test_a_gateway_without_the_lifeline_leaves_it_released():
    reactor, board = make_board()
    gateway = Gateway(Config.from_doc(board.doc), board, reactor, lifeline=False)
    gateway.start()
    reactor.run_for(0.5)
    assert not board.lifeline.energised and not board.relay.energised
    gateway.stop()



def test_the_core_waits_for_a_pstn_call_on_the_lifeline_to_end_before_taking_the_phone():
    """The FXO driver's LINE_IN_USE/LINE_FREE are played here: a DAA that starts while a
    phone is already off hook on its line learns that voltage as idle (see the report)."""
    reactor, board = make_board()
    gateway = Gateway(Config.from_doc(board.doc), board, reactor)
    board.emit(LineEvent("fxo1", ev.LINE_IN_USE, reactor.now()))
    gateway.start()
    reactor.run_for(0.5)
    assert not board.lifeline.energised  # the call through the relay is not cut
    board.emit(LineEvent("fxo1", ev.LINE_FREE, reactor.now()))
    assert board.lifeline.energised
    reactor.run_for(0.2)
    assert board.relay.energised
    gateway.stop()


# ---- the config ----------------------------------------------------------------------------

def test_config_defaults_and_rules():
    assert default_document()["board"]["lifeline"] == {
        "enabled": True, "gpio": 26, "fxs": "fxs1", "fxo": "fxo1", "drive": "pulse",
        "pulse_hold_ms": 1000}
    doc = default_document()
    doc["board"]["lifeline"]["fxs"] = "fxo1"
    with pytest.raises(ConfigError, match=r"board.lifeline.fxs: 'fxo1' is an fxo line"):
        validate(doc)
    doc = default_document()
    doc["board"]["lifeline"]["gpio"] = 23
    with pytest.raises(ConfigError, match=r"board.lifeline.gpio: GPIO 23 is also used by "
                                          r"board.chips.daa0.int_gpio"):
        validate(doc)
    doc = default_document()
    doc["board"]["lifeline"]["fxo"] = "fxo9"
    with pytest.raises(ConfigError, match=r"board.lifeline.fxo: 'fxo9' is not a line"):
        validate(doc)
    doc["lines"].pop("fxo1")  # a board without an FXO line: nothing for the relay to switch
    assert validate(doc)["board"]["lifeline"]["fxo"] == "fxo9"
