"""The running core follows its config store, whoever writes it: `branchline config set`
writes the file directly, so StoreWatcher looks at it once a second (off the reactor) and
hands a changed document to the core (CoreAdapter.apply_saved); an invalid file is logged
and the core keeps running as it is."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.core.config import ConfigError

if TYPE_CHECKING:
    from firmware.api.adapter import CoreAdapter

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class StoreWatcher:
    def __init__(self, adapter: CoreAdapter, interval: float = INTERVAL_S) -> None:
        self.adapter, self.interval = adapter, interval
        self.path = adapter.store.path
        self._seen = _signature(self.path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def check(self) -> bool:
        """Apply the store's document if its file changed since last seen; True if so."""
        sig = _signature(self.path)
        if sig == self._seen:
            return False
        self._seen = sig
        try:
            self.adapter.apply_saved()  # the core logs what it took and what waits
        except ConfigError as exc:
            log.error("config file %s changed but is not valid; the core keeps running "
                      "as it is: %s", self.path, "; ".join(exc.problems) or exc)
            return False
        except Exception:  # noqa: BLE001 - the watcher must outlive any one bad change
            log.exception("applying the changed config file %s failed", self.path)
            return False
        return True
