"""The control API's HTTP/1.1 server: routing by the OpenAPI document, request checks,
JSON errors ({"error": one line, "field", "problems"}), the event stream.

It listens on a Unix socket (mode 0660: that is its access control) and/or loopback TCP
only; the web page is what faces the LAN. A thread per connection (stdlib), a cap on
event streams; handlers that touch the core hop onto the reactor thread."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import math
import os
import re
import select
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from firmware.api import spec
from firmware.api.adapter import LINE_TEST_TIMEOUT_S, CoreAdapter
from firmware.api.errors import ApiFailure, ErrorKind
from firmware.api.logbuffer import LogBuffer
from firmware.api.schema import BadInput, check, query_value
from firmware.api.stream import (
    MAX_STREAMS,
    EventStreams,
    StreamsFull,
    Subscription,
    core_events,
    parse_kinds,
)
from firmware.api.watch import StoreWatcher
from firmware.core.config import ConfigError, ConfigStore
from foundation.errors import BranchlineError
from foundation.unixhttp import clear_stale_socket

if TYPE_CHECKING:
    from firmware.core.runtime import Core

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_DISCARD = 16 << 20  # oversize bodies up to this are read and dropped
IDLE_TIMEOUT_S = 30.0
SOCKET_MODE = 0o660
SIM_PREFIX = "/sim/"
STREAM_SNDBUF = 32 << 10  # a stalled reader backs up into its queue soon, not the kernel


class ApiSetupError(BranchlineError):
    """The API cannot listen where it was asked to; the message says what to change."""


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or [v6]:PORT) of a loopback address; anything else is refused."""
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", text.strip())
    if not match or int(match[2]) > 65535:
        raise ApiSetupError(f"--api {text}: give HOST:PORT, e.g. 127.0.0.1:8080")
    host, port = match[1], int(match[2])
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ApiSetupError(f"--api {text}: the control API listens on loopback only "
                                "(127.0.0.1 or [::1]); technicians on the LAN use the web page")
    return host, port


# ---- routes: the spec's paths, each method mapped to a handler ----------------------

def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")


class Route:
    def __init__(self, path: str, methods: dict[str, dict[str, Any]]) -> None:
        self.path, self.methods = path, methods
        self.pattern = _template(path)
        self.sim_only = path.startswith(SIM_PREFIX)


@dataclass(frozen=True)
class Request:
    """What a handler gets: the checked body, query and path parameters."""

    api: ApiServer
    body: Any = None
    query: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


Handler_ = Callable[[CoreAdapter, Request], Any]


def _csv_filters(q: dict[str, Any]) -> dict[str, Any]:
    return {k: q[k] for k in ("since", "until", "port", "direction", "q") if k in q}


def _h_cdrs_csv(a: CoreAdapter, r: Request) -> Raw:
    out = io.StringIO()
    a.cdrs_csv(out, **_csv_filters(r.query))
    return Raw(out.getvalue().encode(), "text/csv; charset=utf-8")


def _h_line_test(a: CoreAdapter, r: Request) -> Any:
    wait = float(r.body.get("test_call_s", 0.0))
    return a.hop(a.diag.line_test, r.body["port"], wait, timeout=LINE_TEST_TIMEOUT_S + wait)


def _h_events(_a: CoreAdapter, r: Request) -> Subscription:
    try:
        kinds = parse_kinds(r.query.get("kinds"))
    except ValueError as exc:
        raise BadInput(str(exc), "kinds") from None
    try:
        return r.api.streams.open(kinds)
    except StreamsFull as exc:
        raise ApiFailure(ErrorKind.UNAVAILABLE, str(exc)) from None


