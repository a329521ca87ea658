"""`branchline status`: what the running core says about itself, in one screen.

    branchline status                                  # the box: /run/branchline/core.sock
    branchline status --api 127.0.0.1:8080             # sim mode (loopback TCP)
    branchline status --json                           # the raw GET /api/v1/status

Asks the core's control API (GET /api/v1/status, firmware/api) and prints: the box,
the WAN and each cloud edge, the survivability state (since when, how many
transitions, the last reason, the recent transitions, what call continuity is doing),
the registrations, the store-and-forward outbox (pending records by kind, age, cap),
the ports and the calls. A core that does not answer is one line on stderr and exit
code 2 (BranchlineError, see firmware/cli/__init__.py).

Assumes the status document of firmware/api/spec.py; fields it does not know or that
are missing show as "-", so an older or newer core still gets a readable answer.
"""

from __future__ import annotations

import json
from typing import Any

from firmware.cli.apiopts import add_api_options, api_address
from firmware.console import views

TIMEOUT_S = 5.0


def register(sub) -> None:
    p = sub.add_parser("status", help="show the running core's status (survivability, outbox)",
                       description="Ask the running core (its control API) for its status: "
                                   "WAN and edges, survivability, registrations, outbox, "
                                   "ports and calls.")
    add_api_options(p)
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for the core (default: {TIMEOUT_S:g})")
    p.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    from firmware.api.client import ApiClient

    client = ApiClient(**api_address(args), timeout=args.timeout)
    st = client.status()
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True), flush=True)
    else:
        print("\n".join(render(st)), flush=True)
    return 0


# ---- the text view --------------------------------------------------------------------

def render(st: dict) -> list[str]:
    return (box(st) + wan(st) + survivability(st) + registrations(st) + outbox(st)
            + [""] + views.lines(st) + [""] + views.calls(st))


def box(st: dict) -> list[str]:
    b = _dict(st.get("box"))
    out = [f"box            {_v(b.get('name'))}  version {_v(b.get('version'))}  "
           f"mode {_v(b.get('mode'))}  up {_duration(b.get('uptime_s'))}"]
    return out + ["  " + line for line in views.restart_needed(b) + views.lifeline(b)]


def wan(st: dict) -> list[str]:
    w = _dict(st.get("wan"))
    edges = views.edges(w.get("edges")) or ["  no cloud edge configured (sip.edges)"]
    return [f"wan            {_v(w.get('state'))}"] + edges


def survivability(st: dict) -> list[str]:
    s = _dict(st.get("survivability"))
    n = s.get("transitions")
    head = (f"survivability  {_v(s.get('state'))}"
            + (f" for {_duration(s['for_s'])}" if _is_num(s.get("for_s")) else "")
            + (f" (since {views.stamp(s['since'])})" if _is_num(s.get("since")) else "")
            + (f", {n} transition{'' if n == 1 else 's'}" if isinstance(n, int) else ""))
    out = [head]
    if s.get("edge"):
        out.append(f"  edge in use  {s['edge']}")
    if s.get("last_reason"):
        out.append(f"  last reason  {s['last_reason']}")
    for t in _list(s.get("recent"))[-5:]:
        out.append(f"  {views.stamp(t.get('time')):<22} {_v(t.get('from'))} -> "
                   f"{_v(t.get('to'))}: {_v(t.get('reason'))}")
    if any(k in s for k in ("blips", "in_fallback", "callbacks")):
        counters = _dict(s.get("counters"))
        done = ", ".join(f"{k} {v}" for k, v in sorted(counters.items()))
        out.append(f"  continuity   {_v(s.get('blips'))} in a blip, "
                   f"{_v(s.get('in_fallback'))} caller(s) in the local fallback, "
                   f"{_v(s.get('callbacks'))} callback(s)" + (f"; so far: {done}" if done else ""))
    return out


def registrations(st: dict) -> list[str]:
    regs = _list(st.get("registrations"))
    if not regs:
        return ["registration   none (sip.registration none, or no cloud edge)"]
    return [f"registration   {_v(r.get('account'))} {'OK' if r.get('ok') else 'FAILED'}"
            f" ({_v(r.get('code'))} {_v(r.get('reason'))})" for r in regs]


def outbox(st: dict) -> list[str]:
    o = st.get("outbox")
    if not isinstance(o, dict):
        return ["outbox         - (the core keeps no CDR store: no --data-dir)"]
    if o.get("error"):
        return [f"outbox         unreadable: {o['error']}"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(_dict(o.get("by_kind")).items()))
    line = f"outbox         {_v(o.get('pending'))} pending" + (f" ({kinds})" if kinds else "")
    line += f", {_size(o.get('bytes'))}"
    if _is_num(o.get("oldest_age_s")):
        line += f", oldest {_duration(o['oldest_age_s'])} ago"
    cap = f"cap {_size(o.get('max_bytes'))}" if o.get("max_bytes") else "no cap"
    line += f"; {cap}" + (": OVER CAP (recordings are dropped first, records never)"
                          if o.get("over_cap") else "")
    return [line]


# ---- helpers ----------------------------------------------------------------------------

def _v(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _duration(seconds: Any) -> str:
    if not _is_num(seconds):
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _list(value: Any) -> list:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _size(n: Any) -> str:
    if not _is_num(n):
        return "-"
    for unit, scale in (("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
