"""The `web` process: a Flask app served over HTTPS by cheroot's bounded worker pool, and
the plain-HTTP server that redirects to it. Before each page (pages.py): its session, the
body size limit, the CSRF token and Origin of a state change, the login gate; after it, the
security headers. The process only talks to the core's control API and may be killed at
any time without harming calls."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cheroot import wsgi
from cheroot.server import HTTPConnection
from flask import Flask, abort, g, redirect, render_template, request
from flask.typing import ResponseReturnValue
from jinja2 import ChainableUndefined
from werkzeug import Response
from werkzeug.exceptions import HTTPException
from werkzeug.utils import redirect as plain_redirect

from firmware.api.client import ApiClient, ApiError, CoreDown
from firmware.auth import Auth
from firmware.web import pages
from firmware.web.pages import me
from firmware.web.plots import History
from firmware.web.relay import Relay
from firmware.web.sessions import COOKIE, RateLimiter, Sessions, Stage
from firmware.web.tls import LazyTls
from firmware.web.upload import MAX_FIRMWARE
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

MAX_FORM = 1 << 20
MAX_DISCARD = 32 << 20  # a refused body up to this is read, so the client sees the answer
WORKERS = 16
QUEUE = 32  # accepted connections waiting for a worker; more are answered 503
MAX_FEEDS = WORKERS // 2  # dashboards' event streams, each holding a worker
TIMEOUT_S = 15  # socket timeout: a stuck or idle client lets go of its worker
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC = frozenset({"pages.login", "pages.login_post", "static"})
SETUP_PAGES = frozenset({"pages.setup", "pages.setup_post", "pages.logout"})
FEEDS = frozenset({"pages.live", "pages.events", "pages.firmware_status"})  # 401 when logged out, not a redirect
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
TITLES = {400: "Bad request", 401: "Not logged in", 403: "Refused", 404: "Not found",
          405: "Not allowed", 413: "Too large", 429: "Too many attempts"}


class Web:
    """What every request needs (control API client, accounts, sessions, login rate
    limit, ERLE history, event relay, box name) and the Flask app that serves it."""

    def __init__(self, api: ApiClient, data_dir: str | Path,
                 clock: Callable[[], float] = time.time, login_limit: int = 20) -> None:
        self.api = api
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.auth = Auth(self.data_dir, clock=clock)
        self.sessions = Sessions(clock)
        self.limiter = RateLimiter(limit=login_limit, clock=clock)
        self.history = History()
        self.relay = Relay(api, max_feeds=MAX_FEEDS)
        self.box = "branchline"
        self._stop = threading.Event()
        self.app = _flask_app(self)

    def start_sampler(self, period: float = 1.0) -> None:
        """Poll the core's status for the box name and the ERLE history."""
        threading.Thread(target=self._sample, args=(period,), name="sampler",
                         daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.relay.stop()

    def _sample(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.note_status(self.api.request("GET", "/status", timeout=3.0))
            except ApiError:
                continue
            except Exception:  # noqa: BLE001 - the sampler must keep running
                log.exception("status poll failed")

    def note_status(self, status: Any) -> None:
        if isinstance(status, dict):
            self.box = str((status.get("box") or {}).get("name") or self.box)
            self.history.feed(status, self.clock())


def _flask_app(web: Web) -> Flask:
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=MAX_FORM, MAX_FORM_PARTS=500)
    app.jinja_options = {"undefined": ChainableUndefined, "trim_blocks": True,
                         "lstrip_blocks": True, "finalize": _blank}
    app.extensions["web"] = web
    app.register_blueprint(pages.bp)
    for hook in (_open_session, _limit_body, _check_csrf, _gate):  # in this order
        app.before_request(hook)
    app.after_request(_finish)
    app.register_error_handler(Exception, _error_page)
    return app


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _open_session() -> None:
    g.sid = request.cookies.get(COOKIE)
    sessions = pages.web().sessions
    g.session = sessions.get(g.sid) or sessions.new()


def _limit_body() -> None:
    """1 MiB, but for a logged-in admin's firmware upload (which streams)."""
    upload = request.endpoint == "pages.firmware_upload" and me().stage is Stage.ADMIN
    request.max_content_length = MAX_FIRMWARE if upload else MAX_FORM
    if (request.content_length or 0) > request.max_content_length:
        abort(413, f"request too large (over {request.max_content_length // 1024} KiB)")


def _check_csrf() -> None:
    if request.method not in STATE_CHANGING:
        return
    token = request.headers.get("X-CSRF-Token") or request.form.get("csrf")
    if not me().csrf_ok(token):
        abort(403, "refused: the form's security token (CSRF) is missing or out of date; "
                   "reload the page and try again")
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        abort(403, f"refused: request from another site ({origin})")


def _gate() -> ResponseReturnValue | None:
    """Anonymous: the login page only; after the setup code: the set-password page only."""
    endpoint, stage = request.endpoint, me().stage
    if endpoint is None or endpoint in PUBLIC or stage is Stage.ADMIN:
        return None  # endpoint None: no such page, the router answers 404/405
    if stage is Stage.SETUP:
        return None if endpoint in SETUP_PAGES else redirect("/setup", 303)
    if request.method in ("GET", "HEAD") and endpoint not in FEEDS:
        return redirect("/login", 303)
    abort(401, "log in first")


def _finish(response: Response) -> Response:
    session = g.get("session")
    if session is not None and session.id != g.get("sid"):
        response.set_cookie(COOKIE, session.id, path="/", httponly=True, secure=True,
                            samesite="Strict")
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    log.debug("%s %s %s %s", request.remote_addr, request.method, request.full_path,
              response.status_code)
    return response


def _error_page(exc: Exception) -> ResponseReturnValue:
    if isinstance(exc, HTTPException):
        status, message = exc.code or 500, exc.description or exc.name
        if status == 413:
            _discard_body()
    elif isinstance(exc, CoreDown):
        status, message = 503, str(exc)
    elif isinstance(exc, ApiError):  # the core refused
        status, message = (exc.status if 400 <= exc.status < 600 else 502), str(exc)
    else:
        log.exception("%s %s failed", request.method, request.path)
        status, message = 500, "internal error; it is in the web process's log"
    return render_template("error.html", title=TITLES.get(status, "Error"),
                           message=message), status


def _discard_body() -> None:
    """Read a refused body (up to MAX_DISCARD; a bigger one is cut by closing)."""
    left = request.content_length or 0
    if left > MAX_DISCARD:
        return
    body = request.environ["wsgi.input"]
    while left > 0 and (chunk := body.read(min(1 << 16, left))):
        left -= len(chunk)


# ---- the HTTP servers ----

class _Connection(HTTPConnection):
    fresh = True  # not yet read from
    waited = False  # has waited in the selector for its first bytes

    def communicate(self) -> bool:
        """The TLS handshake first, here in the worker; a failed one just closes."""
        if self.fresh and isinstance(self.socket, ssl.SSLSocket):
            self.fresh = False
            try:
                self.socket.do_handshake()
            except OSError as exc:
                log.debug("TLS handshake with %s failed: %s", self.remote_addr, exc)
                return False
        self.fresh = False
        return bool(super().communicate())


class _Server(wsgi.Server):
    ConnectionClass = _Connection

    def process_conn(self, conn: _Connection) -> None:
        """A new connection waits in the selector until it sends something: one that
        connects and says nothing holds no worker (it is closed after TIMEOUT_S)."""
        if not conn.waited and not conn.rfile.has_data():
            conn.waited = True
            self.put_conn(conn)
        else:
            super().process_conn(conn)

    def error_log(self, msg: str = "", level: int = logging.INFO,
                  traceback: bool = False) -> None:
        """cheroot's complaints about single connections (a dropped client) are debug
        lines; the rest are errors."""
        log.log(logging.DEBUG if level < logging.ERROR else logging.ERROR, "%s", msg,
                exc_info=traceback)


def _redirect(https_port: int) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        host = (environ.get("HTTP_HOST") or "").rsplit(":", 1)[0] or "localhost"
        if not host.endswith("]") and host.count(":") > 1:
            host = f"[{host}]"
        port = "" if https_port == 443 else f":{https_port}"
        uri = environ.get("REQUEST_URI") or "/"
        target = f"https://{host}{port}{uri if uri.startswith('/') else '/'}"
        return plain_redirect(target, 301)(environ, start_response)

    return app


class Servers:
    """The HTTPS server and the optional redirect server, each in its own thread."""

    def __init__(self, web: Web, listen: tuple[str, int], redirect_port: int | None,
                 cert: Path, key: Path) -> None:
        self.https = _Server(listen, web.app, numthreads=WORKERS, server_name="branchline-web",
                             request_queue_size=64, timeout=TIMEOUT_S,
                             accepted_queue_size=QUEUE, accepted_queue_timeout=1)
        self.https.ssl_adapter = LazyTls(str(cert), str(key))
        self.https.max_request_body_size = MAX_FIRMWARE + MAX_FORM
        self.http: _Server | None = None
        try:
            self.https.prepare()
            self.port = int(self.https.bind_addr[1])
            if redirect_port is not None:
                self.http = _Server((listen[0], redirect_port), _redirect(self.port),
                                    numthreads=2, server_name="branchline-web", timeout=10)
                self.http.prepare()
        except OSError as exc:
            raise BranchlineError(f"web: cannot listen on {listen[0]}:{listen[1]} or "
                                  f"{redirect_port}: {exc}; choose another --listen / "
                                  "--http-redirect port or stop what uses it") from None

    def start(self) -> None:
        for srv in (self.https, self.http):
            if srv is not None:
                threading.Thread(target=srv.serve, daemon=True, name="http").start()

    def stop(self) -> None:
        for srv in (self.https, self.http):
            if srv is not None:
                srv.stop()
