"""`branchline config ...`: show, validate, set, apply, versions and rollback the config.

Changes go through `ConfigStore.save`: a bad value is refused with one line per problem
(field, value, rule), exit code 2, and nothing on disk changes."""

from __future__ import annotations

import argparse
import functools
import sys
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from firmware.core.config import ConfigError, ConfigStore, config_dir, load_file, paths
from firmware.core.config.rules import validate
from firmware.core.config.schema import default_document
from firmware.core.config.store import render

Action = Callable[[argparse.Namespace], int]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="show, check and change the configuration",
                            description="Show, check and change the versioned configuration.")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    show = _action(actions, "show", "print the configuration as TOML", _show)
    show.add_argument("--default", action="store_true", help="print the default document")
    show.add_argument("--version", type=int, metavar="N", help="print a kept version")
    _action(actions, "validate", "check a TOML file without applying it", _validate) \
        .add_argument("file", metavar="FILE")
    setter = _action(actions, "set", "change one setting, e.g. lines.fxs1.flash_max_ms 600", _set)
    setter.add_argument("key", metavar="KEY", help="dotted path, e.g. lines.fxs1.name")
    setter.add_argument("value", metavar="VALUE", help="a TOML value; a bare word is a string")
    setter.add_argument("--reason", default="", help="why (kept with the version)")
    apply = _action(actions, "apply", "validate a TOML file and make it the configuration", _apply)
    apply.add_argument("file", metavar="FILE")
    apply.add_argument("--reason", default="", help="why (kept with the version)")
    _action(actions, "versions", "list the kept versions", _versions)
    _action(actions, "rollback", "restore the previous (or the given) version", _rollback) \
        .add_argument("version", type=int, nargs="?", metavar="VERSION")


def _action(actions: Any, name: str, text: str, func: Action) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
    parser.add_argument("--config-dir", metavar="DIR",
                        help="config directory (default: $BRANCHLINE_CONFIG_DIR or /etc/branchline)")
    parser.set_defaults(func=_each_problem_a_line(func))
    return parser


def _each_problem_a_line(func: Action) -> Action:
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ConfigError as exc:
            for problem in exc.problems:
                sys.stderr.write(f"branchline: {problem}\n")
            return 2
    return run


def _store(args: argparse.Namespace) -> ConfigStore:
    return ConfigStore(config_dir(args.config_dir))


def _show(args: argparse.Namespace) -> int:
    if args.default:
        doc = validate(default_document())
    elif args.version is not None:
        doc = _store(args).read_version(args.version)
    else:
        doc = _store(args).load()
    sys.stdout.write(render(doc).decode())
    return 0


def _validate(args: argparse.Namespace) -> int:
    doc = load_file(args.file)
    sys.stdout.write(f"{args.file}: ok ({len(doc['board']['chips'])} chips, "
                     f"{len(doc['lines'])} lines)\n")
    return 0


def _set(args: argparse.Namespace) -> int:
    store = _store(args)
    doc = store.load()
    table, key = paths.parent(doc, args.key)
    old = table.get(key, paths.MISSING)
    value = parse_value(args.value, old)
    if old == value:
        sys.stdout.write(f"{args.key} is already {args.value}; nothing saved\n")
        return 0
    table[key] = value
    version = store.save(doc, reason=args.reason or f"set {args.key} = {args.value}")
    sys.stdout.write(f"{args.key} = {render({'v': value}).decode()[4:].strip()} "
                     f"(version {version})\n")
    return 0


def parse_value(text: str, old: Any = paths.MISSING) -> Any:
    """VALUE as TOML (600, true, [2.0, 4.0], "x"); a bare word, or digits where the
    setting is a string (an extension), stays the text that was typed."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return text if isinstance(old, str) and not isinstance(value, str) else value


def _apply(args: argparse.Namespace) -> int:
    doc = load_file(args.file)
    store = _store(args)
    try:
        unchanged = store.load() == doc
    except ConfigError:
        unchanged = False  # the live file is broken: applying a good one is the fix
    if unchanged:
        sys.stdout.write(f"{args.file}: same as the current configuration; nothing saved\n")
        return 0
    version = store.save(doc, reason=args.reason or f"apply {args.file}")
    sys.stdout.write(f"{args.file}: applied as version {version}\n")
    return 0


def _versions(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = store.versions()
    if not rows:
        sys.stdout.write(f"no versions kept in {store.directory}\n")
        return 0
    sys.stdout.write(f"{'version':>7}  {'saved (UTC)':19}  reason\n")
    for row in rows:
        when = datetime.fromtimestamp(row["time"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        mark = "  (current)" if row["current"] else ""
        sys.stdout.write(f"{row['version']:>7}  {when}  {row['reason'] or '-'}{mark}\n")
    if not rows[-1]["current"] and store.path.exists():
        sys.stdout.write(f"{store.path} was edited by hand since version {rows[-1]['version']}; "
                         "the next change keeps the edit as a version first\n")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    store = _store(args)
    version = store.rollback(args.version)
    reason = store.versions()[-1]["reason"]
    sys.stdout.write(f"{reason}: now version {version}\n")
    return 0
