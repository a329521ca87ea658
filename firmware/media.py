"""The media path of one port: its PCM on one side, a call's MediaPipe or a local source
on the other, and the DSP between (echo canceller, DTMF detector, fax/modem tone
detectors), which reports per call to a `DspMeter` (firmware.quality: ERLE, residual
echo, digits and tones heard). `MediaClock` runs every port's `tick_out` and `tick_in`
every 20 ms. Frames are 8 kHz int16, 160 samples (the headset may switch to 16 kHz)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from enum import StrEnum
from functools import partial
from typing import Protocol, runtime_checkable

import numpy as np

from cext import toneplans
from cext.dtmf import DtmfDetector
from cext.echo import EchoCanceller
from cext.modemtone import ModemToneDetector
from cext.tones import ToneGenerator
from drivers.bus.pcm import FRAME
from firmware.quality import DspMeter
from firmware.sip.api import MediaPipe
from foundation.reactor import Reactor, Timer

log = logging.getLogger(__name__)

EC_TAIL_MS = 128
MAX_FRAMES_PER_TICK = 5  # a late tick catches up, but a flooded queue cannot stall us
RUNAWAY_RATIO = 2.0  # output power over input power (3 dB) that means divergence
RUNAWAY_FLOOR = 100.0 ** 2  # ... once the output is above ~-47 dBm0
RUNAWAY_FRAMES = 3  # ... in this many frames in a row (a single one: a speech onset)
FAR_QUEUE = 5  # frames sent and not yet paired with a captured frame (jitter of the ticks)
SILENCE = np.zeros(FRAME, dtype=np.int16)
ROWS, COLS = (697.0, 770.0, 852.0, 941.0), (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_SHARE = 0.35  # energy in the best row + column bins that makes a frame DTMF-like
DTMF_TONE_SHARE = 0.08  # ... with each of the two at least this (twist up to ~10 dB)
DTMF_FLOOR = 40.0 ** 2  # mean power under which nothing is DTMF-like (~-55 dBm0)

Tap = Callable[[np.ndarray], None]


class MediaMode(StrEnum):  # what a call carries (status, CDR, the control API)
    VOICE = "voice"
    FAX = "fax"
    MODEM = "modem"


class Side(StrEnum):  # where a modem tone was heard (PEER: a local call's other port)
    LINE = "line"
    SIP = "sip"
    PEER = "peer"


VOICE, FAX, MODEM = MediaMode.VOICE, MediaMode.FAX, MediaMode.MODEM
LINE, SIP = Side.LINE, Side.SIP


class Pcm(Protocol):  # a port's audio device: whole frames in and out
    def read(self) -> np.ndarray | None: ...
    def write(self, frame: np.ndarray) -> None: ...


@runtime_checkable
class WidebandPcm(Pcm, Protocol):  # one that can change its line rate (the headset)
    def set_line_rate(self, rate: int) -> None: ...


class Recorder(Protocol):  # a call's recording (firmware.survive.recording.Recording)
    def from_line(self, frame: np.ndarray) -> None: ...
    def to_line(self, frame: np.ndarray) -> None: ...


class ModemTone(Protocol):  # cext.modemtone.ModemTone's shape
    name: str
    kind: str  # "fax" or "modem"
    disables_echo_canceller: bool


class ModemDetector(Protocol):
    def process(self, frame: np.ndarray) -> Iterable[tuple[ModemTone, float]]: ...


def confirmation_tone(plan: toneplans.CountryPlan) -> toneplans.Tone:
    """Three short bursts of the country's dial tone: 'done' (park, feature codes)."""
    dial = plan.tones["dial"]
    return toneplans.Tone(dial.freqs, dial.level_dbm0, (0.1, 0.1, 0.1, 0.1, 0.1, 30.0),
                          dial.mod_hz, dial.mod_depth)


