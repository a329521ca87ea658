"""The agent process put together: the device identity, one MQTT Link and the parts
(shadow, telemetry, CTI events, records, commands, jobs, capture), driven from one main
loop that polls the link and ticks every part.

The agent never exits because the core or the broker is down: a core that does not answer
is waited for (backoff, one log line), an empty `cloud.broker` or a missing certificate
idles the agent with one line saying why, and every `config_applied` event of the core
makes it re-read `cloud.*` and reconnect when the link's settings changed. A stop request
sends the offline status ("stopped") and ends the parts within a few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from firmware.agent.capture import Capture
from firmware.agent.commands import Commands
from firmware.agent.events import EventPump
from firmware.agent.identity import DeviceIdentity
from firmware.agent.jobs import Jobs
from firmware.agent.link import Link, LinkSettings
from firmware.agent.records import Records
from firmware.agent.shadow import Shadow
from firmware.agent.telemetry import Telemetry
from firmware.api.client import ApiClient, ApiError, CoreDown
from firmware.cdr import CDR_FILE, CdrStore
from firmware.core.config.schema import CLOUD, Cloud
from firmware.core.config.typed import section
from foundation.errors import BranchlineError

log = logging.getLogger("firmware.agent")

TICK_S = 0.5  # every part's tick(now), about this often
CORE_BACKOFF_MIN_S, CORE_BACKOFF_MAX_S = 1.0, 10.0  # a local core: cheap to ask
IDENTITY_RECHECK_S = 2.0  # an idle agent looks for a newly installed certificate this often
CONFIG_RECHECK_S = 300.0  # GET /config even without a config_applied event (belt and braces)
STOP_BUDGET_S = 3.0  # the parts stop side by side within this; a late one is left behind
START_RETRY_S = 30.0  # parts that could not be built (a broken data dir) are tried again
LOG_CAPACITY = 2000  # the agent's own recent log lines kept for a collect_logs job


class Clock(Protocol):
    def now(self) -> float: ...
    def wall(self) -> float: ...


class Part(Protocol):
    """What the app asks of every part (each registers its own inbound handlers)."""

    def tick(self, now: float) -> None: ...
    def connected(self, up: bool) -> None: ...
    def stop(self) -> None: ...


class Phase(StrEnum):
    WAITING_CORE = "waiting for the core"
    IDLE = "idle"
    RUNNING = "running"
    STOPPED = "stopped"


def cloud_of(config: Mapping[str, Any]) -> Cloud:
    """The `cloud` section of GET /config's answer ({"version", "document"}) or of a bare
    document, its defaults filled in (a box that never had a broker has no section)."""
    doc = config.get("document", config)
    table = doc.get("cloud") if isinstance(doc, Mapping) else None
    values = {name: f.default for name, f in CLOUD.items()}
    if isinstance(table, Mapping):
        values.update((k, v) for k, v in table.items() if k in values)
    return section(Cloud, values)


def link_settings(cloud: Cloud, identity: DeviceIdentity, version: str) -> LinkSettings | str:
    """The link's settings, or why the agent must idle (one line naming the fix)."""
    if not cloud.broker:
        return ("cloud.broker is empty: the agent idles until it is set "
                "(branchline config set cloud.broker mqtts://HOST:8883)")
    files = identity.client_files()
    if files is None and not cloud.username:
        return ("no device certificate installed and no cloud.username: run `branchline agent "
                "identity`, have the CSR signed, then `branchline agent install-cert FILE`")
    ca = cloud.ca_file or str(identity.broker_ca() or "")
    cert, key = (str(files[0]), str(files[1])) if files else ("", "")
    try:
        return LinkSettings.from_url(
            cloud.broker, device=identity.device_id(), ca_file=ca, cert_file=cert,
            key_file=key, username=cloud.username, password=cloud.password,
            keepalive_s=cloud.keepalive_s, version=version)
    except (BranchlineError, ValueError) as exc:
        return f"cloud.broker {cloud.broker!r}: {exc}"


class CoreWatch:
    """A thread on the core's event stream for `config_applied` only: sets `changed` when
    the core (re)appears, goes or applied a config, so the main loop re-reads GET /config;
    a core that is down is asked again with backoff."""

    def __init__(self, api: ApiClient, *, backoff_min_s: float = CORE_BACKOFF_MIN_S,
                 backoff_max_s: float = CORE_BACKOFF_MAX_S) -> None:
        self.api = api
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self.changed = threading.Event()
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="agent-core-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        self._thread.join(0.5)  # a reader blocked on a quiet stream is a daemon: let it be

    def _run(self) -> None:
        delay = self.backoff_min_s
        while not self._stop.is_set():
            try:
                self._follow()
                delay = self.backoff_min_s
            except ApiError:
                self.changed.set()  # the main loop's GET /config says what is wrong
                self._stop.wait(delay)
                delay = min(self.backoff_max_s, delay * 2)

    def _follow(self) -> None:
        self._stream = self.api.events(kinds=("config_applied",))
        self.changed.set()
        for _event in self._stream:
            self.changed.set()
        self._stream = None
        if not self._stop.is_set():
            raise CoreDown("the core's event stream ended")


