"""The gateway core assembled: drivers and port states, the CDR store, the SIP bridge and
call control, started and stopped in order.

`Core(doc, board, reactor, bridge=None, data_dir=None)`:
  - the Gateway starts the chips and keeps each port's state; its own media tick and
    caller-ID decoder are off (call control reads the PCM), and call control's FSM
    transitions are fed back to it, so status shows `seized` / `in-call`;
  - CDRs go to data_dir/cdr.db (SQLite, WAL); no data_dir: no CDRs. A database that
    cannot be opened (CdrError) is logged and the box runs without CDRs: a CDR problem
    never keeps calls from working;
  - the bridge: the one given (e.g. lab.simcloud.SimCloud in fake-time scenarios), else
    PjBridge (pjsua2) when the config names cloud edges (sip.edges), else
    NoCloudBridge (local-only: extension calls, PSTN out through FXO, emergency; see
    firmware/sip/nocloud.py). If pjsua2 is missing or its stack does not start (port in
    use...), the error is logged and the box runs local-only the same way;
  - CallControl over all of it.
Each port's status carries `media_mode`: "voice", or "fax" / "modem" while its call is
in G.711 passthrough (firmware/media.py).
`start()`: drivers, then the bridge, then call control. `stop()`: the reverse; each step
is guarded so a failing one does not keep the others from stopping. `status()`: ports
(line state merged with call state and live ERLE), registrations, edges, calls, parked
calls. `subscribe_sip(fn)` sees every SipEvent before call control does (the CLI prints
them). `apply_config(doc)`: a newly saved document; the settings a running core can take
are taken at once (firmware/core/liveconfig.py), the others are returned and shown in
status as `restart_required` until the next start.

Assumes the reactor runs on the calling thread and every method here is called on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.callctl.controller import CallControl
from firmware.cdr import CdrError, CdrStore
from firmware.core import liveconfig
from firmware.gateway import Gateway
from firmware.sip.api import SipEvent
from firmware.sip.nocloud import NoCloudBridge
from firmware.survive import recording
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

CDR_FILE = "cdr.db"


def wants_cloud(doc: dict) -> bool:
    """Does the config name a cloud edge? (A registration mode alone does not count:
    the default document says "trunk" with no edge and no user, and there is nothing to
    register to.)"""
    return bool(doc.get("sip", {}).get("edges"))


class _BridgeTap:
    """The bridge as call control sees it: already started by the Core (so the Core
    picks the fallback when it fails), with every event shown to the Core's listeners
    first. Events that arrive before call control starts are kept for it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.listeners: list[Callable[[SipEvent], None]] = []
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
    """See the module docstring."""

    def __init__(self, doc: dict, board, reactor, *, bridge=None,
                 data_dir: str | Path | None = None) -> None:
        self.doc, self.board, self.reactor = doc, board, reactor
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.gateway = Gateway(doc, board, reactor, media=False)
        self.cdr = None
        self.cc: CallControl | None = None
        self.no_cloud = ""  # why the box runs without a cloud ("" when it has one)
        self._given_bridge = bridge
        self.bridge = None
        self.tap: _BridgeTap | None = None
        self._sip_listeners: list[Callable[[SipEvent], None]] = []
        self.restart_required: list[str] = []  # saved settings not yet running

    def subscribe_sip(self, fn: Callable[[SipEvent], None]) -> None:
        self._sip_listeners.append(fn)

    # ---- life cycle ----
    def start(self) -> None:
        self.gateway.start()
        self.cdr = self._open_cdr()
        self.bridge = self._start_bridge()
        self.cc = CallControl(self.reactor, self.doc, self.board, self.tap, cdr=self.cdr)
        self.cc.subscribe(self.gateway.call_state)
        self.cc.subscribe_caller_id(self.gateway.caller_id)
        self.cc.start()

    def stop(self) -> None:
        steps = (("call control", self.cc and self.cc.stop),
                 ("SIP bridge", self.bridge and self.bridge.stop),
                 ("CDR store", self.cdr and self.cdr.close),
                 ("drivers", self.gateway.stop))
        for what, fn in steps:
            if not fn:
                continue
            try:
                fn()
            except Exception:  # noqa: BLE001 - stop everything else regardless
                log.exception("stopping the %s failed", what)
        self.cc = None
        self.bridge = None
        self.cdr = None

    def _open_cdr(self):
        if self.data_dir is None:
            return None
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            cap_mb = self.doc.get("survive", {}).get("outbox_max_mb")
            store = CdrStore(self.data_dir / CDR_FILE, wall=self.reactor.clock.wall,
                             max_bytes=cap_mb * 2**20 if cap_mb else None)
            recording.recover(store)  # recordings a power cut left half written
            return store
        except (CdrError, OSError) as exc:
            log.error("CDRs are off: %s", exc)
            return None

    def _start_bridge(self):
        bridge = self._given_bridge or self._build_bridge()
        self.tap = _BridgeTap(bridge)
        self.tap.listeners = self._sip_listeners
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

    def _build_bridge(self):
        if not wants_cloud(self.doc):
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

    # ---- configuration ----
    def apply_config(self, doc: dict) -> list[str]:
        """Take the live settings of a newly saved (validated) document now; return the
        changed paths that need a restart. Paths are compared with what is running, so a
        rollback to the running values clears them."""
        changed = liveconfig.changed_paths(self.doc, doc)
        live, restart = liveconfig.split(changed, self.doc, doc)
        liveconfig.merge(self.doc, doc, live)
        for name in liveconfig.retuned_lines(live):
            self.board.retune(name, self.doc["lines"][name])
        if "survive.rtp_timeout_s" in live and self.tap is not None:
            inner = self.tap.inner
            if hasattr(inner, "rtp_timeout_s"):
                inner.rtp_timeout_s = float(self.doc["survive"]["rtp_timeout_s"])
        if live and self.cc is not None:
            self.cc.reconfigure()
        if live:
            log.info("config applied live: %s", ", ".join(live[:10]))
        if restart and restart != self.restart_required:
            log.warning("config saved; takes effect after a restart: %s",
                        ", ".join(restart[:10]))
        self.restart_required = restart
        return restart

    # ---- figures ----
    def status(self) -> dict[str, Any]:
        cc = self.cc.status() if self.cc is not None else {"ports": {}, "parked": {},
                                                           "cloud_up": False}
        sip = self.bridge.status() if self.bridge is not None else {}
        ports = {}
        for name, st in self.gateway.status().items():
            call = cc["ports"].get(name, {})
            ports[name] = {**st, "call": call.get("state", ""), "calls": call.get("calls", []),
                           "erle_db": call.get("erle_db"),
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