class PortMedia:
    """One port's audio. `tick_out` sends the line one frame: queued samples first (FSK
    caller ID, DTMF into a PSTN line, a prompt), else the base source (a plan tone, the
    far end from the pipe, or silence), with an overlay tone mixed in. `tick_in` takes
    every captured frame through the canceller (far reference: the frames sent, paired
    one to one in order), the DTMF detector and the taps, then to the pipe. The DSP runs
    only while `active`; an idle port's capture still reaches the taps (caller ID comes
    on hook). A recorder gets both directions as the line and the cloud get them."""

    def __init__(self, name: str, pcm: Pcm, plan: toneplans.CountryPlan, *,
                 echo: bool = True, dtmf: bool = True,
                 on_digit: Callable[[str], None] | None = None, modem: bool = True,
                 modem_detector: Callable[[], ModemDetector] | None = None,
                 dtmf_row_above_column_max_db: float = 8.0,
                 dtmf_column_above_row_max_db: float = 4.0) -> None:
        self.name, self._pcm, self.plan = name, pcm, plan
        self.on_digit = on_digit
        self._taps: list[Tap] = []
        self._recorder: Recorder | None = None
        self.active = False
        self.muted = False  # nothing goes to the far end (headset mute)
        self.pipe: MediaPipe | None = None
        self.send = True  # audio goes to the pipe (False: listen only, e.g. early media)
        self.cancel_echo = True
        self.runaways = 0  # times the canceller diverged and was bypassed (status)
        self._over = 0  # frames in a row the canceller gave out more than it took in
        self.dsp = DspMeter()  # per-call figures: call control begins and ends the calls
        self._ec = EchoCanceller(EC_TAIL_MS) if echo else None
        self._det = DtmfDetector(row_above_column_max_db=dtmf_row_above_column_max_db,
                                 column_above_row_max_db=dtmf_column_above_row_max_db
                                 ) if dtmf else None
        self._tone: ToneGenerator | None = None
        self.tone_name = ""
        self._overlay: ToneGenerator | None = None
        self._samples = np.zeros(0, dtype=np.int16)
        self._then: Callable[[], None] | None = None
        self._far: deque[np.ndarray] = deque(maxlen=FAR_QUEUE)
        self._reported: str | None = None  # digit reported at its start, end not yet seen
        self.rate, self.frame, self._silence = 8000, FRAME, SILENCE
        self.read_last = 1  # frames the last tick_in found (MediaClock)
        # fax/modem passthrough: detector factory (None: off), this call's two, the profile
        factory = modem_detector or partial(ModemToneDetector, rate=8000)
        self.modem_detector: Callable[[], ModemDetector] | None = factory if modem else None
        self._modem: dict[Side, ModemDetector] = {}
        self.on_passthrough: Callable[[PortMedia, dict[str, object]], None] | None = None
        self.media_mode = VOICE
        self.passthrough_info: dict[str, object] = {}  # what switched it (status)
        self._dtmf_on = True
        self._connected_echo = True  # cancel_echo the call was connected with
        self._normal = {"nlp": self._ec is None or bool(self._ec.nlp),  # the canceller's own
                        "comfort_noise": self._ec is None or bool(self._ec.comfort_noise)}

    # ---- what others borrow or attach ----
    def add_tap(self, tap: Tap) -> None:
        """`tap(frame)` gets every captured frame (after the canceller while active)."""
        self._taps.append(tap)

    def remove_tap(self, tap: Tap) -> None:
        if tap in self._taps:
            self._taps.remove(tap)

    def use_pcm(self, pcm: Pcm) -> Pcm:
        """Carry audio on `pcm` from now on (a diagnostic borrows the port's device and
        gives it back the same way); the PCM used until now."""
        previous, self._pcm = self._pcm, pcm
        return previous

    def record_to(self, recorder: Recorder | None) -> None:
        self._recorder = recorder  # both directions

    def stop_recording(self, recorder: Recorder) -> None:
        if self._recorder is recorder:
            self._recorder = None

    # ---- what call control sets ----
    def set_rate(self, rate: int) -> None:
        """Carry audio at `rate` (8000, or 16000 on a port without EC and DTMF detector:
        the headset) from now on; the PCM is switched too, tones follow."""
        if rate == self.rate:
            return
        if rate != 8000 and (self._ec is not None or self._det is not None):
            raise ValueError(f"{self.name}: only a port without echo canceller and DTMF "
                             f"detector can run at {rate} Hz")
        if not isinstance(self._pcm, WidebandPcm):
            raise ValueError(f"{self.name}: the audio device cannot change its rate")
        self._pcm.set_line_rate(rate)
        self.rate, self.frame = rate, rate // 50
        self._silence = np.zeros(self.frame, dtype=np.int16)
        self._far.clear()
        self.cancel_samples()
        if self._tone is not None:
            self._tone = ToneGenerator(self._tone.tone, rate)

    def start(self) -> None:
        """The port goes active (off hook, seized): a fresh canceller and detector."""
        if not self.active:
            if self._ec is not None:
                self._ec.reset()
                self._over = 0
            if self._det is not None:
                self._det.reset()
                self._reported = None
        self.active = True

    def stop(self) -> None:
        """Back to idle: silence out, nothing connected (the normal profile again)."""
        self.active = False
        self.disconnect()
        self.tone(None)
        self.overlay(None)
        self.cancel_samples()

    def tone(self, name: str | toneplans.Tone | None) -> None:
        """Play a plan tone (by name) or a Tone as the base source; None: no tone."""
        if name is None:
            self._tone, self.tone_name = None, ""
            return
        tone = self.plan.tones[name] if isinstance(name, str) else name
        self._tone = ToneGenerator(tone, self.rate)
        self.tone_name = name if isinstance(name, str) else "custom"

    def overlay(self, name: str | None) -> None:
        """Mix a plan tone into whatever plays (call-waiting beeps); None ends it."""
        self._overlay = ToneGenerator(self.plan.tones[name], self.rate) if name else None

    def connect(self, pipe: MediaPipe | None, send: bool = True,
                cancel_echo: bool = True) -> None:
        """Carry a call's audio: far end to the line, the line to the far end (if send).
        cancel_echo=False for calls between two of our own analog ports: their round trip
        is a few ms, so echo is inaudible, and two cancellers feeding each other's
        reference were measured to run away to clipping within 0.5 s on double talk.
        A second connect to the same pipe keeps the passthrough profile."""
        same = pipe is not None and pipe is self.pipe
        if not same:
            self.restore_profile()
        self.pipe, self.send = pipe, send
        if not (same and self.media_mode != VOICE):  # passthrough keeps its canceller state
            self.cancel_echo = cancel_echo
        self._connected_echo = cancel_echo
        if not same:
            self._new_detectors()
        self.tone(None)

    def disconnect(self) -> None:
        self.pipe = None
        self.restore_profile()
        self._modem = {}

    # ---- fax / modem passthrough ----
    def _new_detectors(self) -> None:
        """Fresh detectors for a newly connected call, both ways (none without a pipe):
        the line's capture before the canceller, and what comes from SIP."""
        self._modem = {}
        if self.modem_detector is not None and self.pipe is not None and self.rate == 8000:
            self._modem = {side: self.modem_detector() for side in (LINE, SIP)}

    def _listen_modem(self, side: Side, frame: np.ndarray) -> None:
        det = self._modem.get(side)
        if det is None or len(frame) != FRAME:
            return
        for tone, t_s in det.process(frame):
            self.dsp.modem(tone.name, tone.kind, side)
            self.passthrough(tone, side, t_s)

    def passthrough(self, tone: ModemTone, side: str = LINE, t_s: float | None = None) -> bool:
        """Switch the call to the passthrough profile for `tone` heard on `side`; True
        when something changed (then `on_passthrough(media, info)` was told). NLP,
        comfort noise and DTMF detection/masking go off (a fax or modem signal must
        reach the far end whole). The canceller stays in for tones without phase
        reversals (G3 fax, as DAHDI does) and goes off for 2100 Hz with them (G.168's
        tone disabler: the modems run their own). A fax tone wins over a modem one."""
        kind = FAX if tone.kind == FAX else MODEM
        mode = FAX if FAX in (kind, self.media_mode) else MODEM
        disabling = bool(tone.disables_echo_canceller)
        kill_ec = disabling and self.cancel_echo and self._ec is not None
        if mode == self.media_mode and not kill_ec:
            return False
        if self.media_mode == VOICE:
            self._dtmf_on, self._reported = False, None
            if self._ec is not None:
                self._ec.nlp = self._ec.comfort_noise = False
        self.media_mode = mode
        if kill_ec and self._ec is not None:
            self._ec.reset()
            self.cancel_echo = False
        self.passthrough_info = {"mode": mode, "tone": tone.name, "side": side,
                                 "t_s": None if t_s is None else round(float(t_s), 3),
                                 "disabling_tone": disabling, **self.profile()}
        log.info("%s: %s heard on the %s side: %s passthrough (echo canceller %s, NLP "
                 "off, DTMF detection off)", self.name, tone.name, side, mode,
                 "on" if self.cancel_echo and self._ec is not None else "off")
        if self.on_passthrough is not None:
            self.on_passthrough(self, dict(self.passthrough_info))
        return True

    def restore_profile(self) -> None:
        """Back to the voice profile (the call ended or another one is connected)."""
        if self.media_mode == VOICE:
            return
        log.info("%s: %s passthrough over: voice profile again", self.name, self.media_mode)
        self.media_mode = VOICE
        self.passthrough_info = {}
        self._dtmf_on = True
        if self._det is not None:
            self._det.reset()
        self._reported = None
        if self._ec is not None:
            self._ec.nlp = self._normal["nlp"]
            self._ec.comfort_noise = self._normal["comfort_noise"]
            self._ec.reset()
        self.cancel_echo = self._connected_echo

    def profile(self) -> dict[str, object]:
        """The DSP profile in force: mode, canceller, NLP, comfort noise, DTMF (status)."""
        ec = self._ec
        return {"mode": self.media_mode,
                "echo_canceller": ec is not None and self.cancel_echo,
                "nlp": ec is not None and bool(ec.nlp),
                "comfort_noise": ec is not None and bool(ec.comfort_noise),
                "dtmf": self._det is not None and self._dtmf_on}

    def play(self, samples: np.ndarray, then: Callable[[], None] | None = None) -> None:
        """Send these samples to the line ahead of everything else, then call `then`."""
        self._samples = np.concatenate([self._samples, np.asarray(samples, dtype=np.int16)])
        self._then = then

    def cancel_samples(self) -> None:
        self._samples, self._then = self._samples[:0], None

    @property
    def playing(self) -> bool:
        return len(self._samples) > 0

    @property
    def erle_db(self) -> float | None:
        """Live echo return loss enhancement of the canceller (None: no canceller)."""
        return float(self._ec.erle_db) if self._ec is not None else None

    # ---- every 20 ms ----
    def tick(self) -> None:
        self.tick_out()
        self.tick_in()

    def tick_out(self) -> None:
        """One frame to the line (it is also the canceller's next far reference)."""
        out = self._next_out()
        self.dsp.frames += 1
        self._pcm.write(out)
        self._far.append(out)
        self._record(out, to_line=True)

    def tick_in(self) -> int:
        """Every captured frame through the DSP to the taps and the pipe; how many."""
        count = 0
        for count in range(MAX_FRAMES_PER_TICK):
            near = self._pcm.read()
            if near is None:
                return count
            self._near(np.asarray(near, dtype=np.int16))
        return count + 1

    def _next_out(self) -> np.ndarray:
        if len(self._samples):
            return self._from_samples()
        out: np.ndarray = self._silence
        if self._tone is not None:
            out = self._tone.generate(self.frame)
        elif self.pipe is not None:
            frame = self.pipe.take_from_cloud()
            if frame is not None and len(frame) == self.frame:
                out = frame
                if self._modem:
                    self._listen_modem(SIP, frame)
        if self._overlay is not None:
            mixed = out.astype(np.int32) + self._overlay.generate(self.frame)
            out = np.clip(mixed, -32768, 32767).astype(np.int16)
        return out

    def _from_samples(self) -> np.ndarray:
        chunk, self._samples = self._samples[:self.frame], self._samples[self.frame:]
        if len(chunk) < self.frame:
            chunk = np.concatenate([chunk, np.zeros(self.frame - len(chunk), dtype=np.int16)])
        if not len(self._samples) and self._then is not None:
            then, self._then = self._then, None
            then()
        return chunk

    def _near(self, near: np.ndarray) -> None:
        if not self.active:
            self._tap(near)
            return
        far = self._far.popleft() if self._far else self._silence
        if self._modem:
            self._listen_modem(LINE, near)
        ec = self._ec if self.cancel_echo else None
        metered = self.pipe is not None and bool(self.dsp.calls)
        near_p = _power(near) if ec is not None or metered else 0.0
        clean, out_p = (near, near_p) if ec is None else self._cancel(ec, near, far, near_p)
        if metered:  # while a call's audio is connected
            self.dsp.frame(near_p, out_p, _power(far), ec is not None)
        dtmf = self._detect(clean)
        self._tap(clean)
        sent = self._silence if dtmf else clean
        self._put(sent)
        self._record(sent, to_line=False)

    def _record(self, frame: np.ndarray, *, to_line: bool) -> None:
        """A frame to the call's recording; a full disk stops the recording, never the
        call."""
        rec = self._recorder
        if rec is None:
            return
        try:
            (rec.to_line if to_line else rec.from_line)(frame)
        except OSError as exc:
            log.error("%s: recording stopped: %s", self.name, exc)
            self._recorder = None

    def _cancel(self, ec: EchoCanceller, near: np.ndarray, far: np.ndarray, near_p: float
                ) -> tuple[np.ndarray, float]:
        """The canceller's output and its mean square (`near_p`: the input's), or `near`
        when it gave out more than it took in (3 dB): a canceller only removes. One such
        frame is replaced by the input; RUNAWAY_FRAMES in a row mean it ran away (cext.echo
        reaches clipping within a second on double talk): it is reset and bypassed for
        the rest of the call, so the far end hears the echo rather than noise. (Measured
        on the sim's FXO hybrid, m1 at 6 and 12 dB ERL, speech-like far end, 32 calls:
        bypassing on the first frame over took the canceller out of 26, on 3 in a row
        out of 12, on 5 in a row out of 12: single frames over at onsets are common.)"""
        out: np.ndarray = ec.process(near, far)
        out_p = _power(out)
        if out_p <= RUNAWAY_RATIO * near_p + RUNAWAY_FLOOR:
            self._over = 0
            return out, out_p
        self._over += 1
        if self._over >= RUNAWAY_FRAMES:
            self._over = 0
            log.warning("%s: echo canceller diverged (out %.0f dB over in): bypassed for "
                        "the rest of this call", self.name,
                        10 * np.log10((out_p + 1) / (near_p + 1)))
            ec.reset()
            self.cancel_echo = False
            self.runaways += 1
            if self.pipe is not None:  # a call's audio, not a dialling or a tone
                self.dsp.bypassed()
        return near, near_p

    def _detect(self, clean: np.ndarray) -> bool:
        """Feed the detector, report digits at their start (`current`, ~30 ms into the
        tone: ~100 ms sooner than at their end; not while we play queued samples);
        True: keep this frame from the cloud. Masking starts with the first DTMF-like
        frame, so under ~8 ms of a tone leaks (receivers reject under 30-40 ms)."""
        if self._det is None or not self._dtmf_on:
            return False
        found = self._det.process(clean)
        current = self._det.current
        if self.on_digit is not None and not self.playing:
            for digit in self._new_digits(found, current):
                self.dsp.digit(digit)
                self.on_digit(digit)
        return bool(found) or current is not None or dtmf_like(clean)

    def _new_digits(self, found: list[tuple[str, float, float]],
                    current: str | None) -> list[str]:
        """Digits not reported yet: each one ended in this frame and was never seen
        `current`, then the one present now if it was not reported at its start."""
        out = []
        for digit, _start, _end in found:
            if digit == self._reported:
                self._reported = None  # its end: reported at its start already
            else:
                out.append(digit)
        if current is not None and current != self._reported:
            out.append(current)
            self._reported = current
        return out

    def _tap(self, frame: np.ndarray) -> None:
        for tap in list(self._taps):
            tap(frame)

    def _put(self, frame: np.ndarray) -> None:
        if self.pipe is None:
            return
        # Listen-only and muted still send silence: the SIP side takes a frame every
        # 20 ms, and one it finds missing counts as late.
        self.pipe.put_to_cloud(self._silence if self.muted or not self.send else frame)


