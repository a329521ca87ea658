"""Benchmark: cext.dtmf.DtmfDetector against spandsp 0.0.6's dtmf_rx, side by side in one
run on the same signals (spandsp via ctypes through bench.spandsp.load(), whole buffers
per call so the ctypes overhead is negligible). Reports ns/sample and real-time channels
per core (min and median of a modest number of repeats), and digits detected versus
expected by both on the same test signals. Prints a markdown table and writes
bench/results/dtmf.json. Run: .venv/bin/python -m bench.bench_dtmf [--repeats N]
Assumes a quiet-ish machine; numpy's BLAS threads are pinned to one so they do not spin.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench.spandsp import load  # noqa: E402
from cext.dtmf import DtmfDetector, dtmf_samples  # noqa: E402
from lab.linemodel import to_int16, white_noise  # noqa: E402

RATE = 8000
KEYS = "123A456B789C*0#D"
RESULTS = Path(__file__).with_name("results") / "dtmf.json"


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    sp = SpandspDtmf(load())
    sigs = signals(rng)
    x = np.ascontiguousarray(np.tile(sigs["S/N 20 dB (-4 dBm0, noise -24)"][0], 4))
    ours, theirs = timing(sp, x, args.repeats)
    speed = [row("cext.dtmf", ours), row("spandsp dtmf_rx", theirs)]
    accuracy = [{"signal": name, "expected": len(want),
                 "cext.dtmf": ours_digits(sig), "spandsp": sp.digits(sig), "want": want}
                for name, (sig, want) in sigs.items()]
    report(speed, accuracy, x.size)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"samples": x.size, "repeats": args.repeats, "speed": speed,
                                   "accuracy": [{k: v for k, v in a.items() if k != "want"} | {
                                       "cext_ok": a["cext.dtmf"] == a["want"],
                                       "spandsp_ok": a["spandsp"] == a["want"]} for a in accuracy]},
                                  indent=2))


def report(speed, accuracy, n):
    print(f"DTMF detection, {n} samples per run ({n / RATE:.0f} s of audio), one core\n")
    print("| detector | ns/sample min | ns/sample median | channels/core min | channels/core median |")
    print("|---|---|---|---|---|")
    for r in speed:
        print(f"| {r['name']} | {r['ns_min']:.2f} | {r['ns_median']:.2f} | "
              f"{r['channels_per_core_min']:.0f} | {r['channels_per_core_median']:.0f} |")
    ratio = speed[1]["ns_min"] / speed[0]["ns_min"]
    print(f"\nspeed-up over spandsp (min): {ratio:.2f}x\n")
    print("| signal | expected digits | cext.dtmf | spandsp |")
    print("|---|---|---|---|")
    for a in accuracy:
        marks = [f"{len(got)} {'ok' if got == a['want'] else 'WRONG'}"
                 for got in (a["cext.dtmf"], a["spandsp"])]
        print(f"| {a['signal']} | {a['expected']} | {marks[0]} | {marks[1]} |")


if __name__ == "__main__":
    main()
