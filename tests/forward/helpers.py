"""Helpers of the store-and-forward tests: finished calls and recordings in an outbox,
and real child processes (a writer, `branchline forward`) with the repo importable."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"codec": "PCMU/8000/1", "jitter_ms": 2.0, "loss_pct": 0.1, "rtt_ms": 30.0}



def call(store, i, t=None):
    """One finished inbound call (its CDR lands in the outbox); returns its UUID."""
    t = 1_795_000_000.0 + i if t is None else t
    u = store.open_call("inbound", "fxo1", f"+1555{i:07d}", "5550100", started=t)
    store.answered(u, t + 1)
    store.ended(u, t + 30, "answered", GOOD)
    return u


def recording(store, name, size, call_uuid=None):
    """A finished audio file of `size` bytes, indexed; returns the index row's UUID."""
    path = store.recordings_dir / name
    path.write_bytes(os.urandom(size))
    return store.add_recording(path, call_uuid=call_uuid)


def child(code, *args):
    """A real Python process running `code` with the repo importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def forward_cmd(data_dir, url, *extra):
    """`branchline forward` as its own process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BRANCHLINE_CONFIG_DIR": str(data_dir / "etc")}
    return subprocess.Popen([sys.executable, "-m", "firmware", "forward", "--data-dir",
                             str(data_dir), "--url", url, *map(str, extra)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
