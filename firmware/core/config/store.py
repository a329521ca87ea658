"""Versioned, crash-safe storage of the config document in one directory (default
/etc/branchline; env BRANCHLINE_CONFIG_DIR): branchline.toml (the live document),
versions/v000007.toml (the last N saved, byte for byte), versions/index.json (their
version, time and reason, oldest first) and .lock (an flock serialising writers).
Files are 0640 and new directories 0750: the document holds SIP passwords, so never for
everyone, but the gateway's programs share a group (the core saves it, the forwarder reads
it while the core may be down); the lock stays 0600. A hand edit
of branchline.toml is kept as a version of its own by the next save or rollback."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import signal
import time
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import tomli_w

from firmware.core.config.rules import validate
from firmware.core.config.schema import ConfigError, default_document

FILE_NAME = "branchline.toml"
DEFAULT_DIR = "/etc/branchline"
DIR_ENV = "BRANCHLINE_CONFIG_DIR"
FILE_MODE, DIR_MODE = 0o640, 0o750  # owner and the gateway's group; nobody else
KEEP = 10

# Test hook: a writer whose environment names one of CHECKPOINTS stops itself there
# (SIGSTOP), so a crash test can SIGKILL it at exactly that point of a save.
STOP_ENV = "BRANCHLINE_CONFIG_TEST_STOP_AT"
_FILE_STEPS = ("open", "partial", "written", "synced", "renamed")
CHECKPOINTS = (("locked",) + tuple(f"{f}:{s}" for f in ("version", "live", "index")
                                   for s in _FILE_STEPS) + ("prune", "done"))

_HEADER_RE = re.compile(rb"# branchline configuration version (\d+), saved \S+ \(t=([0-9.]+)\)\n"
                        rb"# reason: ([^\n]*)\n")
_VERSION_RE = re.compile(r"v(\d{6,})\.toml")


def config_dir(option: str | None = None) -> Path:
    """The directory from --config-dir, else $BRANCHLINE_CONFIG_DIR, else /etc/branchline."""
    return Path(option or os.environ.get(DIR_ENV) or DEFAULT_DIR)


def _checkpoint(step: str) -> None:
    if os.environ.get(STOP_ENV) == step:
        os.kill(os.getpid(), signal.SIGSTOP)


def parse(data: bytes, where: str) -> dict:
    """A validated document from TOML bytes; problems are prefixed with `where`."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{where}: not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}: TOML syntax error: {exc}"]) from None
    try:
        return validate(doc)
    except ConfigError as exc:
        raise ConfigError([f"{where}: {p}" for p in exc.problems]) from None


