"""The fleet bench's code path at a tiny size (10 agents, a few seconds): every figure the
closing note quotes is in its JSON, and it leaves no process behind. No timing asserted:
the figures themselves come from `python -m bench.bench_fleet` on a quiet machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _figure(doc: dict, path: str) -> object:
    value: object = doc
    for key in path.split("."):
        assert isinstance(value, dict) and key in value, f"{path}: no {key!r} in the JSON"
        value = value[key]
    return value


def test_tiny_fleet_reports_every_figure(tmp_path: Path) -> None:
    """Run as a user does, in a process of its own (the bench quiets the core's loggers)."""
    out = tmp_path / "fleet.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_fleet", "--agents", "10", "--procs", "2",
         "--seconds", "3", "--commands", "20", "--compress", "120", "--drain", "1",
         "--meter-calls", "2", "--meter-pace", "0.005", "--storm-timeout", "60",
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    run = doc["runs"][0]
    assert run["agents"] == 10 and run["storm"]["subscribed"] == 10
    for path in ("storm.all_subscribed_s", "storm.births_seen_s", "storm.per_client_s.p99",
                 "telemetry.delivered_per_s", "telemetry.lost", "events.latency_s.p50",
                 "events.latency_s.p99", "commands.rtt_s.p50", "commands.rtt_s.p99",
                 "records.ack_rtt_s.p99", "broker.cpu_storm_s", "broker.cpu_steady_pct",
                 "broker.hwm_kb", "broker.rss_connected_kb", "wire_in_run.idle.tls_bytes_per_agent"):
        assert _figure(run, path) is not None, path
    assert run["commands"]["results"] == run["commands"]["sent"] == 20
    assert run["simulator"]["bad_inbound"] == 0 and run["simulator"]["platform_bad"] == 0
    for kind in ("idle", "busy"):
        day = doc["bytes_per_day"][kind]
        assert day["tls_bytes"] > 0 and day["ip_bytes"] >= day["tls_bytes"]
    assert doc["meter"]["ping"]["pings"] > 0
    assert doc["meter"]["tls"].startswith("TLS")
    for key in ("telemetry_full", "event_mean", "quality", "record"):
        assert doc["payloads"]["sizes"][key] > 0
    table = proc.stdout
    assert "command round trip p50 / p99" in table and "bytes per device per day, idle" in table