def _dtmf_basis(n: int = FRAME, rate: int = 8000) -> np.ndarray:
    t = np.arange(n) / rate
    freqs = np.array(ROWS + COLS)
    angles = 2 * np.pi * t[:, None] * freqs[None, :]
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


_BASIS = _dtmf_basis()


def dtmf_like(frame: np.ndarray) -> bool:
    """Does this 8 kHz frame carry a DTMF tone pair (or the start of one)? A row and a
    column frequency hold most of its energy. Cheap (one 160x16 product) and loose on
    purpose: it only mutes the audio to the cloud until the real detector decides.
    A tone filling d of the frame's n samples carries about d/n of a full frame's bin
    energy, so a pair is caught once it fills ~DTMF_SHARE of the frame."""
    if len(frame) != FRAME:
        return False
    x = frame.astype(np.float32)
    energy = float(np.dot(x, x))
    if energy < DTMF_FLOOR * len(x):
        return False
    z = (x @ _BASIS).astype(np.float64)
    bins = (z[:8] ** 2 + z[8:] ** 2) * (2.0 / len(x)) / energy
    row, col = float(bins[:4].max()), float(bins[4:].max())
    return min(row, col) >= DTMF_TONE_SHARE and row + col >= DTMF_SHARE


def _power(frame: np.ndarray) -> float:
    x = frame.astype(np.float64)
    return float(np.dot(x, x)) / len(x)


