"""`branchline web`: run the technician web page (HTTPS) against the core's control API.
Firmware bundles uploaded there are installed by the update service (--update-socket).
First start makes the self-signed certificate (fingerprint printed and in
DATA_DIR/tls-fingerprint) and the one-time setup code (in DATA_DIR/setup-code and on the
serial console; never printed here, where supervisord logs it).
Runs until SIGTERM / Ctrl-C; may die at any time without touching calls."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING

from firmware.api.client import ApiClient, ApiError
from firmware.cli.apiopts import DEFAULT_DATA_DIR, add_api_options, api_address
from firmware.cli.updateopt import add_update_option
from foundation.errors import BranchlineError

if TYPE_CHECKING:  # Flask loads only when the page runs
    from firmware.web.server import Servers, Web


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="run the technician web page (HTTPS)",
                       description="Serve the technician web page over HTTPS; it talks to "
                                   "the core only through its control API.")
    add_api_options(p)
    p.add_argument("--data-dir", metavar="DIR", default=DEFAULT_DATA_DIR,
                   help=f"accounts, audit log, certificate (default: {DEFAULT_DATA_DIR})")
    p.add_argument("--listen", metavar="ADDR:PORT", default="0.0.0.0:443",
                   help="HTTPS address (default: 0.0.0.0:443)")
    p.add_argument("--http-redirect", metavar="PORT", type=int,
                   help="also answer plain HTTP on PORT with a redirect to HTTPS (e.g. 80)")
    p.add_argument("--name", metavar="NAME",
                   help="box name for the certificate (default: the config's system.name)")
    p.add_argument("--login-rate", metavar="N", type=int, default=20,
                   help="login attempts allowed per client address per 5 minutes (default 20)")
    add_update_option(p)
    p.add_argument("--verbose", "-v", action="store_true", help="log every request")
    p.set_defaults(func=cmd_web)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BranchlineError(f"--listen {text!r}: give ADDR:PORT, e.g. 0.0.0.0:443")
    return host.strip("[]") or "0.0.0.0", int(port)


def cmd_web(args: argparse.Namespace) -> int:
    from firmware.auth import Auth
    from firmware.web.server import Servers, Web
    from firmware.web.tls import ensure_certificate, local_ips

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s web %(levelname)s %(name)s: %(message)s")
    listen = parse_listen(args.listen)
    api = ApiClient(**api_address(args))
    name = args.name or _box_name(api)
    wildcard = listen[0] in ("0.0.0.0", "::", "")
    ips = local_ips() if wildcard else sorted(set(local_ips()) | {listen[0]})
    cert, key, fp = ensure_certificate(args.data_dir, name, ips)
    web = Web(api, args.data_dir, login_limit=max(1, args.login_rate))
    web.box = name
    web.app.config["UPDATE_SOCKET"] = args.update_socket  # None: the service's default
    code = Auth(args.data_dir).ensure_setup_code()
    servers = Servers(web, listen, args.http_redirect, cert, key)
    print(f"branchline web: https://{listen[0]}:{servers.port}/ (certificate SHA-256 {fp})",
          flush=True)
    if code:  # never the code itself: this output ends up in a log file
        print(f"branchline web: first login needs the setup code: on the serial console and "
              f"in {args.data_dir}/setup-code", flush=True)
    return _serve(web, servers)


def _box_name(api: ApiClient) -> str:
    try:
        got = api.request("GET", "/config", timeout=3.0)
        return str(got["document"]["system"]["name"])
    except (ApiError, KeyError, TypeError):
        return "branchline"


def _serve(web: Web, servers: Servers) -> int:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    servers.start()
    web.start_sampler()
    try:
        while not done.wait(0.5):
            pass
    finally:
        web.stop()
        servers.stop()
    print("branchline web: stopped", file=sys.stderr, flush=True)
    return 0
