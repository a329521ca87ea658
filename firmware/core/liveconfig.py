"""Which changed settings a running core takes at once (LIVE_PATTERNS: the next event or
call follows them; calls in progress keep theirs) and which wait for a restart: the
board, a line's wiring, kind or country, the country plan, every `sip.*` setting (the
SIP stack registers once) and where records go (read by the forwarder at start).
`cloud.*` and `update.*` are live: the agent and the update service re-read them; the
core has nothing to change.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from firmware.core.config import paths

# Line settings the line's chip driver holds (re-read by driver.retune).
DRIVER_KEYS = ("debounce_ms", "flash_min_ms", "flash_max_ms", "interdigit_ms",
               "ring_min_ms", "ring_timeout_ms", "loop_drop_ms", "disconnect")
LIVE_PATTERNS = ("system.name", "calls.*", "survive.*", "cloud.*", "update.*", "lines.*.name",
                 "lines.*.extension", "lines.*.number",
                 *(f"lines.*.{key}" for key in DRIVER_KEYS))
RESTART_PATTERNS = ("survive.records_*", "survive.outbox_*")  # read at start


def leaves(doc: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a document by its dotted path (lists are leaves)."""
    if not isinstance(doc, dict):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_paths(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted paths whose value differs (present in one document only included)."""
    a, b = leaves(old), leaves(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, ...) != b.get(k, ...))


def is_live(path: str, running: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when a running core can take this change now. A line that exists in only
    one of the two documents is an added or removed port: that needs a restart."""
    if path.startswith("lines."):
        line = paths.split(path)[1]
        if line not in running.get("lines", {}) or line not in new.get("lines", {}):
            return False
    return (any(fnmatchcase(path, pattern) for pattern in LIVE_PATTERNS)
            and not any(fnmatchcase(path, pattern) for pattern in RESTART_PATTERNS))


def split(changed: list[str], running: dict[str, Any],
          new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(live, restart) for the changed paths."""
    live = [p for p in changed if is_live(p, running, new)]
    return live, [p for p in changed if p not in live]


def merge(running: dict[str, Any], new: dict[str, Any], changed: list[str]) -> None:
    """Copy the values at the `changed` paths from `new` into `running`, in place (call
    control, the drivers and survivability hold references into it)."""
    for path in changed:
        paths.copy_from(new, running, path)


def retuned_lines(changed: list[str]) -> list[str]:
    """The lines whose chip driver must re-read its settings."""
    out = []
    for path in changed:
        parts = paths.split(path)
        if parts[0] == "lines" and len(parts) == 3 and parts[2] in DRIVER_KEYS:
            if parts[1] not in out:
                out.append(parts[1])
    return out
