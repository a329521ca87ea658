"""Benchmark of cext.echo against spandsp's G.168 echo canceller, side by side in one run.

Speed (spandsp through a C harness compiled here; ours on 20 ms frames and whole buffers)
and ERLE on white noise through G.168 paths m1..m8 and on espeak-ng speech via G.711 (the
condition tests/dsp/test_g168_speech.py asserts); "before" is cext/echo.pyx at
BEFORE_COMMIT, built from git. Needs libspandsp-dev and a C compiler.
Run: .venv/bin/python -m bench.bench_echo (writes bench/results/echo.json).
"""

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.spandsp import load, print_free_path
from cext.echo import EchoCanceller
from lab.linemodel import (
    MODELS,
    add_noise,
    apply_echo,
    echo_path,
    espeak_speech,
    g711_munge,
    level_dbm0,
    to_int16,
    white_noise,
)

RATE = 8000
REPEATS = 5
BEFORE_COMMIT = "9b948b5"  # cext/echo.pyx before the speech-ERLE rework (the "before" figures)
ROOT = Path(__file__).resolve().parent.parent
SPEECH_VOICES = (("en-us", 160, 50), ("en+f3", 170, 60), ("de", 160, 40), ("en+m3", 150, 30))
HARNESS = r"""
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <spandsp.h>
/* argv: taps mode n infile outfile -> writes output samples; prints ns/sample on stderr */
int main(int argc, char **argv) {
    int taps = atoi(argv[1]), mode = atoi(argv[2]), n = atoi(argv[3]);
    int16_t *buf = malloc(4 * n), *out = malloc(2 * n);
    FILE *f = fopen(argv[4], "rb"); if (fread(buf, 2, 2 * n, f) != (size_t)(2 * n)) return 1; fclose(f);
    echo_can_state_t *ec = echo_can_init(taps, mode);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) out[i] = echo_can_update(ec, buf[i], buf[n + i]);
    clock_gettime(CLOCK_MONOTONIC, &b);
    fprintf(stderr, "%.3f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    f = fopen(argv[5], "wb"); fwrite(out, 2, n, f); fclose(f);
    echo_can_free(ec);
    return 0;
}
"""


def build_harness(tmp: Path) -> Path:
    src, exe = tmp / "ec.c", tmp / "ec"
    src.write_text(HARNESS)
    # Link the print-free build (scripts/spandsp/build.sh, bench/bench_anchor.py) when cached.
    free = print_free_path()
    lib = [str(free), f"-Wl,-rpath,{free.parent}"] if free else ["-lspandsp"]
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src), *lib, "-lm"], check=True)
    return exe


def spandsp_run(exe: Path, tmp: Path, near, far, taps: int, adapt_only: bool):
    """Run spandsp on (far=tx, near=rx); returns (output, ns/sample)."""
    mode = 0x01 | 0x40 if adapt_only else 0x01 | 0x02 | 0x04 | 0x40 | 0x20
    inp, outp = tmp / "in.raw", tmp / "out.raw"
    np.concatenate([far, near]).astype(np.int16).tofile(inp)
    res = subprocess.run([str(exe), str(taps), str(mode), str(near.size), str(inp), str(outp)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    return np.fromfile(outp, dtype=np.int16), float(res.stderr.strip())


def ours_speed(near, far, tail_ms: int, frame: int | None, cls=EchoCanceller):
    ec = cls(tail_ms, nlp=True)
    t = time.perf_counter()
    if frame is None:
        ec.process(near, far)
    else:
        for i in range(0, near.size, frame):
            ec.process(near[i:i + frame], far[i:i + frame])
    return (time.perf_counter() - t) * 1e9 / near.size


def stats(ns):
    return {"min_ns": min(ns), "median_ns": float(np.median(ns)),
            "channels_per_core_min": 1e9 / (min(ns) * RATE),
            "channels_per_core_median": 1e9 / (float(np.median(ns)) * RATE)}


def before_kernel():
    """cext/echo.pyx as of BEFORE_COMMIT, compiled once into ~/.cache (same flags as
    setup.py); the module, or None when git or the commit is not available."""
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE_COMMIT}:cext/echo.pyx"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "branchline" / f"echo_before_{BEFORE_COMMIT}"
    cache.mkdir(parents=True, exist_ok=True)
    if not list(cache.glob("echo_before*.so")):
        (cache / "echo_before.pyx").write_text(src)
        (cache / "setup.py").write_text(
            "from Cython.Build import cythonize\nfrom setuptools import Extension, setup\n"
            "setup(ext_modules=cythonize([Extension('echo_before', ['echo_before.pyx'], extra_compile_args="
            "['-O3', '-ffast-math', '-fno-math-errno', '-march=native'])], quiet=True))\n")
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=cache,
                       check=True, capture_output=True)
    sys.path.insert(0, str(cache))
    try:
        return importlib.import_module("echo_before")
    finally:
        sys.path.remove(str(cache))


