"""Text views of control-API answers for an 80-column terminal (the serial console and
`branchline status`): each takes the decoded JSON of one endpoint and returns lines.
Missing or odd fields show as "-": the views must work against an older, newer or half
started core."""

from __future__ import annotations

import datetime
from typing import Any


def v(value: Any, unit: str = "", fmt: str = "") -> str:
    if value is None or value == "":
        return "-"
    if fmt and isinstance(value, int | float) and not isinstance(value, bool):
        value = format(value, fmt)
    return f"{value}{unit}"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# --- show status / lines / calls / sip / wan -------------------------------------------

def status(st: dict) -> list[str]:
    """The whole status document (`show status`, `branchline status`)."""
    box, wan = as_dict(st.get("box")), as_dict(st.get("wan"))
    return ([f"box            {v(box.get('name'))}  version {v(box.get('version'))}  "
             f"mode {v(box.get('mode'))}  up {duration(box.get('uptime_s'))}"]
            + ["  " + line for line in restart_needed(box) + lifeline(box)]
            + [f"wan            {v(wan.get('state'))}"]
            + (edges(wan.get("edges")) or ["  no cloud edge configured (sip.edges)"])
            + survivability(st) + registrations(st) + outbox(st)
            + [""] + lines(st) + [""] + calls(st))


def survivability(st: dict) -> list[str]:
    s = as_dict(st.get("survivability"))
    n = s.get("transitions")
    out = [f"survivability  {v(s.get('state'))}"
           + (f" for {duration(s['for_s'])}" if _is_num(s.get("for_s")) else "")
           + (f" (since {stamp(s['since'])})" if _is_num(s.get("since")) else "")
           + (f", {n} transition{'' if n == 1 else 's'}" if isinstance(n, int) else "")]
    if s.get("edge"):
        out.append(f"  edge in use  {s['edge']}")
    if s.get("last_reason"):
        out.append(f"  last reason  {s['last_reason']}")
    out += [f"  {stamp(t.get('time')):<22} {v(t.get('from'))} -> {v(t.get('to'))}: "
            f"{v(t.get('reason'))}" for t in as_list(s.get("recent"))[-5:]]
    if any(k in s for k in ("blips", "in_fallback", "callbacks")):
        done = ", ".join(f"{k} {c}" for k, c in sorted(as_dict(s.get("counters")).items()))
        out.append(f"  continuity   {v(s.get('blips'))} in a blip, "
                   f"{v(s.get('in_fallback'))} caller(s) in the local fallback, "
                   f"{v(s.get('callbacks'))} callback(s)" + (f"; so far: {done}" if done else ""))
    return out


def registrations(st: dict) -> list[str]:
    return [f"registration   {v(r.get('account'))} {'OK' if r.get('ok') else 'FAILED'}"
            f" ({v(r.get('code'))} {v(r.get('reason'))})"
            for r in as_list(st.get("registrations"))] or [
        "registration   none (sip.registration none, or no cloud edge)"]


