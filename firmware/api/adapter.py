"""What each control-API endpoint does with the running core.

`CoreAdapter(core, store, logs)` wraps a firmware.core.runtime.Core (attributes used:
.doc, .board, .reactor, .gateway, .cc, .bridge, .cdr, .no_cloud, status()) and the
ConfigStore the core was loaded from. Two kinds of work:

- On the reactor thread (everything that reads or drives call control, drivers or
  the twins): the HTTP thread calls `hop(fn, ...)`, which queues fn with
  reactor.call_soon and waits on a future with a timeout; a reactor that does not
  answer in time gives 503, never a hung request.
- On the HTTP thread (file and database work that must not stall 20 ms media ticks):
  config store reads and writes (serialised by a lock; the store's flock serialises
  against the CLI) and CDR reads, including the outbox depth in /status (CdrStore has
  its own lock; WAL lets them run beside the core's writes).

Config writes are validated by the store (ConfigError -> 422, nothing changes), then
handed to `core.apply_config(doc)`, which takes the settings a running core can take
(firmware/core/liveconfig.py); the answer lists the changed settings and which of them
need a restart (also shown in /status as box.restart_required).

Diagnostics refuse a port that is in a call (409), since call control owns its audio
then; a tone or DTMF echo on a phone that is merely off hook plays over its dial tone.
"""

from __future__ import annotations

import concurrent.futures
import difflib
import logging
import math
import subprocess
import threading
import time
from typing import Any

from firmware.core.config import ConfigError, ConfigStore, validate
from firmware.core.config.store import render
from firmware.core.liveconfig import changed_paths
from foundation.errors import BranchlineError
from foundation.reactor import NEVER

log = logging.getLogger(__name__)

HOP_TIMEOUT_S = 5.0
LINE_TEST_TIMEOUT_S = 120.0
IN_CALL = {"ringing", "calling", "connected", "offered", "seizing", "dialing", "in_use",
           "confirm"}
FXS_IN_CALL = IN_CALL - {"dialing", "confirm"}
RECENT = 10  # survivability transitions shown in /status
MEASURE_KEYS = ("line_voltage_v", "loop_current_ma", "battery_v", "hook", "polarity",
                "linefeed", "line_in_use", "line_side", "ringing", "ring", "alarm", "state")


