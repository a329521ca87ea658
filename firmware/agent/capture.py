"""Capture: a diagnostic packet capture (tcpdump) of the box's SIP and RTP for the next N
calls or max_s seconds, whichever comes first, then queued in the outbox as a file
(CdrStore.queue_file) that `branchline forward` uploads over HTTPS. Calls are counted
from the core's hung_up events, handed to on_event by the EventPump. The filter comes
from the core's config (sip.local_port and sip.transport; RTP ports are the SIP stack's
choice, so all UDP but DNS, DHCP, NTP and mDNS); in sim mode every UDP packet on
loopback. A missing tcpdump or a missing capability is refused with the fix."""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from firmware.agent.jobs import POLL_S, Clock, FileQueue
from firmware.api.client import ApiClient
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

MAX_BYTES = 50 * 1024 * 1024  # a capture is stopped at this size
READY_S = 5.0  # tcpdump says "listening on" within this, or it did not start
STOP_WAIT_S = 5.0
NOT_RTP = "not port 53 and not port 67 and not port 68 and not port 123 and not port 5353"
NO_TCPDUMP = "tcpdump is not installed: install tcpdump (apt install tcpdump) to capture"
NO_PERMISSION = ("tcpdump may not capture here: the agent needs CAP_NET_RAW (and "
                 "CAP_NET_ADMIN for -i any): add AmbientCapabilities=CAP_NET_RAW "
                 "CAP_NET_ADMIN to its unit, or `setcap cap_net_raw,cap_net_admin=eip "
                 "/usr/bin/tcpdump`")


class CaptureRefused(BranchlineError):
    """A capture that cannot start (or stop); str() names the fix."""


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    path: Path
    calls: int
    started: float  # wall clock
    end_at: float  # monotonic: started + max_s
    interface: str
    filter: str
    stderr: list[str] = field(default_factory=list)
    hung_up: set[str] = field(default_factory=set)
    listening: threading.Event = field(default_factory=threading.Event)
    finish: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    reader: threading.Thread | None = None
    heard: bool = False  # tcpdump said "listening on"


