"""The one walker of dotted setting paths (`lines.fxs1.flash_max_ms`) over a config
document: every reader and writer of a path (CLI, console, web, API, live config) uses it,
so a path means the same thing everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from firmware.core.config.schema import ConfigError

MISSING: Any = object()


def split(path: str) -> list[str]:
    """The parts of a dotted path; ConfigError naming it when a part is empty."""
    parts = path.split(".")
    if not path or not all(parts):
        raise ConfigError([f"{path}: not a dotted setting path like lines.fxs1.flash_max_ms"])
    return parts


def get(doc: Mapping[str, Any], path: str, default: Any = MISSING) -> Any:
    """The value at `path`; `default` (or KeyError(path) without one) when absent."""
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is MISSING:
                raise KeyError(path)
            return default
        node = node[part]
    return node


def parent(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The table holding the last part of `path`, created on the way when absent;
    ConfigError when a part on the way is a setting, not a table."""
    parts = split(path)
    table = doc
    for depth, part in enumerate(parts[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError([f"{path}: {'.'.join(parts[:depth + 1])} is a setting, "
                               "not a table"])
    return table, parts[-1]


def put(doc: dict[str, Any], path: str, value: Any) -> None:
    table, key = parent(doc, path)
    table[key] = value


def copy_from(src: Mapping[str, Any], dst: dict[str, Any], path: str) -> None:
    """Make `dst` hold what `src` holds at `path` (removed there when absent in `src`)."""
    value = get(src, path, MISSING)
    if value is MISSING:
        table, key = parent(dst, path)
        table.pop(key, None)
    else:
        put(dst, path, value)
