"""The gateway core assembled and started in order: the chips (Gateway), the CDR store
(none without a data_dir, or when it cannot be opened), the SIP bridge (NoCloudBridge when
there is no usable cloud) and call control over all of it; stopped in reverse, each step
guarded. Its `status()` is the status document; `events` is call control's event bus."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.board import Board
from firmware.callctl.controller import CallControl
from firmware.cdr import CDR_FILE, CdrError, CdrStore
from firmware.core import liveconfig
from firmware.core.config import Config
from firmware.events import CoreEvent, EventBus, EventKind
from firmware.gateway import Gateway, port_document
from firmware.sip.api import Bridge, SipEvent
from firmware.sip.nocloud import NoCloudBridge
from firmware.survive import recording
from foundation.errors import BranchlineError
from foundation.reactor import Reactor

log = logging.getLogger(__name__)



class _BridgeTap:
    """The bridge as call control sees it: started by the Core (which picks the fallback
    when it fails), every event shown to the Core's listeners first, kept until cc starts."""

    def __init__(self, inner: Bridge, listeners: list[Callable[[SipEvent], None]]) -> None:
        self.inner, self.listeners = inner, listeners
        self._target: Callable[[SipEvent], None] | None = None
        self._early: list[SipEvent] = []

    def deliver(self, event: SipEvent) -> None:
        for fn in list(self.listeners):
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - a listener (printing) must not stop calls
                log.exception("SIP event listener failed")
        if self._target is None:
            self._early.append(event)
        else:
            self._target(event)

    def start(self, on_event: Callable[[SipEvent], None]) -> None:
        self._target = on_event
        early, self._early = self._early, []
        for event in early:
            on_event(event)

    def stop(self) -> None:
        self._target = None  # the Core stops the real bridge after call control

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Core:
    """`subscribe_sip(fn)` sees every SipEvent before call control does (the CLI prints
    them); `apply_config(doc)` takes a saved document's live settings (`doc`, and `cfg`)."""

    def __init__(self, doc: dict[str, Any], board: Board, reactor: Reactor, *,
                 bridge: Bridge | None = None, data_dir: str | Path | None = None) -> None:
        self.doc, self.board, self.reactor = doc, board, reactor
        self.cfg = Config.from_doc(doc)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.gateway = Gateway(self.cfg, board, reactor, media=False)
        self.events = EventBus()
        self.gateway.book.publish_to(self.events, reactor.clock.wall)
        self.cdr: CdrStore | None = None
        self.cc: CallControl | None = None
        self.no_cloud = ""  # why the box runs without a cloud ("" when it has one)
        self._given_bridge = bridge
        self.bridge: Bridge | None = None
        self.tap: _BridgeTap | None = None
        self._sip_listeners: list[Callable[[SipEvent], None]] = []
        self.restart_required: list[str] = []  # saved settings not yet running
        # Set by `branchline run`: stop the reactor so the process exits 0 and its
        # supervisor starts it again (POST /restart); None: this core cannot restart.
        self.restart_hook: Callable[[], None] | None = None

    def subscribe_sip(self, fn: Callable[[SipEvent], None]) -> None:
        self._sip_listeners.append(fn)

    # ---- life cycle ----
    def start(self) -> None:
        self.gateway.start()
        self.cdr = self._open_cdr()
        self.bridge = self._start_bridge()
        assert self.tap is not None
        try:
            self.cc = CallControl(self.reactor, self.cfg, self.board, self.tap, cdr=self.cdr,
                                  book=self.gateway.hand_over(), events=self.events)
            self.cc.start()
        except BaseException:
            self.stop(drivers=False)  # a SIP stack left running aborts the process at exit
            raise

    def stop(self, drivers: bool = True) -> None:
        steps = [("call control", self.cc and self.cc.stop),
                 ("SIP bridge", self.bridge and self.bridge.stop),
                 ("CDR store", self.cdr and self.cdr.close),
                 ("drivers", drivers and self.gateway.stop)]
        for what, fn in steps:
            if not fn:
                continue
            try:
                fn()
            except Exception:  # noqa: BLE001 - stop everything else regardless
                log.exception("stopping the %s failed", what)
        self.cc = self.bridge = self.cdr = None

    def _open_cdr(self) -> CdrStore | None:
        if self.data_dir is None:
            return None
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            store = CdrStore(self.data_dir / CDR_FILE, wall=self.reactor.clock.wall,
                             max_bytes=self.cfg.survive.outbox_max_mb * 2**20)
            recording.recover(store)  # recordings a power cut left half written
            return store
        except (CdrError, OSError) as exc:
            log.error("CDRs are off: %s", exc)
            return None

    def _start_bridge(self) -> Bridge:
        bridge = self._given_bridge or self._build_bridge()
        self.tap = _BridgeTap(bridge, self._sip_listeners)
        try:
            bridge.start(self.tap.deliver)
        except BranchlineError as exc:
            if self._given_bridge is not None:
                raise
            self.no_cloud = str(exc)
            log.error("SIP: %s; running without the cloud (local calls, PSTN, emergency)",
                      exc)
            bridge = NoCloudBridge(self.reactor, self.no_cloud)
            self.tap.inner = bridge
            bridge.start(self.tap.deliver)
        return bridge

    def _build_bridge(self) -> Bridge:
        if not self.cfg.sip.edges:  # a registration mode alone names no cloud
            self.no_cloud = "no cloud edge configured (sip.edges is empty)"
            return NoCloudBridge(self.reactor, self.no_cloud)
        try:
            from firmware.sip.pjbridge import PjBridge
        except ImportError as exc:
            self.no_cloud = (f"the SIP stack (pjsua2) is not installed ({exc}): run "
                             "scripts/setup.sh")
            log.error("SIP: %s; running without the cloud", self.no_cloud)
            return NoCloudBridge(self.reactor, self.no_cloud)
        return PjBridge(self.reactor, self.doc)

    def apply_config(self, doc: dict[str, Any], version: int | None = None) -> list[str]:
        """Take a saved document's live settings now; return the changed paths (compared
        with what runs) that need a restart: status shows them as `restart_required`."""
        changed = liveconfig.changed_paths(self.doc, doc)
        live, restart = liveconfig.split(changed, self.doc, doc)
        liveconfig.merge(self.doc, doc, live)
        self.cfg = Config.from_doc(self.doc)
        for name in liveconfig.retuned_lines(live):
            self.board.retune(name, self.doc["lines"][name])
        if "survive.rtp_timeout_s" in live and self.tap is not None:
            inner = self.tap.inner
            if hasattr(inner, "rtp_timeout_s"):
                inner.rtp_timeout_s = self.cfg.survive.rtp_timeout_s
        if live:
            log.info("config applied live: %s", ", ".join(live[:10]))
            if self.cc is not None:
                self.cc.reconfigure(self.cfg)
        if restart and restart != self.restart_required:
            log.warning("config saved; takes effect after a restart: %s",
                        ", ".join(restart[:10]))
        self.restart_required = restart
        self.events.publish(CoreEvent(EventKind.CONFIG_APPLIED, self.reactor.clock.wall(),
                                      data={"version": version, "live": live,
                                            "restart": restart}))
        return restart

    def status(self) -> dict[str, Any]:
        cc: dict[str, Any] = (self.cc.status() if self.cc is not None
                              else {"ports": {}, "parked": {}, "cloud_up": False})
        sip = self.bridge.status() if self.bridge is not None else {}
        book = self.cc.book if self.cc is not None else self.gateway.book
        ports = {}
        for name, line in book.ports.items():
            call = cc["ports"].get(name, {})
            ports[name] = {**port_document(self.board, line), "call": call.get("state", ""),
                           "calls": call.get("calls", []), "erle_db": call.get("erle_db"),
                           "echo_runaways": call.get("echo_runaways", 0),
                           "media_mode": call.get("media_mode", "voice")}
            if "registered" in call:
                ports[name]["registered"] = call["registered"]
        return {"ports": ports, "registrations": sip.get("accounts", {}),
                "edges": sip.get("edges", {}), "calls": sip.get("calls", {}),
                "parked": cc.get("parked", {}), "cloud_up": cc.get("cloud_up", False),
                "survivability": cc.get("survivability"),
                "no_cloud": self.no_cloud, "restart_required": list(self.restart_required),
                "cdr": str(self.cdr.path) if self.cdr is not None else None}
