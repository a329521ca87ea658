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
DTMF handling: digits the detector confirms go to `on_digit(digit)` (dialling, or
RFC 4733 to the cloud in a call: call control decides). While a digit is present
(`DtmfDetector.current`) the audio to the cloud is replaced by silence. The detector
needs ~30 ms of a digit before it calls it present, so the audio to the cloud runs one
frame (20 ms) behind and a frame is blanked when the digit is present in it or in the
next one: without that delay the first 20-40 ms of every digit would leak to the far
end. Digits are not reported while we play queued samples (our own DTMF to a PSTN line).
A canceller whose output carries more power than its input (by 3 dB) has diverged
(measured: cext.echo with a -10 dBm0 440 Hz far end against a near-end 1000 Hz tone runs to
clipping within a second): it is reset and bypassed for the rest of the call, so the far
end hears the line's own audio, with its echo, rather than noise at full scale.
The DSP runs only while the port is `active` (off hook, seized, in a call); an idle
port's capture is still drained and given to the taps (caller ID arrives on hook).

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

Tap = Callable[[np.ndarray], None]


def confirmation_tone(plan: toneplans.CountryPlan) -> toneplans.Tone:
    """Three short bursts of the country's dial tone: 'done' (park, feature codes)."""
    dial = plan.tones["dial"]
    return toneplans.Tone(dial.freqs, dial.level_dbm0, (0.1, 0.1, 0.1, 0.1, 0.1, 30.0),
                          dial.mod_hz, dial.mod_depth)


class PortMedia:
    """One port's audio: see the module docstring."""

    def __init__(self, name: str, pcm, plan: toneplans.CountryPlan, *, echo: bool = True,
                 dtmf: bool = True, on_digit: Callable[[str], None] | None = None) -> None:
        self.name, self.pcm, self.plan = name, pcm, plan
        self.on_digit = on_digit
        self.taps: list[Tap] = []
        self.active = False
        self.muted = False  # nothing goes to the far end (headset mute)
        self.pipe: MediaPipe | None = None
        self.send = True  # audio goes to the pipe (False: listen only, e.g. early media)
        self.cancel_echo = True
        self.runaways = 0  # times the canceller diverged and was bypassed (status)
        self._ec = EchoCanceller(EC_TAIL_MS) if echo else None
        self._det = DtmfDetector() if dtmf else None
        self._tone: ToneGenerator | None = None
        self.tone_name = ""
        self._overlay: ToneGenerator | None = None
        self._samples = np.zeros(0, dtype=np.int16)
        self._then: Callable[[], None] | None = None
        self._far: deque[np.ndarray] = deque(maxlen=FAR_QUEUE)
        self._delayed: np.ndarray | None = None
        self._delayed_digit = False
        self.rate, self.frame, self._silence = 8000, FRAME, SILENCE

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
        self._delayed = None
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
        self.active = True

    def stop(self) -> None:
        """Back to idle: silence out, nothing connected."""
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
        self.pipe, self.send, self.cancel_echo = pipe, send, cancel_echo
        self.tone(None)
        self._delayed = None

    def disconnect(self) -> None:
        self.pipe = None

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
        out = self._next_out()
        self.pcm.write(out)
        self._far.append(out)
        for _ in range(MAX_FRAMES_PER_TICK):
            near = self.pcm.read()
            if near is None:
                break
            self._near(np.asarray(near, dtype=np.int16))

    def _next_out(self) -> np.ndarray:
        if len(self._samples):
            return self._from_samples()
        if self._tone is not None:
            out = self._tone.generate(self.frame)
        elif self.pipe is not None:
            frame = self.pipe.take_from_cloud()
            out = self._silence if frame is None or len(frame) != self.frame else frame
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
        clean = self._cancel(near, far)
        digit_here = self._detect(clean)
        self._tap(clean)
        self._to_cloud(clean, digit_here)

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
        if self._det is None:
            return False
        found = self._det.process(clean)
        if self.on_digit is not None and not self.playing:
            for digit, _start, _end in found:
                self.on_digit(digit)
        return bool(found) or self._det.current is not None

    def _tap(self, frame: np.ndarray) -> None:
        for tap in list(self.taps):
            tap(frame)

    def _to_cloud(self, clean: np.ndarray, digit_here: bool) -> None:
        if self._det is None:  # no DTMF removal: no delay either
            self._put(clean)
            return
        previous, previous_digit = self._delayed, self._delayed_digit
        self._delayed, self._delayed_digit = clean, digit_here
        if previous is not None:
            self._put(SILENCE if (previous_digit or digit_here) else previous)

    def _put(self, frame: np.ndarray) -> None:
        if self.pipe is None or not self.send:
            return
        self.pipe.put_to_cloud(self._silence if self.muted else frame)


def _power(frame: np.ndarray) -> float:
    x = frame.astype(np.float64)
    return float(np.dot(x, x)) / len(x)


def local_pipes() -> tuple[MediaPipe, MediaPipe]:
    """Two pipes joined back to back: what one port sends, the other hears (local calls)."""
    a, b = MediaPipe(), MediaPipe()
    a.from_cloud, b.from_cloud = b.to_cloud, a.to_cloud
    return a, b
