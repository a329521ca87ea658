"""`branchline console`: the serial console process (a CLI for the technician on a tty).

    branchline console --tty /dev/ttyAMA0 --baud 115200 --api-socket /run/branchline/core.sock
    branchline console --tty /dev/pts/5 --api 127.0.0.1:8081 --data-dir /tmp/bl   (sim)

Runs until SIGTERM/SIGINT; a missing or vanishing tty is waited for, never fatal.
The account (setup code, admin password, lockout, audit log) lives in --data-dir, shared
with the web page; the web page's TLS fingerprint is read from there for the banner.
Logs go to stderr (supervisord/journald keep them).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from firmware.cli.apiopts import add_api_options, api_address
from foundation.errors import BranchlineError

DEFAULT_TTY = "/dev/ttyAMA0"
DEFAULT_DATA_DIR = "/var/lib/branchline"


def register(sub) -> None:
    p = sub.add_parser("console", help="serve the technician's CLI on a serial port",
                       description="Serve the serial console (login, show, configure, "
                                   "test) on a tty, talking to the core's control API.")
    p.add_argument("--tty", default=DEFAULT_TTY, metavar="DEV",
                   help=f"serial device (default: {DEFAULT_TTY})")
    p.add_argument("--baud", type=int, default=115200, help="baud rate, 8N1 (default: 115200)")
    add_api_options(p)
    p.add_argument("--data-dir", metavar="DIR", default=DEFAULT_DATA_DIR,
                   help=f"accounts, audit log, TLS fingerprint (default: {DEFAULT_DATA_DIR})")
    p.add_argument("--idle-timeout", type=float, default=900.0, metavar="S",
                   help="log out after S seconds without input (default: 900)")
    p.set_defaults(func=cmd_console)


def _fingerprint(data_dir: Path):
    def read() -> str | None:
        try:
            return (data_dir / "tls-fingerprint").read_text().strip()[:120] or None
        except OSError:
            return None
    return read


def cmd_console(args) -> int:
    from firmware.auth import Auth
    from firmware.console.app import SerialConsole
    from firmware.console.corelink import CoreLink
    from firmware.console.session import Session

    if args.baud <= 0:
        raise BranchlineError(f"--baud {args.baud}: give a positive rate, e.g. 115200")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s console %(levelname)s %(message)s")
    link = CoreLink(**api_address(args))
    auth = Auth(args.data_dir)
    data_dir = Path(args.data_dir)

    def make_session(write):
        return Session(write, link, auth, f"console:{args.tty}", _fingerprint(data_dir),
                       idle_timeout_s=args.idle_timeout)

    console = SerialConsole(args.tty, args.baud, make_session)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    console.run(stop)
    return 0
