"""The listening end of sd_notify in the tests: a datagram socket like systemd's
NOTIFY_SOCKET that records every message with its arrival time and its sender's pid
(SCM_CREDENTIALS). Used by the sdnotify, health-ping and watchdog tests."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

UCRED = struct.Struct("3i")


class Receiver:
    """A datagram socket like systemd's NOTIFY_SOCKET: keeps (arrival, pid, text) of
    every message; the pid comes from SCM_CREDENTIALS."""

    def __init__(self, address: str) -> None:
        self.address = address  # '@name' for an abstract socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.got: list[tuple[float, int, str]] = []

    def drain(self) -> list[tuple[float, int, str]]:
        """Read what is waiting; returns everything received so far."""
        while True:
            try:
                data, anc, _f, _a = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
            except BlockingIOError:
                return self.got
            pid = next((UCRED.unpack(d[:UCRED.size])[0] for lvl, kind, d in anc
                        if lvl == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), 0)
            self.got.append((time.monotonic(), pid, data.decode()))

    def texts(self) -> list[str]:
        return [text for _t, _pid, text in self.drain()]

    def times_of(self, line: str, pid: int | None = None) -> list[float]:
        """Arrival times of the messages with this line (from this pid, if given)."""
        return [t for t, p, text in self.drain()
                if line in text.splitlines() and (pid is None or p == pid)]

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)
