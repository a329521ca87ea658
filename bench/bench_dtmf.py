"""Benchmark: cext.dtmf.DtmfDetector against spandsp 0.0.6's dtmf_rx on the same signals:
speed, digits detected, twist acceptance both ways, and talk-off (false digits per hour on
lab/talkoff.py's vowels and speech). `--baseline DIR` adds an older build as "before".
Run: .venv/bin/python -m bench.bench_dtmf [--repeats N] [--baseline DIR]
(writes bench/results/dtmf.json).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

if __name__ == "__main__" and "--kernel-dir" in sys.argv:  # the baseline run: older cext first
    sys.path.insert(0, sys.argv[sys.argv.index("--kernel-dir") + 1])

from bench.spandsp import load  # noqa: E402
from cext.dtmf import DtmfDetector, dtmf_samples  # noqa: E402
from lab import talkoff  # noqa: E402
from lab.linemodel import dbm0_to_rms, to_int16, white_noise  # noqa: E402

RATE = 8000
KEYS = "123A456B789C*0#D"
RESULTS = Path(__file__).with_name("results") / "dtmf.json"
ROOT = Path(__file__).resolve().parents[1]
TWISTS = np.arange(0.0, 12.01, 0.5)  # dB, each direction


class SpandspDtmf:
    """dtmf_rx_init(NULL, NULL, NULL) + dtmf_rx(s, amp, n) + dtmf_rx_get()."""

    def __init__(self, lib):
        self.lib = lib
        lib.dtmf_rx_init.restype = ctypes.c_void_p
        lib.dtmf_rx_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.dtmf_rx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.dtmf_rx_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.dtmf_rx_free.argtypes = [ctypes.c_void_p]

    def timed(self, x):
        s = self.lib.dtmf_rx_init(None, None, None)
        t = time.perf_counter()
        self.lib.dtmf_rx(s, x.ctypes.data, x.size)
        dt = time.perf_counter() - t
        self.lib.dtmf_rx_free(s)
        return dt

    def digits(self, x, chunk=1600):
        """Decoded string; read out every 0.2 s since spandsp buffers only 128 digits."""
        s = self.lib.dtmf_rx_init(None, None, None)
        buf = ctypes.create_string_buffer(256)
        out = []
        for i in range(0, x.size, chunk):
            part = np.ascontiguousarray(x[i:i + chunk])
            self.lib.dtmf_rx(s, part.ctypes.data, part.size)
            n = self.lib.dtmf_rx_get(s, buf, 128)
            out.append(buf.raw[:n].decode())
        self.lib.dtmf_rx_free(s)
        return "".join(out)


def ours_timed(x):
    det = DtmfDetector()
    t = time.perf_counter()
    det.process(x)
    return time.perf_counter() - t


def ours_digits(x):
    det = DtmfDetector()
    return "".join(d for d, _, _ in det.process(x) + det.flush())


def signals(rng):
    """Name -> (int16 signal, expected digit string)."""
    seq = KEYS * 10
    clean = dtmf_samples(seq, 50, 50, -10)
    noisy = dtmf_samples(seq, 50, 50, -4).astype(float)
    return {
        "clean -10 dBm0 50/50 ms": (clean, seq),
        "S/N 20 dB (-4 dBm0, noise -24)": (to_int16(noisy + white_noise(noisy.size, -24, rng)), seq),
        "speech-band noise only (-15 dBm0)": (to_int16(white_noise(clean.size, -15, rng)), ""),
    }


def timing(sp, x, repeats):
    """Repeats alternate between the two detectors so both see the same machine load."""
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(ours_timed(x) / x.size * 1e9)
        theirs.append(sp.timed(x) / x.size * 1e9)
    return ours, theirs


def row(name, ns):
    return {"name": name, "ns_min": min(ns), "ns_median": statistics.median(ns),
            "channels_per_core_min": 1e9 / RATE / min(ns),
            "channels_per_core_median": 1e9 / RATE / statistics.median(ns)}


def twist_pair(key, row_db, col_db):
    """One digit, 60 ms on / 60 ms off, tones at these levels (dBm0)."""
    i = KEYS.index(key)
    t = np.arange(480) / RATE
    x = dbm0_to_rms(row_db) * np.sqrt(2) * np.sin(2 * np.pi * talkoff.ROWS[i // 4] * t)
    x += dbm0_to_rms(col_db) * np.sqrt(2) * np.sin(2 * np.pi * talkoff.COLS[i % 4] * t)
    return np.concatenate([x, np.zeros(480)])


def twist(sp):
    """Per direction and twist (dB): digits of the 16 decoded (the louder tone at -6 dBm0),
    and the largest twist up to which all 16 decode."""
    out = {}
    for direction in ("row_above_column", "column_above_row"):
        rows = []
        for db in TWISTS:
            lv = (-6.0, -6.0 - db) if direction == "row_above_column" else (-6.0 - db, -6.0)
            x = np.ascontiguousarray(to_int16(np.concatenate([twist_pair(k, *lv) for k in KEYS])))
            got = {"cext.dtmf": ours_digits(x), "spandsp": sp.digits(x)}
            # digits of the 16 found (each key once in the sequence); 16 only if exact
            rows.append({"db": float(db), "decoded": got} | {
                who: 16 if g == KEYS else min(15, sum(k in g for k in KEYS)) for who, g in got.items()})
        limit = {}
        for who in ("cext.dtmf", "spandsp"):
            ok = [r["db"] for r in rows if r[who] == 16]
            bad = [r["db"] for r in rows if r[who] < 16]
            limit[who] = max((d for d in ok if not bad or d < min(bad)), default=None)
        out[direction] = {"max_all_16_db": limit, "grid": rows}
    return out


def talkoff_rates(sp):
    """False digits (and per hour) on the vowel set and the speech set, ours and spandsp's."""
    out = {}
    vowels = talkoff.vowel_list(seconds=1.0)
    speech, speech_s = talkoff.speech_set()
    for name, items, seconds in (
            ("vowels", [x for _, x in vowels], sum(x.size for _, x in vowels) / RATE),
            ("speech", [speech], speech_s)):
        row = {"seconds": seconds}
        for who, fn in (("cext.dtmf", ours_digits), ("spandsp", sp.digits)):
            n = sum(len(fn(np.ascontiguousarray(to_int16(x)))) for x in items)
            row[who] = {"false_digits": n, "per_hour": n / seconds * 3600}
        out[name] = row
    return out


