"""Test hosts in network namespaces joined by a veth pair: a real WAN link to cut.

`with NetnsLink() as link:` makes `link.box` and `link.cloud` (10.77.0.1/24 <-> 10.77.0.2/24,
nothing added to the machine's own namespace); then cut/restore/flap the link, impair it
with netem, run commands in a host, or move the calling thread into one (`host.entered()`)
so a pjsua2 bridge and lab peers live there. `unavailable()` says why namespaces cannot be
used (tests skip with it). Needs Linux, iproute2 and root.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache

from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
SUBNET = "10.77.0"
_names = itertools.count()
_live: set[str] = set()
_procs: list[subprocess.Popen] = []


class NetnsError(BranchlineError):
    """A namespace, link or netem command failed (the message has the command and why)."""


def ip(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run `ip ARGS`; NetnsError with its stderr when it fails and `check`."""
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def _caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


@cache
def unavailable() -> str | None:
    """Why namespace tests cannot run on this machine, or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed (apt-get install iproute2)"
    caps = _caps()
    for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")):
        if not caps >> bit & 1:
            return f"no {name} (run as root, or a container with --cap-add {name[4:]})"
    probe = f"blprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except (NetnsError, OSError) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        ip("-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
    except NetnsError as exc:
        return f"cannot create a veth pair (no veth driver in this kernel?): {exc}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


@cache
def netem_missing() -> str | None:
    """Why `tc qdisc ... netem` cannot be used, or None when it can."""
    if unavailable():
        return unavailable()
    if shutil.which("tc") is None:
        return "iproute2 `tc` is not installed"
    probe = f"blnetem{os.getpid()}"
    ip("netns", "add", probe)
    try:
        res = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo",
                              "root", "netem", "delay", "1ms"], capture_output=True, text=True,
                             timeout=10)
    finally:
        ip("netns", "del", probe, check=False)
    if res.returncode != 0:
        return f"netem not available (kernel module sch_netem missing?): {res.stderr.strip()}"
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(err)} (needs CAP_SYS_ADMIN)")


class Host:
    """One end of the link: a namespace with an address on its veth end."""

    def __init__(self, ns: str, dev: str, addr: str, peer: str) -> None:
        self.ns = ns
        self.dev = dev
        self.addr = addr
        self.peer = peer  # the other end's address
        self.procs: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"Host({self.ns}, {self.dev} {self.addr})"

    def cmd(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(argv), capture_output=True, text=True, timeout=timeout)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.cmd(argv), **kwargs)
        self.procs.append(proc)  # stopped by close()/atexit even before it entered the ns
        _procs.append(proc)
        return proc

    @contextmanager
    def entered(self) -> Iterator[Host]:
        """Move the calling thread into this namespace for the block (see the module doc)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield self
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)


