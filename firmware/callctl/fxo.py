"""FXO port: a PSTN line on the DAA. An inbound call is offered to the cloud after
calls.answer_fxo_after_rings (caller ID decoded from the line between the rings) and the
line is seized when the cloud answers; outbound (cloud, local phones, emergency) seizes,
waits for dial tone and dials DTMF, answered once dialled (an analog line gives no answer
supervision). Disconnect: loop drop, reversal, or a busy tone when configured."""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from cext.callerid import CallerIdDecoder
from cext.cpt import CallProgressDetector
from cext.dtmf import dtmf_samples
from cext.toneplans import CountryPlan
from drivers.chips.si3050 import Si3050
from firmware.callctl.base import TIMEOUT, Ev, PortEvent, PortFsm
from firmware.core.config import Config
from firmware.core.config.schema import FxoLine
from firmware.media import PortMedia
from firmware.sip import api
from foundation import events as lev
from foundation.errors import BranchlineError
from foundation.reactor import Reactor

if TYPE_CHECKING:
    from firmware.callctl.controller import CallControl
log = logging.getLogger(__name__)

DIAL_WAIT_S = 1.5  # no dial tone heard by then: dial anyway (many PBX lines are silent)
CPT, CALLER_ID = PortEvent.CPT, PortEvent.CALLER_ID
DISCONNECT_TONES = ("busy", "reorder", "congestion")
DTMF_KEYS = set("0123456789*#ABCDabcd")
DIAL_ON_MS, DIAL_OFF_MS = 100, 100
DIAL_LEVEL_DBM0 = -7.0


class State(enum.Enum):
    IDLE = "idle"
    RINGING = "ringing"
    OFFERED = "offered"
    SEIZING = "seizing"
    DIALING = "dialing"
    CONNECTED = "connected"
    IN_USE = "in_use"
    FAILED = "failed"


