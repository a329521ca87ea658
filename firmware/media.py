"""The media path of one port: its PCM on one side, a call's MediaPipe or a local source
on the other, with the DSP in between.

Every 20 ms `tick()` (driven by call control's media timer):
  to the line:  one frame from, in priority order, queued samples (FSK caller ID, DTMF
                dialled into a PSTN line, a confirmation burst), the base source (a
                call-progress tone of the country plan, or the far end's audio from the
                pipe, or silence), plus an overlay tone mixed in (call waiting).
  from the line: every captured frame goes through the echo canceller (far reference:
                the frames we sent, paired one to one with the captured frames in order,
                so a late tick that reads two frames never gives the canceller the same
                reference twice; the 128 ms tail covers the bulk delay),
                then the DTMF detector, then the taps (caller-ID decoder and
                call-progress detector of an FXO line), then to the pipe.
DTMF handling: digits go to `on_digit(digit)` (dialling, or RFC 4733 to the cloud in a
call: call control decides) as soon as the detector calls them present
(`DtmfDetector.current`, ~30 ms into the tone), not at their end: that is ~100 ms
sooner for the last digit of a number. The audio to the cloud is not delayed: a frame is
replaced by silence from the first frame that carries DTMF-like energy (`dtmf_like`: a
row and a column tone hold most of its energy, which a tone reaches once it fills
about a third of the frame) until the detector no longer holds a digit. What leaks is
the part of the first frame before that, under ~8 ms of tone: a Q.24 receiver need
not accept a digit under 40 ms and ours (cext.dtmf) rejects one under 30
(tests/callctl/test_media_latency.py runs it on what reaches the cloud). Digits are not reported while we play queued samples (our own
DTMF to a PSTN line).
A canceller whose output carries more power than its input (by 3 dB) has diverged
(measured: cext.echo with a -10 dBm0 440 Hz far end against a near-end 1000 Hz tone runs to
clipping within a second): it is reset and bypassed for the rest of the call, so the far
end hears the line's own audio, with its echo, rather than noise at full scale.
A `recorder` (firmware/survive/recording.py), when set, gets every frame sent to the
line and every frame from it as sent to the cloud (DTMF masked).
The DSP runs only while the port is `active` (off hook, seized, in a call); an idle
port's capture is still drained and given to the taps (caller ID arrives on hook).

Fax and modem passthrough. While a call is connected, two modem-tone detectors
(cext.modemtone: CNG, CED/ANS, ANSam with or without phase reversals, the V.21 HDLC
preamble) listen both ways: to what the port hears from its line (the capture before
the canceller: a G.168 tone disabler sits in front of it) and to what comes from SIP
toward the line. The first detection switches the call to the passthrough profile
(`passthrough()`, also what call control calls for the other port of a local call):
  - NLP and comfort noise off (V.152 voiceband data; a fax or modem signal must reach
    the far end whole, never gated or replaced by noise);
  - the linear canceller stays in for tones without phase reversals (G3 fax: CNG,
    CED, V.21 flags; half-duplex fax modems have no canceller of their own). DAHDI does
    the same: dahdi-base.c set_echocan_fax_mode() turns only the NLP off on CED;
  - the canceller off for a 2100 Hz tone with phase reversals (ANS/PR, ANSam/PR:
    `disables_echo_canceller`): ITU-T G.168 clause 7, the tone disabler (V.25): the
    modems run their own cancellers and two in tandem fight;
  - DTMF detection and masking off: modem signals carry DTMF-like energy, and a frame
    muted (or a false digit sent as RFC 4733) would break the modulation;
  - `media_mode` becomes "fax" or "modem" (the tone's kind; a fax tone wins over a
    modem one, V.34 fax starts with ANSam); `on_passthrough(media, info)` tells call
    control on every change (it re-INVITEs the SIP side to G.711, marks the CDR).
The normal profile comes back when the call ends: `stop()`, `disconnect()`, or
`connect()` to another call (a second connect to the same pipe keeps the profile).
A port made with modem=False (the headset: a person, and a 16 kHz path) has none.

Timing. `tick()` is `tick_out()` (one frame to the line) then `tick_in()` (every
captured frame to the pipe). `MediaClock` runs them for every port: on one 20 ms grid
while no SIP call is up, and phase-locked to pjsua2's frame clock (the stamps PipePort
leaves on the pipes) while one is: `tick_in` a few ms before pjsua2 asks for the frames
(the audio waits for nothing but that margin), `tick_out` just after pjsua2 handed over
the far end's frames. Measured effect in bench/bench_calls.py.

Assumes 8 kHz int16 frames of 160 samples on the PCM (the headset driver resamples to
its native rate itself) and pipes of the same rate. The headset's media can switch to
16 kHz (`set_rate(16000)`, 320-sample frames) for a wideband call: its driver then
delivers and takes 16 kHz frames, tones are generated at 16 kHz, and the pipe must be a
16 kHz one; it has no echo canceller or DTMF detector (both are 8 kHz kernels).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from cext import toneplans
from cext.dtmf import DtmfDetector
from cext.echo import EchoCanceller
from cext.modemtone import ModemToneDetector
from cext.tones import ToneGenerator
from drivers.bus.pcm import FRAME
from firmware.sip.api import MediaPipe

log = logging.getLogger(__name__)

EC_TAIL_MS = 128
MAX_FRAMES_PER_TICK = 5  # a late tick catches up, but a flooded queue cannot stall us
RUNAWAY_RATIO = 2.0  # output power over input power (3 dB) that means divergence
RUNAWAY_FLOOR = 100.0 ** 2  # ... once the output is above ~-47 dBm0
FAR_QUEUE = 5  # frames sent and not yet paired with a captured frame (jitter of the ticks)
SILENCE = np.zeros(FRAME, dtype=np.int16)
ROWS, COLS = (697.0, 770.0, 852.0, 941.0), (1209.0, 1336.0, 1477.0, 1633.0)
DTMF_SHARE = 0.35  # energy in the best row + column bins that makes a frame DTMF-like
DTMF_TONE_SHARE = 0.08  # ... with each of the two at least this (twist up to ~10 dB)
DTMF_FLOOR = 40.0 ** 2  # mean power under which nothing is DTMF-like (~-55 dBm0)

Tap = Callable[[np.ndarray], None]
VOICE, FAX, MODEM = "voice", "fax", "modem"  # media_mode of a call (status, CDR)
LINE, SIP = "line", "sip"  # where a modem tone was heard


def default_modem_detector():
    """A fresh cext.modemtone detector (one per port and direction)."""
    return ModemToneDetector(rate=8000)


def confirmation_tone(plan: toneplans.CountryPlan) -> toneplans.Tone:
    """Three short bursts of the country's dial tone: 'done' (park, feature codes)."""
    dial = plan.tones["dial"]
    return toneplans.Tone(dial.freqs, dial.level_dbm0, (0.1, 0.1, 0.1, 0.1, 0.1, 30.0),
                          dial.mod_hz, dial.mod_depth)


