"""Which settings a running core takes at once, and which wait for a restart.

A technician who changes the flash window or the dial plan expects the next hook flash or
the next call to follow it, not a reboot. `split(changed)` sorts changed config paths
into those two groups; `merge(running, new, paths)` copies the live ones into the running
document in place (call control, the drivers and the survivability code hold references
into it), leaving the rest as they run until the next start.

Live: the box name; every `calls.*` setting (dial plan, timers, park/pickup codes,
emergency numbers, headset extension and auto-answer, FXO answer rings); a line's name,
extension or number and its hook, pulse, ring and disconnect timing; survivability
timers, fallback chain, hunt group, prompts and outage dial rules. Calls in progress
keep what they started with; the next event or call uses the new value.

Restart: the board (chips, SPI, GPIO, ALSA, timeslots), adding or removing a line or
changing its kind, chip or country, the country plan, every `sip.*` setting and the
per-line SIP accounts (the SIP stack registers once at start), and where records go
(`survive.records_*`, `outbox_*`: the forward process and the CDR store read them at
start).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

LIVE_PATTERNS = (
    "system.name",
    "calls.*",
    "lines.*.name", "lines.*.extension", "lines.*.number",
    "lines.*.debounce_ms", "lines.*.flash_min_ms", "lines.*.flash_max_ms",
    "lines.*.interdigit_ms",
    "lines.*.ring_min_ms", "lines.*.ring_timeout_ms", "lines.*.loop_drop_ms",
    "lines.*.disconnect",
    "survive.rtp_timeout_s", "survive.blip_window_s", "survive.failback_stable_s",
    "survive.flap_count", "survive.flap_hold_s", "survive.fallback", "survive.hunt_group",
    "survive.headset_ring_s", "survive.hunt_step_s", "survive.hunt_ring_s",
    "survive.queue_timeout_s", "survive.announce_every_s", "survive.announcement",
    "survive.callback_confirm", "survive.record_calls", "survive.outage_strip_prefix", "survive.outage_add_prefix",
)

# Line settings the line's chip driver holds (re-read by driver.retune).
DRIVER_KEYS = ("debounce_ms", "flash_min_ms", "flash_max_ms", "interdigit_ms",
               "ring_min_ms", "ring_timeout_ms", "loop_drop_ms", "disconnect")


def leaves(doc: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a document by its dotted path (lists are leaves)."""
    if not isinstance(doc, dict):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_paths(old: dict, new: dict) -> list[str]:
    """The dotted paths whose value differs (present in one document only included)."""
    a, b = leaves(old), leaves(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, ...) != b.get(k, ...))


def is_live(path: str, running: dict, new: dict) -> bool:
    """True when a running core can take this change now. A line that exists in only
    one of the two documents is an added or removed port: that needs a restart."""
    if path.startswith("lines."):
        line = path.split(".")[1]
        if line not in running.get("lines", {}) or line not in new.get("lines", {}):
            return False
    return any(fnmatchcase(path, pattern) for pattern in LIVE_PATTERNS)


def split(changed: list[str], running: dict, new: dict) -> tuple[list[str], list[str]]:
    """(live, restart) for the changed paths."""
    live = [p for p in changed if is_live(p, running, new)]
    return live, [p for p in changed if p not in live]


def merge(running: dict, new: dict, paths: list[str]) -> None:
    """Copy the values at `paths` from `new` into `running`, in place."""
    for path in paths:
        keys = path.split(".")
        src: Any = new
        dst: Any = running
        for key in keys[:-1]:
            src = src[key]
            dst = dst.setdefault(key, {})
        if keys[-1] in src:
            dst[keys[-1]] = src[keys[-1]]
        else:
            dst.pop(keys[-1], None)


def retuned_lines(paths: list[str]) -> list[str]:
    """The lines whose chip driver must re-read its settings."""
    out = []
    for path in paths:
        parts = path.split(".")
        if parts[0] == "lines" and len(parts) == 3 and parts[2] in DRIVER_KEYS:
            if parts[1] not in out:
                out.append(parts[1])
    return out
