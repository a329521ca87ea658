"""Text views of control-API answers for an 80-column serial terminal.

Each function takes the decoded JSON of one endpoint (see the contract in
firmware/api) and returns lines without line endings. Missing or odd fields show as
"-" instead of failing: the console must keep working against a core that is older,
newer or half started.
"""

from __future__ import annotations

import datetime
from typing import Any


def _v(value: Any, unit: str = "", fmt: str = "") -> str:
    if value is None or value == "":
        return "-"
    if fmt and isinstance(value, int | float) and not isinstance(value, bool):
        value = format(value, fmt)
    return f"{value}{unit}"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# --- show status / lines / calls / sip / wan -------------------------------------------

def status(st: dict) -> list[str]:
    box, wan = _dict(st.get("box")), _dict(st.get("wan"))
    surv = _dict(st.get("survivability"))
    regs = _list(st.get("registrations"))
    reg = "none configured" if not regs else ", ".join(
        f"{r.get('account', '?')} {'OK' if r.get('ok') else 'FAILED'}" for r in regs)
    head = [
        f"box            {_v(box.get('name'))}  version {_v(box.get('version'))}  "
        f"mode {_v(box.get('mode'))}  up {_duration(box.get('uptime_s'))}",
        f"wan            {_v(wan.get('state'))}",
        f"survivability  {_v(surv.get('state'))}",
        f"registration   {reg}",
    ]
    head += restart_needed(box) + lifeline(box)
    head.append("")
    return head + lines(st) + [""] + calls(st)


def restart_needed(box: dict) -> list[str]:
    """The line naming saved settings the running core has not taken (none: no line)."""
    pending = box.get("restart_required")
    if not isinstance(pending, list) or not pending:
        return []
    return [f"restart needed for saved settings: {', '.join(map(str, pending))}"]


def lifeline(box: dict) -> list[str]:
    """Where the power-fail lifeline puts its phone (no line when the board has none)."""
    relay = box.get("lifeline")
    if not isinstance(relay, dict):
        return []
    if relay.get("phone_on") == "slic":
        return [f"lifeline: {relay.get('fxs')} on its SLIC (relay energised)"]
    return [f"lifeline: {relay.get('fxs')} on the PSTN line of {relay.get('fxo')} "
            f"(relay released: {relay.get('reason')})"]


def lines(st: dict) -> list[str]:
    out = [f"{'port':<8} {'kind':<7} {'state':<12} {'hook':<6} {'ring':<5} "
           f"{'V':>6} {'mA':>6} {'ERLE':>6}  call"]
    for p in _list(st.get("ports")):
        out.append(f"{_v(p.get('name')):<8} {_v(p.get('kind')):<7} {_v(p.get('state')):<12} "
                   f"{_v(p.get('hook')):<6} {'yes' if p.get('ringing') else 'no':<5} "
                   f"{_v(p.get('line_voltage_v'), fmt='.1f'):>6} "
                   f"{_v(p.get('loop_current_ma'), fmt='.1f'):>6} "
                   f"{_v(p.get('erle_db'), fmt='.1f'):>6}  {_port_call(p.get('call'))}")
        if p.get("failed_reason"):
            out.append(f"         failed: {p['failed_reason']}")
    return out


def _port_call(call: Any) -> str:
    if not isinstance(call, dict):
        return "-"
    return f"{_v(call.get('direction'))} {_v(call.get('remote'))} {_v(call.get('state'))}"


def calls(st: dict) -> list[str]:
    items = _list(st.get("calls"))
    if not items:
        return ["no active calls"]
    out = [f"{'port':<8} {'dir':<4} {'remote':<20} {'state':<12} {'time':>9} {'codec':<6} MOS"]
    for c in items:
        direction = {"inbound": "in", "outbound": "out"}.get(c.get("direction"),
                                                              _v(c.get("direction")))
        out.append(f"{_v(c.get('port')):<8} {direction:<4} {_v(c.get('remote')):<20.20} "
                   f"{_v(c.get('state')):<12} {_duration(c.get('duration_s')):>9} "
                   f"{_v(c.get('codec')):<6} {_v(c.get('mos'), fmt='.2f')}")
    return out


def sip(st: dict) -> list[str]:
    regs = _list(st.get("registrations"))
    out = ["registrations:"] + ([f"  {_v(r.get('account')):<24} "
                                f"{'OK' if r.get('ok') else 'FAILED':<7} "
                                f"{_v(r.get('code'))} {_v(r.get('reason'))}" for r in regs]
                               or ["  none (sip.registration none, or no cloud edge)"])
    return out + [""] + wan(st)


def wan(st: dict) -> list[str]:
    w = _dict(st.get("wan"))
    surv = _dict(st.get("survivability"))
    out = [f"wan {_v(w.get('state'))}, survivability {_v(surv.get('state'))}", "edges:"]
    return out + (edges(w.get("edges")) or ["  none configured (set sip.edges)"])


def edges(items: Any) -> list[str]:
    return [f"  {_v(e.get('uri')):<40} {'up' if e.get('ok') else 'DOWN':<5} "
            f"{_v(e.get('rtt_ms'), ' ms', '.1f')}" for e in _list(items)]


# --- show config / log ----------------------------------------------------------------

def flatten(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every leaf, in document order."""
    if isinstance(doc, dict) and (doc or not prefix):
        out: list[tuple[str, Any]] = []
        for key, value in doc.items():
            out += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, doc)]


def value_text(value: Any) -> str:
    """A config value as `set` takes it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"' if (not value or " " in value) else value
    return str(value)


def config(doc: dict, prefix: str = "") -> list[str]:
    rows = [(p, v) for p, v in flatten(doc) if not prefix or p == prefix
            or p.startswith(prefix.rstrip(".") + ".")]
    if not rows:
        return [f'% no setting "{prefix}": type "show config" and ? to list them']
    secret = ("password",)
    return [f"{p} = {'*****' if p.endswith(secret) and v else value_text(v)}" for p, v in rows]


def log(page: dict) -> list[str]:
    items = _list(page.get("items"))
    if not items:
        return ["log is empty"]
    return [f"{stamp(i.get('time'))} {_v(i.get('level')):<7} {_v(i.get('source'))}: "
            f"{_v(i.get('message'))}" for i in items]


def stamp(t: Any) -> str:
    if not isinstance(t, int | float) or isinstance(t, bool):
        return _v(t)
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- test results ---------------------------------------------------------------------

def diag(result: Any) -> list[str]:
    """A diagnostic answer: items as a pass/fail table, other fields as key: value."""
    if not isinstance(result, dict):
        return [str(result)]
    out = []
    for key, value in result.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(f"{key}:")
            out += [_item(v) for v in value]
        elif isinstance(value, dict):
            out.append(f"{key}:")
            out += [f"  {k} = {value_text(v)}" for k, v in value.items()]
        else:
            out.append(f"{key}: {_plain(value)}")
    return out


def _plain(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return value if isinstance(value, str) else value_text(value)


def _item(item: dict) -> str:
    if "pass" in item:
        verdict = "PASS" if item.get("pass") else "FAIL"
        limit = f"  (limit {item['limit']})" if item.get("limit") not in (None, "") else ""
        return (f"  {verdict:<5} {_v(item.get('name')):<28} "
                f"{_v(item.get('value'))} {item.get('unit') or ''}".rstrip() + limit)
    return "  " + ", ".join(f"{k}={value_text(v)}" for k, v in item.items())
