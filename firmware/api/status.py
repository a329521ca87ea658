"""The status document (GET /status, the Status schema of spec.py): the one shape the web
page, the CLI and the console render. Built on the reactor thread from the core's public
surface: the port readouts, call control's calls, SIP health and survivability."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from firmware.callctl.model import CallInfo
from firmware.diag.linetest import num

if TYPE_CHECKING:
    from firmware.core.runtime import Core

RECENT = 10  # survivability transitions shown


class StatusDoc:
    """The status of one core; `box` carries the API server's own figures."""

    def __init__(self, core: Core, version: str, mode: str) -> None:
        self.core, self.version, self.mode = core, version, mode
        self.started = time.monotonic()

    def build(self) -> dict[str, Any]:
        ports = [self.port(name, p) for name, p in self.core.status()["ports"].items()]
        edges = self.edges()
        now = self.core.reactor.clock.wall()
        calls = [{"port": p["name"], **{k: v for k, v in p["call"].items() if k != "since"},
                  "duration_s": None if p["call"]["since"] is None
                  else num(now - p["call"]["since"])} for p in ports if p["call"]]
        return {"box": self.box(), "wan": {"state": _wan(edges), "edges": edges},
                "survivability": self.survivability(edges),
                "registrations": self.registrations(), "ports": ports, "calls": calls}

    def box(self) -> dict[str, Any]:
        relay = self.core.gateway.lifeline  # the power-fail relay
        return {"name": self.core.cfg.system.name,
                "version": self.version, "uptime_s": round(time.monotonic() - self.started, 1),
                "mode": self.mode, "restart_required": list(self.core.restart_required),
                "lifeline": relay.status() if relay is not None else None}

    def sip(self) -> dict[str, Any]:
        cc = self.core.cc
        return cc.sip_status if cc is not None else {"registrations": {}, "edges": {}}

    def edges(self) -> list[dict[str, Any]]:
        if self.core.no_cloud:
            return []
        return [{"uri": str(uri), "ok": e.get("ok"), "rtt_ms": num(e.get("rtt_ms"))}
                for uri, e in self.sip()["edges"].items()]

    def registrations(self) -> list[dict[str, Any]]:
        return [{"account": str(account), "ok": bool(reg.get("ok")),
                 "code": reg["code"] if isinstance(reg.get("code"), int) else None,
                 "reason": None if reg.get("reason") is None else str(reg["reason"])}
                for account, reg in self.sip()["registrations"].items()]

    def survivability(self, edges: list[dict[str, Any]]) -> dict[str, Any]:
        """The state machine's figures (state, since, transitions, the recent ones, newest
        last) and what call continuity did; before call control runs, from the edges."""
        cont = self.core.cc.survive if self.core.cc is not None else None
        fsm = cont.state if cont is not None else None
        if cont is None or fsm is None:
            return {"state": self.state_from_edges(edges), "transitions": 0, "recent": []}
        now, wall = self.core.reactor.now(), self.core.reactor.clock.wall()
        recent = [{"time": num(wall - (now - t), 3), "from": old, "to": new,
                   "reason": str(why)} for t, old, new, why in list(fsm.history)[-RECENT:]]
        return {"state": fsm.state.name, "since": num(fsm.since_wall, 3),
                "for_s": num(now - fsm.since), "transitions": int(fsm.transitions),
                "last_reason": str(fsm.last_reason), "edge": fsm.edge_in_use,
                "recent": recent, "blips": len(cont.blips),
                "in_fallback": len(cont.fallbacks), "callbacks": len(cont.callbacks),
                "counters": {str(k): int(v) for k, v in cont.counters.items()}}

    def state_from_edges(self, edges: list[dict[str, Any]]) -> str:
        """Before call control runs: the first configured edge up, another one, none."""
        if not edges:
            return "unknown"
        up = [e["uri"] for e in edges if e["ok"]]
        if not up:
            return "SURVIVABLE"
        primary = (self.core.cfg.sip.edges or up)[0]
        return "CLOUD_PRIMARY" if primary in up else "CLOUD_SECONDARY"

    def port(self, name: str, p: dict[str, Any]) -> dict[str, Any]:
        call = self.call(p["calls"][0], p["call"]) if p.get("calls") else None
        failed = p.get("state") == "failed"
        return {"name": name, "kind": p.get("kind", ""), "state": p.get("state", ""),
                "hook": p.get("hook") if isinstance(p.get("hook"), str) else None,
                "ringing": bool(p.get("ring") or p.get("ringing")),
                "loop_current_ma": num(p.get("loop_current_ma")),
                "line_voltage_v": num(p.get("line_voltage_v")),
                "erle_db": num(p.get("erle_db")) if call else None,
                "failed_reason": (p.get("reason") or "failed") if failed else None,
                "call": call}

    def call(self, handle: int, state: str) -> dict[str, Any]:
        """The port's first call, from call control's table of calls."""
        cc = self.core.cc
        info = (cc.call_info(handle) if cc is not None else None) or CallInfo(handle)
        direction = info.direction or "local"
        quality = self.quality(info.handle)
        return {"direction": direction,
                "remote": info.ani if direction == "inbound" else info.dnis,
                "state": state, "since": num(info.started, 3) if info.opened else None,
                "codec": quality.get("codec"), "mos": quality.get("mos"),
                "media_mode": info.media_mode}

    def quality(self, handle: int) -> dict[str, Any]:
        if handle < 0 or self.core.bridge is None:  # local calls carry no RTP
            return {}
        try:
            from firmware.quality import estimate
            q = dict(self.core.bridge.quality(handle))
            return {"codec": q.get("codec"), "mos": num(estimate(q).get("mos"), 2)}
        except Exception:  # noqa: BLE001 - figures only; the status must still answer
            return {}


def _wan(edges: list[dict[str, Any]]) -> str:
    if not edges:
        return "unknown"
    return "up" if any(e["ok"] for e in edges) else "down"
