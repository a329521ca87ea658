"""`branchline run`: start the gateway core on the box (or on the twins with --sim) and print
its port, call and survivability events and the SIP events a technician watches, until
Ctrl-C, SIGTERM, --duration or POST /restart; then stop cleanly (exit code 0). Also what `hw` and `demo`
share: where the config lives, building a board, and one line per event.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from argparse import ArgumentParser, Namespace
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from drivers.board import Board
from firmware.cli.apiopts import DEFAULT_DATA_DIR, Subparsers
from firmware.core.config import ConfigStore, config_dir
from firmware.core.health import HealthPing, ping_interval_s
from firmware.events import CoreEvent, EventKind
from firmware.sip import api
from foundation import events as lev
from foundation.errors import HardwareError
from foundation.events import LineEvent
from foundation.reactor import MonotonicClock, Reactor

if TYPE_CHECKING:
    from firmware.api.server import ApiServer
    from firmware.core.runtime import Core

RESTART_DELAY_S = 0.3  # POST /restart answers before the core stops
TEST_HOOKS_ENV = "BRANCHLINE_TEST_HOOKS"  # "1": SIGUSR2 freezes the reactor (watchdog tests)


def register(sub: Subparsers) -> None:
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


def add_board_options(p: ArgumentParser) -> None:
    p.add_argument("--sim", action="store_true",
                   help="use the simulated twins instead of the box's hardware")
    p.add_argument("--config-dir", metavar="DIR",
                   help="config directory (default: $BRANCHLINE_CONFIG_DIR or /etc/branchline)")


# -- shared by run, hw and demo ------------------------------------------------------------

def load_document(directory: str | None) -> dict[str, Any]:
    """The validated config from --config-dir / $BRANCHLINE_CONFIG_DIR / /etc/branchline
    (the default document when no file exists yet)."""
    return ConfigStore(config_dir(directory)).load()


def build_board(reactor: Reactor, doc: dict[str, Any], sim: bool, **kw: Any) -> Board:
    if sim:
        from drivers.sim.board import SimBoard

        # the simulated box has the lifeline relay between fxs1's phone and the CO line
        return SimBoard(reactor, doc, **{"lifeline_bypass": True, **kw})
    from drivers.board import RealBoard

    return RealBoard(reactor, doc, **kw)


def describe_line(event: LineEvent, t0: float) -> str | None:
    """A digit, hook flash or ring burst, which move no port state (None: other events)."""
    head = f"{event.time - t0:7.2f}s  {event.port:<8} "
    if event.kind == lev.DIGIT:
        return head + f"DIGIT {event.data.get('digit')} ({event.data.get('method', '?')})"
    word = {str(lev.FLASH): "FLASH", str(lev.RING_START): "RING"}.get(event.kind)
    return head + word if word else None


def describe_sip(event: api.SipEvent, now: float, t0: float) -> str | None:
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


K = EventKind
EVENT_LINES: dict[EventKind, Callable[[CoreEvent], str]] = {
    K.PORT_STATE: lambda e: f"{e.data.get('was')} -> {str(e.data.get('state')).upper()}",
    K.CALLER_ID: lambda e: f"CALLER ID {e.data.get('number') or ''} {e.data.get('name') or ''!r}",
    K.SURVIVABILITY: lambda e: (f"{str(e.data.get('was')).upper()} -> "
                                f"{str(e.data.get('state')).upper()} ({e.data.get('reason')})"),
    K.CONFIG_APPLIED: lambda e: f"config applied ({len(e.data.get('live', []))} live)",
}
CALL_EVENTS = (K.RINGING, K.ANSWERED, K.HELD, K.RESUMED, K.TRANSFERRED, K.HUNG_UP)


def describe_event(event: CoreEvent, now: float, t0: float) -> str | None:
    """One line for a core event (None: a registration, which describe_sip shows)."""
    who = event.port or ("survive" if event.kind is K.SURVIVABILITY else "box")
    head = f"{now - t0:7.2f}s  {who:<8} "
    if event.kind in CALL_EVENTS:
        end = event.data.get("disposition") or event.data.get("to") or ""
        return head + (f"call {event.kind.upper().replace('_', ' ')} {event.direction} "
                       f"{event.ani or '?'} -> {event.dnis or '?'} {end}").rstrip()
    line = EVENT_LINES.get(event.kind)
    return head + line(event) if line is not None else None


# -- the command ---------------------------------------------------------------------------

def cmd_run(args: Namespace) -> int:
    from firmware.core.runtime import Core

    faulthandler.enable()  # SIGABRT from the watchdog dumps every thread's stack to the log
    doc = load_document(args.config_dir)
    reactor = Reactor(MonotonicClock())
    board = build_board(reactor, doc, args.sim)
    core = Core(doc, board, reactor, data_dir=args.data_dir)
    t0 = reactor.now()
    core.events.subscribe(lambda e: _print_if(describe_event(e, reactor.now(), t0)))
    core.subscribe_sip(lambda e: _print_if(describe_sip(e, reactor.now(), t0)))
    board.subscribe(lambda e: _print_if(describe_line(e, t0)))
    for problem in board.problems:
        print(f"branchline: {problem}", file=sys.stderr)
    _stop_on_signals(reactor)
    _install_test_hooks(reactor)
    core.restart_hook = lambda: _restart_soon(reactor)
    control = None
    health = HealthPing(reactor, interval_s=ping_interval_s(), status=core.status)
    ready = False
    try:
        core.start()
        ports = core.status()["ports"].values()
        if all(p["state"] == "failed" for p in ports if p["kind"] != "headset"):
            raise HardwareError("no line came up: fix the errors above, or try "
                                "`branchline run --sim`")
        if core.no_cloud:
            print(f"branchline: no cloud: {core.no_cloud}", file=sys.stderr)
        control = _start_api(core, args)
        health.start()  # this thread runs the reactor: the pings come from its timer
        ready = True
        if args.duration is None:
            reactor.run_forever()
        else:
            reactor.run_for(args.duration)
    finally:
        if ready:
            health.stop()
        if control is not None:
            control.stop()
        core.stop()
    return 0


def _start_api(core: Core, args: Namespace) -> ApiServer | None:
    """The control API (firmware.api) when --api or --api-socket is given, else None."""
    if not (getattr(args, "api", None) or getattr(args, "api_socket", None)):
        return None
    from firmware.api.server import ApiServer

    server = ApiServer(core, ConfigStore(config_dir(args.config_dir)), tcp=args.api,
                       unix_path=args.api_socket)
    server.start()
    return server


def _restart_soon(reactor: Reactor) -> None:
    """POST /restart: stop after the answer is out; cmd_run then stops the core (calls
    hung up, CDRs written) and exits 0, and the supervisor starts it again."""
    print("branchline: restart requested through the control API", flush=True)
    reactor.register_timer(lambda _t: reactor.stop(), reactor.now() + RESTART_DELAY_S)


def _print_if(line: str | None) -> None:
    if line:
        print(line, flush=True)


def _stop_on_signals(reactor: Reactor) -> None:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        reactor.call_soon(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _install_test_hooks(reactor: Reactor) -> None:
    """With BRANCHLINE_TEST_HOOKS=1, SIGUSR2 blocks the reactor thread for good (the API
    threads keep serving): the "frozen reactor" the watchdog tests need. Off on the box."""
    if os.environ.get(TEST_HOOKS_ENV) != "1":
        return

    def freeze() -> None:
        print("branchline: test hook: the reactor is frozen (SIGUSR2)", flush=True)
        threading.Event().wait()

    signal.signal(signal.SIGUSR2, lambda _signum, _frame: reactor.call_soon(freeze))
