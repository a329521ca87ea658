"""The update's state, one JSON document in $BRANCHLINE_DATA/update/state.json that every
reader (service, confirm, web, console, agent through the API) sees the same way. Written
atomically (temp file, fsync, rename, fsync of the folder) and 0600. The data partition
survives every update and rollback, so the trial boot and the rolled-back old slot read
what the install wrote. A torn or garbled file (power cut in the middle of a write the
file system did not order, a hand edit) is reported once and read as IDLE: never a crash."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_NAME = "state.json"


class Phase(StrEnum):
    IDLE = "IDLE"
    CHECKING = "CHECKING"  # signature, board and version being checked
    WAITING = "WAITING"  # for calls to end or the quiet window
    INSTALLING = "INSTALLING"
    REBOOTING = "REBOOTING"  # installed; rebooting into the other slot for a trial
    TRIAL = "TRIAL"  # the trial boot is up; the health check runs
    GOOD = "GOOD"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"


ACTIVE = (Phase.CHECKING, Phase.WAITING, Phase.INSTALLING, Phase.REBOOTING, Phase.TRIAL)


@dataclass
class UpdateState:
    phase: Phase = Phase.IDLE
    source: str = ""  # web, console, agent
    bundle: str = ""
    version_from: str = ""
    version_to: str = ""
    build: str = ""  # the bundle's build id, checked again in the slot after the install
    progress: int = 0
    message: str = ""
    reason: str = ""  # a Reason value when refused or failed
    job: str | None = None  # the agent's job id
    started: float | None = None  # wall time
    finished: float | None = None
    baseline: list[str] = field(default_factory=list)  # selftest checks failing before

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "phase": str(self.phase)}

    @classmethod
    def from_json(cls, doc: Any) -> UpdateState:
        """ValueError when `doc` is not a state document."""
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in doc.items() if k in names})
        state.phase = Phase(state.phase)
        if not isinstance(state.progress, int) or not 0 <= state.progress <= 100:
            raise ValueError(f"progress {state.progress!r} is not 0..100")
        return state


class StateFile:
    """state.json in `directory` (made 0700 on the first write)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / FILE_NAME
        self._lock = threading.Lock()

    def load(self) -> UpdateState:
        """The saved state; IDLE when there is none or it cannot be read (logged)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return UpdateState()
        except OSError as exc:
            return self._unreadable(f"cannot read it ({exc.strerror})")
        try:
            return UpdateState.from_json(json.loads(data.decode("utf-8")))
        except (ValueError, TypeError) as exc:
            return self._unreadable(f"torn or garbled ({exc})")

    def _unreadable(self, why: str) -> UpdateState:
        message = f"{self.path}: {why}; read as idle, the next update rewrites it"
        log.warning("update state %s", message)
        return UpdateState(message=message)

    def save(self, state: UpdateState) -> None:
        data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode() + b"\n"
        with self._lock:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(self.path, data)


def write_atomic(path: Path, data: bytes) -> None:
    """A 0600 file replaced in one step that a power cut cannot tear: temp, fsync, rename,
    fsync of the folder (so the rename itself is on disk)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
