"""Crash safety of the config store: real writer processes killed with SIGKILL.

Two ways to land the kill. Deterministic: the writer is told (BRANCHLINE_CONFIG_TEST_STOP_AT)
to SIGSTOP itself at one named step of a save or rollback; the test sees it stopped
there, then SIGKILLs it — once for every step. Random: a writer saving in a loop is
killed after a random delay, many times over. After every kill the directory must load
as exactly the old or the new document (old before the commit point, new from it on),
the version index must be consistent, and the next save must clean up and number on.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.core.config import ConfigStore, default_document
from firmware.core.config.store import CHECKPOINTS, STOP_ENV

ROOT = Path(__file__).resolve().parents[1]
KEEP = 3
COMMIT = CHECKPOINTS.index("live:renamed")  # from this step on, the new document is live

WRITER = """
import sys
from firmware.core.config import ConfigStore, default_document
store = ConfigStore(sys.argv[1], keep=int(sys.argv[2]))
def named(name):
    doc = default_document()
    doc["system"]["name"] = name
    return doc
if sys.argv[3] == "save":
    store.save(named(sys.argv[4]), reason="save " + sys.argv[4])
elif sys.argv[3] == "rollback":
    store.rollback()
else:  # loop: save w-1, w-2, ... until killed
    start = int(sys.argv[4])
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    i = start
    while True:
        store.save(named(f"w-{i}"), reason=f"w-{i}")
        i += 1
"""


def named(name):
    doc = default_document()
    doc["system"]["name"] = name
    return doc


def spawn(directory, *args, stop_at=None):
    env = {k: v for k, v in os.environ.items() if k != STOP_ENV}
    if stop_at:
        env[STOP_ENV] = stop_at
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), str(KEEP), *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_when_stopped(proc):
    """Wait until the writer stops itself at its checkpoint, then SIGKILL it."""
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    stopped = os.WIFSTOPPED(status)
    if stopped:
        os.kill(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
    proc.returncode = -signal.SIGKILL if stopped else os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    assert stopped, f"writer never reached its checkpoint (exit {proc.returncode}): {err}"


def assert_consistent(directory):
    """The index parses, lists kept files in order, and the live file is its last entry."""
    store = ConfigStore(directory, keep=KEEP)
    index = directory / "versions" / "index.json"
    if index.exists():
        json.loads(index.read_text())  # never torn
    rows = store.versions()
    numbers = [r["version"] for r in rows]
    assert numbers == sorted(set(numbers)) and len(numbers) <= KEEP
    for row in rows:
        store.read_version(row["version"])  # each listed version is whole and valid
    if rows:
        assert rows[-1]["current"], "the live document is not the latest version"
        assert store.read_version(numbers[-1]) == store.load()
    return store


def assert_recovers(directory):
    """A save after the crash sweeps leftovers and continues the numbering."""
    store = ConfigStore(directory, keep=KEEP)
    last = store.versions()[-1]["version"] if store.versions() else 0
    assert store.save(named("after"), reason="after the crash") == last + 1
    leftovers = [p.name for p in directory.rglob(".*") if ".tmp-" in p.name]
    assert leftovers == []
    listed = {f"v{r['version']:06d}.toml" for r in store.versions()}
    assert {p.name for p in (directory / "versions").glob("v*.toml")} == listed
    assert store.load()["system"]["name"] == "after"


def prepare(directory, names):
    store = ConfigStore(directory, keep=KEEP)
    for name in names:
        store.save(named(name), reason=f"save {name}")
    return store


@pytest.mark.parametrize("step", CHECKPOINTS)
def test_save_killed_at_each_step_leaves_old_or_new(tmp_path, step):
    prepare(tmp_path, ["old-1", "old-2", "old-3"])  # full: this save also prunes
    kill_when_stopped(spawn(tmp_path, "save", "new", stop_at=step))
    store = assert_consistent(tmp_path)
    expected = "new" if CHECKPOINTS.index(step) >= COMMIT else "old-3"
    assert store.load()["system"]["name"] == expected
    assert [r["version"] for r in store.versions()][-1] == (4 if expected == "new" else 3)
    if expected == "new":
        assert store.versions()[-1]["reason"] == "save new"  # kept even if the index lagged
    assert_recovers(tmp_path)


@pytest.mark.parametrize("step", CHECKPOINTS)
def test_first_save_killed_at_each_step(tmp_path, step):
    kill_when_stopped(spawn(tmp_path, "save", "new", stop_at=step))
    store = assert_consistent(tmp_path)
    if CHECKPOINTS.index(step) >= COMMIT:
        assert store.load()["system"]["name"] == "new"
        assert [r["version"] for r in store.versions()] == [1]
    else:
        assert store.load() == default_document()
        assert store.versions() == []
    assert_recovers(tmp_path)


@pytest.mark.parametrize("step", [s for s in CHECKPOINTS if s.startswith(("live", "index"))])
def test_rollback_killed_at_each_step(tmp_path, step):
    prepare(tmp_path, ["old-1", "old-2"])
    kill_when_stopped(spawn(tmp_path, "rollback", stop_at=step))
    store = assert_consistent(tmp_path)
    expected = "old-1" if CHECKPOINTS.index(step) >= COMMIT else "old-2"
    assert store.load()["system"]["name"] == expected
    assert_recovers(tmp_path)


def test_every_checkpoint_is_on_the_save_path():
    assert CHECKPOINTS[0] == "locked" and CHECKPOINTS[-1] == "done"
    assert len(CHECKPOINTS) == len(set(CHECKPOINTS)) >= 17


def test_random_sigkills_of_a_busy_writer(tmp_path):
    """30 real SIGKILLs at random moments of a writer that saves in a loop."""
    rng = random.Random(20240501)
    prepare(tmp_path, ["w-0"])
    highest, kills = 1, 30
    for _ in range(kills):
        proc = spawn(tmp_path, "loop", str(highest + 1))
        assert proc.stdout.readline() == b"ready\n"
        try:
            proc.wait(timeout=rng.uniform(0.0, 0.04))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
        store = assert_consistent(tmp_path)
        name = store.load()["system"]["name"]
        assert re.fullmatch(r"w-\d+", name)
        version = store.versions()[-1]["version"]
        assert version >= highest, "a committed version was lost"
        assert store.versions()[-1]["reason"] == name  # the live document is the one listed
        highest = version
    assert highest > kills, "the writer hardly ever got to save: the kills tested nothing"
    assert_recovers(tmp_path)
