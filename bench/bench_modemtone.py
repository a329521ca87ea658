"""Benchmark: cext.modemtone.ModemToneDetector against spandsp 0.0.6's
modem_connect_tones_rx, side by side in one run on the same audio (spandsp via ctypes
through bench.spandsp.load()). spandsp needs one receiver per tone family, so its figure
is two receivers together, MODEM_CONNECT_TONES_FAX_CNG and
MODEM_CONNECT_TONES_FAX_CED_OR_PREAMBLE (2100 Hz ANS/ANS-PR/ANSam/ANSam-PR plus the V.21
preamble) - what ours covers in one pass. Reports ns/sample (min and median of the
repeats, the two alternating so both see the same load) and, per test signal, the tones
each reports (agreement table: levels, reversals, AM, V.21 flags, talk-off). Prints
markdown and writes bench/results/modemtone.json.
Run: .venv/bin/python -m bench.bench_modemtone [--repeats N]
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench.spandsp import load  # noqa: E402
from cext.dtmf import dtmf_samples  # noqa: E402
from cext.modemtone import ModemToneDetector  # noqa: E402
from cext.ref import modemtone as ref  # noqa: E402
from lab.linemodel import add_noise, dbm0_to_rms, g711_munge, speech_like, to_int16  # noqa: E402
from lab.talkoff import speak  # noqa: E402

RATE = 8000
RESULTS = Path(__file__).with_name("results") / "modemtone.json"
FAX_CNG, FAX_CED_OR_PREAMBLE = 1, 7
SPANDSP_NAMES = {1: "CNG", 2: "CED", 3: "CED_PR", 4: "ANSAM", 5: "ANSAM_PR", 6: "V21_PREAMBLE"}


class SpandspModemTones:
    """modem_connect_tones_rx_init(NULL, type, NULL, NULL) + _rx(s, amp, n) + _rx_get(s)."""

    def __init__(self, lib):
        self.lib = lib
        lib.modem_connect_tones_rx_init.restype = ctypes.c_void_p
        lib.modem_connect_tones_rx_init.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                                    ctypes.c_void_p, ctypes.c_void_p]
        lib.modem_connect_tones_rx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.modem_connect_tones_rx_get.argtypes = [ctypes.c_void_p]
        lib.modem_connect_tones_rx_free.argtypes = [ctypes.c_void_p]

    def _pair(self):
        return [self.lib.modem_connect_tones_rx_init(None, t, None, None)
                for t in (FAX_CNG, FAX_CED_OR_PREAMBLE)]

    def timed(self, x):
        states = self._pair()
        t = time.perf_counter()
        for s in states:
            self.lib.modem_connect_tones_rx(s, x.ctypes.data, x.size)
        dt = time.perf_counter() - t
        for s in states:
            self.lib.modem_connect_tones_rx_free(s)
        return dt

    def tones(self, x, frame=160):
        """Tone names reported, polled after every 20 ms frame."""
        states = self._pair()
        out = []
        for i in range(0, x.size, frame):
            part = np.ascontiguousarray(x[i:i + frame])
            for s in states:
                self.lib.modem_connect_tones_rx(s, part.ctypes.data, part.size)
                hit = self.lib.modem_connect_tones_rx_get(s)
                if hit:
                    out.append(SPANDSP_NAMES.get(hit, str(hit)))
        for s in states:
            self.lib.modem_connect_tones_rx_free(s)
        return out


def spandsp_tx(lib, tone_type, seconds):
    """A tone from spandsp's own generator, modem_connect_tones_tx (an independent source:
    spandsp's DDS, levels -11/-12 dBm0, 0.2 s lead-in silence for the 2100 Hz tones)."""
    lib.modem_connect_tones_tx_init.restype = ctypes.c_void_p
    lib.modem_connect_tones_tx_init.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.modem_connect_tones_tx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.modem_connect_tones_tx_free.argtypes = [ctypes.c_void_p]
    s = lib.modem_connect_tones_tx_init(None, tone_type)
    out = np.zeros(int(seconds * RATE), dtype=np.int16)
    n = lib.modem_connect_tones_tx(s, out.ctypes.data, out.size)
    lib.modem_connect_tones_tx_free(s)
    return out[:n].astype(float)


SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please hold the line, your call is important to us.",
    "One two three four five six seven eight nine zero star pound.",
    "She sells sea shells by the sea shore, eleven twelve thirteen.",
    "Good morning, this is the branch office, how may I help you today?",
    "Would you like to leave a message after the tone? Press one for sales.",
)
VOICES = (("en", 160, 50), ("en-us", 200, 70), ("en+f3", 140, 60), ("de", 170, 40),
          ("fr", 180, 55), ("es", 150, 65), ("en+m3", 220, 30), ("it", 175, 80),
          ("en-gb", 120, 45), ("pt", 190, 35), ("en+f2", 150, 99), ("fr+f4", 160, 90))