class ApiFailure(BranchlineError):
    """An answer other than 200: HTTP status, one line, the field it is about."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.problems = status, field, problems


def _num(value: Any, digits: int = 1) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return round(x, digits) if math.isfinite(x) else None


def _firmware_version() -> str:
    try:
        from importlib.metadata import version
        return version("branchline")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source tree)
        return "0.1.0+src"


class CoreAdapter:
    """See the module docstring."""

    def __init__(self, core, store: ConfigStore, logs=None) -> None:
        self.core, self.store, self.logs = core, store, logs
        self.reactor = core.reactor
        self.started = time.monotonic()
        self.version = _firmware_version()
        self.hop_timeout = HOP_TIMEOUT_S
        self._config_lock = threading.Lock()
        self._diag_timers: dict[tuple[str, str], Any] = {}

    @property
    def sim(self) -> bool:
        return hasattr(self.core.board, "phones") and hasattr(self.core.board, "cos")

    # ---- the hop onto the reactor thread ----
    def hop(self, fn, *args, timeout: float | None = None):
        timeout = timeout or self.hop_timeout
        future: concurrent.futures.Future = concurrent.futures.Future()

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
            raise ApiFailure(503, f"the core did not answer within {timeout:g} s (busy or "
                                  "stopped); try again, or check `branchline run`") from None

    # ---- status (reactor thread) ----
    def status(self) -> dict:
        raw = self.core.status()
        ports = [self._port(name, p) for name, p in raw["ports"].items()]
        edges = self._edges()
        return {"box": self._box(), "wan": {"state": self._wan(edges), "edges": edges},
                "survivability": self._survivability(edges),
                "registrations": self._registrations(),
                "ports": ports, "calls": [self._call_row(p) for p in ports if p["call"]]}

    def _box(self) -> dict:
        return {"name": self.core.doc.get("system", {}).get("name", ""),
                "version": self.version,
                "uptime_s": round(time.monotonic() - self.started, 1),
                "mode": "sim" if self.sim else "hw",
                "restart_required": list(getattr(self.core, "restart_required", [])),
                "lifeline": self._lifeline()}

    def _lifeline(self) -> dict | None:
        """The power-fail relay (drivers/lifeline.py): where the lifeline phone is now."""
        relay = getattr(self.core.gateway, "lifeline", None)
        return relay.status() if relay is not None else None

    def _sip(self) -> dict:
        cc = self.core.cc
        return cc.sip_status if cc is not None else {"registrations": {}, "edges": {}}

    def _edges(self) -> list[dict]:
        if self.core.no_cloud:
            return []
        return [{"uri": str(uri), "ok": e.get("ok"), "rtt_ms": _num(e.get("rtt_ms"))}
                for uri, e in self._sip()["edges"].items()]

    @staticmethod
    def _wan(edges: list[dict]) -> str:
        if not edges:
            return "unknown"
        return "up" if any(e["ok"] for e in edges) else "down"

    def _survivability(self, edges: list[dict]) -> dict:
        """The state machine's figures (firmware/survive): state, since (epoch s),
        transitions, last_reason, the edge in use, the recent transitions (newest last)
        and what call continuity did (blips, callers in the local fallback, callbacks)."""
        fsm = self._fsm()
        if fsm is None:
            return {"state": self._state_from_edges(edges), "transitions": 0,
                    "recent": []}
        cont = self.core.cc.survive
        now, wall = self.reactor.now(), self.reactor.clock.wall()
        recent = [{"time": _num(wall - (now - t), 3), "from": old, "to": new,
                   "reason": str(why)} for t, old, new, why in list(fsm.history)[-RECENT:]]
        return {"state": fsm.state.name, "since": _num(fsm.since_wall, 3),
                "for_s": _num(now - fsm.since), "transitions": int(fsm.transitions),
                "last_reason": str(fsm.last_reason), "edge": fsm.edge_in_use,
                "recent": recent, "blips": len(cont.blips),
                "in_fallback": len(cont.fallbacks), "callbacks": len(cont.callbacks),
                "counters": {str(k): int(v) for k, v in cont.counters.items()}}

    def _fsm(self):
        """The survivability state machine of call control, or None (not started)."""
        cont = getattr(self.core.cc, "survive", None) if self.core.cc is not None else None
        return getattr(cont, "state", None)

    def _state_from_edges(self, edges: list[dict]) -> str:
        """Before call control runs: the first configured edge up, another one, none."""
        if not edges:
            return "unknown"
        up = [e["uri"] for e in edges if e["ok"]]
        if not up:
            return "SURVIVABLE"
        primary = (self.core.doc.get("sip", {}).get("edges") or [up[0]])[0]
        return "CLOUD_PRIMARY" if primary in up else "CLOUD_SECONDARY"

    # ---- the outbox (HTTP thread: a database read) ----
    def outbox(self) -> dict | None:
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
                "oldest_age_s": _num(d["oldest_age_s"]), "over_cap": bool(d["over_cap"]),
                "max_bytes": d["max_bytes"]}

    def _registrations(self) -> list[dict]:
        out = []
        for account, reg in self._sip()["registrations"].items():
            code = reg.get("code")
            out.append({"account": str(account), "ok": bool(reg.get("ok")),
                        "code": int(code) if isinstance(code, int) else None,
                        "reason": None if reg.get("reason") is None else str(reg["reason"])})
        return out

    def _port(self, name: str, p: dict) -> dict:
        call = self._call(name)
        failed = p.get("state") == "failed"
        return {"name": name, "kind": p.get("kind", ""), "state": p.get("state", ""),
                "hook": p.get("hook") if isinstance(p.get("hook"), str) else None,
                "ringing": bool(p.get("ring") or p.get("ringing")),
                "loop_current_ma": _num(p.get("loop_current_ma")),
                "line_voltage_v": _num(p.get("line_voltage_v")),
                "erle_db": _num(p.get("erle_db")) if call else None,
                "failed_reason": (p.get("reason") or "failed") if failed else None,
                "call": call}

    def _call(self, port: str) -> dict | None:
        cc = self.core.cc
        fsm = cc.ports.get(port) if cc is not None else None
        calls = fsm.calls() if fsm is not None else []
        if not calls:
            return None
        handle = calls[0]
        rec = getattr(cc, "_records", {}).get(handle) or {}
        row = self._cdr_row(rec.get("uuid"))
        direction = rec.get("direction") or row.get("direction") or "local"
        remote = row.get("ani") if direction == "inbound" else row.get("dnis")
        quality = self._quality(handle)
        return {"direction": direction, "remote": remote or "", "state": fsm.state.name.lower(),
                "since": _num(row.get("started"), 3), "codec": quality.get("codec"),
                "mos": quality.get("mos"),
                "media_mode": str(getattr(fsm.media, "media_mode", "voice"))}

    def _cdr_row(self, uuid: str | None) -> dict:
        if not uuid or self.core.cdr is None:
            return {}
        try:
            return self.core.cdr.get(uuid) or {}
        except BranchlineError:
            return {}

    def _quality(self, handle: int) -> dict:
        if handle < 0 or self.core.bridge is None:  # local calls carry no RTP
            return {}
        try:
            from firmware.quality import estimate
            q = dict(self.core.bridge.quality(handle))
            return {"codec": q.get("codec"), "mos": _num(estimate(q).get("mos"), 2)}
        except Exception:  # noqa: BLE001 - figures only; the status must still answer
            return {}

    def _call_row(self, port: dict) -> dict:
        call = port["call"]
        since = call.get("since")
        now = self.reactor.clock.wall()
        return {"port": port["name"], "direction": call["direction"], "remote": call["remote"],
                "state": call["state"],
                "duration_s": _num(now - since) if since is not None else None,
                "codec": call["codec"], "mos": call["mos"], "media_mode": call["media_mode"]}

    # ---- config (HTTP thread) ----
    def config(self) -> dict:
        with self._config_lock:
            return {"version": self._current_version(), "document": self.store.load()}

    def _current_version(self) -> int | None:
        current = [v["version"] for v in self.store.versions() if v.get("current")]
        return current[-1] if current else None

    def versions(self) -> list[dict]:
        with self._config_lock:
            return [{"version": v["version"], "time": float(v["time"]), "reason": v["reason"],
                     "current": bool(v.get("current"))} for v in self.store.versions()]

    @staticmethod
    def validate(doc: dict) -> dict:
        validate(doc)
        return {"ok": True, "detail": "the document is valid"}

    def put(self, doc: dict, reason: str) -> dict:
        with self._config_lock:
            return self._save(validate(doc), reason or "replaced through the control API")

    def patch(self, settings: dict, reason: str) -> dict:
        with self._config_lock:
            doc = self.store.load()
            for path, value in settings.items():
                table, key = _parent_table(doc, path)
                table[key] = value
            text = ", ".join(f"{k} = {v!r}" for k, v in settings.items())
            return self._save(validate(doc), reason or f"set {text}"[:200])

    def _save(self, doc: dict, reason: str) -> dict:
        old = self.store.load()
        changed = changed_paths(old, doc)
        if not changed:
            return {"version": self._current_version() or self.store.save(doc, reason),
                    "changed": [], "restart_required": self._apply(doc, [])}
        version = self.store.save(doc, reason)
        log.info("config version %d saved through the control API: %s", version,
                 ", ".join(changed[:10]))
        return {"version": version, "changed": changed,
                "restart_required": self._apply(doc, changed)}

    def rollback(self, version: int | None) -> dict:
        with self._config_lock:
            kept = [v["version"] for v in self.store.versions()]
            if version is not None and version not in kept:
                raise ApiFailure(404, f"version {version} is not kept; kept: "
                                      f"{', '.join(map(str, kept)) or 'none'}", "version")
            if version is None and len(kept) < 2:
                raise ApiFailure(409, "no earlier version to roll back to", "version")
            old = self.store.load()
            new_version = self.store.rollback(version)
            doc = self.store.load()
            changed = changed_paths(old, doc)
            log.info("config rolled back to version %s as version %d", version or "previous",
                     new_version)
            return {"version": new_version, "changed": changed,
                    "restart_required": self._apply(doc, changed)}

    def diff(self, against: int) -> dict:
        with self._config_lock:
            kept = [v["version"] for v in self.store.versions()]
            if against not in kept:
                raise ApiFailure(404, f"version {against} is not kept; kept: "
                                      f"{', '.join(map(str, kept)) or 'none'}", "against")
            old = render(self.store.read_version(against)).decode().splitlines(keepends=True)
            new = render(self.store.load()).decode().splitlines(keepends=True)
        text = "".join(difflib.unified_diff(old, new, f"version {against}", "current"))
        return {"diff": text}

    def apply_saved(self) -> list[str]:
        """Hand the store's live document to the core (the store was written by someone
        else, e.g. `branchline config set`); the paths that need a restart."""
        with self._config_lock:
            return self._apply(self.store.load(), [])

    def _apply(self, doc: dict, changed: list[str]) -> list[str]:
        """Hand the saved document to the running core, which takes the settings it can
        at once (firmware/core/liveconfig.py); the rest need a restart."""
        try:
            return sorted(self.hop(self.core.apply_config, doc))
        except ApiFailure:  # the reactor did not answer: the core takes it at restart
            return changed

    # ---- CDRs and logs (HTTP thread) ----
    def _cdr(self):
        cdr = self.core.cdr
        if cdr is None:
            raise ApiFailure(503, "CDRs are off: the core runs without a data directory "
                                  "(start it with --data-dir)")
        return cdr

    def cdrs(self, offset: int = 0, limit: int = 50, **filters: Any) -> dict:
        cdr = self._cdr()
        text = filters.pop("q", None)
        return {"total": cdr.count(text=text, **filters),
                "items": cdr.list(offset=offset, limit=limit, text=text, **filters)}

    def cdrs_csv(self, fileobj, **filters: Any) -> int:
        text = filters.pop("q", None)
        return self._cdr().export_csv(fileobj, text=text, **filters)

    def log_page(self, offset: int = 0, limit: int = 50, level: str | None = None) -> dict:
        if self.logs is None:
            return {"total": 0, "items": []}
        return self.logs.page(offset, limit, level)

    # ---- diagnostics (reactor thread) ----
    def _line(self, port: str, kinds: tuple[str, ...], what: str):
        ports = self.core.gateway.ports
        if port not in ports:
            raise ApiFailure(404, f"port {port!r} does not exist; ports: "
                                  f"{', '.join(ports) or 'none'}", "port")
        gp = ports[port]
        if gp.kind not in kinds:
            raise ApiFailure(409, f"{port} is an {gp.kind.upper()} port: {what} works on "
                                  f"{' and '.join(k.upper() for k in kinds)} ports", "port")
        if gp.state == "failed":
            raise ApiFailure(409, f"{port}: the chip failed ({gp.reason or 'no reason'}); "
                                  "fix the card and restart the core", "port")
        return gp

    def _idle_fsm(self, port: str):
        cc = self.core.cc
        fsm = cc.ports.get(port) if cc is not None else None
        if fsm is None:
            raise ApiFailure(503, f"{port}: call control is not running on this port")
        state = fsm.state.name.lower()
        if state in (FXS_IN_CALL if fsm.kind == "fxs" else IN_CALL):
            raise ApiFailure(409, f"{port} is busy ({state}); try again when the call ends",
                             "port")
        return fsm

    def _later(self, port: str, what: str, seconds: float, fn) -> None:
        key = (port, what)
        old = self._diag_timers.pop(key, None)
        if old is not None:
            self.reactor.unregister_timer(old)

        def fire(_eventtime: float) -> float:
            self._diag_timers.pop(key, None)
            try:
                fn()
            except Exception:  # noqa: BLE001 - a test's end must not stop the reactor
                log.exception("%s: ending the %s test failed", port, what)
            return NEVER

        self._diag_timers[key] = self.reactor.register_timer(fire, self.reactor.now() + seconds)

    def ring(self, port: str, seconds: float) -> dict:
        self._line(port, ("fxs",), "ringing a phone")
        self._idle_fsm(port)
        driver = self.core.board.drivers[port]
        if not driver.ring():
            raise ApiFailure(409, f"{port}: the phone is off hook; hang it up, then ring it",
                             "port")
        self._later(port, "ring", seconds, driver.stop_ring)
        log.info("%s: ringing for %g s (diagnostics)", port, seconds)
        return {"ok": True, "detail": f"ringing {port} for {seconds:g} s"}

    def tone(self, port: str, tone: str, seconds: float) -> dict:
        self._line(port, ("fxs", "fxo"), "a tone")
        media = self._idle_fsm(port).media
        if tone not in media.plan.tones:
            raise ApiFailure(409, f"{port}: the {media.plan.code} plan has no {tone} tone; "
                                  f"tones: {', '.join(media.plan.tones)}", "tone")
        before = media.tone_name
        media.tone(tone)

        def restore() -> None:
            if media.tone_name == tone:
                media.tone(before or None)

        self._later(port, "tone", seconds, restore)
        log.info("%s: playing %s tone for %g s (diagnostics)", port, tone, seconds)
        return {"ok": True, "detail": f"playing {tone} tone on {port} for {seconds:g} s"}

    def dtmf_echo(self, port: str, seconds: float) -> dict:
        self._line(port, ("fxs", "fxo"), "the DTMF echo test")
        media = self._idle_fsm(port).media
        from cext.dtmf import DtmfDetector, dtmf_samples

        detector = DtmfDetector()

        def tap(frame) -> None:
            if media.playing:
                return  # our own playback must not be heard as a new digit
            for digit, _start, _end in detector.process(frame):
                log.info("%s: DTMF echo test heard %s", port, digit)
                media.play(dtmf_samples(digit))

        media.taps.append(tap)
        self._later(port, "dtmf-echo", seconds,
                    lambda: tap in media.taps and media.taps.remove(tap))
        return {"ok": True, "detail": f"digits heard on {port} are played back for "
                                      f"{seconds:g} s"}

    def measure(self, port: str) -> dict:
        gp = self._line(port, ("fxs", "fxo"), "measuring")
        readout = dict(self.core.board.drivers[port].status())
        out: dict[str, Any] = {"port": port, "kind": gp.kind}
        for key in MEASURE_KEYS:
            value = readout.get(key)
            if isinstance(value, bool | str) or value is None:
                out[key] = value
            else:
                out[key] = _num(value)
        out.setdefault("line_voltage_v", None)
        out.setdefault("loop_current_ma", None)
        return out

    def line_test(self, port: str, test_call_s: float = 0.0) -> dict:
        self._line(port, ("fxs", "fxo"), "the line test")
        try:
            from firmware.diag.commission import commission_port
        except ImportError:
            raise ApiFailure(503, "line commissioning is not available in this firmware "
                                  "(firmware.diag.commission is missing)") from None
        self._idle_fsm(port)
        log.info("%s: line test started through the control API", port)
        return dict(commission_port(self.core, port, test_call_s=test_call_s))

    def ping(self) -> dict:
        if self.core.no_cloud:
            raise ApiFailure(503, f"no cloud: {self.core.no_cloud}; set sip.edges to reach "
                                  "the cloud edges")
        pinger = getattr(self.core.bridge, "ping_now", None)
        if pinger is not None:
            pinger()
        return {"edges": self._edges()}

    def reboot(self) -> dict:
        if self.sim:
            log.warning("reboot requested through the control API (sim: not rebooting)")
            return {"ok": True, "detail": "sim mode: reboot logged only"}
        log.warning("reboot requested through the control API: rebooting in 2 s")
        self._later("box", "reboot", 2.0, _reboot_now)
        return {"ok": True, "detail": "rebooting in 2 s"}

    # ---- the sim twins (reactor thread) ----
    def sim_phone(self, port: str, action: str, digits: str | None = None,
                  method: str = "dtmf") -> dict:
        phone = self._twin(self.core.board.phones, port, "phone")
        if action == "dial":
            return self._dial(phone, port, digits, method)
        if action == "flash":
            phone.flash()
        else:
            getattr(phone, action)()
        return {"ok": True, "detail": f"phone on {port}: {action.replace('_', ' ')}"}

    @staticmethod
    def _dial(phone, port: str, digits: str | None, method: str) -> dict:
        if not digits:
            raise ApiFailure(400, "digits: missing; dialling needs digits", "digits")
        if not phone.is_off_hook:
            raise ApiFailure(409, f"the phone on {port} is on hook: send off_hook first", "action")
        if method == "pulse":
            if not digits.isdigit():
                raise ApiFailure(400, f"digits: {digits!r} cannot be pulse-dialled; a rotary "
                                      "dial has only 0-9", "digits")
            phone.dial_pulse(digits)
        else:
            phone.dial_dtmf(digits.upper())
        return {"ok": True, "detail": f"phone on {port} dials {digits} ({method})"}

    def sim_co(self, port: str, action: str, number: str | None = None,
               name: str | None = None, signal: str = "loop_drop") -> dict:
        co = self._twin(self.core.board.cos, port, "central office")
        if action == "ring":
            from drivers.sim.central_office import DEFAULT_CALLER
            caller = {**DEFAULT_CALLER, "number": number or DEFAULT_CALLER["number"],
                      "name": DEFAULT_CALLER["name"] if name is None else name}
            co.ring(caller)
        elif action == "stop_ring":
            co.stop_ring()
        else:
            co.disconnect(signal)
        return {"ok": True, "detail": f"central office on {port}: {action.replace('_', ' ')}"}

    def sim_headset(self, action: str) -> dict:
        headset = getattr(self.core.board, "headset", None)
        if headset is None:
            raise ApiFailure(409, "no headset: set board.headset.enabled = true", "action")
        getattr(headset, action)()
        return {"ok": True, "detail": f"headset {action}ged"}

    @staticmethod
    def _twin(table: dict, port: str, what: str):
        if port not in table:
            raise ApiFailure(404, f"no virtual {what} on {port!r}; ports: "
                                  f"{', '.join(table) or 'none'}", "port")
        return table[port]


def _parent_table(doc: dict, dotted: str) -> tuple[dict, str]:
    """The table holding the last part of a dotted path (created on the way)."""
    parts = dotted.split(".")
    if not all(parts):
        raise ApiFailure(400, f"set.{dotted}: not a dotted setting path like "
                              "lines.fxs1.flash_max_ms", f"set.{dotted}")
    table = doc
    for depth, part in enumerate(parts[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            where = ".".join(parts[:depth + 1])
            raise ConfigError([f"{dotted}: {where} is a setting, not a table"])
    return table, parts[-1]


def _reboot_now() -> None:
    subprocess.Popen(["systemctl", "reboot"], stdin=subprocess.DEVNULL)  # noqa: S603,S607
