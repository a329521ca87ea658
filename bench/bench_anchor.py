"""A fair spandsp anchor: Debian's libspandsp2 and the same source built without the echo
canceller's debug prints (scripts/spandsp/build.sh), side by side in one run, with ours.
Debian's echo_can_update() printf()s per sample, so the headline is against the print-free
build. Times echo (as bench_echo), dtmf_rx (as bench_dtmf) and adsi_rx (as bench_fsk) in
ns per sample, interleaved, and checks both builds give the same output.
Run: .venv/bin/python -m bench.bench_anchor (writes bench/results/anchor.json).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bench.bench_echo import ours_speed  # noqa: E402
from bench.spandsp import build_info, load, print_free_path, quiet_stdout  # noqa: E402
from cext import callerid, fsk  # noqa: E402
from cext.dtmf import DtmfDetector, dtmf_samples  # noqa: E402
from lab.linemodel import add_noise, apply_echo, echo_path, to_int16, white_noise  # noqa: E402

RATE = 8000
RESULTS = Path(__file__).with_name("results") / "anchor.json"
EC_TAPS = 1024                               # 128 ms
EC_MODE = 0x01 | 0x02 | 0x04 | 0x40 | 0x20   # adaption, NLP, CNG, RX HPF, TX HPF (bench_echo's)
ADSI_STD = {"bell202": 1, "v23": 2}          # ADSI_STANDARD_CLASS, ADSI_STANDARD_CLIP
PUT_MSG = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_int)
EC_UPDATE = ctypes.CFUNCTYPE(ctypes.c_int16, ctypes.c_void_p, ctypes.c_int16, ctypes.c_int16)

HARNESS = r"""
#include <stdint.h>
#include <time.h>
typedef int16_t (*ec_update_fn)(void *ec, int16_t tx, int16_t rx);
/* One echo_can_update per sample, as a C caller would; returns ns/sample. */
double ec_run(ec_update_fn update, void *ec, const int16_t *tx, const int16_t *rx, int16_t *out, int n)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++)
        out[i] = update(ec, tx[i], rx[i]);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}
