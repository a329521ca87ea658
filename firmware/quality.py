"""Call quality. From RTCP figures: the ITU-T G.107 (06/2015) E-model rating R and its
MOS estimate, so a technician or the cloud can sort calls by how they sounded (a planning
model: the MOS ranks calls and raises alarms, it is not a measurement). From the port's
DSP: the echo canceller's ERLE per call, the residual echo, DTMF and modem tones heard
(`DspMeter`, fed by firmware.media every 20 ms; `CallDsp` is one call's figures)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from math import log10
from typing import Any

PTIME_MS = 20.0  # one RTP packet of audio, the packetisation delay
NETWORK_FIELDS = ("codec", "jitter_ms", "loss_pct", "rtt_ms")  # Bridge.quality()'s


@dataclass(frozen=True)
class Codec:
    ie: float  # equipment impairment factor (G.113 Appendix I)
    bpl: float  # packet-loss robustness factor (G.113 Appendix I)
    delay_ms: float  # algorithmic delay of the codec itself (frame + look-ahead)


# G.711 frame is one sample (0.125 ms). G.722's QMF analysis and synthesis filters add
# about 1.5 ms each, so 3 ms in all.
CODECS = {
    "PCMU": Codec(ie=0.0, bpl=25.1, delay_ms=0.125),
    "PCMA": Codec(ie=0.0, bpl=25.1, delay_ms=0.125),
    "G722": Codec(ie=0.0, bpl=25.1, delay_ms=3.0),
}

_ALIASES = {"G711U": "PCMU", "G711A": "PCMA", "ULAW": "PCMU", "ALAW": "PCMA",
            "G.711U": "PCMU", "G.711A": "PCMA", "G.722": "G722"}


@dataclass(frozen=True)
class Params:
    """The G.107 input parameters, at the defaults of its Table 3 (units as in G.107)."""

    SLR: float = 8.0  # send loudness rating, dB
    RLR: float = 2.0  # receive loudness rating, dB
    STMR: float = 15.0  # sidetone masking rating, dB
    LSTR: float = 18.0  # listener sidetone rating, dB
    Ds: float = 3.0  # D-value of telephone, send side
    Dr: float = 3.0  # D-value of telephone, receive side
    TELR: float = 65.0  # talker echo loudness rating, dB
    WEPL: float = 110.0  # weighted echo path loss, dB
    T: float = 0.0  # mean one-way delay of the echo path, ms
    Tr: float = 0.0  # round-trip delay in a 4-wire loop, ms
    Ta: float = 0.0  # absolute delay in echo-free connections, ms
    qdu: float = 1.0  # number of quantisation distortion units
    Ie: float = 0.0  # equipment impairment factor
    Bpl: float = 4.3  # packet-loss robustness factor
    Ppl: float = 0.0  # random packet-loss probability, %
    BurstR: float = 1.0  # burst ratio (1 = random loss)
    Nc: float = -70.0  # circuit noise referred to the 0 dBr point, dBm0p
    Nfor: float = -64.0  # noise floor at the receive side, dBmp
    Ps: float = 35.0  # room noise at the send side, dB(A)
    Pr: float = 35.0  # room noise at the receive side, dB(A)
    A: float = 0.0  # advantage factor


def noise_no(p: Params) -> float:
    """No: the total noise power, G.107 (7-3) to (7-7), in dBm0p."""
    olr = p.SLR + p.RLR
    nos = p.Ps - p.SLR - p.Ds - 100 + 0.004 * (p.Ps - olr - p.Ds - 14) ** 2
    pre = p.Pr + 10 * log10(1 + 10 ** ((10 - p.LSTR) / 10))
    nor = p.RLR - 121 + pre + 0.008 * (pre - 35) ** 2
    nfo = p.Nfor + p.RLR
    return 10 * log10(sum(10 ** (n / 10) for n in (p.Nc, nos, nor, nfo)))


def ro(p: Params) -> float:
    """Ro, the basic signal-to-noise ratio, G.107 (7-2)."""
    return 15 - 1.5 * (p.SLR + noise_no(p))


def _ist(p: Params) -> float:
    """Impairment from a non-optimum sidetone, G.107 (7-11) and (7-12)."""
    stmro = -10 * log10(10 ** (-p.STMR / 10) + math.exp(-p.T / 4) * 10 ** (-p.TELR / 10))
    return (12 * (1 + ((stmro - 13) / 6) ** 8) ** (1 / 8)
            - 28 * (1 + ((stmro + 1) / 19.4) ** 35) ** (1 / 35)
            - 13 * (1 + ((stmro - 3) / 33) ** 13) ** (1 / 13) + 29)


def _iq(p: Params, r0: float) -> float:
    """Impairment from quantising distortion, G.107 (7-13) to (7-17)."""
    q = 37 - 15 * log10(p.qdu)
    g = 1.07 + 0.258 * q + 0.0602 * q * q
    y = (r0 - 100) / 15 + 46 / 8.4 - g / 9
    z = 46 / 30 - g / 40
    return 15 * log10(1 + 10 ** y + 10 ** z)


def is_(p: Params) -> float:
    """Is, the simultaneous impairment factor, G.107 (7-8) to (7-17)."""
    olr = p.SLR + p.RLR
    xolr = olr + 0.2 * (64 + noise_no(p) - p.RLR)
    iolr = 20 * ((1 + (xolr / 8) ** 8) ** (1 / 8) - xolr / 8)
    return iolr + _ist(p) + _iq(p, ro(p))


def idte(p: Params) -> float:
    """Talker-echo impairment, G.107 (7-19) to (7-22)."""
    roe = -1.5 * (noise_no(p) - p.RLR)
    terv = p.TELR - 40 * log10((1 + p.T / 10) / (1 + p.T / 150)) + 6 * math.exp(-0.3 * p.T ** 2)
    if p.STMR < 9:  # a loud sidetone masks the echo, G.107 (7-23)
        terv += _ist(p) / 2
    re = 80 + 2.5 * (terv - 14)
    d = roe - re
    return (d / 2 + math.sqrt(d * d / 4 + 100) - 1) * (1 - math.exp(-p.T))


def idle(p: Params) -> float:
    """Listener-echo impairment, G.107 (7-24) and (7-25)."""
    rle = 10.5 * (p.WEPL + 7) * (p.Tr + 1) ** -0.25
    d = ro(p) - rle
    return d / 2 + math.sqrt(d * d / 4 + 169)


def idd(ta_ms: float) -> float:
    """Impairment from absolute one-way delay Ta, G.107 (7-26) and (7-27): none up to
    100 ms, then growing with the number of doublings of Ta beyond 100 ms."""
    if ta_ms <= 100:
        return 0.0
    x = math.log2(ta_ms / 100)
    return 25 * ((1 + x ** 6) ** (1 / 6) - 3 * (1 + (x / 3) ** 6) ** (1 / 6) + 2)


def ie_eff(p: Params) -> float:
    """Effective equipment impairment with packet loss, G.107 (7-29)."""
    return p.Ie + (95 - p.Ie) * p.Ppl / (p.Ppl / p.BurstR + p.Bpl)


def r_from_params(p: Params) -> float:
    """R = Ro - Is - Id - Ie,eff + A, G.107 (7-1). All defaults give R = 93.2."""
    return ro(p) - is_(p) - (idte(p) + idle(p) + idd(p.Ta)) - ie_eff(p) + p.A


def mos_from_r(r: float) -> float:
    """The estimated conversational MOS for a rating R, G.107 Annex B (B-4)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    # The cubic dips a hair below 1 for R under 6.5; MOS has no value below 1.
    return max(1.0, 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6)