@dataclass
class Running:
    """The link and the parts while the agent is connected (or connecting)."""

    settings: LinkSettings
    cloud: Cloud
    link: Link
    store: CdrStore
    shadow: Shadow
    telemetry: Telemetry
    commands: Commands
    pump: EventPump
    parts: list[Part]

    def retune(self, cloud: Cloud) -> None:
        """The parts' cloud.* values, live (the link's own settings go by reconfigure)."""
        self.cloud = cloud
        self.shadow.confirm_s = cloud.confirm_s
        self.commands.max_age_s = cloud.command_max_age_s
        self.telemetry.retune(cloud.telemetry_s, cloud.telemetry_full_s)


class RecentLog(logging.Handler):
    """The agent's own recent log lines, for the collect_logs job (no secrets are logged)."""

    def __init__(self, capacity: int = LOG_CAPACITY) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[dict[str, Any]] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break the caller
            message = str(record.msg)
        self.lines.append({"time": round(record.created, 3), "level": record.levelname.lower(),
                           "source": record.name, "message": message})

    def snapshot(self) -> list[dict[str, Any]]:
        return list(self.lines)


class Agent:
    """See the module docstring. `run(should_stop)` returns 0 once should_stop() is true."""

    def __init__(self, api: ApiClient, data_dir: Path, clock: Clock, *, version: str = "",
                 sleep: Callable[[float], None] = time.sleep,
                 link_factory: Callable[[LinkSettings, Clock], Link] | None = None,
                 core_backoff_max_s: float = CORE_BACKOFF_MAX_S,
                 update_socket: str | None = None) -> None:
        self.api, self.data_dir, self.clock, self.version = api, Path(data_dir), clock, version
        self.update_socket = update_socket  # the update service's (None: its default)
        self.sleep = sleep
        self.link_factory = link_factory or (lambda s, c: Link(s, c))
        self.identity = DeviceIdentity(self.data_dir)
        self.agent_dir = self.data_dir / "agent"
        self.db_path = self.agent_dir / "agent.db"
        self.watch = CoreWatch(api, backoff_max_s=core_backoff_max_s)
        self.recent = RecentLog()
        self.phase: Phase | None = None
        self.running: Running | None = None
        self.idle_reason = ""
        self.cloud = cloud_of({})
        self._next_tick = 0.0
        self._next_identity = 0.0
        self._next_config = 0.0
        self._next_start = 0.0
        self._faults: set[tuple[str, str]] = set()

    # ---- the loop ----
    def run(self, should_stop: Callable[[], bool]) -> int:
        self.identity.ensure_dir()
        logging.getLogger().addHandler(self.recent)
        log.info("agent for device %s (data %s, core %s)", self.identity.device_id(),
                 self.agent_dir, self.api.where)
        self.watch.start()
        try:
            while not should_stop():
                self._step()
        finally:
            self.shutdown()
            logging.getLogger().removeHandler(self.recent)
        return 0

    def _step(self) -> None:
        if self.watch.changed.is_set() or self.clock.now() >= self._next_config:
            self.watch.changed.clear()
            self._reread()
        if self.running is not None:
            self._run_link(self.running)
            return
        if self.phase is Phase.IDLE and self.clock.now() >= self._next_identity:
            self._next_identity = self.clock.now() + IDENTITY_RECHECK_S
            self._apply(self.cloud)  # a certificate installed meanwhile
        self.sleep(TICK_S)

    def _run_link(self, run: Running) -> None:
        run.link.poll(TICK_S)
        now = self.clock.now()
        if now >= self._next_tick:
            self._next_tick = now + TICK_S
            for part in run.parts:
                self._guard(part, "tick", partial(part.tick, now))

    def _guard(self, part: object, what: str, fn: Callable[[], object]) -> None:
        """A part that raises is logged once per kind of fault; the loop goes on."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one part's bug must not stop the agent
            key = (f"{type(part).__name__}.{what}", type(exc).__name__)
            if key not in self._faults:
                self._faults.add(key)
                log.exception("%s failed (%s): the agent goes on", key[0], key[1])

    def _enter(self, phase: Phase, why: str) -> None:
        if phase is not self.phase or why != self.idle_reason:
            log.info("%s: %s", phase, why)
        self.phase, self.idle_reason = phase, why

    # ---- config ----
    def _reread(self) -> None:
        self._next_config = self.clock.now() + CONFIG_RECHECK_S
        try:
            config = self.api.config()
        except CoreDown as exc:  # the core watch says when it answers again
            if self.running is None and self.phase is not Phase.WAITING_CORE:
                self._enter(Phase.WAITING_CORE, f"{exc} (retrying with backoff up to "
                                                f"{self.watch.backoff_max_s:.0f} s)")
            return
        except ApiError as exc:
            log.warning("GET /config refused: %s", exc)
            return
        self._apply(cloud_of(config))

    def _apply(self, cloud: Cloud) -> None:
        self.cloud = cloud
        wanted = link_settings(cloud, self.identity, self.version)
        if isinstance(wanted, str):
            self._stop_running("disabled", wanted)
            self._enter(Phase.IDLE, wanted)
            return
        run = self.running
        if run is None:
            self._start(wanted, cloud)
            return
        if wanted != run.settings:
            log.info("cloud settings changed: reconnecting to %s:%d", wanted.host, wanted.port)
            run.link.reconfigure(wanted)
            run.settings = wanted
            self._enter(Phase.RUNNING, _describe(wanted))
        if cloud != run.cloud:
            run.retune(cloud)

    # ---- start and stop ----
    def _start(self, settings: LinkSettings, cloud: Cloud) -> None:
        if self.clock.now() < self._next_start:
            return
        link = self.link_factory(settings, self.clock)
        built: list[Part] = []
        try:
            run = self._parts(settings, cloud, link, built)
        except Exception as exc:  # noqa: BLE001 - a broken data dir must not end the agent
            self._stop_parts(built)
            self._next_start = self.clock.now() + START_RETRY_S
            self._enter(Phase.IDLE, f"the parts could not start ({type(exc).__name__}: {exc}); "
                                    f"trying again in {START_RETRY_S:.0f} s")
            return
        link.on_connect(self._connected)
        self.running = run
        self._enter(Phase.RUNNING, _describe(settings))
        link.start()
        run.pump.start()

    def _parts(self, settings: LinkSettings, cloud: Cloud, link: Link,
               built: list[Part]) -> Running:
        """Every part, each added to `built` as soon as it exists (stopped on a failure)."""
        api, clock, db = self.api, self.clock, self.db_path
        store = CdrStore(self.data_dir / CDR_FILE)
        try:
            shadow = _add(built, Shadow(link, api, clock, db, confirm_s=cloud.confirm_s))
            telemetry = _add(built, Telemetry(
                link, api, clock, store, telemetry_s=cloud.telemetry_s,
                full_s=cloud.telemetry_full_s, data_dir=self.data_dir,
                update_socket=self.update_socket))
            capture = _add(built, Capture(api, clock, store, self.agent_dir))
            records = _add(built, Records(link, store, clock))
            commands = _add(built, Commands(link, api, clock, db,
                                            max_age_s=cloud.command_max_age_s, capture=capture))
            jobs = _add(built, Jobs(link, api, clock, db, store, agent_log=self.recent.snapshot,
                                    update_socket=self.update_socket,
                                    fleet_ca=cloud.ca_file or None))
        except Exception:
            store.close()
            raise
        pump = EventPump(link, api, clock,
                         listeners=[shadow.on_event, capture.on_event, self._on_event])
        parts: list[Part] = [shadow, telemetry, pump, records, commands, jobs, capture]
        return Running(settings, cloud, link, store, shadow, telemetry, commands, pump, parts)

    def _on_event(self, event: dict[str, Any]) -> None:
        """On the pump's thread: a config the core applied may have changed cloud.*."""
        if event.get("kind") == "config_applied":
            self.watch.changed.set()

    def _connected(self, up: bool) -> None:
        run = self.running
        if run is None:
            return
        if up:
            log.info("connected to the broker as %s", run.settings.device)
        else:
            log.warning("broker connection down: %s (retrying with backoff)",
                        run.link.last_error or "no reason given")
        for part in run.parts:
            self._guard(part, "connected", partial(part.connected, up))

    def _stop_running(self, reason: str, why: str = "") -> None:
        """Parts first (a job's last status still goes out), then the offline status."""
        run, self.running = self.running, None
        if run is None:
            return
        self._stop_parts(run.parts)
        run.link.stop(reason)
        run.store.close()
        log.info("link stopped: offline (%s)%s", reason, f": {why}" if why else "")

    def _stop_parts(self, parts: list[Part]) -> None:
        """Every part's stop() side by side, bounded: a part still busy after the budget (a
        command's long request to the core) is named and left to die with the process."""
        threads = [threading.Thread(target=self._guard, args=(p, "stop", p.stop), daemon=True,
                                    name=f"agent-stop-{type(p).__name__}") for p in parts]
        for t in threads:
            t.start()
        deadline = time.monotonic() + STOP_BUDGET_S
        for part, t in zip(parts, threads, strict=True):
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("%s did not stop within %.0f s: left behind", type(part).__name__,
                            STOP_BUDGET_S)

    def shutdown(self) -> None:
        """Parts stopped, offline status "stopped" sent, the core watch ended."""
        if self.phase is Phase.STOPPED:
            return
        self._stop_running("stopped")
        self.watch.stop()
        self._enter(Phase.STOPPED, "the agent stopped")


P = TypeVar("P", bound=Part)


def _add(built: list[Part], part: P) -> P:
    built.append(part)
    return part


def _describe(s: LinkSettings) -> str:
    how = ("certificate" if s.cert_file else "username") + (", pinned CA" if s.ca_file else "")
    return f"device {s.device}, broker {'mqtts' if s.tls else 'mqtt'}://{s.host}:{s.port} ({how})"
