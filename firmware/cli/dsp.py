"""`branchline dsp ...`: the technician's DSP tools on 8 kHz mono 16-bit WAV files (DTMF,
echo cancelling, caller ID, call-progress and modem tones; writing tones), fed to the
kernels in 20 ms frames as the gateway does. A kernel is imported when its command runs,
so one not built yet breaks only that command, naming the build command."""

from __future__ import annotations

import datetime as dt
import importlib
import json
from argparse import Namespace
from types import ModuleType
from typing import Any

import numpy as np

from cext import toneplans
from firmware import wavio
from firmware.cli.apiopts import Subparsers
from firmware.core.config import schema
from foundation.errors import BranchlineError

FRAME = 160  # 20 ms at 8 kHz
RATE = wavio.RATE
ERLE_WINDOW = 800  # 100 ms
CID_KEYS = ("standard", "number", "name", "datetime", "reason", "checksum_ok")
# DTMF twist limits, named as the detector's arguments (and the line fields, dtmf_ + name)
TWIST_OPTIONS = ("row_above_column_max_db", "column_above_row_max_db")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("dsp", help="DSP tools: DTMF, echo, caller ID, tones (8 kHz WAV files)")
    cmds = p.add_subparsers(dest="dsp_command", metavar="TOOL", required=True)

    c = cmds.add_parser("dtmf", help="print the DTMF digits in a WAV file, one JSON line each")
    for opt in TWIST_OPTIONS:  # the lines' config fields of the same names (schema.LINE)
        field = schema.LINE[f"dtmf_{opt}"]
        c.add_argument(f"--{opt.replace('_', '-')}", type=float, default=field.default,
                       metavar="DB", help=f"{field.help} (default {field.default:g}, "
                                          f"{field.minval:g}..{field.maxval:g})")
    c.add_argument("wav", metavar="IN.wav")
    c.set_defaults(func=cmd_dtmf)

    c = cmds.add_parser("echo", help="cancel the echo of FAR in NEAR; print ERLE per 100 ms")
    c.add_argument("--far", required=True, metavar="FAR.wav", help="signal sent to the line")
    c.add_argument("--near", required=True, metavar="NEAR.wav", help="signal heard from it")
    c.add_argument("--out", required=True, metavar="OUT.wav", help="cancelled near end")
    c.add_argument("--tail-ms", type=int, default=128, help="echo tail to cover (16-128 ms)")
    c.set_defaults(func=cmd_echo)

    c = cmds.add_parser("cid", help="print the caller-ID messages in a WAV file")
    c.add_argument("wav", metavar="IN.wav")
    c.set_defaults(func=cmd_cid)

    c = cmds.add_parser("cpt", help="print call-progress tones (dial, busy ...) heard in a WAV file")
    c.add_argument("--plan", default="us", choices=toneplans.COUNTRIES, help="country tone plan")
    c.add_argument("wav", metavar="IN.wav")
    c.set_defaults(func=cmd_cpt)

    c = cmds.add_parser("modem", help="print fax/modem connect tones (CNG, CED, ANSam, V.21) in a WAV file")
    c.add_argument("wav", metavar="IN.wav")
    c.set_defaults(func=cmd_modem)

    c = cmds.add_parser("tone", help="write a call-progress tone, DTMF digits or a caller-ID burst")
    c.add_argument("--plan", default="us", choices=toneplans.COUNTRIES, help="country tone plan")
    c.add_argument("--seconds", type=float, default=3.0, help="length of a call-progress tone")
    c.add_argument("--standard", choices=("bell202", "v23"),
                   help="caller-ID modem (default: the plan's)")
    c.add_argument("--datetime", help="caller-ID date/time MMDDHHMM (default: now)")
    c.add_argument("name",
                   help=f"{', '.join(toneplans.TONE_NAMES)}, dtmf:DIGITS or cid:NUMBER[:NAME]")
    c.add_argument("out", metavar="OUT.wav")
    c.set_defaults(func=cmd_tone)


def _kernel(module: str) -> ModuleType:
    """Import a cext kernel, or say how to build it."""
    try:
        return importlib.import_module(f"cext.{module}")
    except ImportError as exc:
        raise BranchlineError(f"DSP kernel cext.{module} is not available ({exc}); build it "
                              "with `python setup.py build_ext --inplace` in the source "
                              "tree") from None


def _detect(det: Any, wav: str, flush: bool = True) -> list[Any]:
    """What a detector finds in a WAV file fed in 20 ms frames (then flushed)."""
    x = wavio.read(wav)
    found = [item for i in range(0, x.size, FRAME) for item in det.process(x[i : i + FRAME])]
    return found + list(det.flush()) if flush else found


def _emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def cmd_dtmf(args: Namespace) -> int:
    limits = {}
    for opt in TWIST_OPTIONS:
        field, value = schema.LINE[f"dtmf_{opt}"], getattr(args, opt)
        if not field.minval <= value <= field.maxval:
            raise BranchlineError(f"--{opt.replace('_', '-')}: {value:g} is out of range; "
                                  f"allowed {field.minval:g}..{field.maxval:g} dB")
        limits[opt] = value
    det = _kernel("dtmf").DtmfDetector(rate=RATE, **limits)
    for digit, start, end in _detect(det, args.wav):
        _emit({"digit": digit, "start_ms": start * 1000 / RATE, "end_ms": end * 1000 / RATE})
    return 0


