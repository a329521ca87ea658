"""`branchline demo --fast` as a real subprocess: the scene's state changes, in order.

The demo runs the real drivers on the emulated chips; these checks read its printed
lines, so a driver that misses a hook change, a pulse digit, the flash, the validated
ring, the caller ID or the loop drop shows up here as a missing or misplaced line.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from lab.kamailio import options_ping

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {  # per port, the lines that must appear in this order
    "fxs1": [r"on-hook -> OFF-HOOK \(dial tone\)", r"DIGIT 2 \(pulse\)", r"DIGIT 0 \(pulse\)",
             r"DIGIT 2 \(pulse\)", r"off-hook -> ON-HOOK"],
    "fxs2": [r"on-hook -> OFF-HOOK", r"FLASH", r"off-hook -> ON-HOOK"],
    "fxo1": [r"idle -> RINGING", r"CALLER ID 5551230100 'ACME LTD'",
             r"RING \(caller 5551230100 \"ACME LTD\"\)", r"ringing -> SEIZED",
             r"seized -> DISCONNECTED \(disconnect: loop_drop\)", r"disconnected -> IDLE"],
}


def _in_order(lines, patterns):
    at = 0
    for pattern in patterns:
        while at < len(lines) and not re.search(pattern, lines[at]):
            at += 1
        if at == len(lines):
            return pattern
        at += 1
    return None


def test_demo_fast_shows_the_scene_in_order():
    env = {k: v for k, v in os.environ.items() if k != "BRANCHLINE_DEBUG"}
    out = subprocess.run([sys.executable, "-m", "firmware", "demo", "--fast"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    events = [ln for ln in out.stdout.splitlines() if re.match(r"\s+\d+\.\d\ds  \w", ln)]
    for port, patterns in EXPECTED.items():
        mine = [ln for ln in events if ln.split()[1] == port]
        missing = _in_order(mine, patterns)
        assert missing is None, f"{port}: missing or out of order: {missing}\n{out.stdout}"
    digits = [ln.split()[3] for ln in events if ln.split()[1] == "fxs1" and "DIGIT" in ln]
    assert digits == ["2", "0", "2"]
    flashes = [ln for ln in events if "FLASH" in ln]
    assert len(flashes) == 1 and flashes[0].split()[1] == "fxs2"
    assert not any("FAILED" in ln for ln in events)
    times = [float(ln.split()[0].rstrip("s")) for ln in events]
    assert times == sorted(times) and times[-1] < 20


CLOUD_LINES = [  # the cloud demo's story, in this order
    r"cloud\s+Kamailio \(registrar and proxy\) on 127\.0\.0\.1:\d+",
    r"sip\s+REGISTERED branch@cloud\.test",
    r"fxo1\s+idle -> RINGING",
    r"fxo1\s+CALLER ID 5551230100 'ACME LTD'",
    r"fxo1\s+ringing -> SEIZED",
    r"agent1\s+ANSWERED: From 5551230100 \"ACME LTD\", P-Asserted-Identity 5551230100, "
    r"To \(DNIS\) 8005550100",
    r"agent1\s+DTMF received: 1234# \(rfc4733 events\)",
    r"fxo1\s+seized -> IDLE",
    r"cdr\s+inbound fxo1 ANI 5551230100 DNIS 8005550100 answered .* MOS \d\.\d\d",
    r"fxs1\s+on-hook -> OFF-HOOK",
    r"agent2\s+ANSWERED: From 201",
    r"agent2\s+hears (99[89]|100[012]) Hz",
    r"fxs1\s+earpiece hears (65[89]|66[012]) Hz",
    r"fxs1\s+in-call -> ON-HOOK",
    r"cdr\s+outbound fxs1 ANI 201 DNIS 5551234 answered .* MOS \d\.\d\d",
    r"demo done: every process stopped",
]


def test_cloud_demo_shows_both_calls_and_cleans_up():
    env = {k: v for k, v in os.environ.items() if k != "BRANCHLINE_DEBUG"}
    out = subprocess.run([sys.executable, "-m", "firmware", "demo"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    missing = _in_order(lines, CLOUD_LINES)
    assert missing is None, f"missing or out of order: {missing}\n{out.stdout}"
    port = int(re.search(r"Kamailio \(registrar and proxy\) on 127\.0\.0\.1:(\d+)",
                         out.stdout).group(1))
    assert options_ping(port, timeout=0.3) is None, "the demo left its Kamailio running"
