"""Client for lab/agent.py: start a cloud agent process and drive it from a test.

`with Agent("agent1", registrar=kam) as a:` starts `python -m lab.agent` on free
loopback ports, waits (bounded) for READY, and stops it on exit (quit, then SIGTERM,
then SIGKILL). Commands are JSON lines over the agent's control port; `wait_for`
polls `status` until a predicate holds, with a clear error (naming the agent's log)
on timeout. Assumes the agent and this client run on the same machine.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lab.kamailio import Kamailio, LabError
from lab.ports import HOST, free_ports
from lab.wait import TimedOut, wait_until

log = logging.getLogger(__name__)
T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


class Agent:
    """A running lab agent. `registrar` is a Kamailio, "host:port", or None (direct)."""

    def __init__(self, user: str, password: str = "secret",
                 registrar: Kamailio | str | None = None, domain: str = "cloud.test",
                 workdir: str | os.PathLike | None = None, answer_code: int = 200,
                 answer_after_ms: int = 200, tone_hz: float = 0.0, early_media: bool = False,
                 codecs: str = "PCMU,PCMA,G722", port_rate: int = 8000,
                 start_timeout: float = 15.0,
                 pj_log: bool = False, host: str = HOST) -> None:
        self.user = user
        self.password = password
        self.registrar = registrar.address if isinstance(registrar, Kamailio) else registrar
        self.domain = domain
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"agent-{user}-"))
        self.opts = {"answer_code": answer_code, "answer_after_ms": answer_after_ms,
                     "tone_hz": tone_hz, "early_media": early_media, "codecs": codecs,
                     "port_rate": port_rate}
        self.start_timeout = start_timeout
        self.pj_log = pj_log
        self.host = host  # SIP and RTP address; the control port stays on 127.0.0.1
        self.sip_port, self.control_port, self.rtp_port = free_ports(3)
        self.log_path = self.workdir / f"agent-{user}.log"
        self.proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._sock: socket.socket | None = None
        self._rfile: Any = None
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        """The agent's address of record (reached through the registrar)."""
        return f"sip:{self.user}@{self.domain}"

    @property
    def direct_uri(self) -> str:
        """The agent's own contact, bypassing any proxy."""
        return f"sip:{self.user}@{self.host}:{self.sip_port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.sip_port}"

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- process ------------------------------------------------------------------

    def _command(self) -> list[str]:
        o = self.opts
        cmd = [sys.executable, "-m", "lab.agent", "--user", self.user,
               "--password", self.password, "--domain", self.domain,
               "--sip-port", str(self.sip_port), "--rtp-port", str(self.rtp_port),
               "--control-port", str(self.control_port),
               "--answer-code", str(o["answer_code"]),
               "--answer-after-ms", str(o["answer_after_ms"]),
               "--tone-hz", str(o["tone_hz"]), "--codecs", o["codecs"],
               "--port-rate", str(o["port_rate"]), "--host", self.host]
        if self.registrar:
            cmd += ["--registrar", self.registrar]
        if o["early_media"]:
            cmd.append("--early-media")
        if self.pj_log:
            cmd += ["--pj-log", str(self.workdir / f"pjsua-{self.user}.log")]
        return cmd

    def start(self) -> None:
        """Start the process and wait for READY; LabError (with the reason) otherwise."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self._command(), cwd=ROOT, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=logf, text=True,
                                         start_new_session=True)
        threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True).start()
        try:
            self._wait_ready()
            self._connect()
        except BaseException:
            self.stop()
            raise

    def _read_stdout(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            self._lines.put(line.strip())
        self._lines.put("")  # end of output

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line == "READY":
                return
            if line.startswith("REGFAIL"):
                _, code, *reason = line.split(" ", 2)
                raise LabError(f"agent {self.user}: registration at {self.registrar} refused "
                               f"with {code} {' '.join(reason)}: check the password for "
                               f"{self.user!r} in the registrar's users")
            if line == "":
                raise LabError(f"agent {self.user} exited with code {self.proc.wait()} "
                               f"before READY: see {self.log_path}")
        raise LabError(f"agent {self.user} not READY within {self.start_timeout:.0f} s "
                       f"(registrar {self.registrar or 'none'}): see {self.log_path}")

    def _connect(self) -> None:
        self._sock = socket.create_connection((HOST, self.control_port), timeout=15)
        self._rfile = self._sock.makefile("r")

    def stop(self, timeout: float = 5.0) -> int | None:
        """Quit politely, then SIGTERM, then SIGKILL; the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None and self._sock is not None:
            try:
                self.request("quit")
            except (OSError, LabError):
                pass
        self._close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and proc.poll() is None:
                os.killpg(proc.pid, sig)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
        return proc.poll()

    def _close(self) -> None:
        if self._sock is not None:
            self._rfile.close()
            self._sock.close()
        self._sock = self._rfile = None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- commands -----------------------------------------------------------------

    def request(self, cmd: str, **params: Any) -> dict[str, Any]:
        """Send one command; its reply (LabError when the agent says it failed)."""
        if self._sock is None:
            raise LabError(f"agent {self.user} is not running: see {self.log_path}")
        try:
            with self._lock:
                self._sock.sendall((json.dumps({"cmd": cmd, **params}) + "\n").encode())
                line = self._rfile.readline()
        except OSError as e:
            line = ""
            log.warning("agent %s control port: %s", self.user, e)
        if not line:
            code = self.proc.poll() if self.proc is not None else None
            raise LabError(f"agent {self.user} closed its control port (exit code {code}): "
                           f"see {self.log_path}")
        reply = json.loads(line)
        if not reply.pop("ok", False):
            raise LabError(f"agent {self.user}: {reply.get('error')}")
        return reply

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def calls(self) -> list[dict[str, Any]]:
        return self.status()["calls"]

    def dial(self, to: str, headers: dict[str, str] | None = None) -> int:
        return int(self.request("dial", to=to, headers=headers or {})["call"])

    def hangup(self, call: int | None = None, code: int | None = None) -> None:
        self.request("hangup", call=call, **({"code": code} if code else {}))

    def answer(self, call: int | None = None, code: int = 200) -> None:
        self.request("answer", call=call, code=code)

    def dtmf(self, digits: str, method: str = "rfc4733", call: int | None = None) -> None:
        self.request("dtmf", digits=digits, method=method, call=call)

    def hold(self, call: int | None = None) -> None:
        self.request("hold", call=call)

    def unhold(self, call: int | None = None) -> None:
        self.request("unhold", call=call)

    def transfer(self, target: str, call: int | None = None) -> None:
        self.request("transfer", target=target, call=call)

    def set_tone(self, hz: float, dbm0: float | None = None) -> None:
        self.request("set_tone", hz=hz, **({"dbm0": dbm0} if dbm0 is not None else {}))

    # ---- waiting ------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[dict[str, Any]], T | None], timeout: float = 5.0,
                 what: str = "a condition", interval: float = 0.05) -> T:
        """Poll status until predicate(status) returns something truthy; return it.
        LabError on time-out (as the agent's other failures), naming its calls then."""
        seen: list[dict[str, Any]] = [{}]

        def check() -> T | None:
            seen[0] = self.status()
            return predicate(seen[0])
        try:
            return wait_until(check, timeout, f"{what} at agent {self.user}", step=interval,
                              detail=lambda: f"calls: {_brief(seen[0].get('calls', []))} "
                                             f"(log {self.log_path})")
        except TimedOut as exc:
            raise LabError(str(exc)) from exc

    def call(self, call: int | None = None, st: dict[str, Any] | None = None) -> dict | None:
        """The call with this id, or the newest call; None if there is none."""
        calls = (st or self.status())["calls"]
        if call is None:
            return calls[-1] if calls else None
        return next((c for c in calls if c["id"] == call), None)

    def wait_call_state(self, state: str, call: int | None = None,
                        timeout: float = 5.0) -> dict[str, Any]:
        """Wait until the call (or the newest one) is in `state` (e.g. "CONFIRMED")."""
        return self.wait_for(lambda st: _match(self.call(call, st), lambda c: c["state"] == state),
                             timeout, f"call in state {state}")

    def wait_incoming(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.wait_for(lambda st: next((c for c in st["calls"] if c["direction"] == "in"),
                                             None), timeout, "incoming call")

    def wait_dtmf(self, digits: str, call: int | None = None,
                  timeout: float = 5.0) -> dict[str, Any]:
        """Wait until the call has received at least `digits` (in order)."""
        return self.wait_for(
            lambda st: _match(self.call(call, st), lambda c: c["dtmf"].startswith(digits)),
            timeout, f"DTMF {digits!r}")

    def rx_tone(self, call: int | None = None) -> dict[str, float]:
        """What the call hears: {"hz": dominant frequency, "dbm0": level} over the last second."""
        c = self.call(call)
        if c is None:
            raise LabError(f"agent {self.user}: no call to measure")
        return c["rx"]

    def wait_tone(self, hz: float, tolerance: float = 20.0, call: int | None = None,
                  timeout: float = 5.0, min_dbm0: float = -40.0) -> dict[str, float]:
        """Wait until the call hears `hz` (± tolerance) above `min_dbm0`."""
        def heard(st: dict[str, Any]) -> dict[str, float] | None:
            c = self.call(call, st)
            rx = c["rx"] if c else None
            ok = rx and abs(rx["hz"] - hz) <= tolerance and rx["dbm0"] >= min_dbm0
            return rx if ok else None
        return self.wait_for(heard, timeout, f"{hz:.0f} Hz tone")


def _match(call: dict | None, test: Callable[[dict], bool]) -> dict | None:
    return call if call is not None and test(call) else None


def _brief(calls: list[dict[str, Any]]) -> str:
    return ", ".join(f"#{c['id']} {c['direction']} {c['state']} {c['code']} dtmf={c['dtmf']!r} "
                     f"rx={c['rx']}" for c in calls) or "none"
