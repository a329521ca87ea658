"""UpdateService: the box's one update at a time, with its policy, in this order:

1. signature and board: `rauc info` against the keyring, then the manifest's compatible;
2. downgrade: a version not newer than the running one is refused; `force` does not lift
   that, only an explicit allow_downgrade from the console or the CLI;
3. calls: while the core reports a call up (or does not answer), WAITING, checked again
   every `retry_s`; `force` skips this and the window, nothing else;
4. the quiet window `update.window` ("HH:MM-HH:MM" local time, may span midnight; "" = any
   time), read from the config store at each check so an edit counts at once;
5. free space on the data partition, then `rauc install` on a worker thread, its progress
   into the state, REBOOTING, and reboot(tryboot=True) (on the Pi: systemctl reboot
   "0 tryboot"); the trial boot's confirm step (confirm.py) takes it from there.

Refusals found before queueing (1, 2, space) raise UpdateError and are recorded as FAILED;
waiting and installing are reported through the state file. Time is injected: `clock`
gives the wall time of records and of the window; waits between checks are `retry_s`."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.api.client import ApiClient, ApiError
from firmware.core.config import ConfigError, ConfigStore, config_dir
from firmware.update.rauc import BundleInfo, Rauc, Reason, UpdateError
from firmware.update.state import ACTIVE, Phase, StateFile, UpdateState
from firmware.update.version import compare, running_version
from foundation.reactor import Clock

log = logging.getLogger(__name__)

RETRY_S = 10.0
MIN_FREE_BYTES = 16 << 20  # the state, RAUC's status file and the logs must stay writable
SOURCES = ("web", "console", "agent")
CANCEL_JOIN_S = 15.0  # longer than a status request to the core may take
Selftest = Callable[[ApiClient], list[dict[str, Any]]]


def in_window(window: str, local: time.struct_time) -> bool:
    """Whether the local time is inside "HH:MM-HH:MM" (the end minute excluded)."""
    if not window:
        return True
    start, end = (int(h) * 60 + int(m) for h, m in
                  (part.split(":") for part in window.split("-")))
    now = local.tm_hour * 60 + local.tm_min
    return start <= now < end if start < end else now >= start or now < end


class UpdateService:
    def __init__(self, data_dir: Path, rauc: Rauc, api_factory: Callable[[], ApiClient],
                 clock: Clock, *, keyring: Path, compatible: str,
                 reboot: Callable[[bool], None], config_dir: Path | None = None,
                 retry_s: float = RETRY_S, min_free_bytes: int = MIN_FREE_BYTES,
                 selftest: Selftest | None = None,
                 version: Callable[[], str] = running_version) -> None:
        self.file = StateFile(Path(data_dir) / "update")
        self.rauc, self.api_factory, self.clock = rauc, api_factory, clock
        self.keyring, self.compatible, self.reboot = keyring, compatible, reboot
        self.config_dir, self.retry_s, self.min_free = config_dir, retry_s, min_free_bytes
        self.selftest, self.version = selftest, version
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        self._recover()

    # ---- the API ----
    def status(self) -> dict[str, Any]:
        return self.file.load().to_json()

    def submit(self, path: str | Path, source: str, force: bool = False,
               job: str | None = None, allow_downgrade: bool = False) -> dict[str, Any]:
        """Check the bundle and queue its install; UpdateError for a refusal."""
        bundle = Path(path)
        if source not in SOURCES:
            raise UpdateError(Reason.BAD_INPUT, f"source: {source!r} is not one of "
                              f"{', '.join(SOURCES)}")
        if bundle.exists() and not bundle.is_file():  # a device or a pipe would never end
            raise UpdateError(Reason.BAD_INPUT, f"path: {bundle} is not a regular file; give "
                              "the .raucb bundle itself")
        state = self._claim(bundle, source, job)
        try:
            info = self._check(bundle, allow_downgrade)
        except UpdateError as exc:
            self._end(Phase.FAILED, exc.reason, str(exc))
            raise
        state = self._change(version_to=info.version, build=info.build, message=(
            f"version {info.version} (build {info.build or '-'}) checked: signed, for "
            f"{info.compatible}; sha256 {info.hash}"))
        self._cancel = threading.Event()
        self._worker = threading.Thread(target=self._run, args=(bundle, force, self._cancel),
                                        name="update-install", daemon=True)
        self._worker.start()
        return state.to_json()

    def cancel(self) -> dict[str, Any]:
        """Drop a queued update (before INSTALLING); UpdateError BUSY once it installs."""
        with self._lock:
            state = self.file.load()
            if state.phase in (Phase.INSTALLING, Phase.REBOOTING, Phase.TRIAL):
                raise UpdateError(Reason.BUSY, f"the update to {state.version_to} is "
                                  f"{state.phase.lower()}: it cannot be cancelled now")
            if state.phase not in (Phase.CHECKING, Phase.WAITING):
                return state.to_json()
            self._cancel.set()
            self._wake.set()
            state = self._save(state, phase=Phase.IDLE, reason="", finished=self.clock.wall(),
                               message=f"cancelled: version {state.version_to or '?'} was "
                                       "not installed")
        if self._worker is not None:  # it stops at its next look (after a call to the core)
            self._worker.join(CANCEL_JOIN_S)
        return state.to_json()

    def wake(self) -> None:
        """Check a waiting update again now (the clock moved, a call ended)."""
        self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop waiting (a queued update is dropped, an install runs to its end)."""
        self._cancel.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout)

    # ---- the state ----
    def _save(self, state: UpdateState, **changes: Any) -> UpdateState:
        for name, value in changes.items():
            setattr(state, name, value)
        self.file.save(state)
        return state

    def _change(self, **changes: Any) -> UpdateState:
        with self._lock:
            state = self.file.load()
            old = state.phase
            state = self._save(state, **changes)
        if state.phase != old:
            log.info("update: %s -> %s: %s", old, state.phase, state.message)
        return state

    def _end(self, phase: Phase, reason: str, message: str) -> None:
        log.warning("update: -> %s (%s): %s", phase, reason, message)
        self._change(phase=phase, reason=str(reason), message=message,
                     finished=self.clock.wall())

    def _claim(self, bundle: Path, source: str, job: str | None) -> UpdateState:
        with self._lock:
            current = self.file.load()
            running = self._worker is not None and self._worker.is_alive()
            if current.phase in ACTIVE or running:
                raise UpdateError(Reason.BUSY, f"an update is already {current.phase.lower()} "
                                  f"({current.version_to or current.bundle}): wait for it to "
                                  "finish or cancel it")
            state = UpdateState(phase=Phase.CHECKING, source=source, bundle=str(bundle),
                                version_from=self.version(), job=job,
                                started=self.clock.wall(),
                                message="checking the bundle's signature, board and version")
            self.file.save(state)
        log.info("update: %s asks for %s", source, bundle)
        return state

    def _recover(self) -> None:
        """A state this process cannot be in at its start: the service was restarted (or
        the power cut) while checking, waiting or installing."""
        state = self.file.load()
        if state.phase in (Phase.CHECKING, Phase.WAITING):
            self._end(Phase.FAILED, Reason.INSTALL_FAILED, "the update service restarted "
                      f"before installing {state.version_to or state.bundle}; nothing was "
                      "installed: submit it again")
        elif state.phase == Phase.INSTALLING:
            self._end(Phase.FAILED, Reason.INSTALL_FAILED, f"the install of "
                      f"{state.version_to} was interrupted (restart or power cut); the "
                      f"running version {self.version()} is unchanged: install it again")

    # ---- the policy ----
    def _check(self, bundle: Path, allow_downgrade: bool) -> BundleInfo:
        info = self.rauc.info(bundle, self.keyring)
        if info.compatible != self.compatible:
            raise UpdateError(Reason.WRONG_BOARD, f"made for board {info.compatible or '?'}, "
                              f"this box is {self.compatible}: get the bundle built for "
                              f"{self.compatible}")
        running = self.version()
        order = compare(info.version, running)
        if order <= 0 and not allow_downgrade:
            what = ("is the version running" if order == 0
                    else f"is older than the running {running}")
            raise UpdateError(Reason.DOWNGRADE, f"version {info.version} {what}: installing it "
                              "needs allow_downgrade (`branchline update install "
                              "--allow-downgrade` or the console)")
        self._check_space()
        return info

    def _check_space(self) -> None:
        self.file.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        free = shutil.disk_usage(self.file.dir).free
        if free < self.min_free:
            raise UpdateError(Reason.NO_SPACE, f"the data partition has {free >> 20} MB free, "
                              f"the update needs {self.min_free >> 20} MB: delete old "
                              "recordings or captures and try again")

    def _hold(self) -> UpdateError | None:
        """Why the install must wait now (calls up, outside the window), or None."""
        try:
            calls = self.api_factory().status().get("calls") or []
        except ApiError as exc:
            return UpdateError(Reason.CALLS_UP, f"the core does not answer ({exc}), so a "
                               "call may be up: waiting (force installs now)")
        if calls:
            ports = ", ".join(str(c.get("port")) for c in calls)
            return UpdateError(Reason.CALLS_UP, f"{len(calls)} call(s) up on {ports}: "
                               f"waiting for them to end, checked every {self.retry_s:g} s "
                               "(force installs now)")
        window = self._window()
        if not in_window(window, time.localtime(self.clock.wall())):
            return UpdateError(Reason.OUTSIDE_WINDOW, f"outside the quiet window {window} "
                               "(update.window, local time): waiting for it (force installs "
                               "now)")
        return None

    def _window(self) -> str:
        try:
            doc = ConfigStore(self.config_dir or config_dir()).load()
        except ConfigError as exc:
            log.warning("update: the config cannot be read (%s); no quiet window", exc)
            return ""
        return str((doc.get("update") or {}).get("window") or "")

    # ---- the worker ----
    def _run(self, bundle: Path, force: bool, cancel: threading.Event) -> None:
        try:
            if self._wait(force, cancel):
                self._install(bundle)
        except Exception as exc:  # noqa: BLE001 - the state must say it, the service live on
            log.exception("update: the worker failed")
            self._end(Phase.FAILED, Reason.INSTALL_FAILED, f"internal error: {exc}")

    def _wait(self, force: bool, cancel: threading.Event) -> bool:
        """True once the install may start (and the state says INSTALLING)."""
        while True:
            hold = None if force else self._hold()
            with self._lock:
                if cancel.is_set():
                    return False
                state = self.file.load()
                if hold is None:
                    self._save(state, phase=Phase.INSTALLING, progress=0, reason="",
                               message=f"installing version {state.version_to}")
                    log.info("update: -> INSTALLING %s", state.version_to)
                    return True
                if (state.phase, state.message) != (Phase.WAITING, str(hold)):
                    self._save(state, phase=Phase.WAITING, reason=str(hold.reason),
                               message=str(hold))
                    log.info("update: WAITING: %s", hold)
            self._wake.wait(self.retry_s)
            self._wake.clear()

    def _install(self, bundle: Path) -> None:
        self._baseline()
        try:
            self.rauc.install(bundle, self._progress)
            self._verify_installed()
        except UpdateError as exc:
            self._end(Phase.FAILED, exc.reason, str(exc))
            return
        state = self._change(phase=Phase.REBOOTING, progress=100, message=(
            "installed; rebooting into it for a trial boot"))
        try:
            self.reboot(True)
        except Exception as exc:  # noqa: BLE001 - any failure of the reboot command
            self._end(Phase.FAILED, Reason.INSTALL_FAILED, f"version {state.version_to} is "
                      f"installed but the reboot failed ({exc}): install it again")

    def _verify_installed(self) -> None:
        """The slot RAUC just wrote holds the version we checked. RAUC checks the signature
        again as it installs, but not our policy: a bundle swapped for another signed one
        while it waited (an older release: a downgrade) is caught here, before any reboot;
        the slot is marked bad so the one-shot try is withdrawn."""
        state = self.file.load()
        written = [s for s in self.rauc.installed() if s.state != "booted"]
        got = {(s.version, s.build) for s in written}
        if len(written) == 1 and got == {(state.version_to, state.build)}:
            return
        with contextlib.suppress(UpdateError):
            self.rauc.mark_bad("other")
        seen = ", ".join(f"{s.name}: {s.version or '?'}" for s in written) or "no slot"
        raise UpdateError(Reason.CORRUPT, f"the bundle changed between its check and its "
                          f"install (checked {state.version_to}, installed {seen}); the "
                          "slot is marked bad and the box stays on this version: submit "
                          "the bundle again")

    def _progress(self, percent: int, step: str) -> None:
        with self._lock:
            state = self.file.load()
            percent = max(state.progress, min(100, percent))
            message = f"installing version {state.version_to}: {step}"
            if (percent, message) != (state.progress, state.message):
                self._save(state, progress=percent, message=message)

    def _baseline(self) -> None:
        """The live selftest's failing checks before the update: the trial boot is not
        held to checks that already failed (an FXO port with no line plugged in)."""
        if self.selftest is None:
            return
        try:
            rows = self.selftest(self.api_factory())
        except (ApiError, KeyError, TypeError) as exc:
            log.warning("update: no selftest baseline (%s)", exc)
            return
        failed = [f"{r.get('port') or ''} {r.get('check')}".strip()
                  for r in rows if not r.get("pass")]
        self._change(baseline=failed)