def load_file(path: str | os.PathLike) -> dict:
    """Read and validate any TOML file (for `config validate FILE` and `apply FILE`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse(data, str(path))


def render(doc: dict) -> bytes:
    return tomli_w.dumps(doc).encode()


def _header(version: int, when: float, reason: str) -> bytes:
    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    reason = " ".join(reason.split())  # one line, whatever was typed
    return (f"# branchline configuration version {version}, saved {stamp} (t={when:.6f})\n"
            f"# reason: {reason}\n").encode()


class ConfigStore:
    """The config document in one directory: load, save, list versions, roll back."""

    def __init__(self, directory: str | os.PathLike, keep: int = KEEP,
                 clock: Callable[[], float] = time.time):
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.versions_dir = self.directory / "versions"
        self.index_path = self.versions_dir / "index.json"
        self.keep = max(1, keep)
        self._clock = clock

    def load(self) -> dict:
        """The validated live document, or the default one when none was saved yet."""
        data = self._read(self.path)
        if data is None:
            return validate(default_document())
        return parse(data, str(self.path))

    def versions(self) -> list[dict]:
        """Kept versions, oldest first: version, time (s since epoch), reason, current."""
        entries = self._reconcile(write=False)
        live = self._read(self.path)
        return [{**e, "current": live is not None and live == self._read(self._vpath(e))}
                for e in entries]

    def read_version(self, version: int) -> dict:
        """The validated document of a kept version."""
        entry = self._entry(self._reconcile(write=False), version)
        data = self._read(self._vpath(entry))
        if data is None:
            raise ConfigError([f"version {version}: its file {self._vpath(entry)} is missing"])
        return parse(data, f"version {version}")

    def save(self, doc: dict, reason: str = "") -> int:
        """Validate, then write atomically as a new version; returns its number."""
        body = render(validate(doc))  # a bad document stops here: nothing on disk changes
        with self._writing() as entries:
            return self._commit(body, reason, entries)

    def rollback(self, version: int | None = None) -> int:
        """Restore the previous (or the given) version as a new version; returns its number."""
        with self._writing() as entries:
            target = self._rollback_target(entries, version)
            doc = self.read_version(target["version"])
            return self._commit(render(doc), f"rollback to version {target['version']}", entries)

    def _rollback_target(self, entries: list[dict], version: int | None) -> dict:
        if version is not None:
            return self._entry(entries, version)
        if len(entries) < 2:
            raise ConfigError([f"{self.directory}: no earlier version to roll back to"])
        return entries[-2]

    def _entry(self, entries: list[dict], version: int) -> dict:
        for entry in entries:
            if entry["version"] == version:
                return entry
        kept = f"{entries[0]['version']}..{entries[-1]['version']}" if entries else "none"
        raise ConfigError([f"version {version} is not kept; kept: {kept} "
                           "(see `branchline config versions`)"])

    @contextlib.contextmanager
    def _writing(self) -> Iterator[list[dict]]:
        """Hold the writer lock with crash leftovers repaired; OS errors become one line."""
        try:
            with self._locked():
                entries = self._reconcile(write=True)
                yield self._adopt_hand_edit(entries)
                _checkpoint("done")
        except OSError as exc:
            where = exc.filename or self.directory
            raise ConfigError([f"{where}: cannot write the config: {exc.strerror}; "
                               f"{_hint(exc)}"]) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._make_dir(self.directory)
        self._make_dir(self.versions_dir)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the kernel on a kill
            _checkpoint("locked")
            yield
        finally:
            os.close(fd)

    def _commit(self, body: bytes, reason: str, entries: list[dict]) -> int:
        """Write the version file, the live file, then the index, each by temp file +
        fsync + rename + fsync of the directory. Renaming the live file is the commit
        point: a writer killed after it leaves the live file equal to version `last + 1`,
        whose header carries its time and reason, so `_reconcile` counts it in."""
        version = entries[-1]["version"] + 1 if entries else 1
        when = self._clock()
        data = _header(version, when, reason) + body
        entry = {"version": version, "time": when, "reason": " ".join(reason.split())}
        self._atomic_write(self._vpath(entry), data, "version")
        self._atomic_write(self.path, data, "live")  # the commit point
        entries[:] = (entries + [entry])[-self.keep:]
        self._write_index(entries)
        _checkpoint("prune")
        self._sweep(entries)
        return version

    def _adopt_hand_edit(self, entries: list[dict]) -> list[dict]:
        """Keep a hand-edited live file as a version before it is replaced."""
        live = self._read(self.path)
        if live is None or (entries and live == self._read(self._vpath(entries[-1]))):
            return entries
        header = _HEADER_RE.match(live)
        self._commit(live[header.end():] if header else live, "hand edit found on disk", entries)
        return entries

    def _reconcile(self, write: bool) -> list[dict]:
        """The index as committed: a save killed after its commit point is counted in.
        With write=True (under the lock) the index is brought up to date and leftovers
        of killed writers (temp files, uncommitted or pruned version files) are removed."""
        entries = self._read_index()
        following = {"version": entries[-1]["version"] + 1 if entries else 1}
        orphan = self._read(self._vpath(following))
        if (orphan is not None and orphan == self._read(self.path)
                and self._meta(orphan)["version"] == following["version"]):
            entries = (entries + [self._meta(orphan)])[-self.keep:]
            if write:
                self._write_index(entries)
        if write:
            self._sweep(entries)
        return entries

    def _read_index(self) -> list[dict]:
        data = self._read(self.index_path)
        if data is None:
            return []
        try:
            return list(json.loads(data)["versions"])
        except (ValueError, KeyError, TypeError):
            return self._rebuild_index()  # never torn by us; survive a hand-damaged one

    def _rebuild_index(self) -> list[dict]:
        metas = [self._meta(self._read(p) or b"") for p in sorted(self.versions_dir.glob("v*.toml"))]
        return [m for m in metas if m["version"] > 0][-self.keep:]

    @staticmethod
    def _meta(data: bytes) -> dict:
        match = _HEADER_RE.match(data)
        if not match:
            return {"version": 0, "time": 0.0, "reason": ""}
        return {"version": int(match[1]), "time": float(match[2]),
                "reason": match[3].decode(errors="replace")}

    def _sweep(self, entries: list[dict]) -> None:
        """Remove temp files and version files the index does not list."""
        kept = {self._vpath(e).name for e in entries}
        for directory in (self.directory, self.versions_dir):
            for path in directory.iterdir():
                stale_version = _VERSION_RE.fullmatch(path.name) and path.name not in kept
                if stale_version or (path.name.startswith(".") and ".tmp-" in path.name):
                    path.unlink(missing_ok=True)

    def _vpath(self, entry: dict) -> Path:
        return self.versions_dir / f"v{entry['version']:06d}.toml"

    def _write_index(self, entries: list[dict]) -> None:
        data = json.dumps({"versions": entries}, indent=1).encode() + b"\n"
        self._atomic_write(self.index_path, data, "index")

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}; {_hint(exc)}"]) from None

    @staticmethod
    def _make_dir(path: Path) -> None:
        if path.is_dir():
            return
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _fsync_dir(path.parent)

    @staticmethod
    def _atomic_write(path: Path, data: bytes, label: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # the umask cannot widen it, but an old temp file might be
            _checkpoint(f"{label}:open")
            half = len(data) // 2  # two writes, so a crash test can stop mid-file
            _write_all(fd, data[:half])
            _checkpoint(f"{label}:partial")
            _write_all(fd, data[half:])
            _checkpoint(f"{label}:written")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        _checkpoint(f"{label}:synced")
        os.replace(tmp, path)
        _checkpoint(f"{label}:renamed")
        _fsync_dir(path.parent)


def _hint(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "run as root, or choose another --config-dir"
    return "check --config-dir (or $BRANCHLINE_CONFIG_DIR)"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
