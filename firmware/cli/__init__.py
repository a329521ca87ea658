"""`branchline` command line: one module per command group, each with `register(sub)`.
A BranchlineError is one line with exit code 2; any other error is an internal error
without a traceback unless BRANCHLINE_DEBUG=1."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from foundation.errors import BranchlineError

# Command groups, in the order `branchline --help` lists them.
COMMAND_MODULES = ["demo", "run", "hw", "config", "dsp", "console", "web", "commission",
                   "forward", "agent", "update", "watchdog", "firstboot", "status"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="branchline",
        description="Branch-office telephony gateway: analog phones and PSTN lines to the cloud.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"firmware.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"firmware.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BranchlineError as exc:
        print(f"branchline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - last line of defence for users
        if os.environ.get("BRANCHLINE_DEBUG"):
            raise
        print(
            f"branchline: internal error: {type(exc).__name__}: {exc} "
            "(run again with BRANCHLINE_DEBUG=1 for details and report it)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
