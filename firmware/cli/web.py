"""`branchline web`: run the technician web page (HTTPS) against the core's control API.

    branchline web --api-socket /run/branchline/core.sock --data-dir /var/lib/branchline \
        --listen 0.0.0.0:443 --http-redirect 80
    branchline web --api 127.0.0.1:8081 --data-dir /tmp/d --listen 127.0.0.1:8443   # sim

On first start it makes the self-signed certificate (fingerprint printed and written to
DATA_DIR/tls-fingerprint) and the one-time setup code (printed and written to
DATA_DIR/setup-code). Runs until SIGTERM / Ctrl-C. The web process may die at any time
without touching calls: it only talks to the core's control API.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from firmware.cli.apiopts import add_api_options, api_address
from foundation.errors import BranchlineError

DEFAULT_DATA_DIR = "/var/lib/branchline"


def register(sub) -> None:
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
    p.add_argument("--verbose", "-v", action="store_true", help="log every request")
    p.set_defaults(func=cmd_web)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BranchlineError(f"--listen {text!r}: give ADDR:PORT, e.g. 0.0.0.0:443")
    return host.strip("[]") or "0.0.0.0", int(port)


def cmd_web(args) -> int:
    from firmware.auth import Auth
    from firmware.web.coreapi import ApiError, CoreApi
    from firmware.web.server import Servers, WebApp
    from firmware.web.tls import ensure_certificate

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s web %(levelname)s %(name)s: %(message)s")
    listen = parse_listen(args.listen)
    api = CoreApi(**api_address(args))
    name = args.name or _box_name(api, ApiError)
    cert, key, fp = ensure_certificate(args.data_dir, name, _cert_ips(listen[0]))
    app = WebApp(api, args.data_dir, login_limit=max(1, args.login_rate))
    app.box = name
    code = Auth(args.data_dir).ensure_setup_code()
    servers = Servers(app, listen, args.http_redirect, cert, key)
    port = servers.https.server_address[1]
    print(f"branchline web: https://{listen[0]}:{port}/ (certificate SHA-256 {fp})", flush=True)
    if code:
        print(f"branchline web: first login: setup code {code} "
              f"(also in {args.data_dir}/setup-code)", flush=True)
    return _serve(app, servers)


def _cert_ips(host: str) -> list[str]:
    from firmware.web.tls import local_ips

    ips = local_ips()
    return ips if host in ("0.0.0.0", "::", "") else sorted(set(ips) | {host})


def _box_name(api, api_error) -> str:
    try:
        got = api.call("GET", "/config", timeout=3.0)
        return str(got["document"]["system"]["name"])
    except (api_error, KeyError, TypeError):
        return "branchline"


def _serve(app, servers) -> int:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    servers.start()
    app.start_sampler()
    try:
        while not done.wait(0.5):
            pass
    finally:
        app.stop()
        servers.stop()
    print("branchline web: stopped", file=sys.stderr, flush=True)
    return 0
