"""Virtual central office on the far side of an FXO port: the PSTN line, scripted.

It drives the line side of an Si3050Emulator (battery, polarity, ring voltage, loop drop)
and the device end of the port's SimPcmLink (20 ms frames on the reactor) after the
country's plan in cext.toneplans: ringing with caller ID (after the first ring, or before
it with polarity reversal and alert tone), ring trip on answer, dial/busy/reorder tones,
disconnect signals, and line conditions and an echo hybrid for commissioning. `events`
records what it did; tones are at the plan's levels (0 dBm0 = 22 800 peak).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from cext import toneplans
from cext.dtmf import DtmfDetector
from drivers.bus.pcm import FRAME, LINE_RATE
from foundation.reactor import NEVER, Reactor

log = logging.getLogger(__name__)

FRAME_S = FRAME / LINE_RATE
ZERO_DBM0_PEAK = 22800.0  # a 0 dBm0 sine in 16-bit linear (full scale is +3.17 dBm0)
RING_HZ = {"us": 20.0, "uk": 25.0, "de": 25.0, "fr": 50.0, "in": 25.0, "au": 25.0}
CID_DELAY_S = 0.55  # Bell 202 / GR-30: FSK starts >= 500 ms after the first ring
CID_GUARD_S = 0.2  # ... and ends >= 200 ms before the second
UK_ALERT = toneplans.Tone((2130.0, 2750.0), -20.0)  # dual-tone alert signal
UK_REVERSAL_TO_ALERT_S = 0.2
UK_ALERT_S = 0.1
UK_ALERT_TO_FSK_S = 0.06
UK_FSK_TO_RING_S = 0.5
REORDER_AFTER_S = 5.0
HEARD_FRAMES = 3000  # 60 s of what the gateway sent
DEFAULT_CALLER = {"number": "2015550123", "name": "BRANCH CALLER", "datetime": "11221030",
                  "reason": None}

CidAudio = Callable[[dict, str], np.ndarray]


def modem_cid_audio(callerid: dict, standard: str) -> np.ndarray:
    """Caller-ID audio from cext.callerid: an MDMF message FSK-modulated, or DTMF-CLIP."""
    from cext import callerid as cid  # imported on use: the modem is a separate kernel

    if standard == "dtmf":
        return cid.dtmf_clip_samples(callerid.get("number"), callerid.get("reason"), LINE_RATE)
    return cid.modulate(cid.encode(callerid, fmt="mdmf"), standard=standard, rate=LINE_RATE)


def tone_samples(tone: toneplans.Tone, start: int, count: int, rate: int = LINE_RATE) -> np.ndarray:
    """`count` samples of a plan tone from sample index `start` (phase and cadence continue)."""
    t = np.arange(start, start + count) / rate
    amp = ZERO_DBM0_PEAK * 10 ** (tone.level_dbm0 / 20)
    sig = sum(np.sin(2 * np.pi * f * t) for f in tone.freqs) * amp
    if tone.mod_hz:
        sig = sig * 0.5 * (1 + np.sin(2 * np.pi * tone.mod_hz * t))
    if tone.cadence:
        sig = sig * _cadence_gate(tone.cadence, t)
    return np.clip(np.round(sig), -32768, 32767).astype(np.int16)


def _cadence_gate(cadence: tuple[float, ...], t: np.ndarray) -> np.ndarray:
    edges = np.cumsum(cadence)
    phase = np.mod(t, edges[-1])
    index = np.searchsorted(edges, phase, side="right")
    return (index % 2 == 0).astype(float)  # even segments are "on"


class VirtualCO:
    """The PSTN line behind one FXO port."""

    def __init__(self, reactor: Reactor, daa, pcm, country: str = "us",
                 number: str = "5551230100", cid_audio: CidAudio | None = None,
                 plan: toneplans.CountryPlan | None = None) -> None:
        self.reactor, self.daa, self.pcm = reactor, daa, pcm
        self.plan = plan or toneplans.plan(country)
        self.country, self.number = self.plan.code, number
        self.cid_audio = cid_audio or modem_cid_audio
        self.ring_hz = RING_HZ.get(self.plan.code, 25.0)
        self.events: list[tuple[str, float]] = []
        self.state = "idle"  # idle ringing call dialtone disconnected busy reorder parallel
        self._burst: np.ndarray | None = None  # caller-ID audio being sent
        self._burst_pos = 0
        self._burst_what = ""
        self._tone_name = ""
        self._tone_pos = 0
        self._far_end: deque[np.ndarray] = deque()
        self._heard: deque[np.ndarray] = deque(maxlen=HEARD_FRAMES)
        self._script: list[tuple[float, Callable[[], None]]] = []
        self._cadence: tuple[float, ...] = ()
        self._script_timer = reactor.register_timer(self._run_script, NEVER)
        self._frame_timer = reactor.register_periodic(self._frame, FRAME_S, start=reactor.now() + FRAME_S)
        self.callerid_standard: str | None = None  # None: the country plan's
        self.dialed = ""
        self._dtmf: DtmfDetector | None = None
        self._echo_h = np.zeros(0)
        self._echo_hist = np.zeros(0)
        self._echo_out = np.zeros(0)
        self._custom_tone: toneplans.Tone | None = None
        daa.watch_hook(self._hook_changed)

    # ---- what the tests and the demo call ----
    @property
    def answered(self) -> bool:
        """The DAA has seized the line."""
        return self.daa.offhook

    @property
    def heard(self) -> np.ndarray:
        frames = list(self._heard)
        return np.concatenate(frames) if frames else np.zeros(0, np.int16)

    def ring(self, callerid: dict | None = DEFAULT_CALLER, cadence: tuple[float, ...] | None = None,
             count: int | None = None) -> None:
        """Ring the line; count=None rings until answered or stop_ring()."""
        self._clear_script()
        self._cadence = tuple(cadence or self.plan.ring_cadence)
        self._rings_left = count
        self._callerid = callerid
        self._rings_done = 0
        self._set_state("ringing")
        if callerid and self.plan.callerid_when == "before_ring":
            self._caller_id_before_ring()
        else:
            self._ring_on()

    def stop_ring(self) -> None:
        """The caller gives up."""
        if self.state == "ringing":
            self._end_ringing("ring_stopped")

    def disconnect(self, signal: str = "loop_drop", seconds: float = 0.5,
                   tone: toneplans.Tone | None = None) -> None:
        """The far end hangs up; the CO signals it in the given style (for "tone": the
        plan's busy tone, or `tone`)."""
        if signal == "loop_drop":
            self.daa.line_battery(False)
            self._log("loop_drop")
            self._after(seconds, self._restore_battery)
        elif signal == "reversal":
            self.reverse_polarity()
        elif signal == "tone":
            self._custom_tone = tone
            self._start_tone("busy")
            self._log("busy_tone")
            self._set_state("busy")
            return
        else:
            raise ValueError(f"disconnect signal {signal!r}: use loop_drop, reversal or tone")
        self._set_state("disconnected")
        self._after(REORDER_AFTER_S, self._maybe_reorder)

    def set_line(self, battery_v: float | None = None, loop_ohm: float | None = None) -> None:
        """The exchange battery (idle volts) and the cable's resistance (loop current)."""
        self.daa.line_feed(battery_v=battery_v, loop_ohm=loop_ohm)

    def set_echo(self, h: np.ndarray | None) -> None:
        """The line's echo path (8 kHz impulse response); None or empty: no echo."""
        self._echo_h = np.zeros(0) if h is None else np.asarray(h, dtype=float)
        self._echo_hist = np.zeros(max(0, len(self._echo_h) - 1))
        self._echo_out = np.zeros(0)

    def reverse_polarity(self) -> None:
        self.daa.line_polarity(-self.daa.polarity)
        self._log("reversal")

    def parallel_phone(self, off_hook: bool) -> None:
        """Another phone on the same line goes off or on hook."""
        self.daa.line_parallel_phone(off_hook)
        self._log("parallel_off_hook" if off_hook else "parallel_on_hook")
        if off_hook and self.state == "ringing":
            self._end_ringing("answered_elsewhere")
            self._set_state("parallel")
        elif not off_hook and self.state == "parallel":
            self._set_state("idle")

    def connect_line(self, connected: bool) -> None:
        """Plug or unplug the PSTN line from the FXO port."""
        self.daa.line_connect(connected)
        self._log("line_connected" if connected else "line_unplugged")

    def play(self, samples: np.ndarray) -> None:
        """Queue far-end audio (8 kHz int16) to send while in a call."""
        samples = np.asarray(samples, dtype=np.int16)
        for i in range(0, len(samples), FRAME):
            frame = np.zeros(FRAME, np.int16)
            chunk = samples[i:i + FRAME]
            frame[:len(chunk)] = chunk
            self._far_end.append(frame)

    # ---- ringing ----
    def _ring_on(self) -> None:
        self.daa.line_ring(self.ring_hz)
        self._log("ring_on")
        self._after(self._cadence_step(0), self._ring_off)

    def _cadence_step(self, offset: int) -> float:
        """On (offset 0) or off (1) time of the current burst; cadences repeat (on, off, ...)."""
        pairs = len(self._cadence) // 2 or 1
        i = 2 * (self._rings_done % pairs) + offset
        return self._cadence[i] if i < len(self._cadence) else 4.0

    def _ring_off(self) -> None:
        self.daa.line_ring(0)
        self._log("ring_off")
        off = self._cadence_step(1)
        self._rings_done += 1
        if self._rings_done == 1 and self._callerid and self.plan.callerid_when != "before_ring":
            self._caller_id_between_rings(off)
        if self._rings_left is not None and self._rings_done >= self._rings_left:
            self._after(off, lambda: self._end_ringing("caller_gave_up"))
        else:
            self._after(off, self._ring_on)

    def _end_ringing(self, why: str) -> None:
        self._clear_script()
        self.daa.line_ring(0)
        self._burst = None
        self._log(why)
        self._set_state("idle")

    def _caller_id_between_rings(self, off: float) -> None:
        audio = self._make_cid()
        if audio is None:
            return
        if CID_DELAY_S + len(audio) / LINE_RATE + CID_GUARD_S > off:
            self._log("cid_too_long")
            return
        self._after(CID_DELAY_S, lambda: self._send_burst(audio, "cid"))

    def _caller_id_before_ring(self) -> None:
        audio = self._make_cid()
        if audio is None:
            self._ring_on()
            return
        alert = tone_samples(UK_ALERT, 0, int(UK_ALERT_S * LINE_RATE))
        gap = np.zeros(int(UK_ALERT_TO_FSK_S * LINE_RATE), np.int16)
        fsk_at = UK_REVERSAL_TO_ALERT_S
        if (self.callerid_standard or self.plan.callerid) != "dtmf":  # DTMF-CLIP follows the reversal without an alert
            fsk_at += (len(alert) + len(gap)) / LINE_RATE
            self._after(UK_REVERSAL_TO_ALERT_S, lambda: self._send_burst(alert, "alert"))
        ring_at = fsk_at + len(audio) / LINE_RATE + UK_FSK_TO_RING_S
        self.reverse_polarity()
        self._after(fsk_at, lambda: self._send_burst(audio, "cid"))
        self._after(ring_at - 0.2, self.reverse_polarity)  # back to normal before ringing
        self._after(ring_at, self._ring_on)

    def _make_cid(self) -> np.ndarray | None:
        if self._callerid is None:
            return None
        try:
            audio = self.cid_audio(self._callerid, self.callerid_standard or self.plan.callerid)
        except ImportError:
            self._log("cid_unavailable")  # no FSK modem built yet: ring without caller ID
            return None
        return np.asarray(audio, dtype=np.int16)

    def _send_burst(self, audio: np.ndarray, what: str) -> None:
        self._burst, self._burst_pos, self._burst_what = audio, 0, what

    # ---- hook, battery, tones ----
    def _hook_changed(self, offhook: bool) -> None:
        if offhook and self.state == "ringing":
            self._end_ringing("answered")
            self._set_state("call")
        elif offhook:
            self._log("seized")
            self.set_echo(self._echo_h)  # a fresh hybrid state for each seizure
            if self.state == "idle":
                self._start_tone("dial")
                self._set_state("dialtone")
        else:
            self._log("released")
            self._tone_name = ""
            self._custom_tone = None
            self._far_end.clear()
            self._set_state("idle")

    def _restore_battery(self) -> None:
        self.daa.line_battery(True)
        self._log("loop_restored")

    def _maybe_reorder(self) -> None:
        if self.state == "disconnected" and self.daa.offhook:
            self._start_tone("reorder")
            self._set_state("reorder")

    def _start_tone(self, name: str) -> None:
        self._tone_name, self._tone_pos = name, 0

    def _set_state(self, state: str) -> None:
        if state == "dialtone":
            self._dtmf, self.dialed = DtmfDetector(), ""
        if state != self.state:
            log.debug("CO %s: %s -> %s", self.number, self.state, state)
            self.state = state

    def _log(self, what: str) -> None:
        self.events.append((what, self.reactor.now()))

    # ---- the script of timed steps ----
    def _after(self, seconds: float, action: Callable[[], None]) -> None:
        self._script.append((self.reactor.now() + seconds, action))
        self._script.sort(key=lambda step: step[0])
        self.reactor.update_timer(self._script_timer, self._script[0][0])

    def _clear_script(self) -> None:
        self._script = [step for step in self._script if step[1] == self._restore_battery]
        self.reactor.update_timer(self._script_timer, self._script[0][0] if self._script else NEVER)

    def _run_script(self, eventtime: float) -> float:
        while self._script and self._script[0][0] <= eventtime:
            _, action = self._script.pop(0)
            action()
        return self._script[0][0] if self._script else NEVER

    # ---- audio, one frame every 20 ms ----
    def _frame(self, eventtime: float) -> float:
        frame = self._with_echo(self._next_frame(eventtime))
        self.pcm.write(frame if self.daa.audio_path else np.zeros(FRAME, np.int16))
        self._listen()
        return eventtime + FRAME_S

    def _next_frame(self, eventtime: float) -> np.ndarray:
        if self._burst is not None:
            return self._burst_frame(eventtime)
        if self._tone_name and self.daa.offhook:
            tone = self.plan.tones[self._tone_name]
            if self._tone_name == "busy" and self._custom_tone is not None:
                tone = self._custom_tone
            frame = tone_samples(tone, self._tone_pos, FRAME)
            self._tone_pos += FRAME
            return frame
        if self.state in ("call", "dialing") and self._far_end:  # dialing: the called party
            return self._far_end.popleft()
        return np.zeros(FRAME, np.int16)

    def _burst_frame(self, eventtime: float) -> np.ndarray:
        assert self._burst is not None
        if self._burst_pos == 0:
            self._log(f"{self._burst_what}_start")
        frame = np.zeros(FRAME, np.int16)
        chunk = self._burst[self._burst_pos:self._burst_pos + FRAME]
        frame[:len(chunk)] = chunk
        self._burst_pos += FRAME
        if self._burst_pos >= len(self._burst):
            self.events.append((f"{self._burst_what}_end", eventtime + len(chunk) / LINE_RATE))
            self._burst = None
        return frame

    def _listen(self) -> None:
        while (frame := self.pcm.read()) is not None:
            if self.daa.offhook:
                self._heard.append(frame)
                self._echo_in(frame)
                self._dial_digits(frame)

    def _dial_digits(self, frame: np.ndarray) -> None:
        """Digits dialled into dial tone stop it (the exchange starts collecting)."""
        if self.state not in ("dialtone", "dialing") or self._dtmf is None:
            return
        for digit, _start, _end in self._dtmf.process(np.asarray(frame, np.int16)):
            self.dialed += digit
            if self.state == "dialtone":
                self._tone_name = ""
                self._set_state("dialing")
            self._log(f"digit_{digit}")

    # ---- the hybrid: what the gateway sends comes back, convolved with the echo path ----
    def _echo_in(self, frame: np.ndarray) -> None:
        h = self._echo_h
        if not len(h):
            return
        x = np.concatenate([self._echo_hist, np.asarray(frame, dtype=float)])
        y = np.convolve(x, h)[len(h) - 1:len(x)]
        self._echo_hist = x[len(x) - (len(h) - 1):] if len(h) > 1 else np.zeros(0)
        self._echo_out = np.concatenate([self._echo_out, y])

    def _with_echo(self, frame: np.ndarray) -> np.ndarray:
        if not len(self._echo_out) or not self.daa.offhook:
            return frame
        echo, self._echo_out = self._echo_out[:FRAME], self._echo_out[FRAME:]
        mixed = frame.astype(float)
        mixed[:len(echo)] += echo
        return np.clip(np.round(mixed), -32768, 32767).astype(np.int16)