HANDLERS: dict[tuple[str, str], Handler_] = {
    # status: the outbox read stays off the reactor
    ("GET", "/status"): lambda a, r: {**a.hop(a.status), "outbox": a.outbox()},
    ("GET", "/events"): _h_events,
    ("GET", "/config"): lambda a, r: a.config(),
    ("PUT", "/config"): lambda a, r: a.put(r.body["document"], r.body.get("reason", "")),
    ("PATCH", "/config"): lambda a, r: a.patch(r.body["set"], r.body.get("reason", "")),
    ("GET", "/config/versions"): lambda a, r: a.versions(),
    ("POST", "/config/validate"): lambda a, r: a.validate(r.body["document"]),
    ("POST", "/config/rollback"): lambda a, r: a.rollback(r.body.get("version")),
    ("GET", "/config/diff"): lambda a, r: a.diff(r.query["against"]),
    ("POST", "/diag/ring"): lambda a, r: a.hop(a.diag.ring, r.body["port"],
                                               float(r.body.get("seconds", 5.0))),
    ("POST", "/diag/tone"): lambda a, r: a.hop(a.diag.tone, r.body["port"], r.body["tone"],
                                               float(r.body.get("seconds", 5.0))),
    ("POST", "/diag/dtmf-echo"): lambda a, r: a.hop(a.diag.dtmf_echo, r.body["port"],
                                                    float(r.body.get("seconds", 10.0))),
    ("POST", "/diag/measure"): lambda a, r: a.hop(a.diag.measure, r.body["port"]),
    ("POST", "/diag/line-test"): _h_line_test,
    ("POST", "/diag/ping"): lambda a, r: a.hop(a.ping),
    ("GET", "/cdrs"): lambda a, r: a.cdrs(r.query.get("offset", 0), r.query.get("limit", 50),
                                          **_csv_filters(r.query)),
    ("GET", "/cdrs.csv"): _h_cdrs_csv,
    ("GET", "/logs"): lambda a, r: a.log_page(r.query.get("offset", 0),
                                              r.query.get("limit", 50), r.query.get("level")),
    ("POST", "/reboot"): lambda a, r: a.hop(a.reboot),
    ("POST", "/restart"): lambda a, r: a.hop(a.restart, r.body["when"]),
    ("POST", "/sim/phone/{port}"): lambda a, r: a.hop(
        a.sim_phone, r.params["port"], r.body["action"], r.body.get("digits"),
        r.body.get("method", "dtmf")),
    ("POST", "/sim/co/{port}"): lambda a, r: a.hop(
        a.sim_co, r.params["port"], r.body["action"], r.body.get("number"),
        r.body.get("name"), r.body.get("signal", "loop_drop")),
    ("POST", "/sim/headset"): lambda a, r: a.hop(a.sim_headset, r.body["action"]),
    ("GET", "/openapi.json"): lambda a, r: r.api.document,
}


