"""`branchline hw probe|selftest`: the cards as a technician sees them. probe prints one
row per port (chip, bus, state or why it failed, hook/ring, loop current, line voltage);
selftest runs drivers/selftest.py's first-power-up checks, PASS/FAIL with the fix. A missing
device is one line on stderr, exit code 2. Both own the chips (the lifeline stays
released), so on the box they refuse to run while the core answers on its socket."""

from __future__ import annotations

import json
import socket
import sys
from argparse import Namespace

from drivers import selftest as board_selftest
from firmware.api.client import DEFAULT_SOCKET
from firmware.cli.apiopts import Subparsers
from firmware.cli.run import add_board_options, build_board, load_document
from firmware.core.config import Config
from firmware.gateway import FAILED, Gateway
from foundation.errors import BranchlineError, HardwareError
from foundation.reactor import FakeClock, MonotonicClock, Reactor

SETTLE_S = 0.5  # long enough for the drivers' post-calibration readouts
STOP_CORE = "supervisorctl stop core"  # systemd/supervisord.conf: [program:core]


def register(sub: Subparsers) -> None:
    hw = sub.add_parser("hw", help="hardware: probe cards and ports")
    hw_sub = hw.add_subparsers(dest="hw_command", metavar="ACTION", required=True)
    for name, help_, description, func in (
            ("probe", "list cards, ports and their live state",
             "Start every chip and show each port's live state.", cmd_probe),
            ("selftest", "first-power-up check of the cards, one line per check",
             "Bring the chips up and check them: chip IDs, PCLK, battery and DC-DC, "
             "calibration, indirect registers, DAA link, a tone looped through each "
             "timeslot. Exit status 0 all passed, 1 a check failed, 2 nothing to test.",
             cmd_selftest)):
        p = hw_sub.add_parser(name, help=help_, description=description)
        add_board_options(p)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.add_argument("--core-socket", metavar="PATH", default=DEFAULT_SOCKET,
                       help=f"the running core's control socket (default: {DEFAULT_SOCKET}); "
                            "the command refuses to run while the core answers there")
        p.set_defaults(func=func)


def refuse_if_core_runs(args: Namespace) -> None:
    """The core owns the chips: a second owner would reset them under its calls."""
    if args.sim or not _answers(args.core_socket):
        return
    raise BranchlineError(
        f"the core is running (it answers on {args.core_socket}) and owns the cards: stop "
        f"it first with `{STOP_CORE}`, run `branchline hw {args.hw_command}`, then start it "
        "again (`supervisorctl start core`); the lifeline phone keeps the PSTN meanwhile")


