"""One PSTN caller's local fallback chain, when the cloud cannot take the call (its cloud
leg died, or it arrived in SURVIVABLE). The FXO port holds handle `a` of a local pair and
this object the other end `b`: what it puts in b's pipe the caller hears, the caller's
DTMF arrives on b. Agents are rung with pairs of their own (`c` here, `d` on the phone);
the first that answers is spliced to the caller (the FXO port and its CDR go on)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from cext.tones import ToneGenerator
from firmware.callctl.base import Ev
from firmware.callctl.fxo import FxoPort
from firmware.callctl.model import Caller
from firmware.sip import api
from firmware.survive import prompts
from foundation.reactor import NEVER

if TYPE_CHECKING:
    from firmware.survive.continuity import Continuity

log = logging.getLogger(__name__)

FRAME = 160
FRAME_S = 0.02
DIGIT_WAIT_S = 20.0  # no key for this long in callback capture: prompt again, then give up
MAX_DIGITS = 20
KEY_GUARD_S = 0.3  # keys heard while (and just after) we play are our own echo


class Stage(enum.StrEnum):
    """survive.fallback's stages (a stage whose targets are missing or busy is skipped;
    none left: the caller hears the done tone and is hung up)."""

    ANNOUNCE = "announce"  # prompts.announce (~1 s), then the first stage
    HEADSET = "headset"  # the headset rings (ringback to the caller) for headset_ring_s
    HUNT = "hunt"  # survive.hunt_group (default: every FXS line), one more every hunt_step_s
    QUEUE = "queue"  # music on hold, announcements, phones still rung; handback when up
    CALLBACK = "callback"  # rings cancelled; the caller keys a number ending in #
    CONFIRM = "confirm"  # the number read back; 1 stores it (cdr.callback_request)
    DONE = "done"  # answered, handed back, hung up, or the caller left


class Fallback:
    kind = "fallback"

    def __init__(self, cont: Continuity, fxo: Caller, a: int, b: int, why: str) -> None:
        if not isinstance(fxo, FxoPort):
            raise TypeError(f"{fxo.name}: a fallback keeps a PSTN caller on an FXO port")
        self.cont, self.cc, self.reactor = cont, cont.cc, cont.reactor
        self.fxo, self.a, self.b = fxo, a, b
        self.name = fxo.name
        self.state = Stage.ANNOUNCE
        self.why = why
        self.ani = fxo.caller.get("number") or "anonymous"
        self.cnam = fxo.caller.get("name") or ""
        self.dnis = fxo.number or fxo.label
        self.started = self.reactor.now()
        self.stages = [Stage(s) for s in self.cont.cfg.fallback]
        self.rings: dict[int, str] = {}  # our handle c -> the port rung
        self.hunt: list[str] = []  # phones of the hunt group not rung yet
        self.cloud_call: int | None = None  # the handback INVITE
        self.number = ""
        self._samples = np.zeros(0, dtype=np.int16)
        self._then: Callable[[], None] | None = None
        self._base: ToneGenerator | np.ndarray | None = None  # music on hold: looped
        self._loop_at = 0
        self._quiet_until = 0.0
        self._frames = self.reactor.register_timer(self._tick, NEVER)
        self._timer = self.reactor.register_timer(self._expired, NEVER)
        self._step = self.reactor.register_timer(self._hunt_step, NEVER)
        self._on_expiry: Callable[[], None] | None = None
        self._enter: dict[Stage, Callable[[], bool]] = {
            Stage.HEADSET: self._enter_headset, Stage.HUNT: self._enter_hunt,
            Stage.QUEUE: self._enter_queue, Stage.CALLBACK: self._enter_callback}

    # ---- life cycle ----
    def start(self) -> None:
        log.warning("%s: caller %s re-routed locally (%s)", self.name, self.ani, self.why)
        self.cc.record(f"fallback:{self.name}", "CLOUD", self.state.name)
        self.reactor.update_timer(self._frames, self.reactor.now())
        self.cont.start_recording(self)
        self._play(prompts.announce(self.cont.cfg.announcement), self._next_stage)

    def waited(self) -> float:
        return self.reactor.now() - self.started

    def status(self) -> dict[str, Any]:
        return {"line": self.name, "stage": self.state.value, "ani": self.ani,
                "waited_s": round(self.waited(), 1), "ringing": sorted(self.rings.values()),
                "handback": self.cloud_call is not None}

    def _set_state(self, new: Stage, reason: str) -> None:
        old = self.state
        if new is old:
            return
        log.info("fallback %s: %s -> %s (%s)", self.name, old.name, new.name, reason)
        self.state = new
        self.cc.record(f"fallback:{self.name}", old.name, new.name)

    # ---- events of b (the caller), c (agents rung) and the handback call ----
    def handle(self, ev: Ev) -> None:
        try:
            if ev.call == self.b:
                self._caller(ev)
            elif ev.call is not None and ev.call == self.cloud_call:
                self._handback_event(ev.call, ev)
            elif ev.call in self.rings:
                self._ring_event(ev.call, ev)
        except Exception:  # noqa: BLE001 - one caller's chain must not take the box down
            log.exception("fallback %s: %s failed; caller hung up", self.name, ev.kind)
            self._hang_up("error")

    def _caller(self, ev: Ev) -> None:
        if ev.kind == api.ENDED:
            log.info("fallback %s: the caller hung up after %.0f s", self.name, self.waited())
            self._finish("caller hung up")
        elif ev.kind == api.DTMF:
            self._key(ev.data.get("digit", ""))

    def _ring_event(self, call: int, ev: Ev) -> None:
        if ev.kind == api.ANSWERED:
            self._agent_answered(call)
        elif ev.kind == api.ENDED:
            port = self.rings.pop(call, "")
            self.cc.forget(call)
            log.info("fallback %s: %s did not take the call", self.name, port)

    def _handback_event(self, call: int, ev: Ev) -> None:
        if ev.kind == api.ANSWERED:
            self._handed_back(call)
        elif ev.kind == api.ENDED:
            log.warning("fallback %s: handback refused (%s); the caller stays in the queue",
                        self.name, ev.data.get("code"))
            self.cc.forget(call)
            self.cloud_call = None

    # ---- stages ----
    def _next_stage(self) -> None:
        while self.stages:
            if self._enter[self.stages.pop(0)]():
                return
        self._play(prompts.done(self.fxo.plan), lambda: self._hang_up("no stage left"))

    def _enter_headset(self) -> bool:
        if not self._ring("headset"):
            return False
        self._base = prompts.ringback(self.fxo.plan)
        self._arm(self.cont.cfg.headset_ring_s, self._next_stage)
        self._set_state(Stage.HEADSET, "ringing the headset")
        return True

    def _enter_hunt(self) -> bool:
        self.hunt = [n for n in self._hunt_group() if n not in self.rings.values()]
        if not self._hunt_next():
            return False
        self._base = prompts.ringback(self.fxo.plan)
        self._arm(self.cont.cfg.hunt_ring_s, self._next_stage)
        self._set_state(Stage.HUNT, "cascaded ringing")
        return True

    def _enter_queue(self) -> bool:
        self._base, self._loop_at = prompts.moh(), 0
        self._arm(self.cont.cfg.queue_timeout_s, self._next_stage)
        self._set_state(Stage.QUEUE, "music on hold")
        self._announce_later()
        if self.cont.state.cloud_up:
            self.hand_back()
        return True

    def _enter_callback(self) -> bool:
        self._cancel_rings()
        self._stop_step()
        self._base, self.number = None, ""
        self._set_state(Stage.CALLBACK, "callback capture")
        self._prompt_number()
        return True

    def _expired(self, _eventtime: float) -> float:
        then, self._on_expiry = self._on_expiry, None
        if then is not None:
            then()
        return NEVER

    def _arm(self, seconds: float, then: Callable[[], None]) -> None:
        self._on_expiry = then
        self.reactor.update_timer(self._timer, self.reactor.now() + seconds)

    # ---- ringing agents ----
    def _hunt_group(self) -> list[str]:
        """survive.hunt_group, or every FXS line (ring_port skips ports it does not have)."""
        return list(self.cont.cfg.hunt_group or self.cc.ports_of_kind("fxs"))

    def _ring(self, port: str) -> bool:
        if port in self.rings.values():
            return False
        c = self.cc.ring_port(self, port, {"from_number": self.ani, "from_name": self.cnam,
                                           "to_number": self.dnis})
        if c is None:
            return False
        self.rings[c] = port
        log.info("fallback %s: ringing %s", self.name, port)
        return True

    def _hunt_next(self) -> bool:
        while self.hunt:
            if self._ring(self.hunt.pop(0)):
                step = self.cont.cfg.hunt_step_s
                self.reactor.update_timer(self._step, self.reactor.now() + step)
                return True
        self._stop_step()
        return False

    def _hunt_step(self, _eventtime: float) -> float:
        if self.state in (Stage.HUNT, Stage.QUEUE):
            self._hunt_next()
        return NEVER

    def _stop_step(self) -> None:
        self.reactor.update_timer(self._step, NEVER)

    def _cancel_rings(self) -> None:
        for c in list(self.rings):
            self.rings.pop(c, None)
            self.cc.hangup(c)

    def _agent_answered(self, c: int) -> None:
        port, d = self.rings.pop(c), self.cc.peer_of(c)
        assert d is not None, f"local call {c} has no peer"
        self._cancel_rings()
        self._drop_handback()
        self.cc.forget(c)
        self.cc.forget(self.b)
        self.cc.splice(self.a, d)
        self.cont.counters["answered_locally"] += 1
        self._finish(f"answered by {port} after {self.waited():.1f} s")

    # ---- queue and handback ----
    def _announce_later(self) -> None:
        every = self.cont.cfg.announce_every_s
        self.reactor.register_timer(self._announce, self.reactor.now() + every)

    def _announce(self, _eventtime: float) -> float:
        if self.state is not Stage.QUEUE:
            return NEVER
        self._play(prompts.announce(self.cont.cfg.announcement))
        for port in self._hunt_group():
            self._ring(port)  # agents that became free meanwhile
        if self.cont.state.cloud_up:
            self.hand_back()
        return self.reactor.now() + self.cont.cfg.announce_every_s

    def hand_back(self) -> None:
        """The cloud is back: offer the caller to it again (queue stage only), with the
        original ANI/DNIS and X-Branchline-Waited; answered, the FXO port takes it."""
        if self.state is not Stage.QUEUE or self.cloud_call is not None:
            return
        waited = f"{self.waited():.0f}"
        headers = {"X-Branchline-Line": self.name, "X-Branchline-DNIS": self.dnis,
                   "X-Branchline-Waited": waited}
        log.warning("fallback %s: handing caller %s back to the cloud after %s s",
                    self.name, self.ani, waited)
        self.cloud_call = self.cc.call_out(
            self, self.dnis, from_number=self.ani, from_name=self.cnam or None,
            headers=headers, direction="inbound")

    def _handed_back(self, call: int) -> None:
        self._cancel_rings()
        self.cloud_call = None
        self.cc.retire(self.a)
        self.cc.forget(self.b)
        self.cc.drop_local(self.a)
        self.cc.handoff(call, self.fxo)
        self.fxo.replace_call(self.a, call)
        self.cont.counters["handed_back"] += 1
        self._finish(f"handed back to the cloud after {self.waited():.0f} s")

    def _drop_handback(self) -> None:
        if self.cloud_call is not None:
            self.cc.hangup(self.cloud_call)
            self.cloud_call = None

    # ---- callback capture ----
    def _prompt_number(self) -> None:
        self.number = ""
        self._play(prompts.enter_number())
        self._arm(DIGIT_WAIT_S, self._digits_timeout)

    def _key(self, digit: str) -> None:
        if self.playing or self.reactor.now() < self._quiet_until:
            return
        if self.state is Stage.CALLBACK:
            self._number_key(digit)
        elif self.state is Stage.CONFIRM:
            if digit == "1":
                self._store()
            else:
                self._set_state(Stage.CALLBACK, f"re-enter ({digit})")
                self._prompt_number()

    def _number_key(self, digit: str) -> None:
        self._arm(DIGIT_WAIT_S, self._digits_timeout)
        if digit != "#":
            if digit.isdigit() and len(self.number) < MAX_DIGITS:
                self.number += digit
            return
        if not self.number:
            self._prompt_number()
        elif self.cont.cfg.callback_confirm:
            self._set_state(Stage.CONFIRM, f"read back {self.number}")
            self._play(np.concatenate([prompts.digits(self.number), prompts.confirm_prompt()]))
        else:
            self._store()

    def _digits_timeout(self) -> None:
        if self.state in (Stage.CALLBACK, Stage.CONFIRM) and not self.number:
            self._hang_up("no number keyed")
        elif self.state in (Stage.CALLBACK, Stage.CONFIRM):
            self._set_state(Stage.CALLBACK, "no confirmation")
            self._prompt_number()

    def _store(self) -> None:
        self.reactor.update_timer(self._timer, NEVER)
        request = self.cont.store_callback(self, self.number)
        log.warning("fallback %s: callback to %s stored (%s)", self.name, self.number,
                    request)
        self._set_state(Stage.DONE, f"callback {self.number} stored")
        self._play(prompts.done(self.fxo.plan), lambda: self._hang_up("callback stored"))

    # ---- audio into b's pipe (the FXO port's media tick takes it) ----
    @property
    def playing(self) -> bool:
        return len(self._samples) > 0

    def _play(self, samples: np.ndarray, then: Callable[[], None] | None = None) -> None:
        self._samples = np.concatenate([self._samples, samples])
        self._then = then

    def _tick(self, eventtime: float) -> float:
        pipe = self.cc.media(self.b)
        if pipe is None:
            return NEVER
        pipe.put_to_cloud(self._frame())
        return eventtime + FRAME_S

    def _frame(self) -> np.ndarray:
        if len(self._samples):
            out, self._samples = self._samples[:FRAME], self._samples[FRAME:]
            if len(out) < FRAME:
                out = np.concatenate([out, np.zeros(FRAME - len(out), dtype=np.int16)])
            if not len(self._samples):
                self._quiet_until = self.reactor.now() + KEY_GUARD_S
                then, self._then = self._then, None
                if then is not None:
                    then()
            return out
        if isinstance(self._base, np.ndarray):
            out = np.take(self._base, np.arange(self._loop_at, self._loop_at + FRAME),
                          mode="wrap")
            self._loop_at = (self._loop_at + FRAME) % len(self._base)
            return out
        if self._base is not None:
            return self._base.generate(FRAME)
        return np.zeros(FRAME, dtype=np.int16)

    # ---- the end ----
    def _hang_up(self, why: str) -> None:
        if self.cc.owner_of(self.b) is not None:
            self.cc.hangup(self.b)  # the FXO port gets ENDED on a and releases the line
        self._finish(why)

    def _finish(self, why: str) -> None:
        self._cancel_rings()
        self._drop_handback()
        self._stop_step()
        for timer in (self._frames, self._timer):
            self.reactor.update_timer(timer, NEVER)
        self._set_state(Stage.DONE, why)
        self.cont.finished(self)
