"""Web sessions, CSRF tokens and the per-address login rate limit, in this process's memory.
A session id is 256 random bits in an HttpOnly, Secure, SameSite=Strict cookie; every
visitor gets one (so the login form has a CSRF token too) and a login replaces it (no
session fixation). A session ends IDLE_S after its last request or ABSOLUTE_S after it
began; at most MAX_SESSIONS live (an anonymous flood pushes out the oldest)."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

IDLE_S = 30 * 60
ABSOLUTE_S = 8 * 3600
MAX_SESSIONS = 200
COOKIE = "branchline_session"


class Stage(StrEnum):
    ANON = "anon"  # the login page only
    SETUP = "setup"  # setup code given: the set-password page only
    ADMIN = "admin"


@dataclass
class Session:
    id: str
    csrf: str
    created: float
    seen: float
    stage: Stage = Stage.ANON
    user: str = ""
    flash: list[str] = field(default_factory=list)

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, token or "")

    def pop_flash(self) -> list[str]:
        out, self.flash = self.flash, []
        return out


class Sessions:
    """The live sessions of this web process."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 idle_s: float = IDLE_S, absolute_s: float = ABSOLUTE_S) -> None:
        self.clock, self.idle_s, self.absolute_s = clock, idle_s, absolute_s
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, sid: str | None) -> Session | None:
        """The live session of a cookie value (its idle timer restarted), else None."""
        now = self.clock()
        with self._lock:
            s = self._by_id.get(sid or "")
            if s is None or self._dead(s, now):
                self._by_id.pop(sid or "", None)
                return None
            s.seen = now
            return s

    def new(self, stage: Stage = Stage.ANON, user: str = "") -> Session:
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now,
                    stage, user)
        with self._lock:
            self._expire(now)
            self._by_id[s.id] = s
        return s

    def promote(self, old: Session, stage: Stage, user: str) -> Session:
        """A fresh session (new id and CSRF token) for a login; the old one ends."""
        self.end(old)
        return self.new(stage, user)

    def end(self, s: Session) -> None:
        with self._lock:
            self._by_id.pop(s.id, None)

    def _dead(self, s: Session, now: float) -> bool:
        return now - s.seen > self.idle_s or now - s.created > self.absolute_s

    def _expire(self, now: float) -> None:
        for k in [k for k, s in self._by_id.items() if self._dead(s, now)]:
            del self._by_id[k]
        if len(self._by_id) >= MAX_SESSIONS:
            oldest = sorted(self._by_id.values(), key=lambda s: s.seen)
            for s in oldest[:len(self._by_id) - MAX_SESSIONS + 1]:
                del self._by_id[s.id]


class RateLimiter:
    """At most `limit` login attempts per client address per `window_s`."""

    def __init__(self, limit: int = 20, window_s: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, address: str) -> float:
        """0 when allowed (and counted), else the seconds to wait."""
        now = self.clock()
        with self._lock:
            hits = self._hits.setdefault(address, deque())
            while hits and now - hits[0] > self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return self.window_s - (now - hits[0])
            hits.append(now)
            return 0.0
