"""`branchline forward` as its own process: one pass with --once, the long-running
worker stopped by SIGTERM, its errors, and a SIGKILL in the middle of delivery after
which a restart delivers everything exactly once as the receiver's dedup sees it."""

import os
import signal
import subprocess
import sys
import time

from firmware.cdr import MAX_PAGE, CdrStore
from lab.records import RecordsReceiver
from tests.forward.helpers import ROOT, call, forward_cmd, recording


def _fill(db, n):
    with CdrStore(db) as s:
        s.recordings_dir.mkdir(exist_ok=True)
        uuids = [s.state_change("CLOUD_PRIMARY", "SURVIVABLE", f"event {i}") for i in range(n)]
        return uuids, s


def test_once_delivers_and_reports(tmp_path, receiver):
    with CdrStore(tmp_path / "cdr.db") as s:
        s.recordings_dir.mkdir()
        uuids = [call(s, i) for i in range(30)] + [recording(s, "r.wav", 5000)]
    proc = forward_cmd(tmp_path, receiver.url, "--once", "--batch", "8")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "delivered 31, 0 pending" in out
    assert receiver.order == uuids and receiver.stats()["files"] == 1
    receiver.down()
    with CdrStore(tmp_path / "cdr.db") as s:
        call(s, 99)
    proc = forward_cmd(tmp_path, receiver.url, "--once", "--timeout", "1")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "delivered 0, 1 pending" in out
    assert "Connection refused" in out


def test_without_a_url_it_says_where_to_set_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BRANCHLINE_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "firmware", "forward", "--data-dir",
                           str(tmp_path), "--once"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2
    assert "no records URL: set survive.records_url" in proc.stderr


def test_without_a_url_the_worker_idles_until_stopped(tmp_path):
    """Under supervisord a box with no records service must not be a crash loop (FATAL
    after startretries): the worker says why it idles once and stops cleanly on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BRANCHLINE_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "firmware", "forward", "--data-dir",
                             str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "idle, no records URL" in line and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_the_worker_waits_out_an_outage_and_stops_on_sigterm(tmp_path, receiver):
    uuids, _ = _fill(tmp_path / "cdr.db", 20)
    receiver.down()
    proc = forward_cmd(tmp_path, receiver.url, "--interval", "0.1", "--backoff-max", "0.3",
                       "--timeout", "1")
    try:
        assert proc.stdout.readline().startswith("branchline forward: delivering")
        with CdrStore(tmp_path / "cdr.db") as s:  # the core writes on meanwhile (WAL)
            uuids += [call(s, i) for i in range(10)]
        time.sleep(0.5)
        receiver.up()
        assert receiver.wait_for(30, timeout=15)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped; delivered 30, 0 pending" in out
    assert "idle -> delivering" in err and "-> backoff" in err  # transitions are logged
    assert receiver.order == uuids and receiver.stats()["duplicates"] == 0


def test_kill_9_mid_delivery_then_restart_delivers_exactly_once(tmp_path):
    n = 200
    uuids, _ = _fill(tmp_path / "cdr.db", n)
    with RecordsReceiver(reply_delay_s=0.01) as rx:  # stores, then answers 10 ms later
        proc = forward_cmd(tmp_path, rx.url, "--batch", "1", "--interval", "0.1")
        try:
            assert rx.wait_for(40, timeout=30)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        with CdrStore(tmp_path / "cdr.db") as s:
            pending = {p["uuid"] for p in s.pending(MAX_PAGE)}
        received = set(rx.order)
        in_flight = received & pending  # the cloud has it, the box did not mark it yet
        assert len(in_flight) <= 1 and len(pending) + len(received - pending) == n
        proc = forward_cmd(tmp_path, rx.url, "--once", "--batch", "50")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        st = rx.stats()
        assert st["distinct"] == n and rx.order == uuids  # all, once each, in order
        assert set(rx.duplicates) == in_flight and st["duplicates"] == len(in_flight)


def test_the_receiver_runs_as_a_subprocess_driven_over_http(tmp_path):
    import json
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "lab.records", "--port", "0", "--seconds",
                             "20"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline().split()
        assert ready[0] == "READY" and ready[1].startswith("http://127.0.0.1:")
        base = ready[1].rsplit("/v1/records", 1)[0]

        def post(path, doc):
            req = urllib.request.Request(base + path, data=json.dumps(doc).encode(),
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        rec = {"uuid": "u-1", "kind": "cdr", "seq": 1, "created": 0.0, "body": {}}
        assert post("/v1/records", {"records": [rec]}) == 200
        assert post("/v1/records", {"records": [rec]}) == 200
        assert post("/_control", {"mode": "fail"}) == 200
        assert post("/v1/records", {"records": [rec]}) == 503
        with urllib.request.urlopen(base + "/_stats", timeout=5) as resp:
            st = json.load(resp)
        assert (st["distinct"], st["duplicates"], st["mode"]) == (1, 1, "fail")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert '"distinct": 1' in out
