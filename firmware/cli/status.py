"""`branchline status [--api HOST:PORT] [--json]`: the running core's status document
(GET /api/v1/status) in one screen: box, WAN and edges, survivability and continuity,
registrations, the store-and-forward outbox, ports and calls."""

from __future__ import annotations

import json
from argparse import Namespace

from firmware.cli.apiopts import Subparsers, add_api_options, api_address
from firmware.console.views import status as render

__all__ = ["cmd_status", "register", "render"]

TIMEOUT_S = 5.0


def register(sub: Subparsers) -> None:
    p = sub.add_parser("status", help="show the running core's status (survivability, outbox)",
                       description="Ask the running core (its control API) for its status: "
                                   "WAN and edges, survivability, registrations, outbox, "
                                   "ports and calls.")
    add_api_options(p)
    p.add_argument("--json", action="store_true", help="print the status document as JSON")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for the core (default: {TIMEOUT_S:g})")
    p.set_defaults(func=cmd_status)


def cmd_status(args: Namespace) -> int:
    from firmware.api.client import ApiClient

    client = ApiClient(**api_address(args), timeout=args.timeout)
    st = client.status()
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True), flush=True)
    else:
        print("\n".join(render(st)), flush=True)
    return 0
