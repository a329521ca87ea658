"""`branchline hw probe`: list the cards, ports and their live state.

Builds the board from the config (or the twins with --sim), starts every chip as the core
would, lets calibration settle, then prints one row per port: chip, bus, state (or the
reason it failed), hook or ring, loop current, line voltage; and the headset. Each device
that is missing or wrong is printed as one line on stderr (e.g. `/dev/spidev0.0 not
found: enable SPI ...`) and the exit code is 2; no traceback.
"""

from __future__ import annotations

import json
import sys

from drivers.reactor import FakeClock, MonotonicClock, Reactor
from firmware.cli.run import add_board_options, build_board, load_document
from firmware.gateway import Gateway

SETTLE_S = 0.5  # long enough for the drivers' post-calibration readouts


def register(sub) -> None:
    hw = sub.add_parser("hw", help="hardware: probe cards and ports")
    hw_sub = hw.add_subparsers(dest="hw_command", metavar="ACTION", required=True)
    p = hw_sub.add_parser("probe", help="list cards, ports and their live state",
                          description="Start every chip and show each port's live state.")
    add_board_options(p)
    p.add_argument("--json", action="store_true", help="print the state as JSON")
    p.set_defaults(func=cmd_probe)


def probe(doc: dict, sim: bool) -> tuple[list[dict], list[str]]:
    """Rows (one per port) and the distinct device problems."""
    reactor = Reactor(FakeClock() if sim else MonotonicClock())
    board = build_board(reactor, doc, sim)
    gateway = Gateway(doc, board, reactor)
    try:
        gateway.start()
        reactor.run_for(SETTLE_S)
        status = gateway.status()
    finally:
        gateway.stop()
    rows = [port_row(doc, name, st) for name, st in status.items()]
    problems = list(board.problems)
    for row in rows:
        if row["state"] == "failed" and row["reason"] not in problems:
            problems.append(row["reason"])
    return rows, problems


def port_row(doc: dict, name: str, st: dict) -> dict:
    if name == "headset":
        hs = doc["board"].get("headset", {})
        return {**st, "chip_name": "-", "chip": "headset", "bus": hs.get("alsa_device", "")}
    chip_name = doc["lines"][name]["chip"]
    chip = doc["board"]["chips"][chip_name]
    return {**st, "chip_name": chip_name, "chip": chip["type"],
            "bus": f"spidev{chip['spi_bus']}.{chip['spi_cs']}"}


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


def _num(value) -> str:
    return "-" if value is None else f"{float(value):.1f}"


def _note(r: dict) -> str:
    if r["state"] == "failed":
        return r.get("reason", "")
    if r["kind"] == "headset" and r["state"] != "present":
        return "not plugged in" + (f": {r['error']}" if r.get("error") else "")
    if r["kind"] == "headset":
        return f"{r.get('rate', '?')} Hz" + (" muted" if r.get("muted") else "")
    return r.get("reason", "")


def cmd_probe(args) -> int:
    doc = load_document(args.config_dir)
    rows, problems = probe(doc, args.sim)
    if args.json:
        print(json.dumps({"ports": rows, "problems": problems}, indent=2, default=str))
    else:
        print(format_rows(rows))
    for problem in problems:
        print(f"branchline: {problem}", file=sys.stderr)
    return 2 if problems else 0
