"""The update service's API: HTTP/1.1 JSON over a Unix socket (mode 0660: its access
control), for the web page, the console and the cloud agent on the same box.

  GET  /status    200 the state document (state.py)
  POST /install   {"path": str, "source": "web"|"console"|"agent", "force": bool,
                   "allow_downgrade": bool, "job": str|null}
                  202 the state document; 409 {reason: busy, message}; 422 {reason,
                  message} for a refusal found before queueing (signature, board, version,
                  space); 400 naming the field for a body it cannot read
  POST /cancel    200 the state document; 409 once the install has started
Clients poll /status for progress. Stdlib http.server, a thread per connection."""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from firmware.update.rauc import Reason, UpdateError
from firmware.update.service import SOURCES, UpdateService
from foundation.errors import BranchlineError
from foundation.unixhttp import clear_stale_socket

log = logging.getLogger(__name__)

SOCKET_MODE = 0o660
MAX_BODY = 64 << 10
IDLE_TIMEOUT_S = 30.0
RUN_ENV = "BRANCHLINE_RUN"


def default_socket() -> str:
    return str(Path(os.environ.get(RUN_ENV) or "/run/branchline") / "update.sock")


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


_INSTALL_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "path": (str, True), "source": (str, True), "force": (bool, False),
    "allow_downgrade": (bool, False), "job": ((str, type(None)), False)}


def install_request(body: Any) -> dict[str, Any]:
    """The checked body of POST /install; BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("request body: send a JSON object")
    for name in body:
        if name not in _INSTALL_FIELDS:
            raise BadRequest(f"{name}: unknown field; known: {', '.join(_INSTALL_FIELDS)}",
                             name)
    for name, (kind, required) in _INSTALL_FIELDS.items():
        if name not in body:
            if required:
                raise BadRequest(f"{name}: missing; this field is required", name)
            continue
        if not isinstance(body[name], kind) or (kind is str and not body[name]):
            raise BadRequest(f"{name}: {body[name]!r} is not {_word(name)}", name)
    if not Path(body["path"]).is_absolute():
        raise BadRequest(f"path: {body['path']!r} must be an absolute path on the box", "path")
    if body["source"] not in SOURCES:
        raise BadRequest(f"source: {body['source']!r} is not one of {', '.join(SOURCES)}",
                         "source")
    return body


def _word(name: str) -> str:
    return {"force": "true or false", "allow_downgrade": "true or false",
            "job": "a string or null"}.get(name, "a non-empty string")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "branchline-update/1"
    timeout = IDLE_TIMEOUT_S
    service: UpdateService  # set on the per-server subclass

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("update API: %s", format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True
        self._send(code, {"reason": Reason.BAD_INPUT, "message": message or "bad request",
                          "field": None})

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            body = self._body()
            status, payload = self._route(body)
        except BadRequest as exc:
            status, payload = 400, {"reason": Reason.BAD_INPUT, "message": str(exc),
                                    "field": exc.field}
        except UpdateError as exc:
            status = 409 if exc.reason == Reason.BUSY else (
                400 if exc.reason == Reason.BAD_INPUT else 422)
            payload = {"reason": exc.reason, "message": str(exc)}
        except BranchlineError as exc:
            status, payload = 422, {"reason": Reason.INSTALL_FAILED, "message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a bug: one line out, traceback logged
            log.exception("update API: %s %s failed", self.command, self.path)
            status, payload = 500, {"reason": Reason.INSTALL_FAILED,
                                    "message": f"internal error: {type(exc).__name__}: {exc}"}
        self._send(status, payload)

    def _route(self, body: Any) -> tuple[int, Any]:
        routes = {("GET", "/status"): lambda: (200, self.service.status()),
                  ("POST", "/install"): lambda: (202, self._install(body)),
                  ("POST", "/cancel"): lambda: (200, self.service.cancel())}
        path = self.path.split("?", 1)[0]
        if (self.command, path) in routes:
            return routes[(self.command, path)]()
        if any(p == path for _m, p in routes):
            return 405, {"reason": Reason.BAD_INPUT, "message": f"{self.command} is not "
                         f"allowed on {path}"}
        return 404, {"reason": Reason.BAD_INPUT, "message": f"no such endpoint: {path}; "
                     "the endpoints are GET /status, POST /install, POST /cancel"}

    def _install(self, body: Any) -> dict[str, Any]:
        req = install_request(body)
        return self.service.submit(req["path"], req["source"], force=req.get("force", False),
                                   job=req.get("job"),
                                   allow_downgrade=req.get("allow_downgrade", False))

    def _body(self) -> Any:
        text = self.headers.get("Content-Length", "0").strip() or "0"
        if not text.isdigit() or int(text) > MAX_BODY:
            self.close_connection = True
            raise BadRequest(f"Content-Length: {text!r}: send a JSON body under {MAX_BODY} bytes")
        data = self.rfile.read(int(text)) if int(text) else b""
        if self.command != "POST" or not data.strip():
            return {}
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"request body: not valid JSON ({exc})") from None

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        conn, _addr = super().get_request()
        return conn, ("unix", 0)


class UpdateServer:
    """Serves `service` on `socket_path` from a background thread."""

    def __init__(self, service: UpdateService, socket_path: str | Path) -> None:
        self.service, self.path = service, Path(socket_path)
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        clear_stale_socket(self.path, "--socket", "another update service")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handler = type("BoundHandler", (Handler,), {"service": self.service})
        old = os.umask(0o117)
        try:
            self._server = _UnixServer(str(self.path), handler)
        except OSError as exc:
            raise BranchlineError(f"--socket {self.path}: cannot listen ({exc.strerror}); "
                                  "run as root or choose another path") from None
        finally:
            os.umask(old)
        os.chmod(self.path, SOCKET_MODE)
        # the folder's group (the programs' user's): web, console and agent reach us
        os.chown(self.path, -1, self.path.parent.stat().st_gid)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name="update-api",
                                        daemon=True)
        self._thread.start()
        log.info("update API on unix:%s", self.path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None
        if self.path.is_socket():
            self.path.unlink(missing_ok=True)
