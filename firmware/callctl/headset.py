"""Headset port (a local agent position): calls answered, placed, muted and hung up from
the control API, with an optional auto-answer. Cloud calls run at 16 kHz (a G.722 call
keeps its band), local calls at 8 kHz; unplugging the headset ends its call."""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING, Any

from drivers.chips.headset import Headset
from firmware.callctl.base import TIMEOUT, Ev, PortEvent, PortFsm
from firmware.callctl.dialplan import Match
from firmware.core.config import Config
from firmware.media import PortMedia
from firmware.sip import api
from foundation import events as lev
from foundation.reactor import Reactor

if TYPE_CHECKING:
    from firmware.callctl.controller import CallControl
log = logging.getLogger(__name__)

AUTO_ANSWER_S = 0.5  # a short ring so the agent hears a call arrive
WIDEBAND = 16000
NARROWBAND = 8000
ANSWER, HANGUP, DIAL = PortEvent.ANSWER, PortEvent.HANGUP, PortEvent.DIAL


class State(enum.Enum):
    IDLE = "idle"
    RINGING = "ringing"
    CALLING = "calling"
    CONNECTED = "connected"


class HeadsetPort(PortFsm):
    kind = "headset"

    def __init__(self, cc: CallControl, reactor: Reactor, name: str, media: PortMedia,
                 driver: Headset) -> None:
        super().__init__(cc, reactor, name, media, State.IDLE)
        self.driver = driver
        self.read_settings(cc.cfg)
        self.call: int | None = None
        self.caller: dict[str, Any] = {}
        self.handlers = {State.IDLE: self._idle, State.RINGING: self._ringing,
                         State.CALLING: self._calling, State.CONNECTED: self._connected}

    def read_settings(self, cfg: Config) -> None:
        self.auto_answer = cfg.calls.headset_auto_answer
        self.extension = cfg.calls.headset_extension

    # ---- the control API ----
    def answer(self) -> None:
        self.handle(Ev(ANSWER))

    def hangup(self) -> None:
        self.handle(Ev(HANGUP))

    def dial(self, digits: str) -> None:
        self.handle(Ev(DIAL, None, {"digits": digits}))

    def mute(self, on: bool) -> None:
        self.driver.mute(on)
        self.media.muted = bool(on)

    # ---- what the controller asks ----
    def calls(self) -> list[int]:
        return [self.call] if self.call is not None else []

    def free(self) -> bool:
        return self.state is State.IDLE and self.driver.present

    def active_call(self) -> int | None:
        return self.call

    def replace_call(self, old: int, new: int) -> None:
        if self.call == old:
            self.call = new
            if self.state is State.CONNECTED:
                self._connect()

    def _any(self, ev: Ev) -> bool:
        if ev.kind == api.INCOMING and not self.free():
            self.cc.reject(ev.call, 486 if self.driver.present else 480)
            return True
        if ev.kind == lev.HEADSET_UNPLUGGED and self.call is not None:
            log.warning("%s: unplugged during a call: hanging up", self.name)
            self._safe()
            return True
        return ev.call is not None and ev.call != self.call and ev.kind != api.INCOMING

    def _safe(self) -> None:
        if self.call is not None:
            self.cc.hangup(self.call)
        self._end()

    # ---- the states' handlers ----
    def _idle(self, ev: Ev) -> None:
        if ev.kind == api.INCOMING:
            self.call, self.caller = ev.call, dict(ev.data)
            self.cc.ringing(ev.call)
            if self.auto_answer:
                self._arm(AUTO_ANSWER_S, "auto_answer")
            self._set_state(State.RINGING)
        elif ev.kind == DIAL:
            self._place(ev.data["digits"])

    def _ringing(self, ev: Ev) -> None:
        if ev.kind in (ANSWER, TIMEOUT):
            self._disarm()
            self.cc.pick_up(self.call)
            self._talk()
        elif ev.kind == HANGUP:
            self.cc.reject(self.call, 486)
            self._end()
        elif ev.kind == api.ENDED:
            self._end()

    def _calling(self, ev: Ev) -> None:
        if ev.kind == api.ANSWERED:
            self._talk()
        elif ev.kind == api.EARLY_MEDIA:
            self._connect()
        elif ev.kind == HANGUP:
            self.cc.hangup(self.call)
            self._end()
        elif ev.kind == api.ENDED:
            self._end()

    def _connected(self, ev: Ev) -> None:
        if ev.kind == DIAL:
            self.cc.send_dtmf(self.call, ev.data["digits"])
        elif ev.kind == HANGUP:
            self.cc.hangup(self.call)
            self._end()
        elif ev.kind == api.ENDED:
            self._end()

    # ---- helpers ----
    def _place(self, digits: str) -> None:
        d = self.cc.dialplan.decide(digits, final=True)
        if d.match is Match.FULL and d.kind == "pickup":
            self._pickup(d.target)
            return
        call = self._invite(d, self.extension, "Headset") if d.match is Match.FULL else None
        if call is None:
            log.warning("%s: %r not dialled (no match, or no route)", self.name, digits)
            return
        self.call = call
        self._set_state(State.CALLING)

    def _pickup(self, slot: str) -> None:
        call = self.cc.pickup(self, slot)
        if call is not None:
            self.call = call
            self._talk()

    def _talk(self) -> None:
        self.media.start()
        self._connect()
        self._set_state(State.CONNECTED)

    def _connect(self) -> None:
        local = self.call is not None and self.cc.local.is_local(self.call)
        rate = NARROWBAND if local or self.call is None else WIDEBAND
        self.media.set_rate(rate)
        self.cc.connect(self.media, self.call, rate=rate)

    def _end(self) -> None:
        self._disarm()
        self.media.stop()
        self.media.set_rate(NARROWBAND)
        self.call, self.caller = None, {}
        self._set_state(State.IDLE)
