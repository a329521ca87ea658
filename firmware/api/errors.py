"""Why the control API refuses a request: an ErrorKind (and its HTTP status), one line,
the field it is about. Raised by the adapter and the diagnostics it calls."""

from __future__ import annotations

from enum import StrEnum

from foundation.errors import BranchlineError


class ErrorKind(StrEnum):
    BAD_INPUT = "bad_input"
    NOT_FOUND = "not_found"
    METHOD = "method_not_allowed"
    LENGTH = "length_required"
    TOO_LARGE = "too_large"
    MEDIA_TYPE = "unsupported_media_type"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"

    @property
    def status(self) -> int:
        return STATUS[self]


STATUS = {ErrorKind.BAD_INPUT: 400, ErrorKind.NOT_FOUND: 404, ErrorKind.METHOD: 405,
          ErrorKind.LENGTH: 411, ErrorKind.TOO_LARGE: 413, ErrorKind.MEDIA_TYPE: 415,
          ErrorKind.CONFLICT: 409, ErrorKind.UNAVAILABLE: 503}


class ApiFailure(BranchlineError):
    """An answer other than 200: its kind, one line, the field it is about."""

    def __init__(self, kind: ErrorKind, message: str, field: str | None = None,
                 problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.kind, self.field, self.problems = kind, field, problems

    @property
    def status(self) -> int:
        return self.kind.status
