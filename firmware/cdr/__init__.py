"""Call detail records, the store-and-forward outbox and its files, in one SQLite file
(WAL) that the core writes and other processes read: the web page, the console, the
cloud agent (small records over MQTT, queued files) and `branchline forward`
(firmware.forward), which uploads the files (and, without the agent, the records)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from firmware.cdr.calls import Calls, Direction, Disposition, MediaMode
from firmware.cdr.db import MAX_PAGE, MIGRATIONS, SCHEMA_VERSION, CdrError, Database, statements
from firmware.cdr.outbox import FILE_KINDS, FILES_DIR, RECORDINGS_DIR, Kind, Outbox, Recordings

CDR_FILE = "cdr.db"  # the store's file name in the data dir (core, agent, forward, web)

__all__ = ["CDR_FILE", "FILE_KINDS", "MAX_PAGE", "MIGRATIONS", "SCHEMA_VERSION", "CdrError", "CdrStore",
           "Direction", "Disposition", "Kind", "MediaMode", "statements"]


class CdrStore(Database):
    """The database file with its parts: calls (CDRs, CSV), outbox (queue, cap, pruning)
    and files (recordings, queued files); it offers their methods under the names
    callers know."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False,
                 wall: Callable[[], float] = time.time, check: bool = True,
                 max_bytes: int | None = None, max_rows: int | None = None,
                 recordings_dir: str | os.PathLike[str] | None = None,
                 files_dir: str | os.PathLike[str] | None = None,
                 synchronous: str = "FULL") -> None:
        super().__init__(path, readonly=readonly, check=check, synchronous=synchronous)
        self.files = Recordings(
            self, Path(recordings_dir) if recordings_dir is not None
            else self.path.parent / RECORDINGS_DIR,
            Path(files_dir) if files_dir is not None else self.path.parent / FILES_DIR)
        self.outbox = o = Outbox(self, self.files, wall, max_bytes, max_rows)
        self.calls = c = Calls(self, o, wall)
        self.open_call, self.answered, self.ended, self.update = (
            c.open_call, c.answered, c.ended, c.update)
        self.get, self.list, self.count, self.export_csv = c.get, c.list, c.count, c.export_csv
        self.enqueue, self.state_change, self.callback_request, self.add_recording = (
            o.enqueue, o.state_change, o.callback_request, o.add_recording)
        self.queue_file = o.queue_file
        self.pending, self.mark_delivered, self.note_failure, self.depth = (
            o.pending, o.mark_delivered, o.note_failure, o.depth)
        self.set_cap, self.enforce_cap, self.evict_recording, self.prune = (
            o.set_cap, o.enforce_cap, o.evict_recording, o.prune)
        self.check_totals, self.recordings = o.check_totals, self.files.index
        self.recordings_dir, self.files_dir = self.files.dir, self.files.queued
