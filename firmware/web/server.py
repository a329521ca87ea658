"""The `web` process: HTTPS server, the HTTP->HTTPS redirect, sessions, CSRF, headers.

`WebApp` holds what every request needs (control API client, Auth, sessions, rate
limiter, ERLE history) and dispatches to the page handlers in firmware.web.pages.
`serve(app, listen, redirect_port, cert, key)` runs a ThreadingHTTPServer wrapped in
TLS (handshakes happen in the request's own thread, so a stuck client never blocks
the others) and, when asked, a plain-HTTP server answering 301 to the HTTPS address.

Rules applied to every request, in order: session (every visitor gets an HttpOnly,
Secure, SameSite=Strict cookie), static files, login gate by session stage, CSRF
token on every POST/PUT/PATCH/DELETE (403 without it), then the page. Every answer
carries the security headers (CSP default-src 'self', X-Frame-Options DENY, nosniff,
no referrer, HSTS). Bad input never gets a traceback: 400/403/404/405/413 pages with one
line; an unexpected error is logged and answered 500 with no detail.

Assumes the core's control API is the only way to the box (no /dev, no config files)
and that this process may be killed at any time without harming calls.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from firmware.auth import Auth
from firmware.web.coreapi import ApiError, CoreApi
from firmware.web.plots import History
from firmware.web.sessions import COOKIE, RateLimiter, Session, Sessions
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml"}
MAX_FORM = 1 << 20
MAX_DISCARD = 32 << 20
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Strict-Transport-Security", "max-age=31536000"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)


class HttpError(BranchlineError):
    """A request the page refuses: status and one line for the person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: object
    client: str
    rfile: object
    session: Session
    length: int = 0
    _body: bytes | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)

    def body(self, limit: int = MAX_FORM) -> bytes:
        if self._body is None:
            if self.length > limit:
                self._discard()
                raise HttpError(413, f"request too large (over {limit // 1024} KiB)")
            self._body = self.rfile.read(self.length) if self.length else b""
        return self._body

    def _discard(self) -> None:
        """Read and drop a refused body (up to MAX_DISCARD) so the client sees the answer."""
        if self.length > MAX_DISCARD:
            return  # the connection is closed after the answer instead
        left = self.length
        while left > 0:
            chunk = self.rfile.read(min(1 << 16, left))
            if not chunk:
                break
            left -= len(chunk)
        self._body = b""

    @property
    def who(self) -> str:
        return self.session.user or "anonymous"


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""
    ctype: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def redirect(location: str, status: int = 303) -> Response:
    return Response(status, b"", headers=[("Location", location)])


