"""Line commissioning: a port measures its own line and proposes settings: GR-909 on FXS
ports; on FXO ports the line, the echo path and, on a test call, the caller-ID standard
and disconnect signal (kept in data_dir/line-facts.json). Runs on the reactor thread,
time passing through reactor.run_until; the port is leased from call control."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cext.callerid import CallerIdDecoder
from cext.cpt import CallProgressDetector
from cext.dtmf import dtmf_samples
from drivers.board import Board
from drivers.bus.pcm import FRAME, LINE_RATE
from drivers.chips.si3050 import Si3050
from drivers.chips.si3215 import Si3215
from firmware.callctl import CallControlError
from firmware.callctl.controller import CallControl
from firmware.core.config.typed import Config, FxoLine
from firmware.media import Pcm
from foundation.errors import BranchlineError
from foundation.reactor import Reactor

log = logging.getLogger(__name__)

HAZARD_VRMS, HAZARD_VDC = 50.0, 135.0
FOREIGN_VRMS, FOREIGN_VDC = 10.0, 6.0
FAULT_OHM = 150e3
REN_MIN, REN_MAX = 0.175, 5.0
OHM_PER_REN, FARAD_PER_REN = 6930.0, 8e-6
OFFHOOK_DROP_V = 3.0
OFFHOOK_MIN_MA = 5.0
BIAS_V = 48.0
DRIVE_V, DRIVE_PHONE_V = 30.0, 6.0  # the second stays under an off-hook phone's drop
LOOP_SENSE_MAX_OHM = 25e3  # above this the loop current is a step or two of LCS
R_SENSE_HALF_LSB = 0.188  # half a VTIP/VRING step: the least difference a reading hides
DBM0_RMS = 16000.0
PROBE_N = 2048  # one probe period: 256 ms (covers any tail the canceller can)
PROBE_PERIODS = 4
PROBE_DBM0 = -12.0
TAIL_FLOOR_DB = 30.0
EC_TAILS_MS = (16, 32, 64, 128)
FACTS_FILE = "line-facts.json"
TONE_ON_DBM0 = -35.0
CADENCE_TOL_MS = 60.0
Item = dict[str, Any]  # one measurement: name, value, unit, limit, pass (and notes)


class CommissionError(BranchlineError):
    """The port cannot be commissioned (unknown, failed, busy); the message says why."""


class Signal(StrEnum):  # how the far end's hang-up shows on an FXO line
    REVERSAL = "reversal"
    LOOP_DROP = "loop_drop"
    TONE = "tone"


class Parts(Protocol):  # runtime.Core or the CLI's stand-in (optionally cc, data_dir)
    board: Board
    reactor: Reactor
    doc: dict[str, Any]


def _wait(reactor: Reactor, seconds: float) -> None:
    reactor.run_until(reactor.now() + seconds)


def _item(name: str, value: float | None, unit: str, limit: str, ok: bool | None,
          **extra: object) -> Item:
    shown = None if value is None or not math.isfinite(value) else round(float(value), 2)
    return {"name": name, "value": shown, "unit": unit, "limit": limit,
            "pass": None if ok is None else bool(ok), **extra}


def commission_port(parts: Parts, port: str, *, test_call_s: float = 0.0,
                    facts: LineFacts | None = None) -> dict[str, Any]:
    lines = Config.from_doc(parts.doc).lines
    if port not in lines:
        raise CommissionError(f"{port}: no such port; ports: {', '.join(lines)}")
    driver = parts.board.drivers.get(port)
    if driver is None or driver.failed:
        why = getattr(driver, "error", "") or parts.board.errors.get(port, "no driver")
        raise CommissionError(f"{port}: the chip is not running ({why}): run `branchline hw probe`")
    facts = facts or LineFacts(getattr(parts, "data_dir", None))
    with _leased(parts, port):
        if isinstance(driver, Si3215):
            return gr909(driver, parts.reactor, port)
        return fxo_commission(parts, port, driver, test_call_s, facts)


class _NullPcm:  # the port's media talks to it while we have the real PCM
    def read(self) -> np.ndarray | None:
        return None

    def write(self, frame: np.ndarray) -> None:
        pass


@contextmanager
def _leased(parts: Parts, port: str) -> Iterator[None]:
    """Call control takes the port out of service; its media lets go of the PCM."""
    cc: CallControl | None = getattr(parts, "cc", None)
    if cc is None:
        yield
        return
    try:
        lease = cc.lease_port(port, "commissioning")
    except CallControlError as exc:
        raise CommissionError(str(exc)) from None
    saved = lease.media.use_pcm(_NullPcm())
    try:
        yield
    finally:
        lease.media.use_pcm(saved)
        cc.release(lease)


# ====================================================================== FXS: GR-909

def gr909(drv: Si3215, reactor: Reactor, port: str) -> dict[str, Any]:
    """The GR-909 items of an FXS port (after a failed voltage item, no others)."""
    saved = drv.feed()
    try:
        items = _voltage_items(drv, reactor)
        if any(i["pass"] is False for i in items):
            items += [_item(n, None, u, lim, None, note="not tested: voltage on the line")
                      for n, u, lim in (("receiver_off_hook", "V", "<= 3"),
                                        ("resistive_tip_ring", "ohm", ">= 150000"),
                                        ("resistive_tip_ground", "ohm", ">= 150000"),
                                        ("resistive_ring_ground", "ohm", ">= 150000"),
                                        ("ren", "REN", "0.175..5"))]
        else:
            off_hook, loop_ohm = _receiver_item(drv, reactor)
            drive = DRIVE_PHONE_V if off_hook["pass"] is False else DRIVE_V
            items += [off_hook, *_resistive_items(drv, reactor, loop_ohm, drive)]
            items.append(_ren_item(drv, reactor, off_hook["pass"] is False))
    finally:
        drv.set_feed(**saved)
        drv.restore_idle()
    failed = [i["name"] for i in items if i["pass"] is False]
    return {"port": port, "kind": "fxs", "test": "gr909", "items": items, "pass": not failed,
            "failed": failed,
            "verdict": "line good" if not failed else "line fault: " + ", ".join(failed)}


def _voltage_items(drv: Si3215, reactor: Reactor) -> list[Item]:
    """Hazardous potential and foreign EMF (linefeed open, sense at 0 V, 200 ms); a
    saturated reading counts as hazardous (135 V DC is beyond the sense range)."""
    drv.set_feed(common_v=0.0)
    drv.set_linefeed("open")
    _wait(reactor, 0.02)
    t, tip, ring = [], [], []
    for _ in range(200):
        s = drv.sense()
        t.append(reactor.now())
        tip.append(s["tip_v"])
        ring.append(s["ring_v"])
        _wait(reactor, 0.001)
    fs = drv.SENSE_FULL_SCALE_V - 0.5
    wires = {w: (*_ac_dc(np.array(t), np.array(v)), max(v) >= fs)
             for w, v in (("tip", tip), ("ring", ring))}
    ac = max(w[0] for w in wires.values())
    dc = max(w[1] for w in wires.values())
    saturated = any(w[2] for w in wires.values())
    haz_ac = ac > HAZARD_VRMS or (saturated and ac >= dc)
    haz_dc = dc > HAZARD_VDC or (saturated and dc > ac)
    detail = {w: {"ac_vrms": round(v[0], 1), "dc_v": round(v[1], 1)} for w, v in wires.items()}
    note = {"note": "sense saturated: at least this"} if saturated else {}
    hazardous = haz_ac or haz_dc
    return [
        _item("hazardous_ac", ac, "Vrms", "<= 50", not haz_ac, detail=detail, **(note if haz_ac else {})),
        _item("hazardous_dc", dc, "V", "<= 135", not haz_dc, detail=detail, **(note if haz_dc else {})),
        _item("foreign_ac", ac, "Vrms", "<= 10", None if hazardous else ac <= FOREIGN_VRMS),
        _item("foreign_dc", dc, "V", "<= 6", None if hazardous else dc <= FOREIGN_VDC),
    ]


def _ac_dc(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(AC Vrms, |DC| V) of magnitude samples of dc + ac*sin at 50 or 60 Hz (v^2 fit)."""
    y = v ** 2
    best, coef = math.inf, np.zeros(5)
    for hz in (50.0, 60.0):
        w = 2 * math.pi * hz * (t - t[0])
        basis = np.column_stack([np.ones_like(w), np.cos(w), np.sin(w), np.cos(2 * w), np.sin(2 * w)])
        fit, *_ = np.linalg.lstsq(basis, y, rcond=None)
        resid = float(np.sum((basis @ fit - y) ** 2))
        if resid < best:
            best, coef = resid, fit
    ac_sq = math.hypot(coef[3], coef[4])
    return math.sqrt(ac_sq), math.sqrt(max(0.0, coef[0] - ac_sq))


