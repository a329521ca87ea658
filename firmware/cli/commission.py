"""`branchline commission PORT`: measure a line and propose its settings (FXS: the
GR-909 items; FXO: volts, loop current, the echo path and, with --test-call S, caller ID and
the disconnect signal of a call within S s). Exit code 0 the line passes, 1 it does not.
Not while the core runs (it owns /dev): there, POST /diag/line-test does the same."""

from __future__ import annotations

import json
import math
from argparse import Namespace
from dataclasses import dataclass
from typing import Any

from drivers.board import Board
from firmware.cli.apiopts import Subparsers
from firmware.cli.run import add_board_options, build_board, load_document
from firmware.core.config import Config
from firmware.diag.commission import CommissionError, LineFacts, commission_port
from firmware.gateway import Gateway
from foundation.reactor import FakeClock, MonotonicClock, Reactor

SETTLE_S = 0.3


def register(sub: Subparsers) -> None:
    p = sub.add_parser("commission", help="measure a line (GR-909 / echo path) and propose settings",
                       description="Measure one port's line and propose its settings.")
    p.add_argument("port", metavar="PORT", help="port name from the config, e.g. fxs1 or fxo1")
    add_board_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--test-call", type=float, default=0.0, metavar="S",
                   help="FXO: wait up to S seconds for a call to the line, answer it and "
                        "learn caller ID and the disconnect signal")
    p.add_argument("--data-dir", metavar="DIR", help="keep learned line facts in DIR")
    p.set_defaults(func=cmd_commission)


def cmd_commission(args: Namespace) -> int:
    doc = load_document(args.config_dir)
    if args.port not in doc.get("lines", {}):
        raise CommissionError(f"{args.port}: no such port; ports: {', '.join(doc['lines'])}")
    reactor = Reactor(FakeClock() if args.sim else MonotonicClock())
    board = build_board(reactor, doc, args.sim)
    gateway = Gateway(Config.from_doc(doc), board, reactor, media=False)
    try:
        gateway.start()
        reactor.run_for(SETTLE_S)
        if args.sim and args.test_call > 0:
            _sim_caller(reactor, board, args.port)
        parts = _Parts(board, reactor, doc, args.data_dir)
        result = commission_port(parts, args.port, test_call_s=args.test_call,
                                 facts=LineFacts(args.data_dir))
    finally:
        gateway.stop()
    print(json.dumps(result, indent=2, default=str) if args.json else format_result(result))
    return 0 if result.get("pass", True) else 1


@dataclass
class _Parts:
    board: Board
    reactor: Reactor
    doc: dict[str, Any]
    data_dir: str | None


def _sim_caller(reactor: Reactor, board: Board, port: str) -> None:
    """--sim: once the measurements have seized and released the line, the virtual CO
    calls it and hangs up (loop drop) a second after the answer."""
    co = getattr(board, "cos", {}).get(port)  # the sim board's virtual COs
    if co is None:
        return
    seized = ringing = False
    answered: float | None = None

    def caller(t: float) -> float:
        nonlocal seized, ringing, answered
        if not ringing:
            seized = seized or co.answered
            if seized and not co.answered:
                co.ring()
                ringing = True
        elif answered is None and co.answered:
            answered = t
        elif answered is not None and t - answered >= 1.0:
            co.disconnect("loop_drop")
            return math.inf
        return t + 0.1

    reactor.register_timer(caller, reactor.now() + 0.1)


def format_result(res: dict) -> str:
    return _format_fxs(res) if res["kind"] == "fxs" else _format_fxo(res)


def _format_fxs(res: dict) -> str:
    lines = [f"{res['port']}: GR-909 line test", f"  {'ITEM':<22} {'VALUE':>12} {'LIMIT':<30} RESULT"]
    for i in res["items"]:
        value = "-" if i["value"] is None else f"{i['value']:g} {i['unit']}"
        if i["unit"] == "ohm" and i["value"] is not None and i["value"] >= 1e8:
            value = "open"
        verdict = {True: "PASS", False: "FAIL", None: "-"}[i["pass"]]
        note = f"  ({i['note']})" if i.get("note") else ""
        lines.append(f"  {i['name']:<22} {value:>12} {i['limit'] + ' ' + i['unit']:<30} {verdict}{note}")
    lines.append(f"{res['port']}: {res['verdict']}")
    return "\n".join(lines)


def _format_fxo(res: dict) -> str:
    idle, seized, echo = res["idle"], res.get("seized", {}), res.get("echo") or {}
    lines = [f"{res['port']}: FXO line",
             f"  idle line voltage   {idle['line_voltage_v']:.1f} V ({idle['polarity']})",
             f"  seized              {seized.get('line_voltage_v', 0):.1f} V, "
             f"{seized.get('loop_current_ma', 0):.1f} mA loop current",
             f"  echo path           tail {echo.get('tail_ms')} ms, ERL {echo.get('erl_db')} dB "
             f"-> canceller tail {echo.get('proposed_tail_ms')} ms {echo.get('note') or ''}".rstrip()]
    call = res.get("test_call")
    if call:
        cid = call.get("callerid") or {}
        lines.append(f"  test call           caller ID {cid.get('standard') or 'none'} "
                     f"{cid.get('number') or ''}, disconnect "
                     f"{(call.get('disconnect') or {}).get('signal') or 'not seen'}")
    for key, value in res.get("learned", {}).items():
        lines.append(f"  learned             {key}: {value}")
    for key, value in res.get("proposed", {}).items():
        lines.append(f"  proposed            branchline config set {key} '{json.dumps(value)}'")
    for key, value in res.get("advice", {}).items():
        lines.append(f"  advice              {key}: {value}")
    return "\n".join(lines)
