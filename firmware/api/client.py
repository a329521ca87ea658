"""ApiClient: how the web, console and agent processes talk to the core.

One method per endpoint of openapi.json, returning the decoded JSON; `events()` reads the
live event stream. A refusal raises ApiError (the server's one line, .status, .field,
.problems); a core that does not answer raises CoreDown. A new connection per request."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlencode

from foundation.errors import BranchlineError
from foundation.unixhttp import UnixHTTPConnection

BASE = "/api/v1"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_SOCKET = "/run/branchline/core.sock"  # where the core listens on the box
LINE_TEST_TIMEOUT_S = 130.0
EVENTS_TIMEOUT_S = 60.0  # the core pings every 15 s: a minute of silence is a dead link


class ApiError(BranchlineError):
    """The core refused a request, or could not be reached; str() is the one line."""

    def __init__(self, message: str, status: int = 0, field: str | None = None,
                 problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.problems = status, field, list(problems or [])


class CoreDown(ApiError):
    """The control API does not answer (core stopped, socket missing, timeout)."""


class EventStream(Iterator[dict[str, Any]]):
    """The parsed events of GET /events: CoreEvent.to_json() dicts with the stream's "id"
    (a `dropped` notice is {"kind": "dropped", "count": n}). close() may be called from
    another thread to end a reader blocked waiting for the next event."""

    def __init__(self, conn: http.client.HTTPConnection,
                 response: http.client.HTTPResponse, sock: socket.socket | None) -> None:
        # http.client hands the socket to the response (Connection: close) and forgets
        # it: keep it, so that close() can shut it down under a blocked reader.
        self.conn, self.response, self.sock = conn, response, sock

    def __next__(self) -> dict[str, Any]:
        fields: dict[str, str] = {}
        while True:
            try:
                line = self.response.readline()
            except (OSError, ValueError, http.client.HTTPException):
                line = b""
            if not line:
                self.close()
                self.response.close()
                raise StopIteration
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text and "data" in fields:
                event = json.loads(fields["data"])
                return {**event, "id": int(fields["id"])} if "id" in fields else event
            name, _, value = text.partition(":")
            if name:  # a line starting with ':' is a comment (ping)
                fields[name] = value.removeprefix(" ")

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


class ApiClient:
    def __init__(self, unix_path: str | None = None, tcp: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if not unix_path and not tcp:
            raise ApiError("the control API address is missing: give --api HOST:PORT "
                           "or the socket path")
        self.unix_path, self.timeout = unix_path, timeout
        self.host, self.port = _split(tcp) if tcp else ("", 0)
        self.where = f"unix:{unix_path}" if unix_path else f"http://{tcp}"

    # ---- plumbing ----
    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.unix_path:
            return UnixHTTPConnection(self.unix_path, timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None,
                timeout: float | None = None, raw: bool = False) -> Any:
        """One request; the decoded JSON (or the bytes, raw=True) of a 200."""
        query = {k: v for k, v in (query or {}).items() if v is not None}
        url = BASE + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection(timeout or self.timeout)
        try:
            conn.request(method, url, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._down(exc) from None
        finally:
            conn.close()
        if response.status != 200:
            raise _error(response.status, payload)
        return payload if raw else json.loads(payload or b"null")

    def _down(self, exc: Exception) -> CoreDown:
        return CoreDown(f"the core's control API at {self.where} does not answer ({exc}); "
                        "is `branchline run` running with --api?")

    def events(self, kinds: Iterable[str] = (), timeout: float = EVENTS_TIMEOUT_S) -> EventStream:
        """The live event stream (GET /events), only `kinds` when given."""
        query = f"?{urlencode({'kinds': ','.join(kinds)})}" if kinds else ""
        conn = self._connection(timeout)
        try:
            conn.request("GET", f"{BASE}/events{query}", headers={"Accept": "text/event-stream"})
            sock = conn.sock
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._down(exc) from None
        if response.status != 200:
            payload = response.read()
            conn.close()
            raise _error(response.status, payload)
        return EventStream(conn, response, sock)

    # ---- status, config ----
    def status(self) -> dict:
        return self.request("GET", "/status")

    def config(self) -> dict:
        return self.request("GET", "/config")

    def config_versions(self) -> list[dict]:
        return self.request("GET", "/config/versions")

    def validate_config(self, document: dict) -> dict:
        return self.request("POST", "/config/validate", {"document": document})

    def put_config(self, document: dict, reason: str = "") -> dict:
        return self.request("PUT", "/config", {"document": document, "reason": reason})

    def patch_config(self, set: dict[str, Any], reason: str = "") -> dict:  # noqa: A002
        return self.request("PATCH", "/config", {"set": set, "reason": reason})

    def rollback(self, version: int | None = None) -> dict:
        return self.request("POST", "/config/rollback", {"version": version})

    def config_diff(self, against: int) -> str:
        return self.request("GET", "/config/diff", query={"against": against})["diff"]

    # ---- diagnostics ----
    def ring(self, port: str, seconds: float = 5.0) -> dict:
        return self.request("POST", "/diag/ring", {"port": port, "seconds": seconds})

    def tone(self, port: str, tone: str = "dial", seconds: float = 5.0) -> dict:
        return self.request("POST", "/diag/tone", {"port": port, "tone": tone, "seconds": seconds})

    def dtmf_echo(self, port: str, seconds: float = 10.0) -> dict:
        return self.request("POST", "/diag/dtmf-echo", {"port": port, "seconds": seconds})

    def measure(self, port: str) -> dict:
        return self.request("POST", "/diag/measure", {"port": port})

    def line_test(self, port: str, test_call_s: float = 0.0) -> dict:
        body = {"port": port, **({"test_call_s": test_call_s} if test_call_s else {})}
        return self.request("POST", "/diag/line-test", body,
                            timeout=LINE_TEST_TIMEOUT_S + test_call_s)

    def ping(self) -> dict:
        return self.request("POST", "/diag/ping")

    # ---- records ----
    def cdrs(self, offset: int = 0, limit: int = 50, **filters: Any) -> dict:
        return self.request("GET", "/cdrs", query={"offset": offset, "limit": limit, **filters})

    def cdrs_csv(self, **filters: Any) -> str:
        return self.request("GET", "/cdrs.csv", query=filters, raw=True).decode()

    def logs(self, offset: int = 0, limit: int = 50, level: str | None = None) -> dict:
        return self.request("GET", "/logs", query={"offset": offset, "limit": limit,
                                                   "level": level})

    def reboot(self) -> dict:
        return self.request("POST", "/reboot")

    def restart(self, when: str = "idle") -> dict:
        """Ask the core to stop cleanly so its supervisor starts it again (settings that
        wait for a restart take effect); `when` "idle" is refused (409) during a call."""
        return self.request("POST", "/restart", {"when": when})

    def openapi(self) -> dict:
        return self.request("GET", "/openapi.json")

    # ---- sim mode ----
    def sim_phone(self, port: str, action: str, digits: str | None = None,
                  method: str | None = None) -> dict:
        body = {"action": action, "digits": digits, "method": method}
        return self.request("POST", f"/sim/phone/{port}",
                            {k: v for k, v in body.items() if v is not None})

    def sim_co(self, port: str, action: str, number: str | None = None,
               name: str | None = None, signal: str | None = None) -> dict:
        body = {"action": action, "number": number, "name": name, "signal": signal}
        return self.request("POST", f"/sim/co/{port}",
                            {k: v for k, v in body.items() if v is not None})

    def sim_headset(self, action: str) -> dict:
        return self.request("POST", "/sim/headset", {"action": action})


def _split(tcp: str) -> tuple[str, int]:
    host, _, port = tcp.rpartition(":")
    if not host or not port.isdigit():
        raise ApiError(f"{tcp}: give the control API as HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def _error(status: int, payload: bytes) -> ApiError:
    try:
        body = json.loads(payload)
        message = str(body.get("error") or f"HTTP {status}")
        return ApiError(message, status, body.get("field"), body.get("problems"))
    except (ValueError, AttributeError):
        text = payload.decode(errors="replace").strip().splitlines()
        return ApiError(f"HTTP {status}: {text[0] if text else 'no detail'}", status)