def _settled_sense(drv: Si3215, reactor: Reactor, reads: int = 5) -> dict[str, float]:
    _wait(reactor, 0.05)
    rows = []
    for _ in range(reads):
        rows.append(drv.sense())
        _wait(reactor, 0.002)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _receiver_item(drv: Si3215, reactor: Reactor) -> tuple[Item, float]:
    """The receiver-off-hook item (a loop V = V0 + R*I with V0 > 3 V is a phone), and
    the tip-ring resistance of a resistive loop drawing current (inf when none)."""
    drv.set_feed(common_v=3.0, loop_limit_ma=41.0)
    drv.set_linefeed("forward_active")
    points = []
    for voc in (16.0, 32.0):
        drv.set_feed(on_hook_v=voc)
        s = _settled_sense(drv, reactor)
        points.append((abs(s["ring_v"] - s["tip_v"]), s["loop_ma"]))
    (v1, i1), (v2, i2) = points
    drop = None
    if i2 >= OFFHOOK_MIN_MA and i2 - i1 > 0.5:
        r_loop = (v2 - v1) / ((i2 - i1) / 1000)
        drop = v1 - r_loop * i1 / 1000
    off_hook = drop is not None and drop > OFFHOOK_DROP_V
    loop_ohm = 1000 * v2 / i2 if i2 >= 1.0 and not off_hook else math.inf
    item = _item("receiver_off_hook", drop or 0.0, "V", "<= 3", not off_hook,
                 loop_ma=round(i2, 1), note="a phone is off hook" if off_hook else "")
    return item, loop_ohm


