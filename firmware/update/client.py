"""UpdateClient: how the web page, the console, the agent and the CLI ask the update
service (server.py) to install, cancel, or say where it is. A refusal or failure raises
UpdateError with the server's reason and one line; a service that does not answer is
UpdateError(UNAVAILABLE). A new connection per request; clients poll status() for
progress."""

from __future__ import annotations

import http.client
import json
from typing import Any

from firmware.update.rauc import Reason, UpdateError
from firmware.update.server import default_socket
from foundation.unixhttp import UnixHTTPConnection

__all__ = ["DEFAULT_SOCKET", "Reason", "UpdateClient", "UpdateError"]

DEFAULT_SOCKET = default_socket()  # $BRANCHLINE_RUN/update.sock, /run/branchline when unset
TIMEOUT_S = 150.0  # an install request waits for the signature check of the whole bundle


class UpdateClient:
    def __init__(self, socket_path: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self.socket_path = socket_path or DEFAULT_SOCKET
        self.timeout = timeout

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/status")

    def install(self, path: str, source: str, force: bool = False, job: str | None = None,
                allow_downgrade: bool = False) -> dict[str, Any]:
        return self._request("POST", "/install", {
            "path": str(path), "source": source, "force": force, "job": job,
            "allow_downgrade": allow_downgrade})

    def cancel(self) -> dict[str, Any]:
        return self._request("POST", "/cancel", {})

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise UpdateError(Reason.UNAVAILABLE, f"the update service at unix:"
                              f"{self.socket_path} does not answer ({exc}); is `branchline "
                              "update serve` running?") from None
        finally:
            conn.close()
        return _answer(response.status, payload)


def _answer(status: int, payload: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(payload or b"null")
    except ValueError:
        doc = None
    if 200 <= status < 300 and isinstance(doc, dict):
        return doc
    if isinstance(doc, dict) and "message" in doc:
        try:
            reason = Reason(str(doc.get("reason")))
        except ValueError:
            reason = Reason.INSTALL_FAILED
        raise UpdateError(reason, str(doc["message"]))
    raise UpdateError(Reason.INSTALL_FAILED, f"the update service answered HTTP {status} "
                      "without a reason")
