"""Benchmark: FSK caller-ID demodulation, cext.fsk.FskRx vs spandsp 0.0.6 adsi_rx, side by
side in one run on the same signals (spandsp through bench/spandsp.py, ctypes).

Reports ns/sample and real-time 8 kHz channels per core (min and median of a few
repeats), and messages decoded by each vs S/N (white noise over 0-4 kHz). Bell 202 is
compared with ADSI_STANDARD_CLASS (1), V.23 with ADSI_STANDARD_CLIP (2); spandsp delivers only
messages whose checksum passed, without the checksum byte. Prints a
markdown table and writes bench/results/fsk.json. Run: .venv/bin/python -m bench.bench_fsk
"""

import ctypes
import json
import time
from pathlib import Path

import numpy as np

from bench.spandsp import load
from cext import callerid, fsk

RATE = 8000
SPANDSP_STD = {"bell202": 1, "v23": 2}
PUT_MSG = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_int)
RESULTS = Path(__file__).with_name("results") / "fsk.json"


def _messages(n, rng):
    return [callerid.encode({"number": "".join(rng.choice(list("0123456789"), 10)),
                             "name": f"CALLER {i:03d}", "datetime": "03151030"}) for i in range(n)]


def _train(msgs, standard, snr_db, rng):
    """All bursts back to back with 0.3 s gaps; noise at snr_db relative to the bursts."""
    gap = np.zeros(2400)
    parts = []
    for m in msgs:
        parts += [gap, callerid.modulate(m, standard).astype(np.float64)]
    x = np.concatenate(parts + [gap])
    if snr_db is not None:
        p = np.mean(callerid.modulate(msgs[0], standard).astype(np.float64) ** 2)
        x = x + rng.normal(0.0, np.sqrt(p / 10 ** (snr_db / 10)), len(x))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


class Spandsp:
    """adsi_rx with a put_msg callback that collects the message bytes."""

    def __init__(self, lib, standard):
        self.lib, self.got = lib, []
        lib.adsi_rx_init.restype = ctypes.c_void_p
        lib.adsi_rx_init.argtypes = [ctypes.c_void_p, ctypes.c_int, PUT_MSG, ctypes.c_void_p]
        lib.adsi_rx.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16), ctypes.c_int]
        lib.adsi_rx_free.argtypes = [ctypes.c_void_p]
        self.cb = PUT_MSG(self._put)
        self.state = lib.adsi_rx_init(None, SPANDSP_STD[standard], self.cb, None)

    def _put(self, _user, msg, length):
        if length > 0:
            self.got.append(bytes(msg[:length]))

    def run(self, x):
        self.lib.adsi_rx(self.state, x.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), len(x))

    def close(self):
        self.lib.adsi_rx_free(self.state)


def _ours_messages(x, standard):
    dec = callerid.CallerIdDecoder(standard)
    return dec.process(x) + dec.flush()


def _count_ours(msgs, out):
    want = [callerid.decode(m) for m in msgs]
    got = {(m["number"], m["name"]) for m in out if m["checksum_ok"]}
    return sum((w["number"], w["name"]) in got for w in want)


def _time(fn, x, repeats):
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        runs.append((time.perf_counter() - t) / len(x) * 1e9)
    return min(runs), float(np.median(runs))


def speed(lib, standard, x, repeats=5):
    def ours(buf):
        fsk.FskRx(standard).process(buf)

    def theirs(buf):
        s = Spandsp(lib, standard)
        s.run(buf)
        s.close()

    return {"ours": _time(ours, x, repeats), "spandsp": _time(theirs, x, repeats)}


def accuracy(lib, standard, msgs, snrs, rng):
    rows = []
    for snr in snrs:
        x = _train(msgs, standard, snr, rng)
        s = Spandsp(lib, standard)
        s.run(x)
        s.close()
        theirs = sum(m[:-1] in s.got for m in msgs)  # spandsp delivers checked messages without the checksum
        rows.append({"snr_db": snr, "ours": _count_ours(msgs, _ours_messages(x, standard)),
                     "spandsp": theirs, "of": len(msgs)})
    return rows


def main():
    lib = load()
    rng = np.random.default_rng(1)
    msgs = _messages(100, rng)
    out = {"speed": {}, "accuracy": {}}
    for standard in ("bell202", "v23"):
        x = _train(msgs, standard, 30.0, rng)
        out["speed"][standard] = speed(lib, standard, x)
        out["accuracy"][standard] = accuracy(lib, standard, msgs, [6, 8, 9, 10, 11, 12, 13, 15, 20, 30], rng)
    _print(out)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))


def _print(out):
    print("| standard | demodulator | ns/sample min | median | channels/core (min) |")
    print("|---|---|---|---|---|")
    for std, row in out["speed"].items():
        for who, (lo, med) in row.items():
            print(f"| {std} | {who} | {lo:.1f} | {med:.1f} | {1e9 / (lo * RATE):.0f} |")
    print()
    print("| standard | S/N dB | ours | spandsp | of |")
    print("|---|---|---|---|---|")
    for std, rows in out["accuracy"].items():
        for r in rows:
            print(f"| {std} | {r['snr_db']} | {r['ours']} | {r['spandsp']} | {r['of']} |")


if __name__ == "__main__":
    main()