def _resistive_items(drv: Si3215, reactor: Reactor, loop_ohm: float, drive_v: float) -> list[Item]:
    """Floating wires on -48 V through the sense network: three conductances, linear."""
    drv.set_feed(common_v=BIAS_V, on_hook_v=drive_v)
    g_s, bias = 1 / drv.SENSE_OHM, -BIAS_V
    rows, rhs = [], []
    for mode, floating in (("open", ("tip", "ring")), ("tip_open", ("tip",)), ("ring_open", ("ring",))):
        drv.set_linefeed(mode)
        s = _settled_sense(drv, reactor)
        vt, vr = -s["tip_v"], -s["ring_v"]
        if "tip" in floating:
            diff = vr - vt if mode == "open" else min(vr - vt, -R_SENSE_HALF_LSB)  # bound
            rows.append([-vt, 0.0, diff])
            rhs.append(-g_s * (bias - vt))
        if "ring" in floating:
            rows.append([0.0, -vr, vt - vr])
            rhs.append(-g_s * (bias - vr))
    g, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs) / g_s, rcond=None)  # in units of g_s
    ohms = [drv.SENSE_OHM / x if x > 1e-4 else math.inf for x in g]
    if loop_ohm < LOOP_SENSE_MAX_OHM:
        ohms[2] = loop_ohm  # low resistances show better as loop current
    names = ("resistive_tip_ground", "resistive_ring_ground", "resistive_tip_ring")
    items = [_item(n, min(r, 1e9), "ohm", ">= 150000", r >= FAULT_OHM)
             for n, r in zip(names, ohms, strict=True)]
    return [items[2], items[0], items[1]]