def codec_of(name: str) -> Codec:
    """The Codec entry for a name as pjsua2 or the config writes it ("PCMU/8000/1")."""
    key = name.split("/")[0].strip().upper()
    key = _ALIASES.get(key, key)
    try:
        return CODECS[key]
    except KeyError:
        raise ValueError(f"no E-model figures for codec {name!r}; known: "
                         f"{', '.join(CODECS)}") from None


def one_way_delay_ms(codec: str, rtt_ms: float, jitter_ms: float,
                     jitter_buffer_ms: float | None = None) -> float:
    """Mouth-to-ear delay estimate: half the RTT + jitter buffer + one packet + codec.
    The buffer, when not given, is what an adaptive one settles at: twice the RTCP
    interarrival jitter, at least one packet."""
    if jitter_buffer_ms is None:
        jitter_buffer_ms = max(PTIME_MS, 2 * jitter_ms)
    return rtt_ms / 2 + jitter_buffer_ms + PTIME_MS + codec_of(codec).delay_ms


def r_factor(codec: str, loss_pct: float, jitter_ms: float, rtt_ms: float,
             jitter_buffer_ms: float | None = None, burst_r: float = 1.0) -> float:
    """The G.107 rating R of a call with these RTCP figures: every parameter at its
    default but the delay (as Ta, as T: TELR keeps 65 dB since the box cancels echo, and
    doubled as Tr), the loss (Ppl, BurstR) and the codec's Ie and Bpl (G.113 App. I,
    G.711 with PLC). G.722 is rated on the narrowband scale, as G.711 with its longer
    delay, so its MOS is a lower bound comparable with every other call's."""
    for name, value in (("loss_pct", loss_pct), ("jitter_ms", jitter_ms), ("rtt_ms", rtt_ms)):
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    if loss_pct > 100 or burst_r < 1:
        raise ValueError(f"loss_pct must be <= 100 and burst_r >= 1 ({loss_pct}, {burst_r})")
    c = codec_of(codec)
    delay = one_way_delay_ms(codec, rtt_ms, jitter_ms, jitter_buffer_ms)
    p = replace(Params(), Ie=c.ie, Bpl=c.bpl, Ppl=loss_pct, BurstR=burst_r,
                T=delay, Ta=delay, Tr=2 * delay)
    return r_from_params(p)


