"""The live selftest: what a running core allows (`branchline hw selftest` needs the core
stopped): every port initialised, each line's feed within limits, registrations and the
SIP edges answering. One row per check with its fix. A client of the control API, shared
by the cloud agent's selftest command and the update service's post-update health check."""

from __future__ import annotations

from typing import Any

from firmware.api.client import ApiClient, ApiError

# FXS loop limits of the live selftest (an idle line feeds ~48 V; off hook 18-45 mA)
ON_HOOK_V = (30.0, 60.0)
OFF_HOOK_MA = (15.0, 50.0)
FXO_MIN_V = 2.5  # below it no PSTN line is plugged in


def check(name: str, ok: bool, detail: str, fix: str = "", port: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"check": name, "pass": bool(ok), "detail": detail,
                           "fix": "" if ok else fix}
    return {"port": port, **row} if port else row


def selftest(api: ApiClient) -> list[dict[str, Any]]:
    """What a running core allows (`branchline hw selftest` needs the core stopped): every
    port up, each line's feed within limits, registrations, and the SIP edges answering."""
    status = api.status()
    rows = [_port_up(p) for p in status["ports"]]
    for p in status["ports"]:
        if p.get("kind") in ("fxs", "fxo") and p.get("state") != "failed":
            rows.append(_measure(api, p["name"], p["kind"]))
    rows += [check("registration", bool(r["ok"]), f"{r['account']}: code {r.get('code')} "
                   f"{r.get('reason') or ''}".strip(), "check sip.username / sip.password and "
                   "the account on the cloud", r["account"]) for r in status["registrations"]]
    return rows + _edges(api)


def _port_up(p: dict[str, Any]) -> dict[str, Any]:
    failed = p.get("state") == "failed"
    return check("initialised", not failed, p.get("failed_reason") or f"state {p.get('state')}",
                 "fix the card, then restart the core; `branchline hw selftest` (core stopped) "
                 "shows the chip's detail", p["name"])


def _measure(api: ApiClient, port: str, kind: str) -> dict[str, Any]:
    try:
        m = api.measure(port)
    except ApiError as exc:
        return check("measure", False, str(exc), "see the detail", port)
    volts, ma = m.get("line_voltage_v"), m.get("loop_current_ma")
    detail = f"{volts} V, {ma} mA, hook {m.get('hook')}"
    if kind == "fxo":
        ok = volts is not None and abs(volts) >= FXO_MIN_V
        return check("line voltage", ok, detail, "no line voltage: is the PSTN line plugged "
                     "into the FXO port?", port)
    if m.get("ring") or m.get("ringing"):
        return {**check("line feed", True, f"{detail}: ringing now, the feed is not judged",
                        port=port), "skipped": True}
    if m.get("hook") == "off":
        ok = ma is not None and OFF_HOOK_MA[0] <= ma <= OFF_HOOK_MA[1]
        return check("loop current", ok, f"{detail} (off hook: {OFF_HOOK_MA[0]:g}-"
                     f"{OFF_HOOK_MA[1]:g} mA)", "check the wiring and the phone; a short or "
                     "a long loop shows here", port)
    ok = volts is not None and ON_HOOK_V[0] <= abs(volts) <= ON_HOOK_V[1]
    return check("line feed", ok, f"{detail} (on hook: {ON_HOOK_V[0]:g}-{ON_HOOK_V[1]:g} V)",
                 "check the FXS card's power input and the line for a short", port)


def _edges(api: ApiClient) -> list[dict[str, Any]]:
    try:
        edges = api.ping()["edges"]
    except ApiError as exc:
        return [check("sip ping", False, str(exc), "set sip.edges to the cloud's edges")]
    if not edges:
        return [check("sip ping", False, "no edge answered", "check the WAN and sip.edges")]
    return [check("sip ping", bool(e.get("ok")), f"{e['uri']}: rtt {e.get('rtt_ms')} ms",
                  "check the WAN, the firewall and the edge's address", e["uri"]) for e in edges]
