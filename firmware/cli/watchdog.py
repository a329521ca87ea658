"""`branchline watchdog`: the supervisord program (priority 1) that restarts a core whose
reactor stopped pinging and feeds systemd's WatchdogSec only while supervisord and the
core are well (firmware.supervise.watchdog says how).

    branchline watchdog --socket /run/branchline/notify.sock \\
        --supervisor-url unix:///run/branchline/supervisor.sock
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from firmware.cli.apiopts import Subparsers
from foundation.errors import BranchlineError


def register(sub: Subparsers) -> None:
    from firmware.supervise.watchdog import run_dir

    run = run_dir()
    p = sub.add_parser("watchdog", help="restart a hung core; feed systemd's watchdog",
                       description="Receive the core's sd_notify pings, kill a core that "
                                   "stopped sending them (supervisord restarts it) and "
                                   "relay READY/WATCHDOG to systemd while all is well.")
    p.add_argument("--socket", metavar="PATH", type=Path, default=run / "notify.sock",
                   help=f"where the core's pings arrive (default: {run}/notify.sock, "
                        "from $BRANCHLINE_RUN)")
    p.add_argument("--socket-group", metavar="GROUP",
                   help="group of the socket, the core's (mode 0660; default: the group "
                        "owning the socket's folder)")
    p.add_argument("--supervisor-url", metavar="URL", default=f"unix://{run}/supervisor.sock",
                   help=f"supervisord's XML-RPC (default: unix://{run}/supervisor.sock)")
    p.add_argument("--program", default="core",
                   help="the supervisord program that sends the pings (default: core)")
    p.add_argument("--core-timeout", metavar="S", type=float, default=10.0,
                   help="kill the core after S seconds without WATCHDOG=1 (default 10)")
    p.add_argument("--start-grace", metavar="S", type=float, default=90.0,
                   help="time from the core's start to its READY=1 (default 90)")
    p.add_argument("--give-up", metavar="S", type=float, default=300.0,
                   help="stop feeding systemd when the core has not been ready for S "
                        "seconds, so systemd restarts the service (default 300)")
    p.add_argument("--verbose", "-v", action="store_true", help="log ignored messages too")
    p.set_defaults(func=cmd_watchdog)


def cmd_watchdog(args: argparse.Namespace) -> int:
    from firmware.supervise.watchdog import options_from_env, run_watchdog

    for name in ("core_timeout", "start_grace", "give_up"):
        if getattr(args, name) <= 0:
            raise BranchlineError(f"--{name.replace('_', '-')} must be more than 0 seconds")
    if not args.supervisor_url.startswith(("unix://", "http://")):
        raise BranchlineError(f"--supervisor-url {args.supervisor_url!r}: give "
                              "unix:///path/to/supervisor.sock or http://host:port")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        stream=sys.stderr,
                        format="%(asctime)s watchdog %(levelname)s %(message)s")
    options = options_from_env(args.socket, args.supervisor_url, args.program,
                               args.core_timeout, args.start_grace, args.give_up)
    options.socket_group = args.socket_group
    return run_watchdog(options)
