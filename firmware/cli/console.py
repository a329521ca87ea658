"""`branchline console --tty DEV [--api HOST:PORT | --api-socket PATH]`: the serial
console process, until SIGTERM/SIGINT (a missing tty is waited for). The account and the
web page's TLS fingerprint (for the banner) are read from --data-dir; `update install`
hands bundles to the update service at --update-socket."""

from __future__ import annotations

import logging
import signal
import threading
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

from firmware.cli.apiopts import DEFAULT_DATA_DIR, Subparsers, add_api_options, api_address
from firmware.cli.updateopt import add_update_option, update_client
from foundation.errors import BranchlineError

DEFAULT_TTY = "/dev/ttyAMA0"


def register(sub: Subparsers) -> None:
    p = sub.add_parser("console", help="serve the technician's CLI on a serial port",
                       description="Serve the serial console (login, show, configure, "
                                   "test) on a tty, talking to the core's control API.")
    p.add_argument("--tty", default=DEFAULT_TTY, metavar="DEV",
                   help=f"serial device (default: {DEFAULT_TTY})")
    p.add_argument("--baud", type=int, default=115200, help="baud rate, 8N1 (default: 115200)")
    add_api_options(p)
    p.add_argument("--data-dir", metavar="DIR", default=DEFAULT_DATA_DIR,
                   help=f"accounts, audit log, TLS fingerprint (default: {DEFAULT_DATA_DIR})")
    add_update_option(p)
    p.add_argument("--idle-timeout", type=float, default=900.0, metavar="S",
                   help="log out after S seconds without input (default: 900)")
    p.set_defaults(func=cmd_console)


def _fingerprint(data_dir: Path) -> Callable[[], str | None]:
    def read() -> str | None:
        try:
            return (data_dir / "tls-fingerprint").read_text().strip()[:120] or None
        except OSError:
            return None
    return read


def cmd_console(args: Namespace) -> int:
    from firmware.api.client import ApiClient
    from firmware.auth import Auth
    from firmware.console.app import SerialConsole
    from firmware.console.session import Session

    if args.baud <= 0:
        raise BranchlineError(f"--baud {args.baud}: give a positive rate, e.g. 115200")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s console %(levelname)s %(message)s")
    link = ApiClient(**api_address(args))
    auth = Auth(args.data_dir)
    data_dir = Path(args.data_dir)
    update = update_client(args)

    def make_session(write: Callable[[bytes], None]) -> Session:
        return Session(write, link, auth, f"console:{args.tty}", _fingerprint(data_dir),
                       idle_timeout_s=args.idle_timeout, update=update)

    console = SerialConsole(args.tty, args.baud, make_session)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    console.run(stop)
    return 0