def _answers(path: str) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.connect(path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


def probe(doc: dict, sim: bool) -> tuple[list[dict], list[str]]:
    """Rows (one per port) and the distinct device problems."""
    reactor = Reactor(FakeClock() if sim else MonotonicClock())
    board = build_board(reactor, doc, sim)
    gateway = Gateway(Config.from_doc(doc), board, reactor, lifeline=False)
    try:
        gateway.start()
        reactor.run_for(SETTLE_S)
        status = gateway.status()
    finally:
        gateway.stop()
    rows = [port_row(gateway.cfg, name, st) for name, st in status.items()]
    problems = list(board.problems)
    for row in rows:
        if row["state"] == "failed" and row["reason"] not in problems:
            problems.append(row["reason"])
    return rows, problems


def port_row(cfg: Config, name: str, st: dict) -> dict:
    if name == "headset":
        return {**st, "chip_name": "-", "chip": "headset", "bus": cfg.board.headset.alsa_device}
    chip_name = cfg.line(name).chip
    chip = cfg.board.chips[chip_name]
    return {**st, "chip_name": chip_name, "chip": chip.type,
            "bus": f"spidev{chip.spi_bus}.{chip.spi_cs}"}


def format_rows(rows: list[dict]) -> str:
    head = f"{'PORT':<8} {'KIND':<7} {'CHIP':<14} {'BUS':<10} {'STATE':<12} {'HOOK/RING':<10} {'LOOP mA':>8} {'LINE V':>7}  NOTE"
    return "\n".join([head, *(_formatport_row(r) for r in rows)])


def _formatport_row(r: dict) -> str:
    chip = f"{r['chip_name']} {r['chip']}" if r["chip_name"] != "-" else r["chip"]
    return (f"{r['port']:<8} {r['kind']:<7} {chip:<14} {r['bus']:<10} {r['state']:<12} "
            f"{_hook_or_ring(r):<10} {_num(r.get('loop_current_ma')):>8} "
            f"{_num(r.get('line_voltage_v')):>7}  {_note(r)}").rstrip()


def _hook_or_ring(r: dict) -> str:
    if r.get("ring") or r.get("ringing"):  # the contract says "ring"; the DAA says "ringing"
        return "ringing"
    if "hook" in r:
        return f"{r['hook']}-hook" if r["hook"] in ("on", "off") else str(r["hook"])
    return "-"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{float(value):.1f}"


def _note(r: dict) -> str:
    if r["state"] == "failed":
        return r.get("reason", "")
    if r["kind"] == "headset" and r["state"] != "present":
        return "not plugged in" + (f": {r['error']}" if r.get("error") else "")
    if r["kind"] == "headset":
        return f"{r.get('rate', '?')} Hz" + (" muted" if r.get("muted") else "")
    return r.get("reason", "")


def cmd_probe(args: Namespace) -> int:
    refuse_if_core_runs(args)
    doc = load_document(args.config_dir)
    rows, problems = probe(doc, args.sim)
    if args.json:
        print(json.dumps({"ports": rows, "problems": problems}, indent=2, default=str))
    else:
        print(format_rows(rows))
    for problem in problems:
        print(f"branchline: {problem}", file=sys.stderr)
    return 2 if problems else 0


# -- selftest ------------------------------------------------------------------------------

def selftest(doc: dict, sim: bool) -> tuple[list[dict], list[str]]:
    """Every check of drivers/selftest.py on a board brought up as the core brings it up,
    or ([], the device problems) when no line's chip could even be reached."""
    reactor = Reactor(FakeClock() if sim else MonotonicClock())
    board = build_board(reactor, doc, sim)
    gateway = Gateway(Config.from_doc(doc), board, reactor, media=False, lifeline=False)
    try:
        if not board.drivers:
            return [], list(board.problems) or ["no line is configured (lines is empty)"]
        gateway.start()
        reactor.run_for(SETTLE_S)
        down = {name: port.reason for name, port in gateway.book.ports.items()
                if port.state == FAILED and port.kind != "headset"}
        return board_selftest.run(board, reactor, down), []
    finally:
        gateway.stop()


def format_checks(results: list[dict]) -> str:
    """One line per check: PASS/FAIL, port, check, what was measured, and the fix."""
    lines = []
    for r in results:
        line = f"{'PASS' if r['ok'] else 'FAIL'}  {r['port']:<8} {r['check']:<22} {r['detail']}"
        lines.append(line if r["ok"] else f"{line}  => fix: {r['fix']}")
    failed = sum(not r["ok"] for r in results)
    lines.append(f"{len(results)} checks, {failed} failed" if failed
                 else f"{len(results)} checks, all passed")
    return "\n".join(lines)


def cmd_selftest(args: Namespace) -> int:
    refuse_if_core_runs(args)
    doc = load_document(args.config_dir)
    results, problems = selftest(doc, args.sim)
    if not results:
        for problem in problems:
            print(f"branchline: {problem}", file=sys.stderr)
        raise HardwareError("no card to test: fix the devices above, or try "
                            "`branchline hw selftest --sim`")
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(format_checks(results))
    return 0 if all(r["ok"] for r in results) else 1