class WebApp:
    """See the module docstring."""

    def __init__(self, api: CoreApi, data_dir: str | Path,
                 clock: Callable[[], float] = time.time, login_limit: int = 20):
        self.api = api
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.auth = Auth(self.data_dir, clock=clock)
        self.sessions = Sessions(clock)
        self.limiter = RateLimiter(limit=login_limit, clock=clock)
        self.history = History()
        self.box = "branchline"
        self._stop = threading.Event()
        from firmware.web import pages  # late: pages import this module's names

        self.pages = pages

    # ---- background poll: box name and the ERLE history ----
    def start_sampler(self, period: float = 1.0) -> threading.Thread:
        t = threading.Thread(target=self._sample_loop, args=(period,), name="sampler",
                             daemon=True)
        t.start()
        return t

    def stop(self) -> None:
        self._stop.set()

    def _sample_loop(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                status = self.api.call("GET", "/status", timeout=3.0)
            except ApiError:
                continue
            except Exception:  # noqa: BLE001 - the sampler must keep running
                log.exception("status poll failed")
                continue
            self.note_status(status)

    def note_status(self, status: dict) -> None:
        if isinstance(status, dict):
            self.box = str((status.get("box") or {}).get("name") or self.box)
            self.history.feed(status, self.clock())

    # ---- one request ----
    def handle(self, req: Request) -> Response:
        try:
            if req.path.startswith("/static/"):
                return self._static(req.path[len("/static/"):])
            return self._guarded(req)
        except HttpError as exc:
            return self.pages.error_page(self, req, exc.status, str(exc))
        except ApiError as exc:  # the core refused, or does not answer
            status = exc.status if 400 <= exc.status < 600 else 502
            return self.pages.error_page(self, req, status, str(exc))
        except Exception:  # noqa: BLE001 - never a traceback to the browser
            log.exception("%s %s failed", req.method, req.path)
            return self.pages.error_page(self, req, 500, "internal error; it is in the "
                                         "web process's log")

    def _guarded(self, req: Request) -> Response:
        if req.method in STATE_CHANGING:
            self._read_form(req)
            self._check_csrf(req)
        return self.pages.dispatch(self, req)

    def _read_form(self, req: Request) -> None:
        ctype = req.headers.get("Content-Type", "") or ""
        if ctype.startswith("application/x-www-form-urlencoded"):
            text = req.body().decode("utf-8", errors="replace")
            req.form = dict(parse_qsl(text, keep_blank_values=True, max_num_fields=500))
        elif ctype.startswith("multipart/form-data"):
            req.form, req.files = _multipart(ctype, req.body())

    def _check_csrf(self, req: Request) -> None:
        token = req.form.get("csrf") or req.headers.get("X-CSRF-Token")
        if not req.session.csrf_ok(token):
            raise HttpError(403, "refused: the form's security token (CSRF) is missing or "
                                 "out of date; reload the page and try again")
        origin = req.headers.get("Origin")
        host = req.headers.get("Host", "")
        if origin and origin != "null" and urlsplit(origin).netloc != host:
            raise HttpError(403, f"refused: request from another site ({origin})")

    def _static(self, name: str) -> Response:
        path = (STATIC_DIR / name).resolve()
        if STATIC_DIR.resolve() not in path.parents or not path.is_file():
            raise HttpError(404, f"/static/{name}: no such file")
        ctype = STATIC_TYPES.get(path.suffix, "application/octet-stream")
        return Response(200, path.read_bytes(), ctype, [("Cache-Control", "no-cache")])


def _multipart(ctype: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """Text fields and file fields of a multipart/form-data body."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    form, files = {}, {}
    for part in msg.iter_parts() if msg.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = data
        else:
            form[name] = data.decode("utf-8", errors="replace")
    return form, files


# ---- the HTTP plumbing ----

class _Handler(http.server.BaseHTTPRequestHandler):
    app: WebApp
    server_version = "branchline-web"
    sys_version = ""
    timeout = 60
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET  # noqa: N815

    def _serve(self) -> None:
        url = urlsplit(self.path)
        session, new = self._session()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        query = dict(parse_qsl(url.query, keep_blank_values=True, max_num_fields=100))
        req = Request(self.command, url.path or "/", query, self.headers,
                      self.client_address[0], self.rfile, session, max(length, 0))
        if length < 0:
            resp = self.app.pages.error_page(self.app, req, 400, "bad Content-Length")
        else:
            resp = self.app.handle(req)
        self._send(resp, req.session if (new or req.session is not session) else None)
        if req._body is None and req.length and not getattr(req, "consumed", False):
            self.close_connection = True  # unread body: do not reuse the connection

    def _session(self) -> tuple[Session, bool]:
        try:
            jar = SimpleCookie(self.headers.get("Cookie") or "")
        except CookieError:
            jar = SimpleCookie()
        sid = jar[COOKIE].value if COOKIE in jar else None
        s = self.app.sessions.get(sid)
        return (s, False) if s else (self.app.sessions.new(), True)

    def _send(self, resp: Response, cookie_session: Session | None) -> None:
        body = resp.body.encode() if isinstance(resp.body, str) else resp.body
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in SECURITY_HEADERS:
            self.send_header(k, v)
        if not any(k == "Cache-Control" for k, _ in resp.headers):
            self.send_header("Cache-Control", "no-store")
        for k, v in resp.headers:
            self.send_header(k, v)
        if cookie_session is not None:
            self.send_header("Set-Cookie", f"{COOKIE}={cookie_session.id}; Path=/; HttpOnly; "
                                           "Secure; SameSite=Strict")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base signature
        log.debug("%s %s", self.client_address[0], format % args)


class _Redirect(http.server.BaseHTTPRequestHandler):
    https_port = 443
    server_version = "branchline-web"
    sys_version = ""
    timeout = 10

    def do_GET(self) -> None:  # noqa: N802
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0] or "localhost"
        if host.endswith("]") is False and host.count(":") > 1:
            host = f"[{host}]"
        port = "" if self.https_port == 443 else f":{self.https_port}"
        target = f"https://{host}{port}{self.path if self.path.startswith('/') else '/'}"
        self.send_response(301)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET  # noqa: N815

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("redirect %s %s", self.client_address[0], format % args)


class _TlsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, addr, handler, context: ssl.SSLContext):
        self.context = context
        host = addr[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:
        log.debug("connection from %s ended badly", client_address[0], exc_info=True)


class _PlainServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, handler):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        super().__init__(addr, handler)

    def handle_error(self, request, client_address) -> None:
        log.debug("redirect connection from %s ended badly", client_address[0])


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class Servers:
    """The HTTPS server and the optional redirect server, each in its own thread."""

    def __init__(self, app: WebApp, listen: tuple[str, int], redirect_port: int | None,
                 cert: Path, key: Path):
        handler = type("Handler", (_Handler,), {"app": app})
        try:
            self.https = _TlsServer(listen, handler, tls_context(cert, key))
            self.http = None
            if redirect_port is not None:
                port = self.https.server_address[1]
                red = type("Redirect", (_Redirect,), {"https_port": port})
                self.http = _PlainServer((listen[0], redirect_port), red)
        except OSError as exc:
            raise BranchlineError(f"web: cannot listen on {listen[0]}:{listen[1]} or "
                                  f"{redirect_port}: {exc.strerror}; choose another "
                                  "--listen / --http-redirect port or stop what uses it") from None

    def start(self) -> None:
        for srv in (self.https, self.http):
            if srv is not None:
                threading.Thread(target=srv.serve_forever, daemon=True,
                                 name=f"http-{srv.server_address[1]}").start()

    def stop(self) -> None:
        for srv in (self.https, self.http):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
