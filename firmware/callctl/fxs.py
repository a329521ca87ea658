"""FXS port: a branch phone on the SLIC. Dial tone and the dial plan, ringing with the
country's caller ID (FSK between the rings, or before the first UK style), calls, and the
hook-flash features common PBXs have (consult and transfer on hook-on, swap, call waiting,
park *7n and pickup); a held call left behind rings the phone again (recall)."""

from __future__ import annotations

import enum
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from cext import callerid as cid
from cext.dtmf import dtmf_samples
from cext.toneplans import CountryPlan, Tone
from cext.tones import ToneGenerator
from drivers.bus.pcm import LINE_RATE
from drivers.chips.si3215 import Si3215
from firmware.callctl.base import TIMEOUT, Ev, PortEvent, PortFsm
from firmware.callctl.dialplan import Decision, Dialplan, Match
from firmware.core.config import Config
from firmware.core.config.schema import FxsLine
from firmware.media import PortMedia, confirmation_tone
from firmware.sip import api
from foundation import events as lev
from foundation.reactor import Reactor

if TYPE_CHECKING:
    from firmware.callctl.controller import CallControl
log = logging.getLogger(__name__)

CID_DELAY_S = 0.5  # GR-30: the burst starts >= 500 ms after the first ring ends
UK_ALERT = Tone((2130.0, 2750.0), -20.0)  # SIN 227 dual-tone alert before the burst
UK_ALERT_S = 0.1
UK_GAP_S = 0.06
UK_TAIL_S = 0.3
NAME_CHARS = {"bell202": 15, "v23": 20}  # what GR-30 / ETSI CPE displays
CID_NUMBER_CHARS = set("0123456789+*#")
SEPARATORS = set(" -.()")  # written into numbers for people, not part of them
RECALL = PortEvent.RECALL
DTMF_LEVEL_DBM0 = -10.0  # far-end digits played into the earpiece


class State(enum.Enum):
    IDLE = "idle"
    RINGING = "ringing"
    DIALTONE = "dialtone"
    DIALING = "dialing"
    CALLING = "calling"
    CONNECTED = "connected"
    BUSY = "busy"
    REORDER = "reorder"
    CONFIRM = "confirm"
    FAILED = "failed"