class MediaClock:
    """Call control's media timer: every port's `tick_out` and `tick_in` once per 20 ms,
    on two grids slewed (at most SLEW_S a period) toward pjsua2's frame clock: in-ticks
    `lead` before it first asks a pipe for a frame (`asked_at`), out-ticks OUT_AFTER_S
    after it last gave one (`given_at`); without fresh stamps both run together. The lead
    grows a step whenever a pipe starved (up to LEAD_MAX_S) and relaxes slowly; with the
    in-tick's own duration (`busy`) it is capped at LEAD_CAP_S. In-ticks keep
    CAPTURE_GUARD_S clear of the line's capture phase (`capture_at`: where a port in a
    call found no frame), after it if that leaves LEAD_FLOOR_S, else before it.
    `on_error(media)` is told when one port fails (the others still run)."""

    PERIOD_S = FRAME / 8000
    LEAD_S, LEAD_MAX_S, LEAD_STEP_S = 0.004, 0.008, 0.001
    LEAD_CAP_S = 0.0095  # lead + busy, at most
    BUSY_WEIGHT = 0.05  # `busy` follows the in-tick's duration over ~20 runs
    LEAD_RELAX_S = 5.0  # seconds without a starved pipe before the lead shrinks a step
    OUT_AFTER_S = 0.001
    CAPTURE_GUARD_S = 0.0015
    LEAD_FLOOR_S = 0.003
    SLEW_S = 0.004
    FRESH_S = 0.1  # stamps older than this are from calls gone
    MAX_BEHIND = 5  # periods late before a grid re-syncs to now

    def __init__(self, reactor: Reactor, ports: Callable[[], list[PortMedia]],
                 on_error: Callable[[PortMedia], None]) -> None:
        self.reactor, self.ports, self.on_error = reactor, ports, on_error
        self.lead = self.LEAD_S
        self.locked = False
        self.timer: Timer | None = None
        self._out_due = self._in_due = 0.0
        self._starved = 0
        self._relax_at = 0.0
        self.capture_at: float | None = None
        self.busy = 0.0  # how long the in-tick takes (moving average)

    def start(self) -> None:
        self._out_due = self._in_due = self.reactor.now()
        self._relax_at = self._out_due + self.LEAD_RELAX_S
        self.timer = self.reactor.register_timer(self.fire, self._out_due)

    def stop(self) -> None:
        if self.timer is not None:
            self.reactor.unregister_timer(self.timer)
            self.timer = None

    def fire(self, eventtime: float) -> float:
        asked, given = self._stamps(eventtime)
        self.locked = asked is not None
        if self._out_due <= self._in_due:
            self._run(inbound=False)
            target = None if given is None else given + self.OUT_AFTER_S
            self._out_due = self._advance(self._out_due, target, eventtime)
        else:
            self._run(inbound=True)
            self.busy += self.BUSY_WEIGHT * (self.reactor.now() - eventtime - self.busy)
            self._watch_capture(eventtime)
            self._adapt(eventtime)
            target = None if asked is None else self._in_target(asked)
            self._in_due = self._advance(self._in_due, target, eventtime)
        return min(self._out_due, self._in_due)

    def _run(self, *, inbound: bool) -> None:
        for media in self.ports():
            try:
                if inbound:
                    media.read_last = media.tick_in()
                else:
                    media.tick_out()
            except Exception:  # noqa: BLE001 - one port's audio must not stop the others
                self.on_error(media)

    def _watch_capture(self, now: float) -> None:
        if not self.locked:
            self.capture_at = None
            return
        if any(m.read_last == 0 and m.active and m.pipe is not None for m in self.ports()):
            self.capture_at = now

    def _in_target(self, asked: float) -> float:
        """LEAD before pjsua2 asks, moved clear of the capture phase (class doc)."""
        target = asked - min(self.LEAD_CAP_S, self.lead + self.busy)
        if self.capture_at is None:
            return target
        half, guard = self.PERIOD_S / 2, self.CAPTURE_GUARD_S
        capture = target + (self.capture_at - target + half) % self.PERIOD_S - half
        if abs(target - capture) >= guard:
            return target
        after = capture + guard
        return after if asked - after >= self.LEAD_FLOOR_S + self.busy else capture - guard

    def _pipes(self) -> list[MediaPipe]:
        return [m.pipe for m in self.ports() if m.pipe is not None]

    def _stamps(self, now: float) -> tuple[float | None, float | None]:
        """pjsua2's last frame tick: when it first asked and last gave (fresh only)."""
        asked = [p.asked_at for p in self._pipes()
                 if p.asked_at is not None and now - p.asked_at < self.FRESH_S]
        if not asked:
            return None, None
        latest = max(asked)
        first = min(a for a in asked if a > latest - self.PERIOD_S / 2)
        given = [p.given_at for p in self._pipes()
                 if p.given_at is not None and p.given_at > latest - self.PERIOD_S / 2]
        return first, (max(given) if given else None)

    def _advance(self, due: float, target: float | None, now: float) -> float:
        nxt = due + self.PERIOD_S
        if target is not None:
            half = self.PERIOD_S / 2
            err = (target - nxt + half) % self.PERIOD_S - half
            nxt += max(-self.SLEW_S, min(self.SLEW_S, err))
        if now - nxt > self.MAX_BEHIND * self.PERIOD_S:
            nxt = now + self.PERIOD_S
        return nxt

    def _adapt(self, now: float) -> None:
        starved = sum(p.starved for p in self._pipes())
        if starved > self._starved and self.locked:
            self.lead = min(self.LEAD_MAX_S, self.lead + self.LEAD_STEP_S)
            self._relax_at = now + self.LEAD_RELAX_S
        elif now >= self._relax_at:
            self.lead = max(self.LEAD_S, self.lead - self.LEAD_STEP_S)
            self._relax_at = now + self.LEAD_RELAX_S
        self._starved = starved


def local_pipes() -> tuple[MediaPipe, MediaPipe]:
    """Two pipes joined back to back: what one port sends, the other hears (local calls)."""
    a, b = MediaPipe(), MediaPipe()
    a.from_cloud, b.from_cloud = b.to_cloud, a.to_cloud
    return a, b