class FxoPort(PortFsm):
    kind = "fxo"

    def __init__(self, cc: CallControl, reactor: Reactor, name: str, media: PortMedia,
                 driver: Si3050, plan: CountryPlan) -> None:
        super().__init__(cc, reactor, name, media, State.IDLE)
        self.driver, self.plan = driver, plan
        self.read_settings(cc.cfg)
        self.call: int | None = None
        self.caller: dict[str, Any] = {}
        self.rings = 0
        self.declined = False
        self.digits = ""
        self._cid = CallerIdDecoder(cc.cfg.line(name).effective_callerid)
        self._cpt = CallProgressDetector(plan.code)
        media.add_tap(self._listen)
        media.on_digit = lambda d: self.handle(Ev(lev.DIGIT, None, {"digit": d, "method": "dtmf"}))
        self.handlers = {
            State.IDLE: self._idle, State.RINGING: self._ringing, State.OFFERED: self._offered,
            State.SEIZING: self._seizing, State.DIALING: self._dialing,
            State.CONNECTED: self._connected, State.IN_USE: self._in_use,
            State.FAILED: lambda ev: None}

    def read_settings(self, cfg: Config) -> None:
        line = cfg.line_as(self.name, FxoLine)
        self.number, self.label = line.number, line.name or self.name
        self.answer_after = cfg.calls.answer_fxo_after_rings

    # ---- what the controller asks ----
    def calls(self) -> list[int]:
        return [self.call] if self.call is not None else []

    def free(self) -> bool:
        return (self.state is State.IDLE and not getattr(self.driver, "failed", False)
                and not getattr(self.driver, "line_in_use", False))

    def active_call(self) -> int | None:
        return self.call

    def replace_call(self, old: int, new: int) -> None:
        if self.call == old:
            self.call = new
            if self.state is State.CONNECTED:
                self._connect()

    def status(self) -> dict[str, Any]:
        return {**super().status(), "caller": dict(self.caller), "rings": self.rings}

    # ---- line audio: caller ID on hook, call progress off hook ----
    def _listen(self, frame: np.ndarray) -> None:
        if self.state in (State.IDLE, State.RINGING, State.OFFERED):
            for message in self._cid.process(frame):
                if message.get("checksum_ok", True):
                    self.handle(Ev(CALLER_ID, None, message))
        elif self.state in (State.SEIZING, State.CONNECTED):
            for event in self._cpt.process(frame):
                if event.tone is not None:
                    self.handle(Ev(CPT, None, {"tone": event.tone}))

    # ---- every state ----
    def _any(self, ev: Ev) -> bool:
        if ev.kind == lev.CHIP_FAILED:
            log.error("%s: chip failed (%s): port out of service", self.name, ev.data)
            self._safe()
            self._set_state(State.FAILED)
            return True
        if ev.kind == CALLER_ID:
            self.caller = dict(ev.data)
            log.info("%s: caller ID %s %r", self.name, ev.data.get("number"), ev.data.get("name"))
            self.cc.caller_id(self.name, self.caller)
            return True
        if ev.kind == api.INCOMING and self.state is not State.IDLE:
            self.cc.reject(ev.call, 503)
            return True
        if ev.call is not None and ev.call != self.call and ev.kind != api.INCOMING:
            return True  # an event of a call we no longer hold
        return False

    def _safe(self) -> None:
        if self.call is not None:
            self.cc.hangup(self.call)
        self._release()

    # ---- the states' handlers ----
    def _idle(self, ev: Ev) -> None:
        if ev.kind == lev.RING_START:
            self._set_state(State.RINGING)
            self._ring(ev)
        elif ev.kind == api.INCOMING:
            self._seize_to_dial(ev)
        elif ev.kind == lev.LINE_IN_USE:
            self._set_state(State.IN_USE)

    def _ringing(self, ev: Ev) -> None:
        if ev.kind == lev.RING_START:
            self._ring(ev)
        elif ev.kind == lev.RING_STOP:
            log.info("%s: the caller gave up after %d rings", self.name, self.rings)
            self._release()
        elif ev.kind == lev.LINE_IN_USE:
            self._set_state(State.IN_USE)

    def _offered(self, ev: Ev) -> None:
        if ev.kind == api.ANSWERED:
            self._seize_for_call()
        elif ev.kind == lev.RING_STOP:
            log.info("%s: the caller gave up before the cloud answered", self.name)
            self.cc.hangup(self.call)
            self._release()
        elif ev.kind == api.ENDED:
            log.info("%s: the cloud declined the call (%s)", self.name, ev.data.get("code"))
            self.call, self.declined = None, True
            self._set_state(State.RINGING)
        elif ev.kind == lev.LINE_IN_USE:
            self.cc.hangup(self.call)
            self.call = None
            self._set_state(State.IN_USE)

    def _seizing(self, ev: Ev) -> None:
        if (ev.kind == CPT and ev.data["tone"] == "dial") or ev.kind == TIMEOUT:
            self._dial()
        elif ev.kind == api.ENDED:
            self._release()

    def _dialing(self, ev: Ev) -> None:
        if ev.kind == TIMEOUT and ev.data.get("what") == "dialled":
            self.driver.set_in_call(True)
            self.cc.answer(self.call)
            self._connect()
            self._set_state(State.CONNECTED)
        elif ev.kind == api.ENDED:
            self._release()

    def _connected(self, ev: Ev) -> None:
        if ev.kind == lev.DIGIT:
            self.cc.send_dtmf(self.call, ev.data["digit"])
        elif ev.kind == api.DTMF and ev.data.get("digit", "") in DTMF_KEYS:
            self.media.play(dtmf_samples(ev.data["digit"], level_dbm0=DIAL_LEVEL_DBM0))
        elif ev.kind == CPT and ev.data["tone"] in DISCONNECT_TONES:
            log.info("%s: %s tone on the line", self.name, ev.data["tone"])
            self.driver.tone_disconnect()  # raises DISCONNECT when "tone" is configured
        elif ev.kind == lev.DISCONNECT:
            log.info("%s: the PSTN caller hung up (%s)", self.name, ev.data.get("signal"))
            self.cc.hangup(self.call)
            self._release()
        elif ev.kind == api.ENDED:
            self._release()

    def _in_use(self, ev: Ev) -> None:
        if ev.kind == lev.LINE_FREE:
            self._release()

    # ---- inbound ----
    def _ring(self, ev: Ev) -> None:
        self.rings = int(ev.data.get("count") or self.rings + 1)
        if self.rings >= self.answer_after and self.call is None and not self.declined:
            self._offer()

    def _offer(self) -> None:
        ani = self.caller.get("number") or "anonymous"
        dnis = self.number or self.label
        headers = {"X-Branchline-Line": self.name, "X-Branchline-DNIS": dnis}
        call = self.cc.call_out(self, dnis, from_number=ani,
                                from_name=self.caller.get("name") or None,
                                headers=headers, direction="inbound")
        if call is None:
            self.declined = True
            return
        self.call = call
        self._set_state(State.OFFERED)

    def _seize_for_call(self) -> None:
        if not self._seize(in_call=True):
            self.cc.hangup(self.call)
            self._release()
            return
        self._connect()
        self._set_state(State.CONNECTED)

    # ---- outbound ----
    def _seize_to_dial(self, ev: Ev) -> None:
        self.call = ev.call
        self.digits = "".join(ch for ch in ev.data.get("to_number") or "" if ch in DTMF_KEYS)
        if not self.digits or not self._seize(in_call=False):
            self.cc.reject(ev.call, 503 if self.digits else 484)
            self.call = None
            self._release()
            return
        self.cc.ringing(self.call)
        self._arm(DIAL_WAIT_S, "dial_wait")
        self._set_state(State.SEIZING)

    def _dial(self) -> None:
        self._disarm()
        log.info("%s: dialling %s", self.name, self.digits)
        audio = dtmf_samples(self.digits, DIAL_ON_MS, DIAL_OFF_MS, level_dbm0=DIAL_LEVEL_DBM0)
        self.media.play(audio, then=lambda: self.handle(Ev(TIMEOUT, None, {"what": "dialled"})))
        self._set_state(State.DIALING)

    # ---- line control ----
    def _seize(self, in_call: bool) -> bool:
        try:
            self.driver.seize(in_call=in_call)
        except BranchlineError as exc:
            log.error("%s: %s", self.name, exc)
            return False
        self._cpt.reset()
        self.media.start()
        return True

    def _connect(self) -> None:
        self.cc.connect(self.media, self.call)

    def _release(self) -> None:
        self._disarm()
        self.media.stop()
        if self.driver.offhook:
            try:
                self.driver.release()
            except BranchlineError as exc:
                log.error("%s: %s", self.name, exc)
        self.call, self.caller, self.rings, self.declined, self.digits = None, {}, 0, False, ""
        self._cid.reset()
        self._set_state(State.IDLE)
