"""One PSTN caller's local fallback chain, when the cloud cannot take the call (its cloud
leg died, or it arrived in SURVIVABLE).

The FXO port keeps the line and holds handle `a` of a local pair; this object holds the
other end `b` (firmware.callctl.local): what it puts in b's pipe the caller hears, and
the caller's DTMF arrives on b. Agents are rung with pairs of their own (`c` held here,
`d` offered to the port, so a phone rings with the caller's ANI and name); the first
that answers is spliced to the caller (LocalSwitch.splice(a, d): no new handles, the
FXO port and its CDR go on), the other rings are cancelled and this object is done.

Stages (an Enum; `_set_state()` logs `old -> new` with the reason and records it in call
control's trace as port "fallback:<fxo line>"), in the order of survive.fallback:
  ANNOUNCE  the announcement (prompts.announce, ~1 s), then the first stage
  HEADSET   the headset rings (ringback to the caller) for headset_ring_s
  HUNT      cascaded ringing: the first free phone of survive.hunt_group (default: every
            FXS line) rings at once, one more joins every hunt_step_s; hunt_ring_s
  QUEUE     music on hold, the announcement every announce_every_s; the phones still
            ringing keep ringing and phones that became free are rung again; after
            queue_timeout_s the next stage. While the cloud is back (CLOUD_*) the caller
            is handed back: an INVITE with the original ANI/DNIS and X-Branchline-Waited
            (seconds spent here); answered, the FXO port takes that call instead of `a`
  CALLBACK  rings cancelled; prompts.enter_number; the caller keys a number ending in #
  CONFIRM   the number is played back as DTMF and prompts.confirm_prompt asks for 1
            (any other key: enter again); 1 stores it (cdr.callback_request), plays the
            done tone and hangs up. survive.callback_confirm false: stored on #.
  DONE      answered, handed back, hung up, or the caller left
A stage whose targets are missing or busy is skipped; no stage left: the caller is
hung up after the announcement.

Assumes call control's owner map (cc.owner) routes the events of b and c here, and a
20 ms reactor timer of its own feeds b's pipe (the FXO port's media tick takes it).
"""

from __future__ import annotations

import enum
import logging

import numpy as np

from firmware.sip import api
from firmware.survive import prompts
from foundation.reactor import NEVER

log = logging.getLogger(__name__)

FRAME = 160
FRAME_S = 0.02
DIGIT_WAIT_S = 20.0  # no key for this long in callback capture: prompt again, then give up
MAX_DIGITS = 20
KEY_GUARD_S = 0.3  # keys heard while (and just after) we play are our own echo


class Stage(enum.Enum):
    ANNOUNCE = "announce"
    HEADSET = "headset"
    HUNT = "hunt"
    QUEUE = "queue"
    CALLBACK = "callback"
    CONFIRM = "confirm"
    DONE = "done"