def _ren_item(drv: Si3215, reactor: Reactor, off_hook: bool) -> Item:
    """Ring current without cadence; 1 REN = 6930 ohm + 8 uF at the ring frequency."""
    if off_hook:
        return _item("ren", None, "REN", "0.175..5", None, note="not tested: receiver off hook")
    drv.ring_test(True)
    try:
        s = _settled_sense(drv, reactor, reads=10)
    finally:
        drv.ring_test(False)
    hz, vpk = drv.ring_settings()
    z_one = abs(complex(OHM_PER_REN, -1 / (2 * math.pi * hz * FARAD_PER_REN)))
    ren = s["loop_ma"] / 1000 * z_one / (vpk / math.sqrt(2))
    ok = REN_MIN <= ren <= REN_MAX
    note = "" if ok else ("no phone connected?" if ren < REN_MIN else "too many ringers on the line")
    return _item("ren", ren, "REN", "0.175..5", ok, note=note)


# ====================================================================== FXO

def fxo_commission(parts: Parts, port: str, drv: Si3050, test_call_s: float,
                   facts: LineFacts) -> dict[str, Any]:
    """Idle and seized line volts and current, the echo path, and a test call."""
    reactor, pcm = parts.reactor, parts.board.pcm.get(port)
    idle = _avg_measure(drv, reactor)
    out: dict[str, Any] = {"port": port, "kind": "fxo", "test": "fxo", "idle": {
        "line_voltage_v": round(idle["line_voltage_v"], 1),
        "polarity": "forward" if idle["line_voltage_v"] >= 0 else "reverse"}}
    if abs(idle["line_voltage_v"]) < 2.5:
        raise CommissionError(f"{port}: no line voltage on the FXO port: is the PSTN line plugged in?")
    drv.seize(in_call=False)
    try:
        _wait(reactor, 0.3)
        seized = _avg_measure(drv, reactor)
        out["seized"] = {"line_voltage_v": round(seized["line_voltage_v"], 1),
                         "loop_current_ma": round(seized["loop_current_ma"], 1)}
        out["echo"] = echo_probe(reactor, pcm) if pcm is not None else None
    finally:
        drv.release()
    if test_call_s > 0:
        out["test_call"] = run_test_call(parts, port, drv, pcm, test_call_s)
        facts.record_call(port, out["test_call"])
    out["learned"] = facts.get(port)
    line = Config.from_doc(parts.doc).line_as(port, FxoLine)
    out["proposed"], out["advice"] = _proposals(line, port, out)
    return out


def _avg_measure(drv: Si3050, reactor: Reactor, reads: int = 5) -> dict[str, float]:
    rows = []
    for _ in range(reads):
        rows.append(drv.measure())
        _wait(reactor, 0.02)
    return {k: float(np.mean([r[k] for r in rows])) for k in ("line_voltage_v", "loop_current_ma")}


