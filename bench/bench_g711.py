"""G.711 encode/decode speed: cext.g711 against spandsp's g711_encode/g711_decode, in one
run on the same 20 ms frames and on 1 s buffers.

spandsp's per-sample linear_to_ulaw() etc. are static inlines in its header, so it is
timed through its exported buffer calls (g711_init state + g711_encode/g711_decode),
loaded by ctypes via bench/spandsp.py. Also checks both give the same codes for every
16-bit input (the kernel is tested against the ITU segment tables; A-law agrees with
spandsp everywhere, mu-law on all but the 127 negative inputs on a decision boundary,
where spandsp negates and ITU-T G.191 takes the one's complement). Prints a markdown table (ns/sample, min and median of repeats; real-time
channels per core) and writes bench/results/g711.json. Repeats are modest: the machine is
shared. Run: .venv/bin/python -m bench.bench_g711
"""

from __future__ import annotations

import ctypes
import json
import statistics
import time
from pathlib import Path

import numpy as np

from bench import spandsp
from cext import g711

RATE = 8000
REPEATS = 7
SECONDS = 4  # audio per repeat
G711_ALAW, G711_ULAW = 0, 1
RESULTS = Path(__file__).with_name("results") / "g711.json"


def _spandsp_calls(lib):
    lib.g711_init.restype = ctypes.c_void_p
    lib.g711_init.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.g711_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.g711_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.g711_free.argtypes = [ctypes.c_void_p]
    return lib


def _time(fn, frames) -> list[float]:
    """ns/sample of fn over all frames, per repeat."""
    n = sum(f.size for f in frames)
    out = []
    for _ in range(REPEATS):
        t0 = time.perf_counter_ns()
        for f in frames:
            fn(f)
        out.append((time.perf_counter_ns() - t0) / n)
    return out


def _spandsp_fns(lib, law):
    st = lib.g711_init(None, law)
    codes = np.empty(RATE, dtype=np.uint8)
    pcm = np.empty(RATE, dtype=np.int16)

    def enc(x):
        lib.g711_encode(st, codes.ctypes.data, x.ctypes.data, x.size)

    def dec(c):
        lib.g711_decode(st, pcm.ctypes.data, c.ctypes.data, c.size)

    return st, enc, dec, codes, pcm


def _differ(lib, law, name) -> int:
    """How many of the 65536 inputs spandsp encodes differently from the kernel."""
    st = lib.g711_init(None, law)
    x = np.arange(-32768, 32768).astype(np.int16)
    codes = np.empty(x.size, dtype=np.uint8)
    lib.g711_encode(st, codes.ctypes.data, x.ctypes.data, x.size)
    lib.g711_free(st)
    return int(np.count_nonzero(codes != getattr(g711, f"{name}_encode")(x)))


def _row(impl, op, frame, ns):
    med = statistics.median(ns)
    return {"impl": impl, "op": op, "frame": frame, "ns_min": min(ns), "ns_median": med,
            "channels_per_core": 1e9 / (med * RATE)}


def run() -> list[dict]:
    lib = _spandsp_calls(spandsp.load())
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(RATE * SECONDS) * 4000).astype(np.int16)
    rows = []
    for name, law in (("ulaw", G711_ULAW), ("alaw", G711_ALAW)):
        codes = getattr(g711, f"{name}_encode")(x)
        st, s_enc, s_dec, _, _ = _spandsp_fns(lib, law)
        for frame in (160, RATE):
            xs = [x[i : i + frame] for i in range(0, x.size, frame)]
            cs = [codes[i : i + frame] for i in range(0, codes.size, frame)]
            rows.append(_row("cext", f"{name}_encode", frame, _time(getattr(g711, f"{name}_encode"), xs)))
            rows.append(_row("spandsp", f"{name}_encode", frame, _time(s_enc, xs)))
            rows.append(_row("cext", f"{name}_decode", frame, _time(getattr(g711, f"{name}_decode"), cs)))
            rows.append(_row("spandsp", f"{name}_decode", frame, _time(s_dec, cs)))
        lib.g711_free(st)
        rows.append({"impl": "both", "op": f"{name}_encode", "inputs_differing": _differ(lib, law, name)})
    return rows


def table(rows) -> str:
    out = ["| op | frame | impl | ns/sample min | ns/sample median | channels/core |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        if "ns_min" in r:
            out.append(f"| {r['op']} | {r['frame']} | {r['impl']} | {r['ns_min']:.2f} | "
                       f"{r['ns_median']:.2f} | {r['channels_per_core']:,.0f} |")
    out += [f"\n{r['op']}: inputs (of 65536) spandsp encodes differently: {r['inputs_differing']}"
            for r in rows if "inputs_differing" in r]
    out.append("(mu-law: spandsp negates negative inputs where ITU-T G.191's reference coder, "
               "which the kernel follows, takes the one's complement; they differ only on the "
               "127 negative inputs lying exactly on a decision boundary)")
    return "\n".join(out)


def main() -> None:
    rows = run()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"bench": "g711", "repeats": REPEATS, "rows": rows}, indent=1))
    print(table(rows))
    print("\nns/sample includes the Python call per frame for both (ctypes for spandsp); "
          f"{SECONDS} s of audio per repeat, {REPEATS} repeats. JSON: {RESULTS}")


if __name__ == "__main__":
    main()
