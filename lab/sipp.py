"""Runs Debian's sipp (package sip-tester) with the lab's scenarios in lab/sipp/.

`run_sipp("uac_load", "127.0.0.1:5060", calls=50, rate=10)` runs to completion and
returns a `SippResult` (exit code, successful/failed call counts from sipp's
statistics file, the paths of its logs). `start_sipp(...)` starts one in the
background (a UAS waiting for a call) and its `.wait()` gives the result.
Scenarios: uac_load, garbage_uac, uas_reject (-key code/reason), uas_noanswer, or any
path to an XML file. Always bounded: -m (call count), -timeout (whole run), -recv_timeout,
-nostdin; loopback only; the rate is capped at 40 calls/s (faster aborted pjsua2
peers, see shared notes). Assumes sipp 3.6.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lab.kamailio import LabError
from lab.ports import HOST, free_port

SCENARIOS = Path(__file__).with_name("sipp")
MAX_RATE = 40.0
REASONS = {486: "Busy Here", 503: "Service Unavailable", 603: "Decline", 480: "Temporarily Unavailable",
           404: "Not Found", 488: "Not Acceptable Here", 500: "Server Internal Error"}


@dataclass
class SippResult:
    """How a sipp run ended: exit code (0: every call succeeded) and its statistics."""
    returncode: int
    successful: int
    failed: int
    stats: dict[str, str] = field(default_factory=dict)
    workdir: Path = Path(".")
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and not self.timed_out

    def log(self, name: str = "errors") -> str:
        """Text of one of sipp's logs ("errors", "messages", "screen"); "" when absent."""
        files = sorted(self.workdir.glob(f"*_{name}.log"))
        return "\n".join(f.read_text(errors="replace") for f in files)


def scenario_path(scenario: str | os.PathLike) -> Path:
    path = Path(scenario)
    if path.suffix != ".xml":
        path = SCENARIOS / f"{scenario}.xml"
    if not path.exists():
        raise LabError(f"sipp scenario {scenario}: no file {path}")
    return path


class SippRun:
    """One sipp process in the background; `wait()` collects its result."""

    def __init__(self, scenario: str | os.PathLike, target: str | None = None, *,
                 calls: int = 1, rate: float = 10.0, hold_ms: int = 0, port: int | None = None,
                 service: str = "agent1", caller: str = "sipp", timeout: float = 30.0,
                 recv_timeout_ms: int = 10000, keys: dict[str, str] | None = None,
                 code: int | None = None, transport: str = "u1",
                 workdir: str | os.PathLike | None = None,
                 extra: list[str] | None = None) -> None:
        if shutil.which("sipp") is None:
            raise LabError("sipp is not installed: apt-get install sip-tester")
        if rate > MAX_RATE:
            raise LabError(f"sipp rate {rate} calls/s: keep it at {MAX_RATE:.0f} or less "
                           "(faster aborted pjsua2 peers)")
        if target is not None and not target.startswith(HOST):
            raise LabError(f"sipp target {target}: the lab runs on {HOST} only")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sipp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scenario = self._render(scenario_path(scenario), code)
        self.target = target
        self.port = port or free_port("udp")
        self.timeout = timeout
        keys = {"caller": caller, **(keys or {})}
        self.cmd = self._command(calls, rate, hold_ms, service, recv_timeout_ms, keys,
                                 transport, extra or [])
        self.proc: subprocess.Popen | None = None

    def _render(self, path: Path, code: int | None) -> Path:
        # Status lines are checked by sipp before its [keys] are substituted, so the
        # reject code is written into a copy of the scenario.
        text = path.read_text()
        if "@@CODE@@" not in text:
            return path
        if code is None:
            raise LabError(f"sipp scenario {path.name} needs code= (e.g. 486, 503)")
        text = text.replace("@@CODE@@", str(code))
        text = text.replace("@@REASON@@", REASONS.get(code, "Refused"))
        out = self.workdir / path.name
        out.write_text(text)
        return out

    @property
    def address(self) -> str:
        """Where this sipp listens (a UAS's address for callers)."""
        return f"{HOST}:{self.port}"

    def _command(self, calls: int, rate: float, hold_ms: int, service: str,
                 recv_timeout_ms: int, keys: dict[str, str], transport: str,
                 extra: list[str]) -> list[str]:
        cmd = ["sipp", "-sf", str(self.scenario), "-i", HOST, "-p", str(self.port),
               "-mp", str(free_port("udp")), "-t", transport, "-m", str(calls),
               "-r", f"{rate:g}", "-d", str(hold_ms), "-s", service,
               "-timeout", f"{self.timeout:g}s", "-timeout_error",
               "-recv_timeout", str(recv_timeout_ms), "-nostdin",
               "-trace_stat", "-stf", str(self.workdir / "stat.csv"), "-fd", "1",
               "-trace_err", "-error_file", str(self.workdir / "sipp_errors.log"),
               "-trace_screen", "-screen_file", str(self.workdir / "sipp_screen.log")]
        for name, value in keys.items():
            cmd += ["-key", name, value]
        cmd += extra
        if self.target is not None:
            cmd.append(self.target)
        return cmd

    def start(self) -> SippRun:
        if self.proc is not None:
            return self
        with open(self.workdir / "sipp_stdout.log", "ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for the end (bounded: sipp's own -timeout plus a margin, then SIGKILL)."""
        if self.proc is None:
            raise LabError("sipp was not started")
        timed_out = False
        try:
            code = self.proc.wait(timeout=timeout or self.timeout + 10)
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
            code = self.proc.wait(timeout=5)
        return self._result(code, timed_out)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _result(self, code: int, timed_out: bool) -> SippResult:
        stats = _last_stats(self.workdir / "stat.csv")
        return SippResult(code, _count(stats, "SuccessfulCall(C)"),
                          _count(stats, "FailedCall(C)"), stats, self.workdir, timed_out)

    def __enter__(self) -> SippRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        if self.proc is not None:
            self.proc.wait(timeout=5)


def _last_stats(path: Path) -> dict[str, str]:
    """The last row of sipp's -trace_stat CSV (semicolon-separated), by column name."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def _count(stats: dict[str, str], name: str) -> int:
    try:
        return int(stats.get(name, "0") or 0)
    except ValueError:
        return 0


def start_sipp(scenario: str | os.PathLike, target: str | None = None, **opts) -> SippRun:
    """Start sipp in the background (use as a context manager so it is always stopped)."""
    return SippRun(scenario, target, **opts).start()


def run_sipp(scenario: str | os.PathLike, target: str | None = None, **opts) -> SippResult:
    """Run sipp to the end and return its result."""
    return SippRun(scenario, target, **opts).start().wait()