"""


def build_harness(tmp: Path) -> ctypes.CDLL:
    src, so = tmp / "ec_run.c", tmp / "ec_run.so"
    src.write_text(HARNESS)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    h = ctypes.CDLL(str(so), mode=os.RTLD_LOCAL)
    p16 = ctypes.POINTER(ctypes.c_int16)
    h.ec_run.restype = ctypes.c_double
    h.ec_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, p16, p16, p16, ctypes.c_int]
    return h


class Spandsp:
    """One libspandsp copy (Debian's or the print-free one) and the three blocks we time."""

    def __init__(self, name, lib, harness):
        self.name, self.lib, self.harness = name, lib, harness
        self.quiet = name == "debian"  # its echo canceller prints; the other has nothing to hide
        lib.echo_can_init.restype = ctypes.c_void_p
        lib.echo_can_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.echo_can_free.argtypes = [ctypes.c_void_p]
        lib.dtmf_rx_init.restype = ctypes.c_void_p
        lib.dtmf_rx_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.dtmf_rx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.dtmf_rx_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.dtmf_rx_free.argtypes = [ctypes.c_void_p]
        lib.adsi_rx_init.restype = ctypes.c_void_p
        lib.adsi_rx_init.argtypes = [ctypes.c_void_p, ctypes.c_int, PUT_MSG, ctypes.c_void_p]
        lib.adsi_rx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.adsi_rx_free.argtypes = [ctypes.c_void_p]
        self.update = ctypes.cast(lib.echo_can_update, ctypes.c_void_p).value

    def echo(self, near, far):
        """(output, ns/sample) of echo_can_update over far (tx) and near (rx)."""
        out = np.empty_like(near)
        p16 = ctypes.POINTER(ctypes.c_int16)
        ec = self.lib.echo_can_init(EC_TAPS, EC_MODE)
        args = (self.update, ec, far.ctypes.data_as(p16), near.ctypes.data_as(p16), out.ctypes.data_as(p16), near.size)
        if self.quiet:
            with quiet_stdout():
                ns = self.harness.ec_run(*args)
        else:
            ns = self.harness.ec_run(*args)
        self.lib.echo_can_free(ec)
        return out, ns

    def dtmf(self, x):
        s = self.lib.dtmf_rx_init(None, None, None)
        t = time.perf_counter()
        self.lib.dtmf_rx(s, x.ctypes.data, x.size)
        ns = (time.perf_counter() - t) / x.size * 1e9
        self.lib.dtmf_rx_free(s)
        return ns

    def dtmf_digits(self, x, chunk=1600):
        s = self.lib.dtmf_rx_init(None, None, None)
        buf, out = ctypes.create_string_buffer(256), []
        for i in range(0, x.size, chunk):
            part = np.ascontiguousarray(x[i:i + chunk])
            self.lib.dtmf_rx(s, part.ctypes.data, part.size)
            out.append(buf.raw[:self.lib.dtmf_rx_get(s, buf, 128)].decode())
        self.lib.dtmf_rx_free(s)
        return "".join(out)

    def adsi(self, x, standard):
        """(messages, ns/sample) of adsi_rx on the whole buffer."""
        got = []

        def put(_user, msg, length):
            if length > 0:
                got.append(bytes(msg[:length]))

        cb = PUT_MSG(put)
        s = self.lib.adsi_rx_init(None, ADSI_STD[standard], cb, None)
        t = time.perf_counter()
        self.lib.adsi_rx(s, x.ctypes.data, x.size)
        ns = (time.perf_counter() - t) / x.size * 1e9
        self.lib.adsi_rx_free(s)
        return got, ns


def echo_signals(seconds):
    rng = np.random.default_rng(1)
    far = to_int16(white_noise(seconds * RATE, -16, rng))
    near = to_int16(add_noise(apply_echo(far, echo_path("m4", 6)), -70, rng))
    return np.ascontiguousarray(near), np.ascontiguousarray(far)


def dtmf_signal():
    rng = np.random.default_rng(1)
    seq = "123A456B789C*0#D" * 10
    x = dtmf_samples(seq, 50, 50, -4).astype(float)
    x = to_int16(x + white_noise(x.size, -24, rng))
    return np.ascontiguousarray(np.tile(x, 4)), seq * 4


def adsi_signal(standard):
    """100 caller-ID bursts with 0.3 s gaps at 30 dB S/N (bench_fsk's training signal)."""
    rng = np.random.default_rng(1)
    msgs = [callerid.encode({"number": "".join(rng.choice(list("0123456789"), 10)),
                             "name": f"CALLER {i:03d}", "datetime": "03151030"}) for i in range(100)]
    gap, parts = np.zeros(2400), []
    for m in msgs:
        parts += [gap, callerid.modulate(m, standard).astype(np.float64)]
    x = np.concatenate(parts + [gap])
    p = np.mean(callerid.modulate(msgs[0], standard).astype(np.float64) ** 2)
    x = x + rng.normal(0.0, np.sqrt(p / 10 ** 3.0), len(x))
    return np.ascontiguousarray(np.clip(np.rint(x), -32768, 32767).astype(np.int16)), msgs


def interleaved(fns: dict, repeats: int) -> dict:
    """name -> list of ns/sample; each repeat runs every contender once, order rotating."""
    names, runs = list(fns), {n: [] for n in fns}
    for r in range(repeats):
        for k in range(len(names)):
            n = names[(r + k) % len(names)]
            runs[n].append(fns[n]())
    return runs


def stats(ns):
    return {"min_ns": min(ns), "median_ns": statistics.median(ns), "runs": len(ns)}


def ours_timed(fn, x):
    t = time.perf_counter()
    fn(x)
    return (time.perf_counter() - t) / x.size * 1e9


def same_code(debian_path: str, free_path: str, symbols) -> dict:
    """symbol -> True when both copies' machine code is the same (addresses masked)."""
    if not shutil.which("objdump"):
        return {}

    def body(path, sym):
        dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--disassemble={sym}", path],
                             capture_output=True, text=True).stdout
        lines = [ln.split(":", 1)[1] for ln in dis.splitlines() if re.match(r"^\s+[0-9a-f]+:", ln)]
        # mask addresses and rip-relative offsets (echo.c's removed strings move .rodata)
        return [re.sub(r"-?0x[0-9a-f]+\(%rip\)|\b[0-9a-f]{4,}\b|<[^>]*>", "A", ln) for ln in lines]

    return {s: (body(debian_path, s) == body(free_path, s) and bool(body(free_path, s))) for s in symbols}


