"""`branchline run`: start the gateway core on the box (or on the twins with --sim).

The core (firmware.core.runtime.Core): drivers, call control, the SIP bridge to the
cloud edges of the config (or local-only when there are none), CDRs in
--data-dir/cdr.db. Every line event, call-state change and SIP registration or edge
change is printed as it happens, until Ctrl-C, SIGTERM or --duration; then the core
stops cleanly (calls hung up, SIP shut down) and the exit code is 0. A chip that fails
to start is printed with its reason and marked failed; the other ports keep running.
Also holds what `hw` and `demo` share: where the config lives, building a board, and
one line per event.
"""

from __future__ import annotations

import signal
import sys

from firmware.core.config import ConfigStore, config_dir
from firmware.gateway import CALL, CALLER_ID
from firmware.sip import api
from foundation.errors import HardwareError
from foundation.reactor import MonotonicClock, Reactor

DEFAULT_DATA_DIR = "/var/lib/branchline"


def register(sub) -> None:
    p = sub.add_parser("run", help="start the gateway core and print line events",
                       description="Start the gateway (drivers and event log) and print "
                                   "line events until Ctrl-C, SIGTERM or --duration.")
    add_board_options(p)
    p.add_argument("--data-dir", metavar="DIR", default=DEFAULT_DATA_DIR,
                   help=f"where the CDR database lives (default: {DEFAULT_DATA_DIR})")
    p.add_argument("--duration", type=float, metavar="S",
                   help="stop after S seconds (default: run until stopped)")
    p.add_argument("--api", metavar="HOST:PORT",
                   help="serve the control API on loopback TCP (sim mode), e.g. 127.0.0.1:8080")
    p.add_argument("--api-socket", metavar="PATH",
                   help="serve the control API on a Unix socket, e.g. /run/branchline/core.sock")
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

        # the simulated box has the lifeline relay between fxs1's phone and the CO line
        return SimBoard(reactor, doc, **{"lifeline_bypass": True, **kw})
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
    if event.kind == CALL:
        return f"call {event.data.get('was')} -> {event.data.get('state')}"
    if event.kind == CALLER_ID:
        return f"CALLER ID {event.data.get('number') or ''} {event.data.get('name') or ''!r}"
    extra = " ".join(f"{k}={v}" for k, v in event.data.items())
    return f"{event.kind.upper()} {extra}".rstrip()


def _why(event) -> str:
    if event.kind == "off_hook":
        return " (dial tone)"
    if event.kind == CALL:
        return f" (call {event.data.get('was')} -> {event.data.get('state')})"
    if event.kind in ("chip_failed", "disconnect", "headset_unplugged"):
        detail = " ".join(f"{v}" for v in event.data.values())
        return f" ({event.kind.replace('_', ' ')}{': ' + detail if detail else ''})"
    return ""


def _caller(event, port) -> str:
    if event.kind == "ring_start" and port is not None and port.caller:
        number, name = port.caller.get("number") or "", port.caller.get("name") or ""
        return f" (caller {number} \"{name}\")"
    return ""


def describe_sip(event, now: float, t0: float) -> str | None:
    """One line for the SIP events a technician watches (None: not worth a line)."""
    head = f"{now - t0:7.2f}s  {'sip':<8} "
    d = event.data
    if event.kind == api.REGISTRATION:
        return head + ("REGISTERED " if d.get("ok") else "NOT REGISTERED ") + str(d.get("reason"))
    if event.kind == api.EDGE:
        up = "UP" if d.get("ok") else "DOWN"
        rtt = f" (OPTIONS {d['rtt_ms']:.0f} ms)" if d.get("rtt_ms") is not None else ""
        return head + f"edge {d.get('edge')} {up}{rtt}"
    if event.kind == api.INCOMING:
        return head + (f"call {event.call} INCOMING from {d.get('from_number') or '?'} "
                       f"\"{d.get('from_name') or ''}\" to {d.get('to_number') or '?'}")
    if event.kind == api.ENDED:
        return head + f"call {event.call} ENDED {d.get('code')} {d.get('reason') or ''}".rstrip()
    if event.kind in (api.ANSWERED, api.TRANSFER_REQUESTED, api.TRANSFER_DONE):
        return head + f"call {event.call} {event.kind.upper().replace('_', ' ')}"
    return None


# -- the command ---------------------------------------------------------------------------

def cmd_run(args) -> int:
    from firmware.core.runtime import Core

    doc = load_document(args.config_dir)
    reactor = Reactor(MonotonicClock())
    board = build_board(reactor, doc, args.sim)
    core = Core(doc, board, reactor, data_dir=args.data_dir)
    t0 = reactor.now()
    ports = core.gateway.ports
    core.gateway.subscribe(lambda e, o, n: print(describe(e, o, n, t0, ports.get(e.port)),
                                                 flush=True))
    core.subscribe_sip(lambda e: _print_if(describe_sip(e, reactor.now(), t0)))
    for problem in board.problems:
        print(f"branchline: {problem}", file=sys.stderr)
    _stop_on_signals(reactor)
    control = None
    try:
        core.start()
        if all(p.state == "failed" for p in ports.values() if p.kind != "headset"):
            raise HardwareError("no line came up: fix the errors above, or try "
                                "`branchline run --sim`")
        if core.no_cloud:
            print(f"branchline: no cloud: {core.no_cloud}", file=sys.stderr)
        control = _start_api(core, args)
        if args.duration is None:
            reactor.run_forever()
        else:
            reactor.run_for(args.duration)
    finally:
        if control is not None:
            control.stop()
        core.stop()
    return 0


def _start_api(core, args):
    """The control API (firmware.api) when --api or --api-socket is given, else None."""
    if not (getattr(args, "api", None) or getattr(args, "api_socket", None)):
        return None
    from firmware.api.server import ApiServer

    server = ApiServer(core, ConfigStore(config_dir(args.config_dir)), tcp=args.api,
                       unix_path=args.api_socket)
    server.start()
    return server


def _print_if(line: str | None) -> None:
    if line:
        print(line, flush=True)


def _stop_on_signals(reactor) -> None:
    def stop(_signum, _frame):
        reactor.call_soon(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