class Capture:
    """See the module docstring. begin/end run on a command worker; on_event on the pump's
    thread; the capture's own watcher thread ends it on the call count, max_s or size."""

    def __init__(self, api: ApiClient, clock: Clock, store: FileQueue, agent_dir: Path, *,
                 tcpdump: str = "tcpdump", max_bytes: int = MAX_BYTES) -> None:
        self.api, self.clock, self.store, self.agent_dir = api, clock, store, Path(agent_dir)
        self.tcpdump, self.max_bytes = tcpdump, max_bytes
        self.lock = threading.Lock()  # guards `running`
        self.ending = threading.Lock()  # one end() at a time
        self.running: Running | None = None
        self.last: dict[str, Any] | None = None

    # ---- Part ----
    def tick(self, now: float) -> None:
        """The watcher thread does the timing."""

    def connected(self, up: bool) -> None:
        """Nothing is published: the file goes through the outbox."""

    def stop(self) -> None:
        """The agent stops: a running capture ends and what it caught is queued."""
        if self.running is not None:
            try:
                self.end("the agent stopped")
            except CaptureRefused:
                pass

    # ---- the pump's thread ----
    def on_event(self, event: Mapping[str, Any]) -> None:
        """Count the calls that ended; the watcher stops the capture at the N-th."""
        if event.get("kind") != "hung_up":
            return
        with self.lock:
            run = self.running
            if run is None:
                return
            run.hung_up.add(str(event.get("call_id") or f"{event.get('port')}@{event.get('time')}"))
            if len(run.hung_up) >= run.calls:
                run.reason = f"{run.calls} call(s) ended"
                run.finish.set()

    # ---- start and stop ----
    def begin(self, calls: int, max_s: float) -> dict[str, Any]:
        """Start tcpdump for the next `calls` calls or `max_s` s; the answer of the command."""
        with self.lock:
            if self.running is not None:
                run = self.running
                raise CaptureRefused(f"a capture is already running (since {run.started:.0f}, "
                                     f"{len(run.hung_up)} of {run.calls} calls); stop it with "
                                     "capture_stop first")
        exe = shutil.which(self.tcpdump)
        if exe is None:
            raise CaptureRefused(NO_TCPDUMP)
        interface, bpf = self.target()
        self.agent_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.agent_dir / f"capture-{int(self.clock.wall())}.pcap"
        run = self.spawn(exe, path, interface, bpf, calls, max_s)
        with self.lock:
            self.running = run
        threading.Thread(target=self.watch, args=(run,), name="agent-capture",
                         daemon=True).start()
        log.info("capture started on %s (%s) for %d call(s) or %g s: %s", interface, bpf,
                 calls, max_s, path.name)
        return {"status": "capturing", "calls": calls, "max_s": max_s, "interface": interface,
                "filter": bpf, "started": run.started}

    def target(self) -> tuple[str, str]:
        """(interface, capture filter) from the core's mode and SIP config."""
        if self.api.status()["box"].get("mode") == "sim":
            return "lo", "udp"
        sip = self.api.config()["document"].get("sip", {})
        port, transport = sip.get("local_port"), sip.get("transport", "udp")
        low, high = sip.get("rtp_port_min"), sip.get("rtp_port_max")
        rtp = (f"udp portrange {low}-{high}" if isinstance(low, int) and isinstance(high, int)
               else f"udp and {NOT_RTP}")  # the SIP stack picks its RTP ports
        signalling = f"{'udp' if transport == 'udp' else 'tcp'} port {port}" if port else ""
        return "any", " or ".join(f"({p})" for p in (signalling, rtp) if p)

    def spawn(self, exe: str, path: Path, interface: str, bpf: str, calls: int,
              max_s: float) -> Running:
        argv = [exe, "-i", interface, "-n", "-U", "-w", str(path)]
        if os.geteuid() == 0:  # else tcpdump drops to its own user, who cannot write here
            argv += ["-Z", pwd.getpwuid(os.geteuid()).pw_name]
        try:
            proc = subprocess.Popen([*argv, bpf], stdin=subprocess.DEVNULL,  # noqa: S603
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise CaptureRefused(NO_TCPDUMP) from None
        except PermissionError:
            raise CaptureRefused(NO_PERMISSION) from None
        run = Running(proc, path, calls, self.clock.wall(), self.clock.now() + max_s,
                      interface, bpf)
        assert proc.stderr is not None
        run.reader = threading.Thread(target=_read_stderr, args=(proc.stderr, run),
                                      name="agent-tcpdump", daemon=True)
        run.reader.start()
        run.listening.wait(READY_S)
        if not run.heard or proc.poll() is not None:
            _halt(proc)
            run.reader.join(STOP_WAIT_S)
            path.unlink(missing_ok=True)
            text = "; ".join(run.stderr[-3:]) or "no output"
            if re.search(r"permi|not permitted|privilege", text, re.IGNORECASE):
                raise CaptureRefused(f"{NO_PERMISSION} (tcpdump: {text})")
            raise CaptureRefused(f"tcpdump did not start on {interface}: {text}")
        return run

    def watch(self, run: Running) -> None:
        """Until the call count, max_s, the size cap or tcpdump's own end."""
        while not run.finish.wait(POLL_S * 2):
            if self.running is not run:
                return
            if self.clock.now() >= run.end_at:
                run.reason = "max_s reached"
            elif run.proc.poll() is not None:
                run.reason = "tcpdump exited: " + ("; ".join(run.stderr[-2:]) or "no output")
            elif run.path.exists() and run.path.stat().st_size >= self.max_bytes:
                run.reason = f"the {self.max_bytes} byte cap reached"
            else:
                continue
            break
        try:
            self.end(run.reason, run)
        except CaptureRefused:
            pass  # ended by capture_stop meanwhile
        except Exception:  # noqa: BLE001 - a watcher thread must not die silently
            log.exception("ending the capture failed")

    def end(self, reason: str, only: Running | None = None) -> dict[str, Any]:
        """Stop tcpdump now and queue the pcap; the file's uuid and figures."""
        with self.ending:
            with self.lock:
                run = self.running
                if run is None or (only is not None and run is not only):
                    last = f"; the last one ended ({self.last['reason']}) and was queued as " \
                           f"{self.last['uuid']}" if self.last else ""
                    raise CaptureRefused(f"no capture is running{last}")
                self.running = None
            _halt(run.proc)
            if run.reader is not None:
                run.reader.join(STOP_WAIT_S)  # its last lines: the packet count
            return self.queue(run, reason)

    def queue(self, run: Running, reason: str) -> dict[str, Any]:
        packets = next((int(m.group(1)) for line in run.stderr
                        if (m := re.match(r"(\d+) packets? captured", line))), None)
        meta = {"calls": len(run.hung_up), "wanted": run.calls, "started": run.started,
                "stopped": self.clock.wall(), "reason": reason, "interface": run.interface,
                "filter": run.filter, "packets": packets}
        if not run.path.exists():
            raise CaptureRefused(f"tcpdump wrote no file ({'; '.join(run.stderr[-2:])})")
        nbytes = run.path.stat().st_size
        uuid = self.store.queue_file(run.path, "capture", meta)
        self.last = {"uuid": uuid, "bytes": nbytes, **meta}
        log.info("capture ended (%s): %s packets, %d bytes, queued as %s", reason, packets,
                 nbytes, uuid)
        return dict(self.last)


def _read_stderr(stream: IO[bytes], run: Running) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        run.stderr.append(line)
        if "listening on" in line:
            run.heard = True
            run.listening.set()
    run.listening.set()  # tcpdump ended: spawn() looks at why


def _halt(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (tcpdump closes the file properly), SIGKILL after STOP_WAIT_S."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_WAIT_S)