class NetnsLink:
    """Two namespaces joined by a veth pair (see the module doc). Context manager."""

    def __init__(self, prefix: str = "bl", subnet: str = SUBNET) -> None:
        reason = unavailable()
        if reason:
            raise NetnsError(f"network namespaces unavailable: {reason}")
        tag = f"{prefix}{os.getpid()}x{next(_names)}"
        self.box = Host(f"{tag}-box", "box0", f"{subnet}.1", f"{subnet}.2")
        self.cloud = Host(f"{tag}-cloud", "cloud0", f"{subnet}.2", f"{subnet}.1")
        self.is_cut = False
        self.cut_at: float | None = None
        self.flap_events: list[tuple[str, float]] = []
        self._flap_stop = threading.Event()
        self._flap_thread: threading.Thread | None = None
        self._made: list[str] = []

    def __enter__(self) -> NetnsLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> NetnsLink:
        try:
            for host in (self.box, self.cloud):
                ip("netns", "add", host.ns)
                self._made.append(host.ns)
                _live.add(host.ns)
                ip("-n", host.ns, "link", "set", "lo", "up")
            ip("-n", self.box.ns, "link", "add", self.box.dev, "type", "veth", "peer", "name",
               self.cloud.dev, "netns", self.cloud.ns)
            for host in (self.box, self.cloud):
                ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", host.dev)
                ip("-n", host.ns, "link", "set", host.dev, "up")
            self._routes()
        except BaseException:
            self.close()
            raise
        log.info("netns link %s (%s) <-> %s (%s)", self.box.ns, self.box.addr, self.cloud.ns,
                 self.cloud.addr)
        return self

    def _routes(self) -> None:
        for host in (self.box, self.cloud):
            ip("-n", host.ns, "route", "replace", "default", "via", host.peer, "dev", host.dev)

    def cut(self, side: str = "cloud") -> float:
        """Link down on `side`'s end (see the module doc); the monotonic time of the cut."""
        host = self.box if side == "box" else self.cloud
        ip("-n", host.ns, "link", "set", host.dev, "down")
        self.is_cut, self.cut_at = True, time.monotonic()
        return self.cut_at

    def restore(self) -> float:
        """Plug it back (both ends up, routes back); the monotonic time it was done."""
        for host in (self.box, self.cloud):
            ip("-n", host.ns, "link", "set", host.dev, "up")
        self._wait_carrier()
        self._routes()
        self.is_cut = False
        return time.monotonic()

    def _wait_carrier(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = ip("-n", self.box.ns, "-o", "link", "show", self.box.dev).stdout
            if "LOWER_UP" in out:
                return
            time.sleep(0.01)
        raise NetnsError(f"{self.box.dev} in {self.box.ns} has no carrier {timeout} s after "
                         "link up")

    def flap(self, schedule: Sequence[tuple[float, float]], side: str = "cloud") -> None:
        """Cut for down_s, restore for up_s, per pair, on a thread of its own (wait_flap)."""
        self.stop_flap()
        self._flap_stop.clear()
        self.flap_events = []
        self._flap_thread = threading.Thread(target=self._flap_run, args=(list(schedule), side),
                                             name="netns-flap", daemon=True)
        self._flap_thread.start()

    def _flap_run(self, schedule: list[tuple[float, float]], side: str) -> None:
        try:
            for down_s, up_s in schedule:
                self.flap_events.append(("down", self.cut(side)))
                stopped = self._flap_stop.wait(down_s)
                self.flap_events.append(("up", self.restore()))
                if stopped or self._flap_stop.wait(up_s):
                    return
        except NetnsError as exc:
            log.error("netns flap stopped: %s", exc)

    def wait_flap(self, timeout: float) -> bool:
        """Wait until the flap schedule has run out (the link is then up); False on timeout."""
        if self._flap_thread is not None:
            self._flap_thread.join(timeout)
            return not self._flap_thread.is_alive()
        return True

    def stop_flap(self) -> None:
        self._flap_stop.set()
        if self._flap_thread is not None:
            self._flap_thread.join(10)
        self._flap_thread = None

    def impair(self, loss_pct: float = 0.0, delay_ms: float = 0.0,
               jitter_ms: float = 0.0) -> None:
        """netem loss/delay on both ends (NetnsError naming the reason where unavailable)."""
        reason = netem_missing()
        if reason:
            raise NetnsError(f"link impairment unavailable: {reason}; use lab/chaos.py")
        spec = ["delay", f"{delay_ms}ms", f"{jitter_ms}ms", "loss", f"{loss_pct}%"]
        for host in (self.box, self.cloud):
            res = host.run(["tc", "qdisc", "replace", "dev", host.dev, "root", "netem", *spec])
            if res.returncode != 0:
                raise NetnsError(f"tc netem on {host.dev} in {host.ns}: {res.stderr.strip()}")

    def pids(self) -> list[int]:
        pids: list[int] = []
        for ns in self._made:
            out = ip("netns", "pids", ns, check=False).stdout
            pids += [int(p) for p in out.split()]
        return pids

    def close(self) -> None:
        """Stop what still runs inside (TERM, then KILL) and delete both namespaces."""
        self.stop_flap()
        _stop_pids(self.pids() + _started(self.box.procs + self.cloud.procs))
        for ns in self._made:
            ip("netns", "del", ns, check=False)
            _live.discard(ns)
        self._made.clear()


def _stop_pids(pids: list[int], grace: float = 3.0) -> None:
    me = os.getpid()
    pids = [p for p in pids if p != me]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.05)
        if not pids:
            return


def _started(procs: list[subprocess.Popen]) -> list[int]:
    """Those of `procs` (started through Host.popen) that still run."""
    return [p.pid for p in procs if p.poll() is None]


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@atexit.register
def _cleanup() -> None:
    """Whatever a crashed test left: its processes inside, then the namespaces."""
    _stop_pids(_started(_procs))
    for ns in list(_live):
        _stop_pids([int(p) for p in ip("netns", "pids", ns, check=False).stdout.split()])
        ip("netns", "del", ns, check=False)
        _live.discard(ns)
