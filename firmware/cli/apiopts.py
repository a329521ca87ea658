"""The `--api HOST:PORT | --api-socket PATH` options shared by the commands that talk to
the running core (console, web, status), the client address they resolve to, and the
default data directory of the box's processes."""

from __future__ import annotations

import argparse
from typing import Any, Protocol, TypedDict

from firmware.api.client import DEFAULT_SOCKET

DEFAULT_DATA_DIR = "/var/lib/branchline"


class Subparsers(Protocol):
    """What `register(sub)` uses of argparse's sub-command action."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_api_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--api", metavar="HOST:PORT",
                       help="the core's control API on loopback TCP (sim mode)")
    group.add_argument("--api-socket", metavar="PATH",
                       help=f"the core's control API socket (default: {DEFAULT_SOCKET})")


class ApiAddress(TypedDict):
    unix_path: str | None
    tcp: str | None


def api_address(args: argparse.Namespace) -> ApiAddress:
    """unix_path/tcp keywords for ApiClient: TCP when --api was given, else the socket."""
    return {"unix_path": None if args.api else (args.api_socket or DEFAULT_SOCKET),
            "tcp": args.api}
