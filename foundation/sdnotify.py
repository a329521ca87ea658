"""sd_notify(3) without libsystemd: one datagram of "KEY=value" lines to $NOTIFY_SOCKET.

Used by the core (to the box's watchdog) and by the watchdog (to systemd). A path that
starts with '@' is a Linux abstract socket, as systemd documents for NOTIFY_SOCKET.
Never raises: a gateway must not stop because nobody listens to its health.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

SEND_TIMEOUT_S = 1.0  # a full receive queue must not block the caller (the reactor)


def notify(message: str, socket_path: str | None = None) -> bool:
    """Send `message` to `socket_path` (default $NOTIFY_SOCKET); False when unset or failed."""
    path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not path or not message:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(message.encode(), address)
    except (OSError, ValueError):
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] = os.environ,
                        check_pid: bool = True) -> float | None:
    """How often to send WATCHDOG=1: half of WATCHDOG_USEC, in seconds.

    None when WATCHDOG_USEC is unset or not a positive number, or (with check_pid) when
    WATCHDOG_PID names another process; an empty WATCHDOG_PID counts as unset.
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if check_pid and pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000