def _erle_db(near: np.ndarray, out: np.ndarray) -> float | None:
    """ERLE of one window: near-end input power over output power (None if near is silent)."""
    p_near = float(np.sum(near.astype(np.float64) ** 2))
    if p_near == 0:
        return None
    p_out = max(float(np.sum(out.astype(np.float64) ** 2)), 1.0)  # one LSB^2: caps at ~+100 dB
    return round(10 * np.log10(p_near / p_out), 1)


def cmd_echo(args: Namespace) -> int:
    far, near = wavio.read(args.far), wavio.read(args.near)
    if far.size != near.size:
        raise BranchlineError(f"{args.far} has {far.size} samples but {args.near} has "
                              f"{near.size}; FAR and NEAR must be recorded together and have "
                              "the same length")
    if not 16 <= args.tail_ms <= 128:
        raise BranchlineError(f"--tail-ms {args.tail_ms}: must be 16 to 128 ms")
    ec = _kernel("echo").EchoCanceller(tail_ms=args.tail_ms)
    out = np.zeros_like(near)
    for i in range(0, near.size, FRAME):
        out[i : i + FRAME] = ec.process(near[i : i + FRAME], far[i : i + FRAME])
    wavio.write(args.out, out)
    for i in range(0, near.size - ERLE_WINDOW + 1, ERLE_WINDOW):
        w = slice(i, i + ERLE_WINDOW)
        _emit({"t_ms": (i + ERLE_WINDOW) * 1000 // RATE, "erle_db": _erle_db(near[w], out[w])})
    return 0


def cmd_cid(args: Namespace) -> int:
    dec = _kernel("callerid").CallerIdDecoder(standard="auto", rate=RATE)
    for msg in _detect(dec, args.wav):
        ordered = {k: msg.get(k) for k in CID_KEYS}
        ordered.update({k: v for k, v in msg.items() if k not in ordered})
        _emit(ordered)
    return 0


def cmd_cpt(args: Namespace) -> int:
    det = _kernel("cpt").CallProgressDetector(args.plan, rate=RATE)
    for ev in _detect(det, args.wav, flush=False):
        _emit({"tone": ev.tone, "t_ms": ev.sample * 1000 / RATE})
    return 0


def cmd_modem(args: Namespace) -> int:
    det = _kernel("modemtone").ModemToneDetector(rate=RATE)
    for tone, seconds in _detect(det, args.wav, flush=False):
        _emit({"tone": tone.name, "t_ms": round(seconds * 1000, 3), "kind": tone.kind,
               "disables_echo_canceller": tone.disables_echo_canceller})
    return 0


def _cid_samples(spec: str, args: Namespace) -> np.ndarray:
    number, _, name = spec.partition(":")
    plan = toneplans.plan(args.plan)
    standard = args.standard or (plan.callerid if plan.callerid != "dtmf" else "bell202")
    stamp = args.datetime or dt.datetime.now().strftime("%m%d%H%M")
    if len(stamp) != 8 or not stamp.isdigit():
        raise BranchlineError(f"--datetime {stamp!r}: expected MMDDHHMM, e.g. 11221030")
    cid = _kernel("callerid")
    fields = {"number": number, "name": name or None, "datetime": stamp}
    burst = np.asarray(cid.modulate(cid.encode(fields, fmt="mdmf"), standard=standard))
    gap = np.zeros(RATE * 3 // 10, dtype=np.int16)  # quiet line around the burst
    return np.concatenate([gap, burst.astype(np.int16), gap])


def _tone_samples(args: Namespace) -> np.ndarray:
    kind, sep, spec = args.name.partition(":")
    if sep and kind == "dtmf":
        bad = set(spec.upper()) - set("0123456789*#ABCD")
        if not spec or bad:
            raise BranchlineError(f"{args.name}: DTMF digits are 0-9 * # A-D, got {spec!r}")
        return np.asarray(_kernel("dtmf").dtmf_samples(spec.upper(), rate=RATE))
    if sep and kind == "cid":
        if not spec.partition(":")[0].strip():
            raise BranchlineError(f"{args.name}: expected cid:NUMBER[:NAME]")
        return _cid_samples(spec, args)
    tones = toneplans.plan(args.plan).tones
    if args.name not in tones:
        raise BranchlineError(f"{args.name!r} is not a tone of plan {args.plan}; use one of "
                              f"{', '.join(tones)}, dtmf:DIGITS or cid:NUMBER[:NAME]")
    if not 0 < args.seconds <= 3600:
        raise BranchlineError(f"--seconds {args.seconds}: must be more than 0 and at most 3600")
    return _kernel("tones").tone_samples(args.plan, args.name, args.seconds, rate=RATE)


def cmd_tone(args: Namespace) -> int:
    wavio.write(args.out, _tone_samples(args))
    return 0
