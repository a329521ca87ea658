"""The core's recent log records in memory for GET /logs: a logging.Handler appending
(time, level, source, message) to a bounded deque (cheap on the reactor thread), read
newest first by minimum level."""

from __future__ import annotations

import logging
import threading
from collections import deque

CAPACITY = 5000
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


class LogBuffer(logging.Handler):
    """A ring of recent records; see the module docstring."""

    def __init__(self, capacity: int = CAPACITY, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._records: deque[tuple[float, int, str, str]] = deque(maxlen=capacity)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                message += f" ({type(exc).__name__}: {exc})"
        except Exception:  # noqa: BLE001 - a bad log call must not break the caller
            message = str(record.msg)
        with self._guard:
            self._records.append((record.created, record.levelno, record.name, message))

    def page(self, offset: int = 0, limit: int = 50, level: str | None = None) -> dict:
        """{"total", "items"}: records at `level` or above, newest first."""
        floor = LEVELS.get((level or "debug").lower(), logging.DEBUG)
        with self._guard:
            records = [r for r in self._records if r[1] >= floor]
        records.reverse()
        items = [{"time": t, "level": logging.getLevelName(lv).lower(), "source": src,
                  "message": msg} for t, lv, src, msg in records[offset:offset + limit]]
        return {"total": len(records), "items": items}

    def install(self, logger: logging.Logger | None = None) -> None:
        target = logger or logging.getLogger()
        target.addHandler(self)
        if target.getEffectiveLevel() > self.level:
            target.setLevel(self.level)

    def remove(self, logger: logging.Logger | None = None) -> None:
        (logger or logging.getLogger()).removeHandler(self)