def speed(exe, tmp, before=None):
    rng = np.random.default_rng(1)
    far = to_int16(white_noise(5 * RATE, -16, rng))
    near = to_int16(add_noise(apply_echo(far, echo_path("m4", 6)), -70, rng))
    rows = {}
    for tail_ms in (64, 128):
        rows[f"spandsp {tail_ms} ms"] = stats([spandsp_run(exe, tmp, near, far, tail_ms * 8, False)[1] for _ in range(REPEATS)])
        rows[f"cext.echo {tail_ms} ms, 20 ms frames"] = stats([ours_speed(near, far, tail_ms, 160) for _ in range(REPEATS)])
        rows[f"cext.echo {tail_ms} ms, whole buffer"] = stats([ours_speed(near, far, tail_ms, None) for _ in range(REPEATS)])
        if before is not None:  # interleaved with ours so both see the same machine load
            rows[f"cext.echo before ({BEFORE_COMMIT}) {tail_ms} ms, 20 ms frames"] = stats(
                [ours_speed(near, far, tail_ms, 160, before.EchoCanceller) for _ in range(REPEATS)])
            rows[f"cext.echo after {tail_ms} ms, 20 ms frames (same run)"] = stats(
                [ours_speed(near, far, tail_ms, 160) for _ in range(REPEATS)])
    return rows


def erle_curve(near, out):
    pts = {}
    for t in (0.5, 1.0, 2.0, 5.0):
        a, b = int((t - 0.1) * RATE), int(t * RATE)
        pts[f"{t:g}s"] = level_dbm0(near[a:b]) - level_dbm0(out[a:b])
    pts["steady"] = level_dbm0(near[-2 * RATE:]) - level_dbm0(out[-2 * RATE:])
    return pts


def speak(voice, wpm, pitch):
    """espeak-ng speech at 8 kHz, silence cut, -16 dBm0 active level (as the test)."""
    return espeak_speech(voice, wpm, pitch)


def speech_erle(near, out):
    a, b = int(0.75 * RATE), RATE
    return {"1s": level_dbm0(near[a:b]) - level_dbm0(out[a:b]),
            "steady": level_dbm0(near[3 * RATE:]) - level_dbm0(out[3 * RATE:])}


def speech_table(exe, tmp, before=None):
    """Speech via G.711 at 6 dB ERL on every path: per path the worst voice's ERLE at 1 s
    and steady, for ours (after, and before when built) and spandsp."""
    if shutil.which("espeak-ng") is None:
        return []
    voices = [speak(*v) for v in SPEECH_VOICES]
    n = 6 * RATE
    rows = []
    for model in MODELS:
        per = {"after": [], "before": [], "spandsp": []}
        for i, x in enumerate(voices):
            while x.size < n:
                x = np.concatenate([x, voices[(i + 1) % len(voices)]])
            rng = np.random.default_rng(1)
            far = g711_munge(x[:n], "ulaw")
            near = g711_munge(add_noise(apply_echo(far, echo_path(model, 6)), -60.0, rng), "ulaw")
            per["after"].append(speech_erle(near, EchoCanceller(128, nlp=False).process(near, far)))
            if before is not None:
                per["before"].append(speech_erle(near, before.EchoCanceller(128, nlp=False).process(near, far)))
            per["spandsp"].append(speech_erle(near, spandsp_run(exe, tmp, near, far, 1024, True)[0]))
        row = {"path": model, "voices": [v[0] for v in SPEECH_VOICES], "per_voice": per}
        for k, v in per.items():
            if v:
                row[k] = {"1s": min(e["1s"] for e in v), "steady": min(e["steady"] for e in v)}
        rows.append(row)
    return rows


def erle_table(exe, tmp, before=None):
    rows = []
    for model in ("white",) + MODELS:
        for loss in (6, 12):
            rng = np.random.default_rng(sum(map(ord, model)) * 100 + loss)  # str hash() varies per run
            far = to_int16(white_noise(8 * RATE, -16, rng))
            h = (rng.standard_normal(64) * np.exp(-np.arange(64) / 12) * 0.3 * 10 ** (-loss / 20)
                 if model == "white" else echo_path(model, loss))
            near = to_int16(add_noise(apply_echo(far, h), -70, rng))
            ours = EchoCanceller(128, nlp=False).process(near, far)
            theirs, _ = spandsp_run(exe, tmp, near, far, 1024, True)
            rows.append({"path": model, "loss_db": loss, "cext": erle_curve(near, ours),
                         "spandsp": erle_curve(near, theirs)})
            if before is not None:
                rows[-1]["cext_before"] = erle_curve(near, before.EchoCanceller(128, nlp=False).process(near, far))
    return rows


