"""What each control-API endpoint does with the running core: the HTTP thread hops onto
the reactor (`hop`, 503 when it does not answer in time) for everything that touches call
control, drivers or the twins; config store and CDR reads stay on the HTTP thread (file
and database work must not stall 20 ms media ticks). Saved config goes to
`core.apply_config`, which answers the settings that need a restart."""

from __future__ import annotations

import concurrent.futures
import difflib
import logging
import subprocess
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, TypeVar

from firmware.api.errors import ApiFailure, ErrorKind
from firmware.api.logbuffer import LogBuffer
from firmware.api.status import StatusDoc
from firmware.cdr import CdrStore
from firmware.core.config import ConfigStore, paths, validate
from firmware.core.config.store import render
from firmware.core.liveconfig import changed_paths
from firmware.diag.linetest import LineTests, num
from firmware.update.version import running_version

if TYPE_CHECKING:
    from firmware.core.runtime import Core

log = logging.getLogger(__name__)

HOP_TIMEOUT_S = 5.0
LINE_TEST_TIMEOUT_S = 120.0
T = TypeVar("T")
CONFLICT, NOT_FOUND, UNAVAILABLE = ErrorKind.CONFLICT, ErrorKind.NOT_FOUND, ErrorKind.UNAVAILABLE


class CoreAdapter:
    def __init__(self, core: Core, store: ConfigStore, logs: LogBuffer | None = None) -> None:
        self.core, self.store, self.logs = core, store, logs
        self.reactor = core.reactor
        self.hop_timeout = HOP_TIMEOUT_S
        self.config_lock = threading.Lock()
        self.diag = LineTests(core)
        self.status_doc = StatusDoc(core, running_version(), "sim" if self.sim else "hw")

    @property
    def sim(self) -> bool:
        return hasattr(self.core.board, "phones") and hasattr(self.core.board, "cos")

    def hop(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """fn(*args) on the reactor thread; its result (or exception) here."""
        timeout = timeout or self.hop_timeout
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the HTTP thread
                future.set_exception(exc)

        self.reactor.call_soon(run)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ApiFailure(UNAVAILABLE, f"the core did not answer within {timeout:g} s (busy "
                             "or stopped); try again, or check `branchline run`") from None

    def status(self) -> dict[str, Any]:
        return self.status_doc.build()

    # ---- the outbox (HTTP thread: a database read) ----
    def outbox(self) -> dict[str, Any] | None:
        """Store and forward: what waits for delivery (CdrStore.depth(detail=True));
        None when the core runs without a CDR store."""
        cdr = self.core.cdr
        if cdr is None:
            return None
        try:
            d = cdr.depth(detail=True)
        except Exception as exc:  # noqa: BLE001 - figures only (a store closing at stop)
            return {"pending": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
        return {"pending": int(d["pending"]), "bytes": int(d["bytes"]),
                "by_kind": {str(k): int(v) for k, v in d["by_kind"].items()},
                "oldest_age_s": num(d["oldest_age_s"]), "over_cap": bool(d["over_cap"]),
                "max_bytes": d["max_bytes"]}

    # ---- config (HTTP thread) ----
    def config(self) -> dict[str, Any]:
        with self.config_lock:
            return {"version": self.current_version(), "document": self.store.load()}

    def current_version(self) -> int | None:
        current = [v["version"] for v in self.store.versions() if v.get("current")]
        return current[-1] if current else None

    def kept(self, version: int, field: str) -> None:
        kept = [v["version"] for v in self.store.versions()]
        if version not in kept:
            raise ApiFailure(NOT_FOUND, f"version {version} is not kept; kept: "
                                        f"{', '.join(map(str, kept)) or 'none'}", field)

    def versions(self) -> list[dict[str, Any]]:
        with self.config_lock:
            return [{"version": v["version"], "time": float(v["time"]), "reason": v["reason"],
                     "current": bool(v.get("current"))} for v in self.store.versions()]

    @staticmethod
    def validate(doc: dict[str, Any]) -> dict[str, Any]:
        validate(doc)
        return {"ok": True, "detail": "the document is valid"}

    def put(self, doc: dict[str, Any], reason: str) -> dict[str, Any]:
        with self.config_lock:
            return self.save(validate(doc), reason or "replaced through the control API")

    def patch(self, settings: dict[str, Any], reason: str) -> dict[str, Any]:
        with self.config_lock:
            doc = self.store.load()
            for path, value in settings.items():
                if not all(path.split(".")):
                    raise ApiFailure(ErrorKind.BAD_INPUT, f"set.{path}: not a dotted setting "
                                     "path like lines.fxs1.flash_max_ms", f"set.{path}")
                paths.put(doc, path, value)
            text = ", ".join(f"{k} = {'(secret)' if _secret(k) else repr(v)}"
                             for k, v in settings.items())
            return self.save(validate(doc), reason or f"set {text}"[:200])

    def save(self, doc: dict[str, Any], reason: str) -> dict[str, Any]:
        changed = changed_paths(self.store.load(), doc)
        if not changed:
            version = self.current_version() or self.store.save(doc, reason)
            return {"version": version, "changed": [],
                    "restart_required": self.apply(doc, [], version)}
        version = self.store.save(doc, reason)
        log.info("config version %d saved through the control API: %s", version,
                 ", ".join(changed[:10]))
        return {"version": version, "changed": changed,
                "restart_required": self.apply(doc, changed, version)}

    def rollback(self, version: int | None) -> dict[str, Any]:
        with self.config_lock:
            if version is not None:
                self.kept(version, "version")
            elif len(self.store.versions()) < 2:
                raise ApiFailure(CONFLICT, "no earlier version to roll back to", "version")
            old = self.store.load()
            new_version = self.store.rollback(version)
            doc = self.store.load()
            changed = changed_paths(old, doc)
            log.info("config rolled back to version %s as version %d", version or "previous",
                     new_version)
            return {"version": new_version, "changed": changed,
                    "restart_required": self.apply(doc, changed, new_version)}

    def diff(self, against: int) -> dict[str, Any]:
        with self.config_lock:
            self.kept(against, "against")
            old = render(self.store.read_version(against)).decode().splitlines(keepends=True)
            new = render(self.store.load()).decode().splitlines(keepends=True)
        return {"diff": "".join(difflib.unified_diff(old, new, f"version {against}", "current"))}

    def apply_saved(self) -> list[str]:
        """Hand the store's live document to the core (the store was written by someone
        else, e.g. `branchline config set`); the paths that need a restart."""
        with self.config_lock:
            return self.apply(self.store.load(), [], self.current_version())

    def apply(self, doc: dict[str, Any], changed: list[str], version: int | None) -> list[str]:
        """Hand saved version `version` to the running core (firmware/core/liveconfig.py)."""
        try:
            return sorted(self.hop(self.core.apply_config, doc, version))
        except ApiFailure:  # the reactor did not answer: the core takes it at restart
            return changed

    # ---- CDRs and logs (HTTP thread) ----
    def cdr(self) -> CdrStore:
        if self.core.cdr is None:
            raise ApiFailure(UNAVAILABLE, "CDRs are off: the core runs without a data "
                                          "directory (start it with --data-dir)")
        return self.core.cdr

    def cdrs(self, offset: int = 0, limit: int = 50, **filters: Any) -> dict[str, Any]:
        cdr, text = self.cdr(), filters.pop("q", None)
        return {"total": cdr.count(text=text, **filters),
                "items": cdr.list(offset=offset, limit=limit, text=text, **filters)}

    def cdrs_csv(self, fileobj: IO[str], **filters: Any) -> int:
        text = filters.pop("q", None)
        return self.cdr().export_csv(fileobj, text=text, **filters)

    def log_page(self, offset: int = 0, limit: int = 50,
                 level: str | None = None) -> dict[str, Any]:
        if self.logs is None:
            return {"total": 0, "items": []}
        return self.logs.page(offset, limit, level)

    # ---- the box (reactor thread) ----
    def ping(self) -> dict[str, Any]:
        if self.core.no_cloud:
            raise ApiFailure(UNAVAILABLE, f"no cloud: {self.core.no_cloud}; set sip.edges to "
                                          "reach the cloud edges")
        pinger = getattr(self.core.bridge, "ping_now", None)
        if pinger is not None:
            pinger()
        return {"edges": self.status_doc.edges()}

    def reboot(self) -> dict[str, Any]:
        if self.sim:
            log.warning("reboot requested through the control API (sim: not rebooting)")
            return {"ok": True, "detail": "sim mode: reboot logged only"}
        log.warning("reboot requested through the control API: rebooting in 2 s")
        self.diag.later("box", "reboot", 2.0, _reboot_now)
        return {"ok": True, "detail": "rebooting in 2 s"}

    def restart(self, when: str) -> dict[str, Any]:
        """Stop the core cleanly (calls hung up, CDRs written) so `branchline run` exits 0
        and its supervisor starts it again; "idle" waits for no call to be up."""
        hook = self.core.restart_hook
        if hook is None:
            raise ApiFailure(CONFLICT, "this core cannot restart itself: only one started by "
                             "`branchline run` (under its supervisor) can", "when")
        calls = len(self.status_doc.build()["calls"])
        if when == "idle" and calls:
            raise ApiFailure(CONFLICT, f"{calls} call{'s are' if calls > 1 else ' is'} up: "
                             "try again when idle, or send when=now to hang up", "when")
        log.warning("restart requested through the control API (%s, %d call%s up)", when,
                    calls, "" if calls == 1 else "s")
        hook()
        return {"ok": True, "detail": f"restarting{f'; {calls} call(s) hung up' if calls else ''}"}

    # ---- the sim twins (reactor thread) ----
    def sim_phone(self, port: str, action: str, digits: str | None = None,
                  method: str = "dtmf") -> dict[str, Any]:
        phone = _twin(getattr(self.core.board, "phones", {}), port, "phone")  # sim only
        if action == "dial":
            return _dial(phone, port, digits, method)
        getattr(phone, action)()  # an action of the spec's enum: off_hook, on_hook, flash
        return {"ok": True, "detail": f"phone on {port}: {action.replace('_', ' ')}"}

    def sim_co(self, port: str, action: str, number: str | None = None,
               name: str | None = None, signal: str = "loop_drop") -> dict[str, Any]:
        co = _twin(getattr(self.core.board, "cos", {}), port, "central office")
        if action == "ring":
            from drivers.sim.central_office import DEFAULT_CALLER
            co.ring({**DEFAULT_CALLER, "number": number or DEFAULT_CALLER["number"],
                     "name": DEFAULT_CALLER["name"] if name is None else name})
        elif action == "stop_ring":
            co.stop_ring()
        else:
            co.disconnect(signal)
        return {"ok": True, "detail": f"central office on {port}: {action.replace('_', ' ')}"}

    def sim_headset(self, action: str) -> dict[str, Any]:
        headset = getattr(self.core.board, "headset", None)
        if headset is None:
            raise ApiFailure(CONFLICT, "no headset: set board.headset.enabled = true", "action")
        getattr(headset, action)()  # plug / unplug (the spec's enum)
        return {"ok": True, "detail": f"headset {action}ged"}


def _secret(path: str) -> bool:
    """A password: its value stays out of version reasons and logs."""
    return path.rsplit(".", 1)[-1].endswith("password")


def _dial(phone: Any, port: str, digits: str | None, method: str) -> dict[str, Any]:
    if not digits:
        raise ApiFailure(ErrorKind.BAD_INPUT, "digits: missing; dialling needs digits", "digits")
    if not phone.is_off_hook:
        raise ApiFailure(CONFLICT, f"the phone on {port} is on hook: send off_hook first",
                         "action")
    if method == "pulse":
        if not digits.isdigit():
            raise ApiFailure(ErrorKind.BAD_INPUT, f"digits: {digits!r} cannot be pulse-dialled;"
                             " a rotary dial has only 0-9", "digits")
        phone.dial_pulse(digits)
    else:
        phone.dial_dtmf(digits.upper())
    return {"ok": True, "detail": f"phone on {port} dials {digits} ({method})"}


def _twin(table: dict[str, Any], port: str, what: str) -> Any:
    if port not in table:
        raise ApiFailure(NOT_FOUND, f"no virtual {what} on {port!r}; ports: "
                                    f"{', '.join(table) or 'none'}", "port")
    return table[port]


def _reboot_now() -> None:
    subprocess.Popen(["systemctl", "reboot"], stdin=subprocess.DEVNULL)  # noqa: S603,S607