def outbox(st: dict) -> list[str]:
    o = st.get("outbox")
    if not isinstance(o, dict):
        return ["outbox         - (the core keeps no CDR store: no --data-dir)"]
    if o.get("error"):
        return [f"outbox         unreadable: {o['error']}"]
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(as_dict(o.get("by_kind")).items()))
    line = (f"outbox         {v(o.get('pending'))} pending" + (f" ({kinds})" if kinds else "")
            + f", {_size(o.get('bytes'))}")
    if _is_num(o.get("oldest_age_s")):
        line += f", oldest {duration(o['oldest_age_s'])} ago"
    line += f"; cap {_size(o.get('max_bytes'))}" if o.get("max_bytes") else "; no cap"
    return [line + (": OVER CAP (recordings are dropped first, records never)"
                    if o.get("over_cap") else "")]


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _size(n: Any) -> str:
    if not _is_num(n):
        return "-"
    for unit, scale in (("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


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
    for p in as_list(st.get("ports")):
        out.append(f"{v(p.get('name')):<8} {v(p.get('kind')):<7} {v(p.get('state')):<12} "
                   f"{v(p.get('hook')):<6} {'yes' if p.get('ringing') else 'no':<5} "
                   f"{v(p.get('line_voltage_v'), fmt='.1f'):>6} "
                   f"{v(p.get('loop_current_ma'), fmt='.1f'):>6} "
                   f"{v(p.get('erle_db'), fmt='.1f'):>6}  {_port_call(p.get('call'))}")
        if p.get("failed_reason"):
            out.append(f"         failed: {p['failed_reason']}")
    return out


def _port_call(call: Any) -> str:
    if not isinstance(call, dict):
        return "-"
    return f"{v(call.get('direction'))} {v(call.get('remote'))} {v(call.get('state'))}"


def calls(st: dict) -> list[str]:
    items = as_list(st.get("calls"))
    if not items:
        return ["no active calls"]
    out = [f"{'port':<8} {'dir':<4} {'remote':<20} {'state':<12} {'time':>9} {'codec':<6} MOS"]
    for c in items:
        direction = {"inbound": "in", "outbound": "out"}.get(c.get("direction"),
                                                              v(c.get("direction")))
        out.append(f"{v(c.get('port')):<8} {direction:<4} {v(c.get('remote')):<20.20} "
                   f"{v(c.get('state')):<12} {duration(c.get('duration_s')):>9} "
                   f"{v(c.get('codec')):<6} {v(c.get('mos'), fmt='.2f')}")
    return out


def sip(st: dict) -> list[str]:
    regs = as_list(st.get("registrations"))
    out = ["registrations:"] + ([f"  {v(r.get('account')):<24} "
                                f"{'OK' if r.get('ok') else 'FAILED':<7} "
                                f"{v(r.get('code'))} {v(r.get('reason'))}" for r in regs]
                               or ["  none (sip.registration none, or no cloud edge)"])
    return out + [""] + wan(st)


def wan(st: dict) -> list[str]:
    w = as_dict(st.get("wan"))
    surv = as_dict(st.get("survivability"))
    out = [f"wan {v(w.get('state'))}, survivability {v(surv.get('state'))}", "edges:"]
    return out + (edges(w.get("edges")) or ["  none configured (set sip.edges)"])


def edges(items: Any) -> list[str]:
    return [f"  {v(e.get('uri')):<40} {'up' if e.get('ok') else 'DOWN':<5} "
            f"{v(e.get('rtt_ms'), ' ms', '.1f')}" for e in as_list(items)]


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
    items = as_list(page.get("items"))
    if not items:
        return ["log is empty"]
    return [f"{stamp(i.get('time'))} {v(i.get('level')):<7} {v(i.get('source'))}: "
            f"{v(i.get('message'))}" for i in items]


def stamp(t: Any) -> str:
    if not isinstance(t, int | float) or isinstance(t, bool):
        return v(t)
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- live events ----------------------------------------------------------------------

def event(ev: dict[str, Any]) -> str:
    """One line per event: time, kind, port, ANI -> DNIS (calls) or what changed."""
    t = ev.get("time")
    when = (datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S")
            if isinstance(t, int | float) else "--:--:--")
    head = f"{when} {v(ev.get('kind')):<14} {ev.get('port') or '':<8}"
    if ev.get("kind") == "dropped":
        return f"{head} {ev.get('count')} event(s) lost: the console fell behind"
    if ev.get("ani") or ev.get("dnis"):
        return f"{head} {v(ev.get('ani'))} -> {v(ev.get('dnis'))} {ev.get('direction') or ''}"
    data = as_dict(ev.get("data"))
    return (head + " " + ", ".join(f"{k}={value_text(v)}" for k, v in data.items())).rstrip()


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
        return (f"  {verdict:<5} {v(item.get('name')):<28} "
                f"{v(item.get('value'))} {item.get('unit') or ''}".rstrip() + limit)
    return "  " + ", ".join(f"{k}={value_text(v)}" for k, v in item.items())


# --- update (the update service's state document) --------------------------------------

def update_progress(st: dict) -> str:
    """One progress line while an update runs: `update: INSTALLING  45%  writing root`."""
    reason = f"  ({st['reason']})" if st.get("reason") else ""
    return (f"update: {v(st.get('phase')):<11} {v(st.get('progress'), '%', '.0f'):>4}  "
            f"{v(st.get('message'))}{reason}")


def update_status(st: dict) -> list[str]:
    """`update status`: the phase, progress, versions and the last outcome."""
    out = [f"phase          {v(st.get('phase'))}  {v(st.get('progress'), '%', '.0f')}",
           f"message        {v(st.get('message'))}"]
    if st.get("reason"):
        out.append(f"reason         {st['reason']}")
    if st.get("version_to") or st.get("version_from"):
        out.append(f"version        {v(st.get('version_from'))} -> {v(st.get('version_to'))}")
    if st.get("bundle"):
        out.append(f"bundle         {st['bundle']}  (from {v(st.get('source'))})")
    if st.get("started"):
        out.append(f"started        {stamp(st.get('started'))}"
                   + (f"  finished {stamp(st['finished'])}" if st.get("finished") else ""))
    return out
