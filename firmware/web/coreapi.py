"""The web process's line to the core: the control API client (firmware.api.client).

`CoreApi(tcp="127.0.0.1:8081")` or `CoreApi(unix_path="/run/branchline/core.sock")`;
`call(method, path, body=None, query=None, timeout=None)` returns the decoded JSON (the
text for /cdrs.csv) and raises ApiError with the server's one line, status, field and
problems. A core that does not answer raises CoreDown (an ApiError, status 503), so a
page can show "core not running" and keep going.

The pages name contract paths directly through `call`, so the web page depends on the
contract (base /api/v1) and the client's generic `request` only. Empty query values
("" from an unfilled search box) are dropped.
"""

from __future__ import annotations

from typing import Any

from firmware.api.client import ApiClient, ApiError

__all__ = ["ApiError", "CoreApi", "CoreDown"]

TEXT_PATHS = ("/cdrs.csv",)


class CoreDown(ApiError):
    """The core's control API does not answer."""


class CoreApi:
    """See the module docstring."""

    def __init__(self, unix_path: str | None = None, tcp: str | None = None,
                 timeout: float = 10.0):
        self.client = ApiClient(unix_path=unix_path, tcp=tcp, timeout=timeout)
        self.where = self.client.where

    def call(self, method: str, path: str, body: Any = None,
             query: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        q = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        raw = path in TEXT_PATHS
        try:
            got = self.client.request(method, path, body, q or None, timeout=timeout, raw=raw)
        except ApiError as exc:
            if exc.status == 0:
                raise CoreDown(str(exc), 503) from None
            raise
        return got.decode("utf-8", errors="replace") if raw else got
