"""`branchline run`: start the gateway core on the box (or on the twins with --sim).

At this stage the core is the drivers plus the event log: every line event is printed as
it happens, until Ctrl-C, SIGTERM or --duration. A chip that fails to start is printed
with its reason and marked failed; the other ports keep running. Also holds what `hw`
and `demo` share: where the config lives, building a board, and one line per event.
"""

from __future__ import annotations

import signal
import sys

from drivers.errors import HardwareError
from drivers.reactor import MonotonicClock, Reactor
from firmware.core.config import ConfigStore, config_dir
from firmware.gateway import CALLER_ID, Gateway


def register(sub) -> None:
    p = sub.add_parser("run", help="start the gateway core and print line events",
                       description="Start the gateway (drivers and event log) and print "
                                   "line events until Ctrl-C, SIGTERM or --duration.")
    add_board_options(p)
    p.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds (default: run until stopped)")
    p.set_defaults(func=cmd_run)


def add_board_options(p) -> None:
    p.add_argument("--sim", action="store_true",
                   help="use the simulated twins instead of the box's hardware")
    p.add_argument("--config-dir", metavar="DIR",
                   help="config directory (default: $BRANCHLINE_CONFIG_DIR or /etc/branchline)")


# -- shared by run, hw and demo ------------------------------------------------------------

def load_document(directory: str | None) -> dict:
    """The validated config from --config-dir / $BRANCHLINE_CONFIG_DIR / /etc/branchline
    (the default document when no file exists yet)."""
    return ConfigStore(config_dir(directory)).load()


def build_board(reactor, doc: dict, sim: bool, **kw):
    if sim:
        from drivers.sim.board import SimBoard

        return SimBoard(reactor, doc, **kw)
    from drivers.board import RealBoard

    return RealBoard(reactor, doc, **kw)


def describe(event, old: str, new: str, t0: float, port=None) -> str:
    """One readable line: `  0.40s  fxs1     on-hook -> OFF-HOOK (dial tone)`."""
    head = f"{event.time - t0:7.2f}s  {event.port:<8} "
    if new != old:
        return head + f"{old} -> {new.upper()}" + _why(event) + _caller(event, port)
    return head + _what(event) + _caller(event, port)


def _what(event) -> str:
    if event.kind == "digit":
        return f"DIGIT {event.data.get('digit')} ({event.data.get('method', '?')})"
    if event.kind == "ring_start":
        return "RING"
    if event.kind == CALLER_ID:
        return f"CALLER ID {event.data.get('number') or ''} {event.data.get('name') or ''!r}"
    extra = " ".join(f"{k}={v}" for k, v in event.data.items())
    return f"{event.kind.upper()} {extra}".rstrip()


def _why(event) -> str:
    if event.kind == "off_hook":
        return " (dial tone)"
    if event.kind in ("chip_failed", "disconnect", "headset_unplugged"):
        detail = " ".join(f"{v}" for v in event.data.values())
        return f" ({event.kind.replace('_', ' ')}{': ' + detail if detail else ''})"
    return ""


def _caller(event, port) -> str:
    if event.kind == "ring_start" and port is not None and port.caller:
        number, name = port.caller.get("number") or "", port.caller.get("name") or ""
        return f" (caller {number} \"{name}\")"
    return ""


# -- the command ---------------------------------------------------------------------------

def cmd_run(args) -> int:
    doc = load_document(args.config_dir)
    reactor = Reactor(MonotonicClock())
    board = build_board(reactor, doc, args.sim)
    gateway = Gateway(doc, board, reactor)
    t0 = reactor.now()
    gateway.subscribe(lambda e, o, n: print(describe(e, o, n, t0, gateway.ports.get(e.port)),
                                            flush=True))
    for problem in board.problems:
        print(f"branchline: {problem}", file=sys.stderr)
    gateway.start()
    if all(p.state == "failed" for p in gateway.ports.values() if p.kind != "headset"):
        gateway.stop()
        raise HardwareError("no line came up: fix the errors above, or try `branchline run --sim`")
    _stop_on_signals(reactor)
    try:
        if args.duration is None:
            reactor.run_forever()
        else:
            reactor.run_for(args.duration)
    finally:
        gateway.stop()
    return 0


def _stop_on_signals(reactor) -> None:
    def stop(_signum, _frame):
        reactor.call_soon(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
