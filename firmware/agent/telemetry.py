"""Telemetry: every `telemetry_s` the box's state as named parameters, sent only when they
moved (deadband), so an idle box costs the fleet broker little; a full snapshot every
`telemetry_full_s` and after every (re)connect.

Names follow the Broadband Forum's data models so a TR-369 (USP) adapter can map them
one to one: TR-181 Issue 2 (Device:2, `Device.DeviceInfo.*`, `Device.Services.
StorageService.*`) and TR-104 Issue 2 (VoiceService:2, `Device.Services.VoiceService.1.
SIP.Client.{i}`, `.POTS.FXS.{i}` / `.POTS.FXO.{i}`, `.CallControl.Line.{i}`); what the
models lack is a vendor extension (TR-106's `X_<vendor>_` rule): `X_BRANCHLINE_`.
CPU from /proc/stat deltas, memory from /proc/meminfo, temperature from the first
thermal zone, disk from statvfs of the data directory; the firmware update's phase and
outcome (`Device.DeviceInfo.X_BRANCHLINE_Update.*`) from the update service's status
(firmware.update.client, a short time-out: a service that does not answer leaves them
out); the rest from GET /status.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from firmware.agent.protocol import Topic
from firmware.api.client import ApiError
from firmware.update.client import UpdateClient, UpdateError

log = logging.getLogger(__name__)

Value = str | int | float | bool | None
VS = "Device.Services.VoiceService.1."
INFO = "Device.DeviceInfo."
CPU = INFO + "ProcessStatus.CPUUsage"
MEM_TOTAL, MEM_FREE = INFO + "MemoryStatus.Total", INFO + "MemoryStatus.Free"
TEMPERATURE = INFO + "TemperatureStatus.TemperatureSensor.1.Value"
UPTIME, SOFTWARE = INFO + "UpTime", INFO + "SoftwareVersion"
VOLUME = "Device.Services.StorageService.1.LogicalVolume.1."
CAPACITY, USED = VOLUME + "Capacity", VOLUME + "UsedSpace"
WAN = "Device.X_BRANCHLINE_WAN."
SURVIVE = VS + "X_BRANCHLINE_Survivability."
OUTBOX = "Device.X_BRANCHLINE_Outbox."
UPDATE = INFO + "X_BRANCHLINE_Update."
UPDATE_PHASE, UPDATE_PROGRESS = UPDATE + "Phase", UPDATE + "Progress"
UPDATE_OUTCOME, UPDATE_REASON = UPDATE + "Outcome", UPDATE + "Reason"
UPDATE_VERSION = UPDATE + "Version"
UPDATE_TIMEOUT_S = 2.0  # the update service answers from a file; a sample must not wait
MB = 2**20


class Band(StrEnum):
    """How a parameter counts as changed."""

    STATE = "state"  # any change
    ABSOLUTE = "absolute"  # moved by more than `amount` (its unit)
    PERCENT_OF = "percent_of"  # moved by more than `amount` % of parameter `of`
    NEVER = "never"  # rides along with others, never sent on its own


@dataclass(frozen=True)
class Deadband:
    band: Band
    amount: float = 0.0
    of: str = ""


DEADBANDS: dict[str, Deadband] = {
    CPU: Deadband(Band.ABSOLUTE, 10.0),  # percentage points
    MEM_FREE: Deadband(Band.PERCENT_OF, 5.0, MEM_TOTAL),
    TEMPERATURE: Deadband(Band.ABSOLUTE, 2.0),  # degrees Celsius
    USED: Deadband(Band.PERCENT_OF, 1.0, CAPACITY),
    UPTIME: Deadband(Band.NEVER),
    UPDATE_PROGRESS: Deadband(Band.ABSOLUTE, 10.0),  # percentage points
}
STATE = Deadband(Band.STATE)


def moved(name: str, old: Value, new: Value, params: Mapping[str, Value]) -> bool:
    """True when `new` differs from the last sent `old` by more than name's deadband."""
    rule = DEADBANDS.get(name, STATE)
    if rule.band is Band.NEVER:
        return False
    a, b = _num(old), _num(new)
    if rule.band is Band.STATE or a is None or b is None:
        return old != new
    limit = rule.amount
    if rule.band is Band.PERCENT_OF:
        base = _num(params.get(rule.of))
        limit = rule.amount / 100.0 * base if base is not None else 0.0
    return abs(b - a) > limit


