"""The console's line to the core: firmware.api.client.ApiClient, with the one
distinction the console needs on top: a core that does not answer at all.

`CoreLink(unix_path=...)` or `CoreLink(tcp="127.0.0.1:8081")` has the endpoint methods
the console uses, named as the console's commands use them, each returning the decoded
JSON (numbers unwrapped where the console only wants the version). A refusal raises the
client's ApiError (a BranchlineError: one line, .status, .field, .problems); no answer
(connection refused, socket missing, timeout: ApiError with status 0) raises CoreDown,
which the session prints as "% the core is not answering".

Assumes the client's per-request timeouts (line tests get minutes, the rest seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firmware.api.client import ApiClient, ApiError


class CoreDown(ApiError):
    """The control API does not answer (core stopped, socket missing, timeout)."""


class CoreLink:
    """See the module docstring."""

    def __init__(self, unix_path: str | None = None, tcp: str | None = None) -> None:
        self.client = ApiClient(unix_path=unix_path, tcp=tcp)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except CoreDown:
            raise
        except ApiError as exc:
            if exc.status == 0:
                raise CoreDown(str(exc)) from None
            raise

    def status(self) -> dict:
        return self._call(self.client.status)

    def config(self) -> dict:
        return self._call(self.client.config)

    def versions(self) -> list[dict]:
        return self._call(self.client.config_versions)

    def validate(self, document: dict) -> dict:
        return self._call(self.client.validate_config, document)

    def patch_config(self, changes: dict, reason: str) -> dict:
        """{version, changed, restart_required} of the saved document."""
        return self._call(self.client.patch_config, changes, reason)

    def put_config(self, document: dict, reason: str) -> int:
        return self._call(self.client.put_config, document, reason)["version"]

    def rollback(self, version: int | None = None) -> dict:
        """{version, changed, restart_required} after the rollback."""
        return self._call(self.client.rollback, version)

    def diff(self, against: int) -> str:
        return self._call(self.client.config_diff, against)

    def ring(self, port: str, seconds: float) -> dict:
        return self._call(self.client.ring, port, seconds)

    def tone(self, port: str, tone: str, seconds: float) -> dict:
        return self._call(self.client.tone, port, tone, seconds)

    def dtmf_echo(self, port: str, seconds: float) -> dict:
        return self._call(self.client.dtmf_echo, port, seconds)

    def measure(self, port: str) -> dict:
        return self._call(self.client.measure, port)

    def line_test(self, port: str) -> dict:
        return self._call(self.client.line_test, port)

    def ping(self) -> dict:
        return self._call(self.client.ping)

    def logs(self, limit: int = 20, offset: int = 0, level: str | None = None) -> dict:
        return self._call(self.client.logs, offset, limit, level)

    def reboot(self) -> dict:
        return self._call(self.client.reboot)
