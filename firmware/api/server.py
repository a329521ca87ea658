"""The control API's HTTP/1.1 server: routing, request checks, JSON errors.

`ApiServer(core, store, tcp="127.0.0.1:8080", unix_path="/run/branchline/core.sock")`
listens on a Unix socket (mode 0660) and/or loopback TCP; a non-loopback TCP address
is refused (the web page is what faces the LAN). `start()` runs each listener in a
daemon thread (one thread per connection, stdlib ThreadingMixIn); `stop()` closes them
and removes the socket file.

Every request under /api/v1 is routed by the OpenAPI document (spec.py /
openapi.json): unknown path -> 404, known path with another method -> 405 with Allow;
the query string and the JSON body are checked against the operation's schemas (400
naming the field; unknown fields and parameters are refused too); a body needs
Content-Type application/json (415) and at most 1 MiB (413). Handlers that touch the
core hop onto the reactor thread (CoreAdapter.hop). A handler bug answers 500 with one
line and is logged with its traceback; bad input never reaches that path.

Errors are {"error": one line, "field": path or null, "problems": [...]}. The /sim
routes answer 404 unless the board is the simulated one.

Assumes the reactor runs in its own thread (`branchline run`), never this one.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import math
import os
import re
import socket
import socketserver
import stat
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from firmware.api import spec
from firmware.api.adapter import LINE_TEST_TIMEOUT_S, ApiFailure, CoreAdapter
from firmware.api.logbuffer import LogBuffer
from firmware.api.schema import BadInput, check, query_value
from firmware.api.watch import StoreWatcher
from firmware.core.config import ConfigError
from foundation.errors import BranchlineError

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_DISCARD = 16 << 20  # oversize bodies up to this are read and dropped
IDLE_TIMEOUT_S = 30.0
SOCKET_MODE = 0o660
SIM_PREFIX = "/sim/"


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

def _template(path: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")


class Route:
    def __init__(self, path: str, methods: dict[str, dict]) -> None:
        self.path, self.methods = path, methods
        self.pattern = _template(path)
        self.sim_only = path.startswith(SIM_PREFIX)


def _csv_filters(q: dict) -> dict:
    return {k: q[k] for k in ("since", "until", "port", "direction", "q") if k in q}


def _h_status(a: CoreAdapter, **_):
    return {**a.hop(a.status), "outbox": a.outbox()}  # the outbox read stays off the reactor


def _h_config(a: CoreAdapter, **_):
    return a.config()


def _h_put(a: CoreAdapter, body, **_):
    return a.put(body["document"], body.get("reason", ""))


def _h_patch(a: CoreAdapter, body, **_):
    return a.patch(body["set"], body.get("reason", ""))


def _h_rollback(a: CoreAdapter, body, **_):
    return a.rollback(body.get("version"))


def _h_diff(a: CoreAdapter, query, **_):
    return a.diff(query["against"])


def _h_ring(a: CoreAdapter, body, **_):
    return a.hop(a.ring, body["port"], float(body.get("seconds", 5.0)))


def _h_tone(a: CoreAdapter, body, **_):
    return a.hop(a.tone, body["port"], body["tone"], float(body.get("seconds", 5.0)))


def _h_echo(a: CoreAdapter, body, **_):
    return a.hop(a.dtmf_echo, body["port"], float(body.get("seconds", 10.0)))


def _h_line_test(a: CoreAdapter, body, **_):
    wait = float(body.get("test_call_s", 0.0))
    return a.hop(a.line_test, body["port"], wait, timeout=LINE_TEST_TIMEOUT_S + wait)


def _h_cdrs(a: CoreAdapter, query, **_):
    return a.cdrs(query.get("offset", 0), query.get("limit", 50), **_csv_filters(query))


def _h_cdrs_csv(a: CoreAdapter, query, **_):
    out = io.StringIO()
    a.cdrs_csv(out, **_csv_filters(query))
    return Raw(out.getvalue().encode(), "text/csv; charset=utf-8")


def _h_logs(a: CoreAdapter, query, **_):
    return a.log_page(query.get("offset", 0), query.get("limit", 50), query.get("level"))


def _h_phone(a: CoreAdapter, body, params, **_):
    return a.hop(a.sim_phone, params["port"], body["action"], body.get("digits"),
                 body.get("method", "dtmf"))


def _h_co(a: CoreAdapter, body, params, **_):
    return a.hop(a.sim_co, params["port"], body["action"], body.get("number"),
                 body.get("name"), body.get("signal", "loop_drop"))


HANDLERS = {
    ("GET", "/status"): _h_status,
    ("GET", "/config"): _h_config,
    ("PUT", "/config"): _h_put,
    ("PATCH", "/config"): _h_patch,
    ("GET", "/config/versions"): lambda a, **_: a.versions(),
    ("POST", "/config/validate"): lambda a, body, **_: a.validate(body["document"]),
    ("POST", "/config/rollback"): _h_rollback,
    ("GET", "/config/diff"): _h_diff,
    ("POST", "/diag/ring"): _h_ring,
    ("POST", "/diag/tone"): _h_tone,
    ("POST", "/diag/dtmf-echo"): _h_echo,
    ("POST", "/diag/measure"): lambda a, body, **_: a.hop(a.measure, body["port"]),
    ("POST", "/diag/line-test"): _h_line_test,
    ("POST", "/diag/ping"): lambda a, **_: a.hop(a.ping),
    ("GET", "/cdrs"): _h_cdrs,
    ("GET", "/cdrs.csv"): _h_cdrs_csv,
    ("GET", "/logs"): _h_logs,
    ("POST", "/reboot"): lambda a, **_: a.hop(a.reboot),
    ("POST", "/sim/phone/{port}"): _h_phone,
    ("POST", "/sim/co/{port}"): _h_co,
    ("POST", "/sim/headset"): lambda a, body, **_: a.hop(a.sim_headset, body["action"]),
    ("GET", "/openapi.json"): lambda a, document, **_: document,
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

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._dispatch("OPTIONS")

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
        if isinstance(payload, Raw):
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
            raise ApiFailure(405, f"{method} is not allowed on {url.path}; allowed: "
                                  f"{self._allow}")
        operation = route.methods[method.lower()]
        query = self._query(url.query, operation)
        body = self._body(operation)
        handler = HANDLERS[(method, route.path)]
        result = handler(self.api.adapter, body=body, query=query, params=params,
                         document=self.api.document)
        return 200, result

    def _route(self, path: str) -> tuple[Route, dict]:
        if path.startswith(spec.BASE + "/"):
            rest = path[len(spec.BASE):]
            for route in self.api.routes:
                match = route.pattern.match(rest)
                if match and (self.api.adapter.sim or not route.sim_only):
                    return route, match.groupdict()
        raise ApiFailure(404, f"no such endpoint: {path}; the endpoints are listed at "
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
            raise ApiFailure(411, "send the body with a Content-Length (no chunked encoding)")
        text = self.headers.get("Content-Length", "0").strip() or "0"
        if not text.isdigit():
            self.close_connection = True
            raise BadInput(f"Content-Length: {text!r} is not a number of bytes")
        length = int(text)
        if length > MAX_BODY:
            self._discard(length)
            raise ApiFailure(413, f"request body of {length} bytes is over the "
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
            raise ApiFailure(415, f"Content-Type {kind or '(none)'!s} is not accepted; send "
                                  "application/json")
        value = _parse_json(data)
        check(value, schema)
        return value

    # ---- responses ----
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

    def get_request(self):
        conn, _addr = super().get_request()
        return conn, ("unix", 0)


class ApiServer:
    """See the module docstring."""

    def __init__(self, core, store, *, tcp: str | None = None, unix_path: str | None = None,
                 logs: LogBuffer | None = None) -> None:
        if not tcp and not unix_path:
            raise ApiSetupError("the control API needs --api HOST:PORT or --api-socket PATH")
        self.logs = logs if logs is not None else LogBuffer()
        self.adapter = CoreAdapter(core, store, self.logs)
        self.document = spec.load()
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
        except BaseException:
            self.stop()
            raise

    def _bind_tcp(self, host: str, port: int):
        cls = _TcpServer6 if ":" in host else _TcpServer
        try:
            server = cls((host, port), self._handler())
        except OSError as exc:
            raise ApiSetupError(f"--api {host}:{port}: cannot listen ({exc.strerror}); "
                                "is another core running? choose another port") from None
        self.tcp_address = server.server_address[:2]
        log.info("control API on http://%s:%d%s", host, self.tcp_address[1], spec.BASE)
        return server

    def _bind_unix(self, path: Path):
        _clear_stale_socket(path)
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

    def _serve(self, server) -> None:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name=f"api-{len(self._servers)}", daemon=True)
        self._servers.append(server)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self.watcher.stop()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)
        self._servers, self._threads = [], []
        if self.unix_path and self.unix_path.is_socket():
            self.unix_path.unlink(missing_ok=True)
        self.logs.remove()


def _clear_stale_socket(path: Path) -> None:
    """A socket file left by a killed core is removed; a live one is an error."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ApiSetupError(f"--api-socket {path}: a file that is not a socket is in the way; "
                            "move it or choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody answers: stale
        return
    finally:
        probe.close()
    raise ApiSetupError(f"--api-socket {path}: another core is listening there; stop it first")