class Fallback:
    kind = "fallback"

    def __init__(self, cont, fxo, a: int, b: int, why: str) -> None:
        self.cont, self.cc, self.fxo, self.a, self.b = cont, cont.cc, fxo, a, b
        self.name = fxo.name
        self.cfg = cont.cfg
        self.state = Stage.ANNOUNCE
        self.why = why
        self.ani = fxo.caller.get("number") or "anonymous"
        self.cnam = fxo.caller.get("name") or ""
        self.dnis = fxo.number or fxo.label
        self.started = self.cc.reactor.now()
        self.stages = list(self.cfg.get("fallback", []))
        self.rings: dict[int, str] = {}  # our handle c -> the port rung
        self.hunt: list[str] = []  # phones of the hunt group not rung yet
        self.cloud_call: int | None = None  # the handback INVITE
        self.answered_by = ""
        self.number = ""
        self._samples = np.zeros(0, dtype=np.int16)
        self._then = None
        self._base = None  # a ToneGenerator or a looped array (music on hold)
        self._loop_at = 0
        self._quiet_until = 0.0
        self._frames = self.cc.reactor.register_timer(self._tick, NEVER)
        self._timer = self.cc.reactor.register_timer(self._expired, NEVER)
        self._step = self.cc.reactor.register_timer(self._hunt_step, NEVER)
        self._what = ""

    # ---- life cycle ----
    def start(self) -> None:
        log.warning("%s: caller %s re-routed locally (%s)", self.name, self.ani, self.why)
        self.cc.record(f"fallback:{self.name}", "CLOUD", self.state.name)
        self.cc.reactor.update_timer(self._frames, self.cc.reactor.now())
        self.cont.start_recording(self)
        self._play(prompts.announce(self.cfg.get("announcement", "tones")), self._next_stage)

    def waited(self) -> float:
        return self.cc.reactor.now() - self.started

    def status(self) -> dict:
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
    def handle(self, ev) -> None:
        try:
            if ev.call == self.b:
                self._caller(ev)
            elif ev.call == self.cloud_call:
                self._handback_event(ev)
            elif ev.call in self.rings:
                self._ring_event(ev)
        except Exception:  # noqa: BLE001 - one caller's chain must not take the box down
            log.exception("fallback %s: %s failed; caller hung up", self.name, ev.kind)
            self._hang_up("error")

    def _caller(self, ev) -> None:
        if ev.kind == api.ENDED:
            log.info("fallback %s: the caller hung up after %.0f s", self.name, self.waited())
            self._finish("caller hung up")
        elif ev.kind == api.DTMF:
            self._key(ev.data.get("digit", ""))

    def _ring_event(self, ev) -> None:
        if ev.kind == api.ANSWERED:
            self._agent_answered(ev.call)
        elif ev.kind == api.ENDED:
            port = self.rings.pop(ev.call, "")
            self.cc.forget(ev.call)
            log.info("fallback %s: %s did not take the call", self.name, port)

    def _handback_event(self, ev) -> None:
        if ev.kind == api.ANSWERED:
            self._handed_back(ev.call)
        elif ev.kind == api.ENDED:
            log.warning("fallback %s: handback refused (%s); the caller stays in the queue",
                        self.name, ev.data.get("code"))
            self.cc.forget(self.cloud_call)
            self.cloud_call = None

    # ---- stages ----
    def _next_stage(self) -> None:
        while self.stages:
            stage = self.stages.pop(0)
            if getattr(self, "_enter_" + stage)():
                return
        self._play(prompts.done(self.fxo.plan), lambda: self._hang_up("no stage left"))

    def _enter_headset(self) -> bool:
        port = self.cc.ports.get("headset")
        if port is None or not port.free() or not self._ring("headset"):
            return False
        self._base = prompts.ringback(self.fxo.plan)
        self._arm(float(self.cfg.get("headset_ring_s", 10.0)), "stage")
        self._set_state(Stage.HEADSET, "ringing the headset")
        return True

    def _enter_hunt(self) -> bool:
        group = self.cfg.get("hunt_group") or [n for n, p in self.cc.ports.items()
                                               if p.kind == "fxs"]
        self.hunt = [n for n in group if n in self.cc.ports and n not in self.rings.values()]
        if not self._hunt_next():
            return False
        self._base = prompts.ringback(self.fxo.plan)
        self._arm(float(self.cfg.get("hunt_ring_s", 20.0)), "stage")
        self._set_state(Stage.HUNT, "cascaded ringing")
        return True

    def _enter_queue(self) -> bool:
        self._base, self._loop_at = prompts.moh(), 0
        self._arm(float(self.cfg.get("queue_timeout_s", 60.0)), "stage")
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
        what, self._what = self._what, ""
        if what == "stage":
            self._next_stage()
        elif what == "digits":
            self._digits_timeout()
        return NEVER

    def _arm(self, seconds: float, what: str) -> None:
        self._what = what
        self.cc.reactor.update_timer(self._timer, self.cc.reactor.now() + seconds)

    # ---- ringing agents ----
    def _ring(self, port: str) -> bool:
        fsm = self.cc.ports.get(port)
        if fsm is None or not fsm.free() or port in self.rings.values():
            return False
        c, d = self.cc.local.pair()
        self.cc.owner[c], self.cc.owner[d] = self, fsm
        self.rings[c] = port
        self.cc.local.offer(d, {"from_number": self.ani, "from_name": self.cnam,
                                "to_number": self.dnis, "line": port, "headers": {}})
        log.info("fallback %s: ringing %s", self.name, port)
        return True

    def _hunt_next(self) -> bool:
        while self.hunt:
            if self._ring(self.hunt.pop(0)):
                step = float(self.cfg.get("hunt_step_s", 5.0))
                self.cc.reactor.update_timer(self._step, self.cc.reactor.now() + step)
                return True
        self._stop_step()
        return False

    def _hunt_step(self, _eventtime: float) -> float:
        if self.state in (Stage.HUNT, Stage.QUEUE):
            self._hunt_next()
        return NEVER

    def _stop_step(self) -> None:
        self.cc.reactor.update_timer(self._step, NEVER)

    def _cancel_rings(self) -> None:
        for c in list(self.rings):
            self.rings.pop(c, None)
            self.cc.hangup(c)

    def _agent_answered(self, c: int) -> None:
        port = self.rings.pop(c)
        d = self.cc.local.peer.get(c)
        self._cancel_rings()
        self._drop_handback()
        self.cc.forget(c)
        self.cc.forget(self.b)
        self.cc.local.splice(self.a, d)
        self.answered_by = port
        self.cont.counters["answered_locally"] += 1
        self._finish(f"answered by {port} after {self.waited():.1f} s")

    # ---- queue and handback ----
    def _announce_later(self) -> None:
        every = float(self.cfg.get("announce_every_s", 20.0))
        self.cc.reactor.register_timer(self._announce, self.cc.reactor.now() + every)

    def _announce(self, _eventtime: float) -> float:
        if self.state is not Stage.QUEUE:
            return NEVER
        self._play(prompts.announce(self.cfg.get("announcement", "tones")))
        for port in self.cfg.get("hunt_group") or [n for n, p in self.cc.ports.items()
                                                   if p.kind == "fxs"]:
            self._ring(port)  # agents that became free meanwhile
        if self.cont.state.cloud_up:
            self.hand_back()
        return self.cc.reactor.now() + float(self.cfg.get("announce_every_s", 20.0))

    def hand_back(self) -> None:
        """The cloud is back: offer the caller to it again (queue stage only)."""
        if self.state is not Stage.QUEUE or self.cloud_call is not None:
            return
        waited = f"{self.waited():.0f}"
        headers = {"X-Branchline-Line": self.name, "X-Branchline-DNIS": self.dnis,
                   "X-Branchline-Waited": waited}
        log.warning("fallback %s: handing caller %s back to the cloud after %s s",
                    self.name, self.ani, waited)
        self.cloud_call = self.cc.call_out(self, self.dnis, from_number=self.ani,
                                           from_name=self.cnam or None, headers=headers,
                                           direction="inbound")

    def _handed_back(self, call: int) -> None:
        self._cancel_rings()
        self.cloud_call = None
        self.cc.retire(self.a)
        self.cc.forget(self.b)
        self.cc.local.forget(self.a)
        self.cc.owner[call] = self.fxo
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
        self._arm(DIGIT_WAIT_S, "digits")

    def _key(self, digit: str) -> None:
        if self.playing or self.cc.reactor.now() < self._quiet_until:
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
        self._arm(DIGIT_WAIT_S, "digits")
        if digit != "#":
            if digit.isdigit() and len(self.number) < MAX_DIGITS:
                self.number += digit
            return
        if not self.number:
            self._prompt_number()
        elif self.cfg.get("callback_confirm", True):
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
        self.cc.reactor.update_timer(self._timer, NEVER)
        request = self.cont.store_callback(self, self.number)
        log.warning("fallback %s: callback to %s stored (%s)", self.name, self.number,
                    request)
        self._set_state(Stage.DONE, f"callback {self.number} stored")
        self._play(prompts.done(self.fxo.plan), lambda: self._hang_up("callback stored"))

    # ---- audio into b's pipe ----
    @property
    def playing(self) -> bool:
        return len(self._samples) > 0

    def _play(self, samples: np.ndarray, then=None) -> None:
        self._samples = np.concatenate([self._samples, samples])
        self._then = then

    def _tick(self, eventtime: float) -> float:
        pipe = self.cc.local.pipes.get(self.b)
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
                self._quiet_until = self.cc.reactor.now() + KEY_GUARD_S
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
        if self.b in self.cc.owner:
            self.cc.hangup(self.b)  # the FXO port gets ENDED on a and releases the line
        self._finish(why)

    def _finish(self, why: str) -> None:
        self._cancel_rings()
        self._drop_handback()
        self._stop_step()
        for timer in (self._frames, self._timer):
            self.cc.reactor.update_timer(timer, NEVER)
        self._set_state(Stage.DONE, why)
        self.cont.finished(self)