class PortMedia:
    """One port's audio: see the module docstring."""

    def __init__(self, name: str, pcm, plan: toneplans.CountryPlan, *, echo: bool = True,
                 dtmf: bool = True, on_digit: Callable[[str], None] | None = None,
                 modem: bool = True, modem_detector: Callable[[], object] | None = None,
                 dtmf_row_above_column_max_db: float = 8.0,
                 dtmf_column_above_row_max_db: float = 4.0) -> None:
        self.name, self.pcm, self.plan = name, pcm, plan
        self.on_digit = on_digit
        self.taps: list[Tap] = []
        self.recorder = None  # a firmware.survive.recording.Recording while recording
        self.active = False
        self.muted = False  # nothing goes to the far end (headset mute)
        self.pipe: MediaPipe | None = None
        self.send = True  # audio goes to the pipe (False: listen only, e.g. early media)
        self.cancel_echo = True
        self.runaways = 0  # times the canceller diverged and was bypassed (status)
        self._ec = EchoCanceller(EC_TAIL_MS) if echo else None
        # twist limits: the line's dtmf_row_above_column_max_db / dtmf_column_above_row_max_db
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
        self.read_last = 1  # frames the last tick_in found (MediaClock watches for 0)
        # Fax/modem passthrough (module docstring): the detectors' factory (None: off),
        # the two detectors of the call connected now, and the profile in force.
        self.modem_detector = (modem_detector or default_modem_detector) if modem else None
        self._modem: dict[str, object] = {}
        self.on_passthrough: Callable[[PortMedia, dict], None] | None = None
        self.media_mode = VOICE
        self.passthrough_info: dict = {}  # what switched it: tone, side, t_s (status)
        self._dtmf_on = True
        self._connected_echo = True  # cancel_echo the call was connected with
        self._normal = {"nlp": True, "comfort_noise": True}  # the canceller's own flags
        if self._ec is not None:
            self._normal = {"nlp": bool(self._ec.nlp),
                            "comfort_noise": bool(self._ec.comfort_noise)}

    # ---- what call control sets ----
    def set_rate(self, rate: int) -> None:
        """Carry audio at `rate` (8000, or 16000 on a port without EC and DTMF detector:
        the headset) from now on; the PCM is switched too."""
        if rate == self.rate:
            return
        if rate != 8000 and (self._ec is not None or self._det is not None):
            raise ValueError(f"{self.name}: only a port without echo canceller and DTMF "
                             f"detector can run at {rate} Hz")
        self.pcm.set_line_rate(rate)
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
        reference (each one's output is the other's far end) were measured to run away
        to clipping within 0.5 s on double talk."""
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
        """Fresh detectors for a newly connected call, both ways (none without a pipe)."""
        self._modem = {}
        if self.modem_detector is None or self.pipe is None or self.rate != 8000:
            return
        for side in (LINE, SIP):
            det = self.modem_detector()
            if det is not None:
                self._modem[side] = det

    def _listen_modem(self, side: str, frame: np.ndarray) -> None:
        det = self._modem.get(side)
        if det is None or len(frame) != FRAME:
            return
        for tone, t_s in det.process(frame):
            self.passthrough(tone, side, t_s)

    def passthrough(self, tone, side: str = LINE, t_s: float | None = None) -> bool:
        """Switch the call to the passthrough profile for `tone` (a cext.modemtone
        ModemTone: .name, .kind "fax"/"modem", .disables_echo_canceller) heard on
        `side`; True when something changed (then `on_passthrough` was told)."""
        kind = FAX if getattr(tone, "kind", MODEM) == FAX else MODEM
        mode = FAX if FAX in (kind, self.media_mode) else MODEM
        kill_ec = (bool(getattr(tone, "disables_echo_canceller", False)) and self.cancel_echo
                   and self._ec is not None)
        if mode == self.media_mode and not kill_ec:
            return False
        first = self.media_mode == VOICE
        self.media_mode = mode
        if first:
            self._dtmf_on = False
            self._reported = None
            if self._ec is not None:
                self._ec.nlp = False
                self._ec.comfort_noise = False
        if kill_ec:
            self._ec.reset()
            self.cancel_echo = False
        name = getattr(tone, "name", str(tone))
        self.passthrough_info = {"mode": mode, "tone": name, "side": side,
                                 "t_s": None if t_s is None else round(float(t_s), 3),
                                 "disabling_tone": bool(getattr(
                                     tone, "disables_echo_canceller", False)),
                                 **self.profile()}
        log.info("%s: %s heard on the %s side: %s passthrough (echo canceller %s, NLP "
                 "off, DTMF detection off)", self.name, name, side, mode,
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

    def profile(self) -> dict:
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
        self.pcm.write(out)
        self._far.append(out)
        if self.recorder is not None:
            self._record("to_line", out)

    def tick_in(self) -> int:
        """Every captured frame through the DSP to the taps and the pipe; how many."""
        count = 0
        for count in range(MAX_FRAMES_PER_TICK):
            near = self.pcm.read()
            if near is None:
                return count
            self._near(np.asarray(near, dtype=np.int16))
        return count + 1

    def _next_out(self) -> np.ndarray:
        if len(self._samples):
            return self._from_samples()
        if self._tone is not None:
            out = self._tone.generate(self.frame)
        elif self.pipe is not None:
            frame = self.pipe.take_from_cloud()
            out = self._silence if frame is None or len(frame) != self.frame else frame
            if self._modem and out is frame:
                self._listen_modem(SIP, frame)
        else:
            out = self._silence
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
        clean = self._cancel(near, far)
        dtmf = self._detect(clean)
        self._tap(clean)
        sent = self._silence if dtmf else clean
        self._put(sent)
        if self.recorder is not None:
            self._record("from_line", sent)

    def _record(self, side: str, frame: np.ndarray) -> None:
        """Both directions to the call's recording; a full disk stops the recording,
        never the call."""
        try:
            getattr(self.recorder, side)(frame)
        except OSError as exc:
            log.error("%s: recording stopped: %s", self.name, exc)
            self.recorder = None

    def _cancel(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        if self._ec is None or not self.cancel_echo:
            return near
        out = self._ec.process(near, far)
        if _power(out) > RUNAWAY_RATIO * _power(near) + RUNAWAY_FLOOR:
            # A canceller only ever removes: more out than in means it diverged.
            log.warning("%s: echo canceller diverged (out %.0f dB over in): bypassed for "
                        "the rest of this call", self.name,
                        10 * np.log10((_power(out) + 1) / (_power(near) + 1)))
            self._ec.reset()
            self.cancel_echo = False
            self.runaways += 1
            return near
        return out

    def _detect(self, clean: np.ndarray) -> bool:
        """Feed the detector, report digits at their start; True: keep this frame from
        the cloud (a digit is on, or the frame looks like the start of one)."""
        if self._det is None or not self._dtmf_on:
            return False
        found = self._det.process(clean)
        current = self._det.current
        if self.on_digit is not None and not self.playing:
            for digit in self._new_digits(found, current):
                self.on_digit(digit)
        return bool(found) or current is not None or dtmf_like(clean)

    def _new_digits(self, found: list, current: str | None) -> list[str]:
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
        for tap in list(self.taps):
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
    """Call control's media timer: every port's `tick_out` and `tick_in` once per 20 ms.

    Two grids, each advanced by one period per run and slewed (at most SLEW_S a period,
    so the line never gets two frames at once) toward a target phase:
      in:  LEAD before pjsua2's frame clock first asks a pipe for a frame (the earliest
           fresh `asked_at`): the frames it takes were captured and cleaned just before;
      out: OUT_AFTER after it last gave one (the latest fresh `given_at`).
    Without fresh stamps (no SIP call up: tones, local calls, tests in fake time) both
    grids run together, out then in. The lead grows by a millisecond whenever pjsua2
    found a pipe empty (`starved`: the in-tick came too late, e.g. the reactor woke
    late) up to LEAD_MAX_S, and shrinks back slowly while none is. On top of it comes
    the time the in-tick itself takes (`busy`: the last ports run ~25 us each later than
    the first), all of it capped at LEAD_CAP_S so a frame never waits more than that
    plus one period.
    The line's capture clock is a third one (the TDM bus; the phones' timers in the
    simulation). An in-tick landing on its phase finds 0 frames, then 2, at random: a
    frame late for pjsua2, then a frame standing in the pipe. So a port in a call whose
    in-tick finds no frame marks the capture phase there (`capture_at`), and the in-tick
    keeps CAPTURE_GUARD_S clear of it: after it while that leaves LEAD_FLOOR_S before
    pjsua2 asks, else before it (a frame then waits one period, at most ~lead + 20 ms).
    `ports()` gives the PortMedia to run; `on_error(media)` is told when one fails
    (the others still run).
    """

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

    def __init__(self, reactor, ports: Callable[[], list], on_error: Callable) -> None:
        self.reactor, self.ports, self.on_error = reactor, ports, on_error
        self.lead = self.LEAD_S
        self.locked = False
        self.timer = None
        self._out_due = self._in_due = 0.0
        self._starved = 0
        self._relax_at = 0.0
        self.capture_at: float | None = None
        self.busy = 0.0  # how long the in-tick takes (moving average; outliers are
        # the adaptive lead's business)

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
            self._run("tick_out")
            target = None if given is None else given + self.OUT_AFTER_S
            self._out_due = self._advance(self._out_due, target, eventtime)
        else:
            self._run("tick_in")
            self.busy += self.BUSY_WEIGHT * (self.reactor.now() - eventtime - self.busy)
            self._watch_capture(eventtime)
            self._adapt(eventtime)
            target = None if asked is None else self._in_target(asked)
            self._in_due = self._advance(self._in_due, target, eventtime)
        return min(self._out_due, self._in_due)

    def _run(self, step: str) -> None:
        for media in self.ports():
            try:
                result = getattr(media, step)()
            except Exception:  # noqa: BLE001 - one port's audio must not stop the others
                self.on_error(media)
                continue
            if step == "tick_in":
                media.read_last = result

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
