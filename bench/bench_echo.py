"""Benchmark of cext.echo against spandsp's G.168 echo canceller, side by side in one run.

Speed: spandsp through a tiny C harness compiled here (`cc -O2 ... -lspandsp`, one call of
echo_can_update per sample in C, its stdout sent to /dev/null because Debian's build
prints debug lines per sample); ours through the Python API on 20 ms frames and on whole
buffers. ERLE: both cancellers on the same signals (white far end at -16 dBm0, each G.168
path m1..m8 at 6 and 12 dB extra loss, -70 dBm0 near noise), linear part (NLP off).
Needs libspandsp-dev and a C compiler. Run: .venv/bin/python -m bench.bench_echo
Writes bench/results/echo.json and prints a markdown table. Keep repeats modest.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.spandsp import load
from cext.echo import EchoCanceller
from lab.linemodel import (
    MODELS,
    add_noise,
    apply_echo,
    echo_path,
    level_dbm0,
    to_int16,
    white_noise,
)

RATE = 8000
REPEATS = 5
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
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src), "-lspandsp", "-lm"], check=True)
    return exe


def spandsp_run(exe: Path, tmp: Path, near, far, taps: int, adapt_only: bool):
    """Run spandsp on (far=tx, near=rx); returns (output, ns/sample)."""
    mode = 0x01 | 0x40 if adapt_only else 0x01 | 0x02 | 0x04 | 0x40 | 0x20
    inp, outp = tmp / "in.raw", tmp / "out.raw"
    np.concatenate([far, near]).astype(np.int16).tofile(inp)
    res = subprocess.run([str(exe), str(taps), str(mode), str(near.size), str(inp), str(outp)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    return np.fromfile(outp, dtype=np.int16), float(res.stderr.strip())


def ours_speed(near, far, tail_ms: int, frame: int | None):
    ec = EchoCanceller(tail_ms, nlp=True)
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


def speed(exe, tmp):
    rng = np.random.default_rng(1)
    far = to_int16(white_noise(5 * RATE, -16, rng))
    near = to_int16(add_noise(apply_echo(far, echo_path("m4", 6)), -70, rng))
    rows = {}
    for tail_ms in (64, 128):
        rows[f"spandsp {tail_ms} ms"] = stats([spandsp_run(exe, tmp, near, far, tail_ms * 8, False)[1] for _ in range(REPEATS)])
        rows[f"cext.echo {tail_ms} ms, 20 ms frames"] = stats([ours_speed(near, far, tail_ms, 160) for _ in range(REPEATS)])
        rows[f"cext.echo {tail_ms} ms, whole buffer"] = stats([ours_speed(near, far, tail_ms, None) for _ in range(REPEATS)])
    return rows


def erle_curve(near, out):
    pts = {}
    for t in (0.5, 1.0, 2.0, 5.0):
        a, b = int((t - 0.1) * RATE), int(t * RATE)
        pts[f"{t:g}s"] = level_dbm0(near[a:b]) - level_dbm0(out[a:b])
    pts["steady"] = level_dbm0(near[-2 * RATE:]) - level_dbm0(out[-2 * RATE:])
    return pts


def erle_table(exe, tmp):
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
    return rows


def vectorised() -> str:
    so = next(Path(__file__).resolve().parent.parent.glob("cext/echo*.so"))
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(so)], capture_output=True, text=True).stdout
    ymm = sum(1 for line in dis.splitlines() if "ymm" in line)
    zmm = sum(1 for line in dis.splitlines() if "zmm" in line)
    return f"{so.name}: {ymm} ymm and {zmm} zmm instructions"


def markdown(speed_rows, erle_rows, vec):
    out = ["| canceller | min ns/sample | median ns/sample | channels/core (min) | channels/core (median) |",
           "|---|---:|---:|---:|---:|"]
    for name, r in speed_rows.items():
        out.append(f"| {name} | {r['min_ns']:.0f} | {r['median_ns']:.0f} | {r['channels_per_core_min']:.0f} | {r['channels_per_core_median']:.0f} |")
    out += ["", "spandsp: C harness, one echo_can_update per sample, its stdout sent to /dev/null "
            "(Debian's build prints debug lines per sample).", "",
            "| path | loss dB | cext 0.5/1/2/5 s, steady (dB) | spandsp 0.5/1/2/5 s, steady (dB) |", "|---|---:|---|---|"]
    for r in erle_rows:
        c = " / ".join(f"{v:.1f}" for v in r["cext"].values())
        s = " / ".join(f"{v:.1f}" for v in r["spandsp"].values())
        out.append(f"| {r['path']} | {r['loss_db']} | {c} | {s} |")
    out += ["", f"Vectorised: {vec}"]
    return "\n".join(out)


def main() -> int:
    load()  # clear error if libspandsp is missing
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build_harness(tmp)
        speed_rows, erle_rows = speed(exe, tmp), erle_table(exe, tmp)
    vec = vectorised()
    table = markdown(speed_rows, erle_rows, vec)
    res = Path(__file__).resolve().parent / "results"
    res.mkdir(exist_ok=True)
    (res / "echo.json").write_text(json.dumps({"speed": speed_rows, "erle": erle_rows, "vectorised": vec}, indent=1))
    sys.stdout.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
