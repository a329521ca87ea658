"""The `--update-socket PATH` option of the processes that hand firmware bundles to the
update service (web, console, agent), and the client it makes. The update package is
imported only when a process runs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from firmware.update.client import UpdateClient


def add_update_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--update-socket", metavar="PATH",
                        help="the update service's socket (default: "
                             "$BRANCHLINE_RUN/update.sock, /run/branchline/update.sock)")


def update_client(args: argparse.Namespace) -> UpdateClient:
    from firmware.update.client import DEFAULT_SOCKET, UpdateClient

    return UpdateClient(args.update_socket or DEFAULT_SOCKET)