def measure(repeats):
    rng = np.random.default_rng(1)
    sp = SpandspDtmf(load())
    sigs = signals(rng)
    x = np.ascontiguousarray(np.tile(sigs["S/N 20 dB (-4 dBm0, noise -24)"][0], 4))
    ours, theirs = timing(sp, x, repeats)
    speed = [row("cext.dtmf", ours), row("spandsp dtmf_rx", theirs)]
    # the same on speech (no digits: the talk-off check never runs there)
    y = np.ascontiguousarray(to_int16(talkoff.speech_set(levels=(-15.0,))[0][:x.size]))
    ours, theirs = timing(sp, y, repeats)
    speed += [row("cext.dtmf, speech", ours), row("spandsp dtmf_rx, speech", theirs)]
    accuracy = [{"signal": name, "expected": len(want),
                 "cext.dtmf": ours_digits(sig), "spandsp": sp.digits(sig), "want": want}
                for name, (sig, want) in sigs.items()]
    return {"samples": x.size, "repeats": repeats, "speed": speed,
            "accuracy": [{k: v for k, v in a.items() if k != "want"} | {
                "cext_ok": a["cext.dtmf"] == a["want"], "spandsp_ok": a["spandsp"] == a["want"]}
                for a in accuracy],
            "twist": twist(sp), "talkoff": talkoff_rates(sp)}


def baseline(kernel_dir, repeats):
    """The same measurements with the cext.dtmf in kernel_dir, in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "bench.bench_dtmf", "--repeats", str(repeats),
                           "--kernel-dir", str(kernel_dir), "--json-stdout"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--baseline", metavar="DIR", help="also measure the cext.dtmf in DIR (before)")
    ap.add_argument("--kernel-dir", help=argparse.SUPPRESS)
    ap.add_argument("--json-stdout", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.json_stdout:
        print(json.dumps(measure(args.repeats)))
        return
    before = baseline(args.baseline, args.repeats) if args.baseline else None
    now = measure(args.repeats)
    report(now, before)
    RESULTS.parent.mkdir(exist_ok=True)
    doc = now | ({"before": before | {"kernel_dir": Path(args.baseline).name}} if before else {})
    RESULTS.write_text(json.dumps(doc, indent=2))


def report(now, before=None):
    speed, n = now["speed"], now["samples"]
    print(f"DTMF detection, {n} samples per run ({n / RATE:.0f} s of audio: DTMF 50/50 ms at "
          "S/N 20 dB, then espeak-ng speech), one core\n")
    print("| detector | ns/sample min | ns/sample median | channels/core min | channels/core median |")
    print("|---|---|---|---|---|")
    rows = [(f"{r['name']} (before)", r) for r in before["speed"]] if before else []
    for label, r in rows + [(r["name"], r) for r in speed]:
        print(f"| {label} | {r['ns_min']:.2f} | {r['ns_median']:.2f} | "
              f"{r['channels_per_core_min']:.0f} | {r['channels_per_core_median']:.0f} |")
    ratio = speed[1]["ns_min"] / speed[0]["ns_min"]
    print(f"\nspeed-up over spandsp (min): {ratio:.2f}x\n")
    print("| signal | expected digits | cext.dtmf | spandsp |")
    print("|---|---|---|---|")
    for a in now["accuracy"]:
        marks = [f"{len(a[k])} {'ok' if ok else 'WRONG'}"
                 for k, ok in (("cext.dtmf", a["cext_ok"]), ("spandsp", a["spandsp_ok"]))]
        print(f"| {a['signal']} | {a['expected']} | {marks[0]} | {marks[1]} |")
    runs = ([("before", before)] if before else []) + [("now", now)]
    print("\nTwist: largest twist (dB) up to which all 16 digits decode (louder tone -6 dBm0;"
          " references: row above column 8, column above row 4)\n")
    print("| run | row above column: cext.dtmf | spandsp | column above row: cext.dtmf | spandsp |")
    print("|---|---|---|---|---|")
    for label, r in runs:
        t = r["twist"]
        cells = [t[d]["max_all_16_db"][w] for d in ("row_above_column", "column_above_row")
                 for w in ("cext.dtmf", "spandsp")]
        print(f"| {label} | " + " | ".join("none" if c is None else f"{c:g}" for c in cells) + " |")
    print("\nTalk-off: false digits (per hour) on the same audio\n")
    print("| run | set | audio | cext.dtmf | spandsp |")
    print("|---|---|---|---|---|")
    for label, r in runs:
        for name, t in r["talkoff"].items():
            cells = [f"{t[w]['false_digits']} ({t[w]['per_hour']:.1f}/h)" for w in ("cext.dtmf", "spandsp")]
            print(f"| {label} | {name} | {t['seconds'] / 60:.1f} min | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