def espeak_corpus():
    """espeak-ng speech (12 voices x 6 sentences, ~5 min) at 8 kHz, or None without it."""
    if shutil.which("espeak-ng") is None:
        return None
    parts = [speak(v, s, p, text) for v, s, p in VOICES for text in SENTENCES]
    x = np.concatenate(parts)
    active = np.abs(x) > np.max(np.abs(x)) * 0.01
    return x / np.sqrt(np.mean(x[active] ** 2))  # unit active-speech RMS


def ours_timed(x):
    det = ModemToneDetector(rate=RATE)
    t = time.perf_counter()
    det.process(x)
    return time.perf_counter() - t


def ours_tones(x, frame=160):
    det = ModemToneDetector(rate=RATE)
    out = []
    for i in range(0, x.size, frame):
        out += [t.name for t, _ in det.process(x[i:i + frame])]
    return out


def signals(rng, lib):
    """Name -> (int16 signal, expected tone names)."""
    lead = np.zeros(1600)
    sig = {}
    for code, name, want in ((1, "CNG", ["CNG", "CNG"]), (2, "ANS", ["CED"]),
                             (3, "ANS/", ["CED_PR"]), (4, "ANSam", ["ANSAM"]),
                             (5, "ANSam/", ["ANSAM_PR"])):
        sig[f"spandsp tx {name}"] = (spandsp_tx(lib, code, 7.0), want)
    for lvl in (-12, -30, -43):
        sig[f"CNG x2 {lvl} dBm0"] = (ref.cng_samples(7.0, lvl), ["CNG", "CNG"])
        for am, pr, name in ((0, False, "CED"), (0, True, "CED_PR"), (0.2, False, "ANSAM"),
                             (0.2, True, "ANSAM_PR")):
            sig[f"{name} 3.3 s {lvl} dBm0"] = (ref.ans_samples(3.3, lvl, am_index=am, reversals=pr),
                                               [name])
    bits = np.concatenate([np.ones(10), ref.hdlc_flag_bits(38), rng.integers(0, 2, 200)])
    sig["V.21 preamble -20 dBm0"] = (ref.fsk_samples(bits, -20), ["V21_PREAMBLE"])
    sig["V.21 preamble -20 dBm0, S/N 10 dB"] = (
        add_noise(ref.fsk_samples(bits, -20), -30, rng), ["V21_PREAMBLE"])
    sig["CED 2100+21 Hz (1 %) -20 dBm0"] = (ref.ans_samples(3.3, -20, freq=2121), ["CED"])
    sig["CED 2100+40 Hz -20 dBm0"] = (ref.ans_samples(3.3, -20, freq=2140), [])
    sig["CNG 1100+38 Hz -20 dBm0"] = (ref.cng_samples(3.4, -20, freq=1138), ["CNG"])
    sig["CNG 1100+60 Hz -20 dBm0"] = (ref.cng_samples(3.4, -20, freq=1160), [])
    sig["CED_PR -50 dBm0 (below floor)"] = (ref.ans_samples(3.3, -50, reversals=True), [])
    sig["speech-like 60 s -15 dBm0"] = (speech_like(60 * RATE, -15, rng), [])
    sig["DTMF 16 digits x 3"] = (dtmf_samples("0123456789*#ABCD" * 3, 100, 100, -7), [])
    return {k: (to_int16(np.concatenate([lead, x, np.zeros(2400)])), want)
            for k, (x, want) in sig.items()}


def row(name, ns):
    return {"name": name, "ns_min": min(ns), "ns_median": statistics.median(ns),
            "channels_per_core_min": 1e9 / RATE / min(ns)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    lib = load()
    sp = SpandspModemTones(lib)
    sigs = signals(rng, lib)
    x = np.ascontiguousarray(np.concatenate([s for s, _ in sigs.values()]))
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(ours_timed(x) / x.size * 1e9)
        theirs.append(sp.timed(x) / x.size * 1e9)
    speed = [row("cext.modemtone (all tones)", ours),
             row("spandsp modem_connect_tones_rx (CNG + CED_OR_PREAMBLE)", theirs)]
    accuracy = [{"signal": k, "expected": want, "cext": ours_tones(s), "spandsp": sp.tones(s)}
                for k, (s, want) in sigs.items()]
    for a in accuracy:
        a["cext_ok"] = a["cext"] == a["expected"]
        a["spandsp_ok"] = a["spandsp"] == a["expected"]
    talkoff = speech_talkoff(sp)
    noise = noise_sweep(sp)
    report(speed, accuracy, x.size)
    report_noise(noise)
    report_talkoff(talkoff)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"samples": x.size, "repeats": args.repeats, "speed": speed,
                                   "accuracy": accuracy, "noise": noise,
                                   "speech_talkoff": talkoff}, indent=2))


