"""The core's health ping: sd_notify messages sent from the reactor thread itself.

READY=1 with a one-line STATUS= once the core is up, WATCHDOG=1 every interval from a
reactor timer, STOPPING=1 at stop. Because the timer runs on the reactor, a reactor that
hangs (a stuck driver, a deadlock, a SIGSTOP) stops the pings, and the box's watchdog
(firmware.supervise.watchdog) restarts the core. The status comes in as a callable so
this module needs nothing of call control.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from foundation import sdnotify
from foundation.reactor import NEVER, Reactor, Timer

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 1.0  # NOTIFY_SOCKET set but no WATCHDOG_USEC
STATUS_EVERY_S = 10.0  # how often the STATUS= line is refreshed when it changed

Notify = Callable[[str], bool]
StatusFn = Callable[[], Mapping[str, Any]]


def ping_interval_s(env: Mapping[str, str] = os.environ) -> float | None:
    """Half of WATCHDOG_USEC, else 1 s when only NOTIFY_SOCKET is set, else None (no pings)."""
    interval = sdnotify.watchdog_interval_s(env)
    if interval is not None:
        return interval
    return DEFAULT_INTERVAL_S if env.get("NOTIFY_SOCKET") else None


def status_line(status: Mapping[str, Any]) -> str:
    """One line for systemd's STATUS=: ports up/failed, calls, cloud or survivable."""
    ports = [p for p in status.get("ports", {}).values() if p.get("kind") != "headset"]
    failed = sum(1 for p in ports if p.get("state") == "failed")
    calls = sum(1 for p in ports if p.get("call") not in (None, "", "idle"))
    parts = [f"{len(ports) - failed} ports up" + (f", {failed} failed" if failed else ""),
             f"{calls} call{'s' if calls != 1 else ''}"]
    if status.get("no_cloud"):
        parts.append(f"no cloud: {status['no_cloud']}")
    elif status.get("cloud_up"):
        parts.append("cloud up")
    else:
        survive = status.get("survivability") or {}
        parts.append(f"survivable ({survive.get('state', 'cloud down')})")
    return "; ".join(parts)


class HealthPing:
    """READY/WATCHDOG/STOPPING to $NOTIFY_SOCKET from a reactor timer.

    `start()` and `stop()` run on the reactor thread. `interval_s` None: READY and
    STOPPING only (nobody watches the pings)."""

    def __init__(self, reactor: Reactor, notify: Notify = sdnotify.notify,
                 interval_s: float | None = DEFAULT_INTERVAL_S,
                 status: StatusFn | None = None) -> None:
        self.reactor = reactor
        self.notify = notify
        self.interval_s = interval_s
        self.status = status
        self.pings = 0
        self._timer: Timer | None = None
        self._line = ""
        self._line_at = -NEVER

    def start(self) -> None:
        self._line = self._status_line()
        self._line_at = self.reactor.now()
        self.notify("READY=1\nSTATUS=" + self._line if self._line else "READY=1")
        log.info("health: ready (%s)", self._line or "no status")
        if self.interval_s is not None and self._timer is None:
            self._timer = self.reactor.register_timer(self._ping,
                                                      self.reactor.now() + self.interval_s)

    def stop(self) -> None:
        if self._timer is not None:
            self.reactor.unregister_timer(self._timer)
            self._timer = None
        self.notify("STOPPING=1\nSTATUS=stopping")

    def _ping(self, eventtime: float) -> float:
        message = "WATCHDOG=1"
        if eventtime - self._line_at >= STATUS_EVERY_S:
            self._line_at = eventtime
            line = self._status_line()
            if line and line != self._line:
                self._line = line
                message += "\nSTATUS=" + line
        self.notify(message)
        self.pings += 1
        assert self.interval_s is not None
        return eventtime + self.interval_s

    def _status_line(self) -> str:
        if self.status is None:
            return ""
        try:
            return status_line(self.status())
        except Exception as exc:  # noqa: BLE001 - a status bug must not stop the pings
            log.warning("health: no status line (%s: %s)", type(exc).__name__, exc)
            return ""