def _proposals(line: FxoLine, port: str,
               out: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    proposed: dict[str, Any] = {}
    advice: dict[str, Any] = {}
    learned = out.get("learned") or {}
    signal = (learned.get("disconnect") or {}).get("signal")
    if signal and line.disconnect != (signal,):
        proposed[f"lines.{port}.disconnect"] = [signal]
    standard = (learned.get("callerid") or {}).get("standard")
    if standard and standard != line.effective_callerid:
        proposed["country.callerid"] = standard
    echo = out.get("echo") or {}
    if echo.get("proposed_tail_ms"):
        advice["echo_tail_ms"] = echo["proposed_tail_ms"]
    if echo.get("erl_db") is not None and echo["erl_db"] < 6:
        advice["echo"] = "ERL under 6 dB: check the line's balance (AC termination, country)"
    return proposed, advice


# ---------------------------------------------------------------------- echo path

def probe_period(seed: int = 7) -> np.ndarray:
    """One period of the probe: a random-phase multisine, flat from 4 Hz to 3996 Hz."""
    rng = np.random.default_rng(seed)
    spec = np.zeros(PROBE_N // 2 + 1, complex)
    spec[1:-1] = np.exp(2j * math.pi * rng.random(PROBE_N // 2 - 1))
    x = np.fft.irfft(spec, PROBE_N)
    x *= DBM0_RMS * 10 ** (PROBE_DBM0 / 20) / np.sqrt(np.mean(x ** 2))
    return np.round(x)


def echo_probe(reactor: Reactor, pcm: Pcm) -> dict[str, Any]:
    """Play a periodic probe into the seized line, capture, estimate the echo path
    (paired frame to frame as the canceller pairs them: our PCM latency counts)."""
    _wait(reactor, 0.005)  # off the 20 ms grid of whoever else ticks; kept from here on
    _quiet_the_line(reactor, pcm)
    period = probe_period()
    tx = np.concatenate([np.tile(period, PROBE_PERIODS), np.zeros(4 * FRAME)])
    rx = _play_and_capture(reactor, pcm, tx)
    return analyse_echo(period, rx)


def _quiet_the_line(reactor: Reactor, pcm: Pcm) -> None:
    """Dial tone would swamp the echo: break it with a digit, as fxotune does."""
    heard = _play_and_capture(reactor, pcm, np.zeros(15 * FRAME))
    if _dbm0(heard) > -45.0:
        _play_and_capture(reactor, pcm, np.concatenate([dtmf_samples("1", on_ms=100, off_ms=100),
                                                        np.zeros(10 * FRAME)]))


def _play_and_capture(reactor: Reactor, pcm: Pcm, tx: np.ndarray) -> np.ndarray:
    """Send tx frame by frame every 20 ms; what came back, paired one to one."""
    _drain(pcm)
    frames = int(math.ceil(len(tx) / FRAME))
    tx = np.concatenate([tx, np.zeros(frames * FRAME - len(tx))])
    got: list[np.ndarray] = []
    for i in range(frames):
        pcm.write(np.clip(tx[i * FRAME:(i + 1) * FRAME], -32768, 32767).astype(np.int16))
        _wait(reactor, FRAME / LINE_RATE)
        while (frame := pcm.read()) is not None:
            got.append(np.asarray(frame, dtype=float))
    rx = np.concatenate(got) if got else np.zeros(0)
    return np.concatenate([rx, np.zeros(max(0, len(tx) - len(rx)))])[:len(tx)]


def _dbm0(x: np.ndarray) -> float:
    p = float(np.mean(np.asarray(x, float) ** 2)) if len(x) else 0.0
    return 10 * math.log10(p / DBM0_RMS ** 2) if p > 0 else -120.0


def analyse_echo(period: np.ndarray, rx: np.ndarray) -> dict[str, Any]:
    """Echo path from the steady-state periods (H = Y/X per bin): tail, ERL, and the
    smallest canceller tail that covers it."""
    n = len(period)
    steady = np.mean([rx[k * n:(k + 1) * n] for k in range(1, PROBE_PERIODS)], axis=0)
    x_f, y_f = np.fft.rfft(period), np.fft.rfft(steady)
    h_f = np.zeros_like(y_f)
    h_f[1:-1] = y_f[1:-1] / x_f[1:-1]
    h = np.fft.irfft(h_f, n)
    erl = 10 * math.log10(np.mean(period ** 2) / max(np.mean(steady ** 2), 1e-9))
    delay, tail = response_span(h)
    out = {"erl_db": round(erl, 1), "probe_dbm0": PROBE_DBM0,
           "delay_ms": None if delay is None else round(float(delay), 1),
           "tail_ms": None if tail is None else round(float(tail), 1)}
    if tail is None or erl > 55:
        return {**out, "proposed_tail_ms": EC_TAILS_MS[0], "note": "no echo measurable"}
    fits = [t for t in EC_TAILS_MS if t >= tail]
    note = "" if fits else "echo longer than the canceller's 128 ms: look for a bulk delay"
    return {**out, "proposed_tail_ms": fits[0] if fits else EC_TAILS_MS[-1], "note": note}


def response_span(h: np.ndarray, floor_db: float = TAIL_FLOOR_DB) -> tuple[float | None, float | None]:
    """(ms where the 1 ms energy envelope first rises to, ms after which it stays
    below, `floor_db` under its peak)."""
    env = np.convolve(np.asarray(h, float) ** 2, np.ones(8) / 8, mode="full")[:len(h) + 7]
    if not len(env) or env.max() <= 0:
        return None, None
    above = np.nonzero(env >= env.max() * 10 ** (-floor_db / 10))[0]
    start, end = above[0], above[-1] - 7  # the envelope lags the response by its window
    return 1000 * start / LINE_RATE, 1000 * (max(end, start) + 1) / LINE_RATE


# ---------------------------------------------------------------------- test call

def run_test_call(parts: Parts, port: str, drv: Si3050, pcm: Pcm | None,
                  timeout_s: float) -> dict[str, Any]:
    """Wait for a call to the line: caller ID, answer, then how the far end hangs up."""
    reactor = parts.reactor
    cid = CallerIdDecoder("auto")
    end = reactor.now() + timeout_s
    message, bursts = None, 0
    while reactor.now() < end:
        _wait(reactor, FRAME / LINE_RATE)
        for frame in _drain(pcm):
            for msg in cid.process(frame):
                message = message or msg
        bursts = len(drv.ring_bursts) if drv.ringing else 0
        if bursts and (message is not None or bursts >= 3):
            break
    else:
        return {"answered": False, "callerid": _cid_fact(message),
                "note": f"no call came in within {timeout_s:.0f} s"}
    sign = 1 if drv.measure()["line_voltage_v"] >= 0 else -1
    drv.seize(in_call=False)
    try:
        hangup = _watch_hangup(parts, port, drv, pcm, end, sign)
    finally:
        drv.release()
    return {"answered": True, "rings": bursts, "callerid": _cid_fact(message), "disconnect": hangup}


def _cid_fact(msg: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if msg is None else {k: msg.get(k) for k in ("standard", "number", "name")}


def _drain(pcm: Pcm | None) -> list[np.ndarray]:
    frames = []
    while pcm is not None and (frame := pcm.read()) is not None:
        frames.append(np.asarray(frame, dtype=np.int16))
    return frames


def _watch_hangup(parts: Parts, port: str, drv: Si3050, pcm: Pcm | None, end: float,
                  sign: int) -> dict[str, Any] | None:
    """Seized: the first disconnect signal the CO gives (a reversal against `sign`, the
    idle polarity; a loop current drop; a tone, named or by its cadence)."""
    reactor = parts.reactor
    country = Config.from_doc(parts.doc).line(port).effective_country
    cpt, cadence = CallProgressDetector(country), Cadence()
    low_since: float | None = None
    named: str | None = None
    named_at = 0.0
    _wait(reactor, 0.2)  # loop current settles after seizure
    _drain(pcm)
    while reactor.now() < end:
        _wait(reactor, FRAME / LINE_RATE)
        m = drv.measure()
        if named is None and abs(m["line_voltage_v"]) >= 3.0 and (1 if m["line_voltage_v"] > 0 else -1) != sign:
            return {"signal": Signal.REVERSAL}
        low_since = (low_since or reactor.now()) if m["loop_current_ma"] < 5.0 else None
        if named is None and low_since is not None and reactor.now() - low_since >= 0.1:
            return {"signal": Signal.LOOP_DROP}
        for frame in _drain(pcm):
            tones = [e.tone for e in cpt.process(frame) if e.tone in ("busy", "reorder", "congestion")]
            if tones and named is None:
                named, named_at = tones[0], reactor.now()
            if cadence.feed(frame) or (named and reactor.now() - named_at > 3.0):
                return {"signal": Signal.TONE, "tone": named, **cadence.result()}
    return {"signal": Signal.TONE, "tone": named, **cadence.result()} if named else None


class Cadence:
    """Learns a tone's on/off cadence from frame energy: two matching on/off cycles."""

    def __init__(self) -> None:
        self.runs: list[tuple[bool, float]] = []  # (on?, ms)
        self.audio: list[np.ndarray] = []

    def feed(self, frame: np.ndarray) -> bool:
        on = _dbm0(frame) > TONE_ON_DBM0
        if on:
            self.audio.append(np.asarray(frame, float))
        ms = 1000 * len(frame) / LINE_RATE
        if self.runs and self.runs[-1][0] == on:
            self.runs[-1] = (on, self.runs[-1][1] + ms)
        elif self.runs or on:
            self.runs.append((on, ms))
        return self._cycles() is not None or self._continuous()

    def _cycles(self) -> tuple[float, float] | None:
        done = self.runs[:-1]  # the last run is still going
        if len(done) < 4:
            return None
        on1, off1, on2, off2 = (r[1] for r in done[-4:])
        if not done[-4][0] or abs(on1 - on2) > CADENCE_TOL_MS or abs(off1 - off2) > CADENCE_TOL_MS:
            return None
        return (on1 + on2) / 2, (off1 + off2) / 2

    def _continuous(self) -> bool:
        return len(self.runs) == 1 and self.runs[0][0] and self.runs[0][1] >= 3000

    def result(self) -> dict[str, list[int]]:
        cycle = self._cycles()
        cadence = [round(cycle[0]), round(cycle[1])] if cycle else [round(self.runs[0][1]), 0]
        audio = np.concatenate(self.audio) if self.audio else np.zeros(FRAME)
        spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
        freqs = np.fft.rfftfreq(len(audio), 1 / LINE_RATE)
        peaks = [i for i in np.argsort(spec)[::-1] if spec[i] > 0.3 * spec.max()]
        picked: list[float] = []
        for i in peaks:
            if all(abs(freqs[i] - f) > 30 for f in picked):
                picked.append(float(freqs[i]))
            if len(picked) == 2:
                break
        return {"cadence_ms": cadence, "freqs_hz": sorted(round(f) for f in picked)}


class LineFacts:
    """Facts learned about FXO lines (caller-ID standard, disconnect signal), kept in
    data_dir/line-facts.json (atomically replaced), or in memory without a data dir."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(data_dir) / FACTS_FILE if data_dir else None
        self.facts: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): starting afresh", self.path, exc)
            return {}

    def get(self, port: str) -> dict[str, Any]:
        return dict(self.facts.get(port, {}))

    def observe(self, port: str, what: str, value: dict[str, Any]) -> None:
        """Call control (or a test call) saw `what` ("callerid" / "disconnect") on `port`."""
        entry = self.facts.setdefault(port, {})
        seen = entry.get(what, {})
        same = all(seen.get(k) == v for k, v in value.items() if k in ("standard", "signal"))
        entry[what] = {**value, "seen": seen.get("seen", 0) + 1 if same else 1}
        self._save()

    def record_call(self, port: str, call: dict[str, Any]) -> None:
        if call.get("callerid"):
            self.observe(port, "callerid", {"standard": call["callerid"]["standard"]})
        if call.get("disconnect"):
            self.observe(port, "disconnect", dict(call["disconnect"]))

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self.facts, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