def estimate(quality: dict[str, Any]) -> dict[str, float | None]:
    """{"r_factor", "mos"} from a Bridge.quality() dict; both None when the codec is
    unknown or jitter/loss were never measured (a call too short for RTCP). A missing
    RTT (no receiver report came back) counts as 0 ms, so the MOS is then an upper bound."""
    none: dict[str, float | None] = {"r_factor": None, "mos": None}
    codec = quality.get("codec")
    loss, jitter, rtt = (quality.get(k) for k in ("loss_pct", "jitter_ms", "rtt_ms"))
    if not codec or loss is None or jitter is None:
        return none
    try:
        r = r_factor(codec, float(loss), float(jitter), float(rtt or 0.0))
    except ValueError:
        return none
    return {"r_factor": round(r, 2), "mos": round(mos_from_r(r), 2)}


def rated(quality: Mapping[str, Any] | None) -> dict[str, Any]:
    """The network figures of a call as the CDR and the call_quality event carry them:
    codec, jitter_ms, loss_pct, rtt_ms (None when unknown: a call without RTP) and the
    estimate's r_factor and mos."""
    fields = {k: (quality or {}).get(k) for k in NETWORK_FIELDS}
    return {**fields, **estimate(fields)}


# ---- the DSP's figures of one call, from the port's media path ----
# Levels: G.711 mu-law's full-scale sine (peak 32767 in 16-bit linear) is +3.17 dBm0, so
# 0 dBm0 is a sine of RMS 32767 * 10**(-3.17/20) / sqrt(2) ~ 16057 (cext uses spandsp's
# +3.14, 0.03 dB away).
FULL_SCALE_DBM0 = 3.17
DBM0_POWER = (32767.0 * 10 ** (-FULL_SCALE_DBM0 / 20)) ** 2 / 2  # mean square of 0 dBm0
FRAMES_PER_S = 50  # 20 ms frames: the echo figures are decided once a second
TAIL_FRAMES = 8  # far-end frames an echo can come from (128 ms tail + pairing jitter)
DT_RATIO = 0.5  # near end over the loudest recent far end (-3 dB): someone talks there
NEAR_TALK_DBM0 = -45.0  # ... and it is above this: not line noise
FAR_FLOOR_DBM0 = -40.0  # a second counts when the far end talked above this (mean)
ECHO_FLOOR_DBM0 = -55.0  # ... and its echo is above this: weaker echo is not measurable
OUT_FLOOR = 1.0  # mean square floor of the canceller's output (1 LSB: ~-84 dBm0)
MAX_DIGITS = 64  # digits kept in a call's string (the count goes on)
MAX_TONES = 16  # modem tones kept per call
MAX_OPEN = 8  # call records open on one port at once (a held, a consult, a waiting call)