def _num(v: Value) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


# ---- the box's own figures (/proc, /sys, statvfs) ------------------------------------

class SystemProbe:
    """CPU, memory, temperature and disk; `proc` and `thermal` are where to read them."""

    def __init__(self, data_dir: Path, *, proc: Path = Path("/proc"),
                 thermal: Path = Path("/sys/class/thermal/thermal_zone0/temp")) -> None:
        self.data_dir, self.proc, self.thermal = Path(data_dir), Path(proc), Path(thermal)
        self._cpu: tuple[int, int] | None = None
        self._usage: int | None = None

    def sample(self) -> dict[str, Value]:
        return {CPU: self.cpu_usage(), **self.memory(), TEMPERATURE: self.temperature(),
                **self.disk()}

    def cpu_usage(self) -> int | None:
        """Busy % since the last sample (since boot on the first)."""
        fields = _read(self.proc / "stat").split("\n", 1)[0].split()
        if len(fields) < 5 or fields[0] != "cpu":
            return None
        ticks = [int(x) for x in fields[1:] if x.isdigit()]
        total, idle = sum(ticks), ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        last, self._cpu = self._cpu, (total, idle)
        if last is not None:
            total, idle = total - last[0], idle - last[1]
        if total > 0:  # no tick since the last sample: the last figure stands
            self._usage = round(100.0 * (total - idle) / total)
        return self._usage

    def memory(self) -> dict[str, Value]:
        """Total and available RAM in KiB (TR-181 MemoryStatus)."""
        info = {}
        for line in _read(self.proc / "meminfo").splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                info[name] = int(parts[0])
        free = info.get("MemAvailable", info.get("MemFree"))
        return {MEM_TOTAL: info.get("MemTotal"), MEM_FREE: free}

    def temperature(self) -> int | None:
        """The SoC's temperature in whole degrees Celsius; None without a thermal zone."""
        text = _read(self.thermal).strip()
        try:
            return round(int(text) / 1000.0)
        except ValueError:
            return None

    def disk(self) -> dict[str, Value]:
        """Capacity and used space of the data directory's file system, in MB (MiB)."""
        try:
            st = os.statvfs(self.data_dir if self.data_dir.exists() else self.data_dir.parent)
        except OSError:
            return {CAPACITY: None, USED: None}
        total, free = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize
        return {CAPACITY: total // MB, USED: (total - free) // MB}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# ---- GET /status as TR-104 / TR-181 parameters ----------------------------------------

POTS_STATUS = {"failed": "Error"}  # TR-104 POTS.FXS/FXO.{i}.Status; else "Up"
CALL_STATUS = {  # TR-104 CallControl.Line.{i}.CallStatus from the port FSM's state
    "idle": "Idle", "dialtone": "Dialing", "dialing": "Dialing", "seizing": "Dialing",
    "calling": "Delivered", "ringing": "Alerting", "offered": "Alerting",
    "connected": "Connected", "in_use": "Connected", "busy": "Disconnected",
    "reorder": "Disconnected", "confirm": "Connected", "failed": "Disconnected",
}


def status_params(status: Mapping[str, Any]) -> dict[str, Value]:
    """The parameters GET /status gives (see the module docstring for the models)."""
    box = status.get("box") or {}
    out: dict[str, Value] = {UPTIME: _int(box.get("uptime_s")),
                             SOFTWARE: _str(box.get("version")),
                             INFO + "X_BRANCHLINE_RestartRequired":
                                 len(box.get("restart_required") or [])}
    lifeline = box.get("lifeline") or {}
    out[VS + "X_BRANCHLINE_Lifeline.Relay"] = _str(lifeline.get("relay"))
    out.update(_ports(status.get("ports") or []))
    out.update(_registrations(status.get("registrations") or []))
    out.update(_wan(status.get("wan") or {}))
    surv = status.get("survivability") or {}
    out[SURVIVE + "State"] = _str(surv.get("state"))
    out[SURVIVE + "InFallback"] = _int(surv.get("in_fallback"))
    out[SURVIVE + "Callbacks"] = _int(surv.get("callbacks"))
    outbox = status.get("outbox") or {}
    out[OUTBOX + "OverCap"] = bool(outbox.get("over_cap", False))
    return out


def _ports(ports: list[Mapping[str, Any]]) -> dict[str, Value]:
    """POTS.FXS.{i} / POTS.FXO.{i} (by kind, in order), a CallControl.Line.{i} for each."""
    out: dict[str, Value] = {}
    count = {"fxs": 0, "fxo": 0}
    line = 0
    for p in ports:
        kind = p.get("kind")
        if kind == "headset":
            out[VS + "X_BRANCHLINE_Headset.Status"] = _str(p.get("state"))
            continue
        if kind not in count:
            continue
        count[kind] += 1
        line += 1
        pots = f"{VS}POTS.{kind.upper()}.{count[kind]}."
        out[pots + "Name"] = _str(p.get("name"))
        out[pots + "Status"] = POTS_STATUS.get(str(p.get("state")), "Up")
        out[pots + "X_BRANCHLINE_State"] = _str(p.get("state"))
        call = p.get("call") or {}
        state = str(call.get("state") or "idle")
        out[f"{VS}CallControl.Line.{line}.CallStatus"] = CALL_STATUS.get(state, "Connected")
    return out


def _registrations(regs: list[Mapping[str, Any]]) -> dict[str, Value]:
    """SIP.Client.{i}: TR-104 Status (Up, Registering, Error_Registration) and the URI."""
    out: dict[str, Value] = {}
    for i, reg in enumerate(regs, 1):
        client = f"{VS}SIP.Client.{i}."
        code = reg.get("code")
        status = "Up" if reg.get("ok") else ("Registering" if code is None
                                             else "Error_Registration")
        out[client + "Status"] = status
        out[client + "RegisterURI"] = _str(reg.get("account"))
        out[client + "X_BRANCHLINE_LastCode"] = code if isinstance(code, int) else None
    return out


def _wan(wan: Mapping[str, Any]) -> dict[str, Value]:
    edges = wan.get("edges") or []
    return {WAN + "Status": _str(wan.get("state")),
            WAN + "EdgesUp": sum(1 for e in edges if e.get("ok")),
            WAN + "Edges": len(edges)}


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return int(v)


# ---- the update service's status ------------------------------------------------------

class UpdateOutcome(StrEnum):
    """The update phases that end an update: its outcome."""

    GOOD = "GOOD"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"


def update_params(st: Mapping[str, Any]) -> dict[str, Value]:
    """X_BRANCHLINE_Update: Phase (IDLE, CHECKING, WAITING, INSTALLING, REBOOTING, TRIAL,
    GOOD, ROLLED_BACK, FAILED), Progress (0..100), Outcome of the update the state holds
    (GOOD, ROLLED_BACK or FAILED once it ended; None while one runs or none has), Reason
    (why it was refused, failed or rolled back) and Version (the version it goes to)."""
    phase = _str(st.get("phase"))
    return {UPDATE_PHASE: phase, UPDATE_PROGRESS: _int(st.get("progress")),
            UPDATE_OUTCOME: phase if phase in set(UpdateOutcome) else None,
            UPDATE_REASON: _str(st.get("reason") or None),
            UPDATE_VERSION: _str(st.get("version_to") or None)}


# ---- the part --------------------------------------------------------------------------

class Clock(Protocol):
    def now(self) -> float: ...
    def wall(self) -> float: ...


class Publisher(Protocol):
    def publish(self, t: Topic, payload: Mapping[str, Any]) -> object: ...


class StatusSource(Protocol):
    def status(self) -> dict: ...


class UpdateSource(Protocol):
    def status(self) -> dict[str, Any]: ...


class OutboxStore(Protocol):
    path: Path

    def depth(self, detail: bool = False) -> Any: ...


class Telemetry:
    """See the module docstring. tick() starts a sample on a worker thread when one is due
    (GET /status must not hold the main loop); `background=False` samples inline (tests).
    `update_socket`: the update service's (None: its default, $BRANCHLINE_RUN/update.sock)."""

    def __init__(self, link: Publisher, api: StatusSource, clock: Clock,
                 store: OutboxStore | None = None, *, telemetry_s: float = 60.0,
                 full_s: float = 3600.0, data_dir: Path | None = None,
                 probe: SystemProbe | None = None, background: bool = True,
                 update_socket: str | None = None) -> None:
        self.link, self.api, self.clock, self.store = link, api, clock, store
        self.update: UpdateSource = UpdateClient(update_socket, timeout=UPDATE_TIMEOUT_S)
        self.interval, self.full_s = float(telemetry_s), float(full_s)
        where = data_dir or (store.path.parent if store is not None else Path("/"))
        self.probe = probe or SystemProbe(where)
        self.background = background
        self.sent: dict[str, Value] = {}  # the value the cloud last got, per parameter
        self.seq = 0
        self.up = False
        self.next_due = 0.0
        self.next_full = 0.0  # 0: a full snapshot is due
        self.bytes_sent = 0
        self._busy = threading.Lock()
        self._worker: threading.Thread | None = None
        self._status_fault = ""
        self._update_fault = ""

    def retune(self, telemetry_s: float, full_s: float) -> None:
        """New cadences (cloud.telemetry_s, cloud.telemetry_full_s), taken at once."""
        if (self.interval, self.full_s) != (float(telemetry_s), float(full_s)):
            self.interval, self.full_s = float(telemetry_s), float(full_s)
            self.next_due = 0.0

    # ---- Part ----
    def connected(self, up: bool) -> None:
        self.up = up
        if up:  # the platform may have lost what we sent: a full snapshot now
            self.next_full = self.next_due = 0.0

    def tick(self, now: float) -> None:
        if not self.up or now < self.next_due:
            return
        self.next_due = now + self.interval
        if not self.background:
            self.run_once(now)
            return
        if self._worker is not None and self._worker.is_alive():
            return  # the last sample is still waiting for the core
        self._worker = threading.Thread(target=self.run_once, args=(now,),
                                        name="agent-telemetry", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        worker = self._worker
        if worker is not None:
            worker.join(2.0)

    # ---- one round ----
    def run_once(self, now: float) -> dict[str, Any] | None:
        """Sample, and publish what moved (or everything when a full snapshot is due);
        the payload sent, None when nothing had moved."""
        with self._busy:
            params = self.sample()
            full = now >= self.next_full
            if full:
                self.next_full = now + self.full_s
                out = dict(params)
            else:
                out = self.changes(params)
                if not out:
                    return None
                out[UPTIME] = params.get(UPTIME)
            return self._send(out, full)

    def sample(self) -> dict[str, Value]:
        params = self.probe.sample()
        params.update(self._status())
        params.update(self._update())
        if self.store is not None:
            params[OUTBOX + "Pending"] = _safe_depth(self.store)
        return params

    def changes(self, params: Mapping[str, Value]) -> dict[str, Value]:
        return {name: value for name, value in params.items()
                if name not in self.sent or moved(name, self.sent[name], value, params)}

    def _status(self) -> dict[str, Value]:
        try:
            params = status_params(self.api.status())
        except ApiError as exc:
            if str(exc) != self._status_fault:
                log.warning("telemetry: GET /status failed (%s); sending the box's own "
                            "figures only", exc)
            self._status_fault = str(exc)
            return {}
        self._status_fault = ""
        return params

    def _update(self) -> dict[str, Value]:
        """The update's parameters; none when the update service does not answer."""
        try:
            params = update_params(self.update.status())
        except UpdateError as exc:
            if str(exc) != self._update_fault:
                log.info("telemetry: no update figures (%s)", exc)
            self._update_fault = str(exc)
            return {}
        self._update_fault = ""
        return params

    def _send(self, params: dict[str, Value], full: bool) -> dict[str, Any]:
        self.seq += 1
        payload = {"time": round(self.clock.wall(), 3), "seq": self.seq, "full": full,
                   "params": params}
        self.link.publish(Topic.TELEMETRY, payload)
        self.sent.update(params)
        return payload


def _safe_depth(store: OutboxStore) -> int | None:
    try:
        return int(store.depth())
    except Exception:  # noqa: BLE001 - a figure only; the outbox may be closing
        return None