def debian_path(free_so: Path) -> str:
    """Where the dynamic loader found Debian's copy (for objdump): the other one mapped."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if Path(path).name.startswith("libspandsp.so") and Path(path).resolve() != free_so.resolve():
                return path
    return ""


def _portable(value):
    """The results without this machine's paths: the home directory as ~, no build-tree
    prefix maps (they name a temporary folder and say nothing about the build)."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    if isinstance(value, str):
        value = re.sub(r"-ffile-prefix-map=\S+\s*", "", value)
        return value.replace(str(Path.home()), "~")
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--seconds", type=int, default=10, help="echo test length")
    args = ap.parse_args()
    free_so = print_free_path()
    if free_so is None:
        sys.stderr.write("bench_anchor: the print-free spandsp is not built: as root run scripts/spandsp/build.sh once\n")
        return 1
    with tempfile.TemporaryDirectory() as d:
        harness = build_harness(Path(d))
        libs = {"debian": Spandsp("debian", load(), harness),
                "print-free": Spandsp("print-free", load(print_free=True), harness)}
        out = {"print_free_build": {"path": str(free_so)} | build_info(free_so),
               "debian_build": {"path": debian_path(free_so)}, "blocks": {}}

        near, far = echo_signals(args.seconds)
        outputs = {n: s.echo(near, far)[0] for n, s in libs.items()}  # also warms up
        fns = {f"spandsp {n}": (lambda s=s: s.echo(near, far)[1]) for n, s in libs.items()}
        fns["cext 20 ms frames"] = lambda: ours_speed(near, far, EC_TAPS // 8, 160)
        fns["cext whole buffer"] = lambda: ours_speed(near, far, EC_TAPS // 8, None)
        runs = interleaved(fns, args.repeats)
        out["blocks"]["echo 128 ms"] = {
            "samples": int(near.size), "rows": {k: stats(v) for k, v in runs.items()},
            "same_output": bool(np.array_equal(outputs["debian"], outputs["print-free"]))}

        x, want = dtmf_signal()
        digits = {n: s.dtmf_digits(x) for n, s in libs.items()}
        fns = {f"spandsp {n}": (lambda s=s: s.dtmf(x)) for n, s in libs.items()}
        fns["cext"] = lambda: ours_timed(lambda b: DtmfDetector().process(b), x)
        runs = interleaved(fns, 3 * args.repeats)
        out["blocks"]["dtmf_rx"] = {
            "samples": int(x.size), "rows": {k: stats(v) for k, v in runs.items()},
            "same_output": digits["debian"] == digits["print-free"],
            "digits": {n: {"got": len(d), "exact": d == want} for n, d in digits.items()} | {"of": len(want)}}

        for std in ADSI_STD:
            x, msgs = adsi_signal(std)
            got = {n: s.adsi(x, std)[0] for n, s in libs.items()}
            fns = {f"spandsp {n}": (lambda s=s, std=std, x=x: s.adsi(x, std)[1]) for n, s in libs.items()}
            fns["cext"] = lambda std=std, x=x: ours_timed(lambda b: fsk.FskRx(std).process(b), x)
            runs = interleaved(fns, 3 * args.repeats)
            out["blocks"][f"adsi_rx {std}"] = {
                "samples": int(x.size), "rows": {k: stats(v) for k, v in runs.items()},
                "same_output": got["debian"] == got["print-free"],
                "messages": {n: sum(m[:-1] in g for m in msgs) for n, g in got.items()} | {"of": len(msgs)}}

    # the entry point and the exported functions it calls (spandsp src/dtmf.c, adsi.c, fsk.c)
    symbols = {"echo 128 ms": ["echo_can_update"], "dtmf_rx": ["dtmf_rx", "goertzel_update"],
               "adsi_rx bell202": ["adsi_rx", "fsk_rx"], "adsi_rx v23": ["adsi_rx", "fsk_rx"]}
    code = same_code(out["debian_build"]["path"], str(free_so), sorted({s for v in symbols.values() for s in v}))
    for block, syms in symbols.items():
        out["blocks"][block]["same_machine_code"] = all(code[s] for s in syms) if code else None
        out["blocks"][block]["compared_functions"] = syms
    summarise(out)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(_portable(out), indent=1))
    sys.stdout.write(markdown(out) + "\n")
    return 0


def summarise(out):
    """Ratios from the min (the least disturbed run) and the median."""
    for block in out["blocks"].values():
        r = block["rows"]
        deb, free = r["spandsp debian"], r["spandsp print-free"]
        ours = r.get("cext 20 ms frames") or r["cext"]
        block["debian_over_print_free"] = {k: deb[k] / free[k] for k in ("min_ns", "median_ns")}
        block["print_free_over_ours"] = {k: free[k] / ours[k] for k in ("min_ns", "median_ns")}
        block["debian_over_ours"] = {k: deb[k] / ours[k] for k in ("min_ns", "median_ns")}
    e = out["blocks"]["echo 128 ms"]
    out["headline"] = {"block": "echo 128 ms", "ours": "cext 20 ms frames",
                       "ours_vs_print_free_speedup_min": e["print_free_over_ours"]["min_ns"],
                       "ours_vs_print_free_speedup_median": e["print_free_over_ours"]["median_ns"],
                       "ours_vs_debian_speedup_min": e["debian_over_ours"]["min_ns"]}


def markdown(out) -> str:
    def mm(row):
        return f"{row['min_ns']:.1f} / {row['median_ns']:.1f}"

    lines = ["| block | spandsp Debian ns/sample min / median | spandsp print-free min / median "
             "| Debian ÷ print-free (min) | ours (cext) min / median | print-free ÷ ours (min / median) "
             "| same output | same machine code |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for name, b in out["blocks"].items():
        r = b["rows"]
        ours = [k for k in r if k.startswith("cext")]
        code = {True: "yes", False: "no", None: "n/a"}[b.get("same_machine_code")]
        for i, k in enumerate(ours):
            pf = r["spandsp print-free"]["min_ns"] / r[k]["min_ns"]
            pfm = r["spandsp print-free"]["median_ns"] / r[k]["median_ns"]
            label = name + (f" ({k[5:]})" if len(ours) > 1 else "")
            first = i == 0
            ratio = f"{b['debian_over_print_free']['min_ns']:.2f}" if first else ""
            lines.append(f"| {label} | {mm(r['spandsp debian']) if first else ''} | "
                         f"{mm(r['spandsp print-free']) if first else ''} | "
                         f"{ratio} | {mm(r[k])} | {pf:.2f}× / {pfm:.2f}× | "
                         f"{'yes' if b['same_output'] else 'NO'} | {code} |")
    h = out["headline"]
    e = out["blocks"]["echo 128 ms"]
    info = out["print_free_build"]
    lines += ["",
              f"**Headline:** echo canceller, 128 ms tail: ours (20 ms frames) is "
              f"{h['ours_vs_print_free_speedup_min']:.2f}× faster than print-free spandsp (min; "
              f"{h['ours_vs_print_free_speedup_median']:.2f}× median); it was "
              f"{h['ours_vs_debian_speedup_min']:.2f}× against Debian's build, whose debug prints make "
              f"Debian's echo_can_update {e['debian_over_print_free']['min_ns']:.2f}× slower.",
              "dtmf_rx and adsi_rx: Debian ÷ print-free is the same-code ratio (expected 1.00 within noise).",
              f"Print-free build: Debian source {info.get('source_version', '?')} (installed: "
              f"{info.get('installed_source_version', '?')}) + {info.get('patch', '?')}, "
              f"{info.get('cc', '?')}, CFLAGS {info.get('CFLAGS', '?')}."]
    d = out["blocks"]["dtmf_rx"]["digits"]
    lines.append(f"Digits from spandsp on the DTMF signal (of {d['of']}): "
                 + ", ".join(f"{k} {v['got']}" for k, v in d.items() if k != "of")
                 + "; caller-ID messages (of 100): "
                 + "; ".join(f"{k[8:]} " + ", ".join(f"{n} {c}" for n, c in b['messages'].items() if n != 'of')
                             for k, b in out["blocks"].items() if k.startswith("adsi")) + ".")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
