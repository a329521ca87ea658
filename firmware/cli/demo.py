"""`branchline demo`: the gateway on simulated hardware, calling a simulated cloud.

By default the cloud demo, `python -m lab.demo` (Kamailio and two cloud agents on loopback,
a PSTN call surviving a WAN cut, records forwarded, then the fleet platform managing the
box over MQTT 5 through `branchline agent`; ~50 s), run as a child process since
firmware never imports lab. `--fast`: the hardware-only scene of scene() in fake time, with
the gateway standing in for call control on fxo1; exit code 1 when a port failed or the
scene did not reach its end.
"""

from __future__ import annotations

import subprocess
import sys
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.callctl.model import CALLER_ID, PortLine
from firmware.cli.apiopts import Subparsers
from firmware.cli.hw import format_rows, port_row
from firmware.cli.run import build_board, describe_line
from firmware.core.config import Config, default_document
from firmware.gateway import Gateway
from foundation import events as ev
from foundation.errors import BranchlineError
from foundation.events import LineEvent
from foundation.reactor import FakeClock, Reactor

if TYPE_CHECKING:
    from drivers.sim.board import SimBoard

Action = Callable[[], object]

CALLER = {"number": "5551230100", "name": "ACME LTD", "datetime": "11221030", "reason": None}
HANGUP_AFTER_S = 1.5  # the answered call lasts this long before the far end hangs up
LINGER_S = 0.5  # after the line is released, before the demo ends
LIMIT_S = 25.0  # the scene ends itself well before this; a stuck scene stops here
CLOUD_DEMO_LIMIT_S = 120.0  # the cloud demo takes ~50 s; a hung one is stopped here
ROOT = Path(__file__).resolve().parents[2]


def register(sub: Subparsers) -> None:
    p = sub.add_parser("demo", help="run the gateway on simulated hardware with a simulated cloud",
                       description="Boot the simulated board, a Kamailio and two cloud agents "
                                   "on loopback, and show a PSTN call to the cloud surviving "
                                   "a WAN cut at the local headset, a phone call to the "
                                   "cloud, the records delivered afterwards, and the "
                                   "fleet platform managing the box over MQTT. --fast: "
                                   "the hardware-only scene in fake time.")
    p.add_argument("--fast", action="store_true",
                   help="the hardware-only scene (no SIP), in fake time (no waiting)")
    p.set_defaults(func=cmd_demo)


def scene(board: SimBoard) -> list[tuple[float, str, Action]]:
    """(seconds after boot, what happens, action) in the order the story is told."""
    fxs1, fxs2, co = board.phones["fxs1"], board.phones["fxs2"], board.cos["fxo1"]
    return [
        (0.2, "phone on fxs1 lifts the handset", fxs1.off_hook),
        (0.6, "phone on fxs1 dials 202 (pulse, 10 pps, 60/40)", lambda: fxs1.dial_pulse("202")),
        (4.0, "phone on fxs1 hangs up", fxs1.on_hook),
        (4.2, "phone on fxs2 lifts the handset", fxs2.off_hook),
        (4.8, "phone on fxs2 flashes the hook (300 ms)", lambda: fxs2.flash(ms=300)),
        (5.6, "the CO rings fxo1, caller 5551230100 \"ACME LTD\"", lambda: co.ring(callerid=CALLER)),
        (6.0, "phone on fxs2 hangs up", fxs2.on_hook),
    ]


def describe(event: LineEvent, old: str, new: str, t0: float, port: PortLine | None = None
             ) -> str:
    """One readable line: `  0.40s  fxs1     on-hook -> OFF-HOOK (dial tone)`."""
    head = f"{event.time - t0:7.2f}s  {event.port:<8} "
    if new != old:
        return head + f"{old} -> {new.upper()}" + _why(event) + _caller(event, port)
    return (describe_line(event, t0) or head + _what(event)) + _caller(event, port)


def _what(event: LineEvent) -> str:
    if event.kind == CALLER_ID:
        return f"CALLER ID {event.data.get('number') or ''} {event.data.get('name') or ''!r}"
    extra = " ".join(f"{k}={v}" for k, v in event.data.items())
    return f"{event.kind.upper()} {extra}".rstrip()