def dbm0_power(dbm0: float) -> float:
    """The mean square (16-bit linear) of a signal at `dbm0`."""
    return DBM0_POWER * 10 ** (dbm0 / 10)


def power_dbm0(power: float) -> float:
    return 10 * math.log10(max(power, OUT_FLOOR) / DBM0_POWER)


class EchoState(StrEnum):
    ON = "on"  # the canceller ran on the call's audio
    OFF = "off"  # no canceller, or disabled (a call between two of our ports, a modem)
    BYPASSED = "bypassed"  # it diverged during the call and was taken out


@dataclass(frozen=True)
class ModemHeard:
    tone: str  # CNG, CED, V21_PREAMBLE, ANSAM...
    kind: str  # "fax" (T.30: CNG, CED, V.21 preamble) or "modem"
    side: str  # line, sip or peer
    at_s: float  # seconds into the call (since its record opened)


@dataclass
class CallDsp:
    """One call's DSP figures. ERLE in G.168 terms is near-in power over canceller-out
    power, here per second while the far end talks and the near end does not; the
    canceller's output is what the cloud hears, so its NLP is included (the residual
    echo is G.168's returned echo level, L_RET). DTMF: digits the port's detector heard
    on the line, digits relayed to the cloud by RFC 4733 or SIP INFO, digits received."""

    erle_seconds: int = 0  # the seconds the ERLE figures come from
    erle_sum_db: float = 0.0
    erle_worst_db: float | None = None
    residual_sum: float = 0.0  # mean squares of the canceller's output, summed per second
    canceller: bool = False  # it ran on this call's audio
    bypassed: bool = False
    inband: int = 0
    digits: str = ""
    rfc4733: int = 0
    info: int = 0
    received: int = 0
    modem: list[ModemHeard] = field(default_factory=list)
    began: int = 0  # the port's frame count when the call's record opened

    @property
    def fax(self) -> bool:
        return any(m.kind == "fax" for m in self.modem)

    @property
    def echo_canceller(self) -> EchoState:
        if self.bypassed:
            return EchoState.BYPASSED
        return EchoState.ON if self.canceller else EchoState.OFF

    def add_second(self, erle_db: float, residual: float) -> None:
        self.erle_seconds += 1
        self.erle_sum_db += erle_db
        self.residual_sum += residual
        if self.erle_worst_db is None or erle_db < self.erle_worst_db:
            self.erle_worst_db = erle_db

    def digit(self, digit: str) -> None:
        self.inband += 1
        if len(self.digits) < MAX_DIGITS:
            self.digits += digit

    def relayed(self, method: str, count: int = 1) -> None:
        """`count` digits sent to the cloud by `method` ("rfc4733" or "info")."""
        if method == "info":
            self.info += count
        else:
            self.rfc4733 += count

    def to_json(self) -> dict[str, Any]:
        n = self.erle_seconds
        return {
            "erle_mean_db": round(self.erle_sum_db / n, 1) if n else None,
            "erle_worst_db": None if self.erle_worst_db is None else round(self.erle_worst_db, 1),
            "residual_echo_dbm0": round(power_dbm0(self.residual_sum / n), 1) if n else None,
            "echo_canceller": str(self.echo_canceller),
            "dtmf": {"inband": self.inband, "rfc4733": self.rfc4733, "info": self.info,
                     "received": self.received, "digits": self.digits},
            "modem": [{"tone": m.tone, "side": m.side, "at_s": round(m.at_s, 2)}
                      for m in self.modem],
            "fax": self.fax,
        }