class FxsPort(PortFsm):
    kind = "fxs"

    def __init__(self, cc: CallControl, reactor: Reactor, name: str, media: PortMedia,
                 driver: Si3215, plan: CountryPlan) -> None:
        super().__init__(cc, reactor, name, media, State.IDLE)
        self.driver, self.plan = driver, plan
        self.read_settings(cc.cfg)
        self.cadence = self.line.effective_ring_cadence
        self.cid_standard = self.line.effective_callerid
        self.active: int | None = None
        self.held: int | None = None
        self.waiting: int | None = None
        self.consult = False  # the held call was put on hold by us to dial a consult
        self.digits = ""
        self.dialled = ""  # number of the active outgoing call (blind transfer target)
        self.caller: dict[str, str] = {}
        media.on_digit = lambda d: self.handle(Ev(lev.DIGIT, None, {"digit": d, "method": "dtmf"}))
        self.handlers = {
            State.IDLE: self._idle, State.RINGING: self._ringing, State.DIALTONE: self._dialtone,
            State.DIALING: self._dialing, State.CALLING: self._calling,
            State.CONNECTED: self._connected, State.BUSY: self._hook_while_free,
            State.REORDER: self._hook_while_free, State.CONFIRM: self._hook_while_free,
            State.FAILED: self._failed}

    def read_settings(self, cfg: Config) -> None:
        self.line = cfg.line_as(self.name, FxsLine)
        self.extension, self.label = self.line.extension, self.line.name or self.name
        self.calls_cfg = cfg.calls
        self.dialplan = Dialplan(cfg, self.plan.code)

    # ---- what the controller asks ----
    def calls(self) -> list[int]:
        return [c for c in (self.active, self.held, self.waiting) if c is not None]

    def free(self) -> bool:
        return self.state is State.IDLE

    def active_call(self) -> int | None:
        return self.active

    def recall(self, call: int) -> bool:
        self.handle(Ev(RECALL, None, {"call": call}))
        return True

    def replace_call(self, old: int, new: int) -> None:
        for attr in ("active", "held", "waiting"):
            if getattr(self, attr) == old:
                setattr(self, attr, new)
        if self.active == new and self.state is State.CONNECTED:
            self._connect()

    # ---- every state ----
    def _any(self, ev: Ev) -> bool:
        if ev.kind in (lev.CHIP_FAILED, lev.POWER_ALARM):
            log.error("%s: %s %s: port out of service", self.name, ev.kind, ev.data)
            self._safe()
            self._set_state(State.FAILED)
            return True
        if ev.kind == api.INCOMING:
            if self.state is State.IDLE:
                return False
            self._offer_waiting(ev)
            return True
        if ev.call is not None and ev.call != self.active:
            self._side_call(ev)
            return True
        if ev.kind == api.DTMF and self.state is State.CONNECTED:
            self._play_digit(ev.data.get("digit", ""))
        return ev.kind in (api.DTMF, api.HELD, api.RESUMED, api.TRANSFER_DONE)

    def _play_digit(self, digit: str) -> None:
        """A digit from the far end (RFC 4733 or INFO carry no audio): play it as DTMF
        into the phone's earpiece, as an IVR's or agent's keypress sounds."""
        if digit and digit in "0123456789*#ABCDabcd":
            self.media.play(dtmf_samples(digit, level_dbm0=DTMF_LEVEL_DBM0))

    def _side_call(self, ev: Ev) -> None:
        """An event of the held or the waiting call."""
        if ev.kind != api.ENDED:
            return
        if ev.call == self.held:
            log.info("%s: the held call hung up", self.name)
            self.held, self.consult = None, False
        elif ev.call == self.waiting:
            self.waiting = None
            self.media.overlay(None)

    def _offer_waiting(self, ev: Ev) -> None:
        can_wait = (self.state is State.CONNECTED and self.calls_cfg.call_waiting
                    and self.waiting is None and self.held is None)
        if not can_wait:
            self.cc.reject(ev.call, 503 if self.state is State.FAILED else 486)
            return
        self.waiting = ev.call
        self.cc.ringing(ev.call)
        self.media.overlay("call_waiting")

    def _safe(self) -> None:
        for call in self.calls():
            self.cc.hangup(call)
        self.active = self.held = self.waiting = None
        self.consult = False
        self._disarm()
        self.media.stop()
        if self.driver.ringing:
            self.driver.stop_ring()
        if self.driver.off_hook:
            self._play_reorder()
        else:
            self._set_state(State.IDLE)

    # ---- the states' handlers ----
    def _idle(self, ev: Ev) -> None:
        if ev.kind == lev.OFF_HOOK:
            self._dialtone_now()
        elif ev.kind == api.INCOMING:
            self._ring(ev)
        elif ev.kind == RECALL:
            self._recall(ev.data["call"])

    def _ringing(self, ev: Ev) -> None:
        if ev.kind == TIMEOUT:
            self._ring_step(ev.data["what"])
        elif ev.kind == lev.OFF_HOOK:
            self._answer()
        elif ev.kind == api.ENDED:
            log.info("%s: the caller gave up", self.name)
            self.active = None
            self._stop_ringing()
            self._set_state(State.IDLE)

    def _dialtone(self, ev: Ev) -> None:
        if ev.kind == lev.DIGIT:
            self.media.tone(None)
            self.digits = ""
            self._digit(ev.data["digit"])
        elif ev.kind == TIMEOUT:
            self._play_reorder()
        else:
            self._hook_while_free(ev)

    def _dialing(self, ev: Ev) -> None:
        if ev.kind == lev.DIGIT:
            self._digit(ev.data["digit"])
        elif ev.kind == TIMEOUT:
            self._decide(final=True)
        else:
            self._hook_while_free(ev)

    def _calling(self, ev: Ev) -> None:
        if ev.kind == api.RINGING and self.media.pipe is None:
            self.media.tone("ringback")
        elif ev.kind == api.EARLY_MEDIA:
            self._connect()
        elif ev.kind == api.ANSWERED:
            self._connect()
            self._set_state(State.CONNECTED)
        elif ev.kind == api.ENDED:
            self._far_failed(int(ev.data.get("code") or 0))
        elif ev.kind == lev.ON_HOOK:
            self._hook_on_in_call()
        elif ev.kind == lev.FLASH and self.held is not None:
            self.cc.hangup(self.active)
            self.active = None
            self._back_to_held()

    def _connected(self, ev: Ev) -> None:
        if ev.kind == lev.DIGIT:
            self.cc.send_dtmf(self.active, ev.data["digit"])
        elif ev.kind == api.ANSWERED:
            self._connect()
        elif ev.kind == lev.FLASH:
            self._flash_in_call()
        elif ev.kind == lev.ON_HOOK:
            self._hook_on_in_call()
        elif ev.kind == api.ENDED:
            log.info("%s: the far end hung up", self.name)
            self.active = None
            self.media.disconnect()
            if self.held is not None:
                self._dialtone_now()
            else:
                self._play_reorder()

    def _failed(self, ev: Ev) -> None:
        if ev.kind == lev.OFF_HOOK:  # a restarted chip reports hook again
            self._dialtone_now()

    # ---- dialling ----
    def _dialtone_now(self) -> None:
        self.media.start()
        self.media.connect(None)
        self.media.tone("dial")
        self.digits = ""
        self._arm(self.calls_cfg.first_digit_s, "first_digit")
        self._set_state(State.DIALTONE)

    def _digit(self, digit: str) -> None:
        self.digits += digit
        self._decide(final=False)

    def _decide(self, final: bool) -> None:
        decision = self.dialplan.decide(self.digits, final=final)
        if decision.match is Match.NO_MATCH:
            log.info("%s: %r matches nothing in the dial plan", self.name, self.digits)
            self._play_reorder()
        elif decision.match is Match.FULL:
            self._disarm()
            self._place(decision)
        else:
            self._arm(self.calls_cfg.interdigit_s, "interdigit")
            self._set_state(State.DIALING)

    def _place(self, d: Decision) -> None:
        if d.kind == "park":
            self._park(d.target)
        elif d.kind == "pickup":
            self._pickup(d.target)
        elif (call := self._invite(d, self.extension, self.label)) is None:
            self._play_reorder()
        else:
            self.active, self.dialled = call, d.number
            self._set_state(State.CALLING)

    def _park(self, slot: str) -> None:
        if self.held is None or not self.cc.park(self.held, slot):
            self._play_reorder()
            return
        self.held, self.consult = None, False
        self._tone_state(State.CONFIRM, confirmation_tone(self.plan))

    def _pickup(self, slot: str) -> None:
        call = self.cc.pickup(self, slot)
        if call is None:
            self._play_reorder()
            return
        self.active = call
        self._connect()
        self._set_state(State.CONNECTED)

    # ---- in a call ----
    def _connect(self) -> None:
        self.cc.connect(self.media, self.active)

    def _far_failed(self, code: int) -> None:
        self.active = None
        self.media.disconnect()
        if code in (486, 600):
            self._tone_state(State.BUSY, "busy")
        else:
            self._play_reorder()

    def _flash_in_call(self) -> None:
        if self.waiting is not None:
            self.cc.hold(self.active)
            self.held, self.active, self.waiting = self.active, self.waiting, None
            self.consult = False
            self.media.overlay(None)
            self.cc.answer(self.active)
            self._connect()
        elif self.held is not None:
            self.cc.hold(self.active)
            self.cc.unhold(self.held)
            self.active, self.held = self.held, self.active
            self._connect()
        else:
            self.cc.hold(self.active)
            self.held, self.active, self.consult = self.active, None, True
            self._dialtone_now()

    def _hook_on_in_call(self) -> None:
        if self.held is not None and self.consult and self.active is not None:
            log.info("%s: transfer %s -> %s", self.name, self.held, self.dialled)
            self.cc.join(self, self.held, self.active, target=self.dialled)
            self.active = self.held = None
            self.consult = False
        elif self.active is not None:
            self.cc.hangup(self.active)
            self.active = None
        self._hung_up()

    def _hook_while_free(self, ev: Ev) -> None:
        if ev.kind == lev.ON_HOOK:
            self._hung_up()
        elif ev.kind == lev.FLASH:
            self._back_to_held()

    def _back_to_held(self) -> None:
        if self.held is None:
            return
        self._disarm()
        self.active, self.held, self.consult = self.held, None, False
        self.cc.unhold(self.active)
        self.media.tone(None)
        self._connect()
        self._set_state(State.CONNECTED)

    def _hung_up(self) -> None:
        self._disarm()
        self.media.stop()
        left = self.held if self.held is not None else self.waiting
        self.held = self.waiting = None
        self.consult = False
        if left is not None:
            self._recall(left)
        else:
            self._set_state(State.IDLE)

    def _play_reorder(self) -> None:
        self._tone_state(State.REORDER, "reorder")

    def _tone_state(self, state: State, tone: str | Tone) -> None:
        self._disarm()
        self.media.connect(None)
        self.media.tone(tone)
        self._set_state(state)

    # ---- ringing ----
    def _ring(self, ev: Ev) -> None:
        self.active = ev.call
        self.caller = {"number": ev.data.get("from_number") or "",
                       "name": ev.data.get("from_name") or ""}
        if self.plan.callerid_when == "before_ring":
            self._cid_before_ring()
        elif self.driver.ring(self.cadence):
            self._arm(self.cadence[0] + CID_DELAY_S, "cid")
        else:  # the chip is not running (or the phone is already off hook)
            log.warning("%s: cannot ring the phone; call %s refused", self.name, ev.call)
            self.cc.reject(ev.call, 480)
            self.active = None
            return
        self.cc.ringing(ev.call)
        self._set_state(State.RINGING)

    def _recall(self, call: int) -> None:
        """Ring the phone to hand back a call left held (no caller ID: it is ours)."""
        log.info("%s: recall of call %s", self.name, call)
        self.active, self.caller = call, {}
        self.driver.ring(self.cadence)
        self._set_state(State.RINGING)

    def _ring_step(self, what: str) -> None:
        if what == "cid":
            self.driver.set_linefeed("on_hook_transmission")
            self.media.play(self._cid_audio())
            self._arm(self.cadence[1] - CID_DELAY_S, "ring")
        elif what == "ring":
            self.driver.ring(self.cadence)

    def _cid_before_ring(self) -> None:
        self.driver.set_linefeed("on_hook_transmission")
        alert = ToneGenerator(UK_ALERT).generate(int(UK_ALERT_S * LINE_RATE))
        gap = np.zeros(int(UK_GAP_S * LINE_RATE), dtype=np.int16)
        tail = np.zeros(int(UK_TAIL_S * LINE_RATE), dtype=np.int16)
        head = [] if self.cid_standard == "dtmf" else [alert, gap]
        burst = np.concatenate([*head, self._cid_audio(), tail])
        self.media.play(burst, then=lambda: self.handle(Ev(TIMEOUT, None, {"what": "ring"})))

    def _cid_audio(self) -> np.ndarray:
        number, reason = cid_number(self.caller.get("number", ""))
        if self.cid_standard == "dtmf":
            return cid.dtmf_clip_samples(number, reason)
        stamp = time.strftime("%m%d%H%M", time.localtime(self.reactor.clock.wall()))
        name = self._display_name(number, reason)
        message = {"number": number, "name": name, "datetime": stamp,
                   "reason": reason if number is None else None}
        return cid.modulate(cid.encode(message, fmt="mdmf"), standard=self.cid_standard)

    def _display_name(self, number: str | None, reason: str | None) -> str | None:
        """The caller's name; a SIP user that is no phone number (agent7) stands in."""
        name = self.caller.get("name", "")
        if not name and number is None and reason != "private":
            name = self.caller.get("number", "")
        return cid_name(name, NAME_CHARS.get(self.cid_standard, 20))

    def _stop_ringing(self) -> None:
        self._disarm()
        self.media.cancel_samples()
        self.driver.stop_ring()
        self.driver.set_linefeed("forward_active")

    def _answer(self) -> None:
        self._stop_ringing()
        self.media.start()
        self.cc.pick_up(self.active)
        self._connect()
        self._set_state(State.CONNECTED)


def cid_number(number: str) -> tuple[str | None, str | None]:
    """(number, None) when it is a phone number, else (None, 'private' | 'unavailable'):
    a SIP user such as "agent7" is not shown as a mangled "7"."""
    digits = "".join(ch for ch in number if ch not in SEPARATORS)
    if digits and set(digits) <= CID_NUMBER_CHARS:
        return digits[:20], None
    withheld = number.lower() in ("anonymous", "private", "restricted", "withheld")
    return None, "private" if withheld else "unavailable"


def cid_name(name: str, limit: int) -> str | None:
    """The name as the display takes it: Latin-1, cut to what the CPE shows."""
    text = name.encode("latin-1", "replace").decode("latin-1").strip()[:limit]
    return text or None