def _why(event: LineEvent) -> str:
    if event.kind == ev.OFF_HOOK:
        return " (dial tone)"
    if event.kind in (ev.CHIP_FAILED, ev.DISCONNECT, ev.HEADSET_UNPLUGGED):
        detail = " ".join(f"{v}" for v in event.data.values())
        return f" ({event.kind.replace('_', ' ')}{': ' + detail if detail else ''})"
    return ""


def _caller(event: LineEvent, port: PortLine | None) -> str:
    if event.kind == ev.RING_START and port is not None and port.caller:
        number, name = port.caller.get("number") or "", port.caller.get("name") or ""
        return f" (caller {number} \"{name}\")"
    return ""


class _Stage:
    """Prints the scene and stands in for call control on fxo1."""

    def __init__(self, reactor: Reactor, gateway: Gateway, board: SimBoard, t0: float) -> None:
        self.reactor, self.gateway, self.board, self.t0 = reactor, gateway, board, t0
        self.rings = 0
        self.done = False

    def on_change(self, event: LineEvent, old: str, new: str) -> None:
        print(describe(event, old, new, self.t0, self.gateway.book.ports.get(event.port)), flush=True)
        if event.port != "fxo1":
            return
        if event.kind == ev.RING_START:
            self.rings += 1
            if self.rings == 2:
                self._later(0.0, "the gateway answers fxo1 (call control stand-in)",
                            lambda: self.gateway.seize("fxo1"))
                self._later(HANGUP_AFTER_S, "the far end hangs up: the CO drops loop current",
                            lambda: self.board.cos["fxo1"].disconnect("loop_drop"))
        elif event.kind == ev.DISCONNECT and self.gateway.book.ports["fxo1"].state != "idle":
            self._later(0.0, "the gateway releases fxo1", self._release)

    def _release(self) -> None:
        self.gateway.release("fxo1")
        self.reactor.register_timer(self._end, self.reactor.now() + LINGER_S)

    def _end(self, _eventtime: float) -> float:
        self.done = True
        self.reactor.stop()
        return float("inf")

    def at(self, t: float, what: str, action: Action) -> None:
        def fire(eventtime: float) -> float:
            print(f"{eventtime - self.t0:7.2f}s  -- {what}", flush=True)
            action()
            return float("inf")

        self.reactor.register_timer(fire, self.t0 + t)

    def _later(self, delay: float, what: str, action: Action) -> None:
        self.at(self.reactor.now() + delay - self.t0, what, action)


def cmd_demo(args: Namespace) -> int:
    return hardware_demo() if args.fast else cloud_demo()


def cloud_demo() -> int:
    """The cloud demo in lab/demo.py, as a child process writing to our stdout."""
    if not (ROOT / "lab" / "demo.py").exists():
        raise BranchlineError("the cloud demo needs the lab/ folder of the source tree; "
                              "on a box without it, run `branchline demo --fast`")
    try:
        return subprocess.run([sys.executable, "-m", "lab.demo"], cwd=ROOT,
                              timeout=CLOUD_DEMO_LIMIT_S).returncode
    except subprocess.TimeoutExpired:
        raise BranchlineError(f"the cloud demo did not finish within "
                              f"{CLOUD_DEMO_LIMIT_S:.0f} s: stopped") from None


def hardware_demo() -> int:
    from drivers.sim.board import SimBoard  # the twins only when the demo runs

    cfg = Config.from_doc(default_document())
    reactor = Reactor(FakeClock())
    board = build_board(reactor, cfg.to_doc(), sim=True)
    assert isinstance(board, SimBoard)
    gateway = Gateway(cfg, board, reactor)
    t0 = reactor.now()
    stage = _Stage(reactor, gateway, board, t0)
    gateway.book.listeners.append(stage.on_change)
    print("branchline demo: gateway on simulated hardware (fake time)")
    gateway.start()  # the chips calibrate in (simulated) time; the scene starts after
    booted = reactor.now() - t0
    for t, what, action in scene(board):
        stage.at(booted + t, what, action)
    try:
        reactor.run_until(t0 + LIMIT_S)
        print("\nports at the end:")
        print(format_rows([port_row(cfg, n, st) for n, st in gateway.status().items()]))
    finally:
        gateway.stop()
    failed = any(p.state == "failed" for p in gateway.book.ports.values())
    return 1 if failed or not stage.done else 0