class DspMeter:
    """The echo figures of one port's calls. The media path gives every frame's mean
    squares (near in, canceller out, far reference) while a call's audio is connected;
    each second is decided once (far end talking, no double talk, echo measurable) and
    given to every call open on the port (a held call and a consult call share the line).
    Per frame: a few float operations."""

    def __init__(self) -> None:
        self.calls: dict[int, CallDsp] = {}
        self.frames = 0  # the port's 20 ms ticks (the time base of the modem tones)
        self._far_recent: deque[float] = deque(maxlen=TAIL_FRAMES)
        self._n = self._talk = 0
        self._near = self._out = self._far = 0.0
        self._ec = False
        self._talk_floor = dbm0_power(NEAR_TALK_DBM0)
        self._far_floor, self._echo_floor = dbm0_power(FAR_FLOOR_DBM0), dbm0_power(ECHO_FLOOR_DBM0)

    def begin(self, key: int) -> CallDsp:
        """A call's record opened on this port: its figures start from zero."""
        if len(self.calls) >= MAX_OPEN:  # records a bug left open: never grow
            self.calls.pop(next(iter(self.calls)))
        self.calls[key] = rec = CallDsp(began=self.frames)
        return rec

    def end(self, key: int) -> CallDsp | None:
        """The call's figures (None: never begun here); the second under way counts only
        for the canceller's state."""
        rec = self.calls.pop(key, None)
        if rec is not None and self._ec:
            rec.canceller = True
        return rec

    def frame(self, near: float, out: float, far: float, ec: bool) -> None:
        """One frame's mean squares: near in, canceller out (= near when it is off), the
        far reference; `ec`: the canceller processed it."""
        recent = self._far_recent
        recent.append(far)
        if near > self._talk_floor and near > DT_RATIO * max(recent):
            self._talk += 1
        self._near += near
        self._out += out
        self._far += far
        self._ec = self._ec or ec
        self._n += 1
        if self._n == FRAMES_PER_S:
            self._second()

    def _second(self) -> None:
        n, out = self._n, max(self._out / self._n, OUT_FLOOR)
        near, counted = self._near / n, not self._talk and self._far / n >= self._far_floor
        counted = counted and near >= self._echo_floor
        for rec in self.calls.values():
            rec.canceller = rec.canceller or self._ec
            if counted:
                rec.add_second(10 * math.log10(near / out), out)
        self._n = self._talk = 0
        self._near = self._out = self._far = 0.0
        self._ec = False

    def bypassed(self) -> None:
        """The canceller diverged and was taken out of the calls open now."""
        for rec in self.calls.values():
            rec.bypassed = True

    def digit(self, digit: str) -> None:
        for rec in self.calls.values():
            rec.digit(digit)

    def modem(self, tone: str, kind: str, side: str) -> None:
        """A connect tone heard on `side`, kept once per call and side."""
        for rec in self.calls.values():
            if len(rec.modem) < MAX_TONES and not any(
                    m.tone == tone and m.side == side for m in rec.modem):
                at_s = (self.frames - rec.began) / FRAMES_PER_S
                rec.modem.append(ModemHeard(tone, kind, side, at_s))