def vectorised() -> str:
    so = next(Path(__file__).resolve().parent.parent.glob("cext/echo*.so"))
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(so)], capture_output=True, text=True).stdout
    ymm = sum(1 for line in dis.splitlines() if "ymm" in line)
    zmm = sum(1 for line in dis.splitlines() if "zmm" in line)
    return f"{so.name}: {ymm} ymm and {zmm} zmm instructions"


def markdown(speed_rows, erle_rows, vec, speech_rows=()):
    out = ["| canceller | min ns/sample | median ns/sample | channels/core (min) | channels/core (median) |",
           "|---|---:|---:|---:|---:|"]
    for name, r in speed_rows.items():
        out.append(f"| {name} | {r['min_ns']:.0f} | {r['median_ns']:.0f} | {r['channels_per_core_min']:.0f} | {r['channels_per_core_median']:.0f} |")
    out += ["", "spandsp: C harness, one echo_can_update per sample, "
            + ("print-free build of Debian's source (scripts/spandsp/build.sh)." if print_free_path() else
               "its stdout sent to /dev/null (Debian's build prints debug lines per sample)."), "",
            "| path | loss dB | cext 0.5/1/2/5 s, steady (dB) | spandsp 0.5/1/2/5 s, steady (dB) |", "|---|---:|---|---|"]
    for r in erle_rows:
        c = " / ".join(f"{v:.1f}" for v in r["cext"].values())
        s = " / ".join(f"{v:.1f}" for v in r["spandsp"].values())
        out.append(f"| {r['path']} | {r['loss_db']} | {c} | {s} |")
    if any("cext_before" in r for r in erle_rows):
        out += ["", f"| path | loss dB | cext before ({BEFORE_COMMIT}) 0.5/1/2/5 s, steady (dB) |", "|---|---:|---|"]
        for r in erle_rows:
            out.append(f"| {r['path']} | {r['loss_db']} | " + " / ".join(f"{v:.1f}" for v in r["cext_before"].values()) + " |")
    if speech_rows:
        out += ["", "Speech via G.711 (mu-law both ways), 6 dB ERL, worst of 4 espeak-ng voices per path; "
                "ERLE at 1 s / steady (dB). The goal: >= 18 at 1 s, >= 25 steady.", "",
                f"| path | cext after | cext before ({BEFORE_COMMIT}) | spandsp |", "|---|---|---|---|"]
        for r in speech_rows:
            cells = [f"{r[k]['1s']:.1f} / {r[k]['steady']:.1f}" if k in r else "-" for k in ("after", "before", "spandsp")]
            out.append(f"| {r['path']} | " + " | ".join(cells) + " |")
        for k in ("after", "before", "spandsp"):
            if all(k in r for r in speech_rows):
                out.append(f"| worst path ({k}) | {min(r[k]['1s'] for r in speech_rows):.1f} / "
                           f"{min(r[k]['steady'] for r in speech_rows):.1f} | | |")
    a = speed_rows.get("cext.echo after 128 ms, 20 ms frames (same run)")
    b = speed_rows.get(f"cext.echo before ({BEFORE_COMMIT}) 128 ms, 20 ms frames")
    if a and b:
        out += ["", f"Cost after/before (128 ms, 20 ms frames): {a['min_ns'] / b['min_ns']:.2f}x (min), "
                f"{a['median_ns'] / b['median_ns']:.2f}x (median); the goal: at most 1.3x."]
    out += ["", f"Vectorised: {vec}"]
    return "\n".join(out)


def main() -> int:
    load()  # clear error if libspandsp is missing
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build_harness(tmp)
        before = before_kernel()
        speed_rows, erle_rows = speed(exe, tmp, before), erle_table(exe, tmp, before)
        speech_rows = speech_table(exe, tmp, before)
    vec = vectorised()
    table = markdown(speed_rows, erle_rows, vec, speech_rows)
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / "echo.json").write_text(json.dumps({"speed": speed_rows, "erle": erle_rows, "speech_g711": speech_rows,
                                                    "before_commit": BEFORE_COMMIT, "vectorised": vec}, indent=1))
    sys.stdout.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