class Raw:
    """A response that is not JSON (the CSV export)."""

    def __init__(self, data: bytes, content_type: str) -> None:
        self.data, self.content_type = data, content_type


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become null, NumPy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalar
        return _clean(value.item())
    return str(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# ---- the request handler ----------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "branchline-api/1"
    timeout = IDLE_TIMEOUT_S
    api: ApiServer  # set on the per-server subclass

    def address_string(self) -> str:
        addr = self.client_address
        return addr[0] if isinstance(addr, tuple) and addr else "unix"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, 501 ...) as JSON too."""
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        self._send(code, {"error": text, "field": None}, close=True)

    def _any(self) -> None:
        self._dispatch(self.command)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

    # ---- the pipeline ----
    def _dispatch(self, method: str) -> None:
        self._consumed = False
        try:
            status, payload = self._handle(method)
        except ApiFailure as exc:
            status, payload = exc.status, self._error(exc, exc.field, exc.problems)
        except BadInput as exc:
            status, payload = 400, self._error(exc, exc.field)
        except ConfigError as exc:
            status, payload = 422, self._error(exc, _field_of(exc.problems[0]), exc.problems)
        except BranchlineError as exc:
            status, payload = 409, self._error(exc, None)
        except Exception as exc:  # noqa: BLE001 - a handler bug: one line out, traceback logged
            log.exception("control API: %s %s failed", method, self.path)
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc} "
                                             "(the core logged the details)", "field": None}
        if not self._consumed:
            self._drain()
        if isinstance(payload, Subscription):
            self._stream(payload)
        elif isinstance(payload, Raw):
            self._send_raw(status, payload.data, payload.content_type)
        else:
            self._send(status, payload)

    @staticmethod
    def _error(exc: Exception, field: str | None, problems: list[str] | None = None) -> dict:
        out: dict[str, Any] = {"error": str(exc), "field": field}
        if problems is not None:
            out["problems"] = list(problems)
        return out

    def _handle(self, method: str) -> tuple[int, Any]:
        url = urlsplit(self.path)
        route, params = self._route(url.path)
        allowed = sorted(m.upper() for m in route.methods)
        if method not in allowed:
            self._allow = ", ".join(allowed)
            raise ApiFailure(ErrorKind.METHOD, f"{method} is not allowed on {url.path}; allowed: "
                                  f"{self._allow}")
        operation = route.methods[method.lower()]
        query = self._query(url.query, operation)
        body = self._body(operation)
        handler = HANDLERS[(method, route.path)]
        return 200, handler(self.api.adapter, Request(self.api, body, query, params))

    def _route(self, path: str) -> tuple[Route, dict]:
        if path.startswith(spec.BASE + "/"):
            rest = path[len(spec.BASE):]
            for route in self.api.routes:
                match = route.pattern.match(rest)
                if match and (self.api.adapter.sim or not route.sim_only):
                    return route, match.groupdict()
        raise ApiFailure(ErrorKind.NOT_FOUND, f"no such endpoint: {path}; the endpoints are listed at "
                              f"{spec.BASE}/openapi.json")

    def _query(self, text: str, operation: dict) -> dict:
        try:
            raw = parse_qs(text, keep_blank_values=True, strict_parsing=False,
                           max_num_fields=50)
        except ValueError:
            raise BadInput("query string: too many parameters") from None
        declared = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
        out = {}
        for name, values in raw.items():
            if name not in declared:
                known = ", ".join(declared) or "none"
                raise BadInput(f"{name}: unknown query parameter; known: {known}", name)
            if len(values) > 1:
                raise BadInput(f"{name}: given {len(values)} times; give it once", name)
            out[name] = query_value(values[0], declared[name]["schema"], name)
        for name, p in declared.items():
            if p.get("required") and name not in out:
                raise BadInput(f"{name}: missing; this query parameter is required", name)
        return out

    def _length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiFailure(ErrorKind.LENGTH, "send the body with a Content-Length (no chunked encoding)")
        text = self.headers.get("Content-Length", "0").strip() or "0"
        if not text.isdigit():
            self.close_connection = True
            raise BadInput(f"Content-Length: {text!r} is not a number of bytes")
        length = int(text)
        if length > MAX_BODY:
            self._discard(length)
            raise ApiFailure(ErrorKind.TOO_LARGE, f"request body of {length} bytes is over the "
                                  f"{MAX_BODY} byte limit")
        return length

    def _discard(self, length: int) -> None:
        """Read and drop an oversize body (so the client gets to read our 413), up to
        MAX_DISCARD; the connection closes after the answer either way."""
        self.close_connection = True
        self._consumed = True
        left = length if length <= MAX_DISCARD else 0
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)

    def _drain(self) -> None:
        """Read (and drop) a body we are not going to use, so keep-alive stays in step."""
        self._consumed = True
        try:
            length = self._length()
        except BranchlineError:
            return
        if length:
            self.rfile.read(length)

    def _body(self, operation: dict) -> Any:
        length = self._length()
        self._consumed = True
        data = self.rfile.read(length) if length else b""
        request = operation.get("requestBody")
        if request is None:
            return {}  # GET: a body, if any, is ignored
        schema = request["content"]["application/json"]["schema"]
        if not data.strip():
            if request.get("required"):
                raise BadInput("request body: missing; send a JSON object")
            return {}
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiFailure(ErrorKind.MEDIA_TYPE, f"Content-Type {kind or '(none)'!s} is not accepted; send "
                                  "application/json")
        value = _parse_json(data)
        check(value, schema)
        return value

    # ---- responses ----
    def _stream(self, sub: Subscription) -> None:
        """Server-sent events until the client goes, the server stops, or a write
        stalls for the idle timeout (a reader that stopped reading)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF)
            self.send_response(200)
            for name, value in (("Content-Type", "text/event-stream"),
                                ("Cache-Control", "no-store"), ("Connection", "close"),
                                ("X-Content-Type-Options", "nosniff")):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(b": stream open\n\n")
            for chunk in sub.frames(gone=self._peer_gone):
                self.wfile.write(chunk)
        except OSError as exc:
            log.debug("event stream to %s closed: %s", self.address_string(), exc)
        finally:
            self.api.streams.close(sub)

    def _peer_gone(self) -> bool:
        """The client hung up: its socket reads as end of file (it sends nothing else)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _send(self, status: int, payload: Any, close: bool = False) -> None:
        data = json.dumps(_clean(payload), separators=(",", ":")).encode()
        self._send_raw(status, data, "application/json", close)

    def _send_raw(self, status: int, data: bytes, content_type: str, close: bool = False) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            allow = getattr(self, "_allow", None)
            if status == 405 and allow:
                self.send_header("Allow", allow)
            if close or self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing to tell it


def _parse_json(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"request body: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadInput("request body: nested too deeply") from None
    except ValueError as exc:
        raise BadInput(f"request body: not valid JSON ({exc})") from None


def _field_of(problem: str) -> str | None:
    head = problem.split(":", 1)[0].strip()
    return head if head and " " not in head else None


# ---- the listeners ----------------------------------------------------------------

class _TcpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TcpServer6(_TcpServer):
    address_family = socket.AF_INET6


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        conn, _addr = super().get_request()
        return conn, ("unix", 0)


class ApiServer:
    def __init__(self, core: Core, store: ConfigStore, *, tcp: str | None = None,
                 unix_path: str | None = None, logs: LogBuffer | None = None,
                 max_streams: int = MAX_STREAMS) -> None:
        if not tcp and not unix_path:
            raise ApiSetupError("the control API needs --api HOST:PORT or --api-socket PATH")
        self.logs = logs if logs is not None else LogBuffer()
        self.adapter = CoreAdapter(core, store, self.logs)
        self.streams = EventStreams(core.reactor, max_streams)
        self.document: dict[str, Any] = spec.load()
        self.routes = [Route(path, methods) for path, methods in self.document["paths"].items()]
        self.tcp = parse_listen(tcp) if tcp else None
        self.unix_path = Path(unix_path) if unix_path else None
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self.tcp_address: tuple[str, int] | None = None
        self.watcher = StoreWatcher(self.adapter)

    def _handler(self) -> type[Handler]:
        return type("BoundHandler", (Handler,), {"api": self})

    def start(self) -> None:
        self.logs.install()
        try:
            if self.tcp:
                self._serve(self._bind_tcp(*self.tcp))
            if self.unix_path:
                self._serve(self._bind_unix(self.unix_path))
            self.watcher.start()
            self.streams.start(core_events(self.adapter.core))
        except BaseException:
            self.stop()
            raise

    def _bind_tcp(self, host: str, port: int) -> socketserver.TCPServer:
        cls = _TcpServer6 if ":" in host else _TcpServer
        try:
            server = cls((host, port), self._handler())
        except OSError as exc:
            raise ApiSetupError(f"--api {host}:{port}: cannot listen ({exc.strerror}); "
                                "is another core running? choose another port") from None
        self.tcp_address = (host, int(server.server_address[1]))
        log.info("control API on http://%s:%d%s", host, self.tcp_address[1], spec.BASE)
        return server

    def _bind_unix(self, path: Path) -> socketserver.BaseServer:
        clear_stale_socket(path, "--api-socket", "another core", ApiSetupError)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            old = os.umask(0o117)
            try:
                server = _UnixServer(str(path), self._handler())
            finally:
                os.umask(old)
            os.chmod(path, SOCKET_MODE)
        except OSError as exc:
            raise ApiSetupError(f"--api-socket {path}: cannot listen ({exc.strerror}); "
                                "run as root or choose another path") from None
        log.info("control API on unix:%s", path)
        return server

    def _serve(self, server: socketserver.BaseServer) -> None:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name=f"api-{len(self._servers)}", daemon=True)
        self._servers.append(server)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self.watcher.stop()
        self.streams.stop()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers, self._threads = [], []
        if self.unix_path and self.unix_path.is_socket():
            self.unix_path.unlink(missing_ok=True)
        self.logs.remove()