def noise_sweep(sp, seeds=10):
    """Right classifications out of `seeds` per tone and S/N (white noise, signal -20 dBm0)."""
    makers = {
        "CNG": lambda rng: ref.cng_samples(3.4, -20),
        "CED_PR": lambda rng: ref.ans_samples(3.3, -20, reversals=True),
        "ANSAM": lambda rng: ref.ans_samples(3.3, -20, am_index=0.2),
        "V21_PREAMBLE": lambda rng: ref.fsk_samples(
            np.concatenate([np.ones(10), ref.hdlc_flag_bits(38), rng.integers(0, 2, 100)]), -20),
    }
    rows = []
    for name, make in makers.items():
        for snr in (20, 10, 6, 3):
            hits = {"cext": 0, "spandsp": 0}
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                x = np.concatenate([np.zeros(1600), make(rng), np.zeros(2400)])
                x = to_int16(add_noise(x, -20 - snr, rng))
                hits["cext"] += ours_tones(x)[:1] == [name]
                hits["spandsp"] += sp.tones(x)[:1] == [name]
            rows.append({"tone": name, "snr_db": snr, "runs": seeds, **hits})
    return rows


def report_noise(rows):
    print("\nRight first report out of N runs, tone at -20 dBm0 in white noise\n")
    print("| tone | S/N dB | cext.modemtone | spandsp |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['tone']} | {r['snr_db']} | {r['cext']}/{r['runs']} | {r['spandsp']}/{r['runs']} |")


def speech_talkoff(sp):
    """False tones per hour of espeak-ng speech, clean and through mu-law, three levels."""
    speech = espeak_corpus()
    if speech is None:
        return None
    rows = []
    for dbm0 in (-6, -15, -25):
        for law in (None, "ulaw"):
            x = to_int16(speech * dbm0_to_rms(dbm0))
            if law:
                x = g711_munge(x, law)
            hours = x.size / RATE / 3600
            rows.append({"level_dbm0": dbm0, "law": law or "linear", "seconds": x.size / RATE,
                         "cext": ours_tones(x), "spandsp": sp.tones(x),
                         "cext_per_hour": len(ours_tones(x)) / hours,
                         "spandsp_per_hour": len(sp.tones(x)) / hours})
    return rows


def report_talkoff(rows):
    if rows is None:
        print("\n(espeak-ng not installed: no speech talk-off figures)")
        return
    print(f"\nTalk-off on espeak-ng speech ({rows[0]['seconds']:.0f} s per row)\n")
    print("| level | coding | cext.modemtone false tones (/h) | spandsp false tones (/h) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['level_dbm0']} dBm0 | {r['law']} | {len(r['cext'])} ({r['cext_per_hour']:.0f}) "
              f"{' '.join(r['cext'])} | {len(r['spandsp'])} ({r['spandsp_per_hour']:.0f}) "
              f"{' '.join(r['spandsp'])} |")


def report(speed, accuracy, n):
    print(f"Fax/modem tone detection, {n} samples per run ({n / RATE:.0f} s), one core\n")
    print("| detector | ns/sample min | ns/sample median | channels/core min |")
    print("|---|---|---|---|")
    for r in speed:
        print(f"| {r['name']} | {r['ns_min']:.2f} | {r['ns_median']:.2f} | "
              f"{r['channels_per_core_min']:.0f} |")
    print(f"\nspandsp / ours (min): {speed[1]['ns_min'] / speed[0]['ns_min']:.2f}x\n")
    print("| signal | expected | cext.modemtone | spandsp |")
    print("|---|---|---|---|")
    for a in accuracy:
        cells = [f"{' '.join(a[k]) or '-'} {'ok' if a[k + '_ok'] else 'WRONG'}"
                 for k in ("cext", "spandsp")]
        print(f"| {a['signal']} | {' '.join(a['expected']) or '-'} | {cells[0]} | {cells[1]} |")
    n_ok = [sum(a[k + "_ok"] for a in accuracy) for k in ("cext", "spandsp")]
    print(f"\nright on {n_ok[0]}/{len(accuracy)} signals (ours), {n_ok[1]}/{len(accuracy)} (spandsp)")


if __name__ == "__main__":
    main()
