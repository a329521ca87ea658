"""Free loopback ports for lab peers (Kamailio, agents, sipp), chosen at run time.

Assumes every lab peer binds 127.0.0.1 only. A port is "free" when both a UDP and a
TCP socket can bind it (SIP peers listen on both); the kernel picks it, so parallel
test workers do not collide, and a port handed out recently by this process is not
handed out again (a test often picks several ports before any peer binds them). There
is still a small window between asking and the peer binding; a peer that loses the
race fails with a clear bind error.
"""

from __future__ import annotations

import socket
from collections import deque

HOST = "127.0.0.1"
_recent: deque[int] = deque(maxlen=1024)


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(kind: str = "udp") -> int:
    """A port on 127.0.0.1 that is free for `kind` ("udp" or "tcp") and also for the
    other kind, since SIP listens on both."""
    if kind not in ("udp", "tcp"):
        raise ValueError(f"free_port: kind must be 'udp' or 'tcp', not {kind!r}")
    first = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    other = socket.SOCK_STREAM if kind == "udp" else socket.SOCK_DGRAM
    for _ in range(50):
        with socket.socket(socket.AF_INET, first) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _recent and _bindable(port, other):
            _recent.append(port)
            return port
    raise OSError("no free port on 127.0.0.1 after 50 tries: is the port range exhausted?")


def free_ports(n: int, kind: str = "udp") -> list[int]:
    """`n` distinct free ports (see free_port)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port(kind)
        if port not in ports:
            ports.append(port)
    return ports
