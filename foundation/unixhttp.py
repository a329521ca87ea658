"""HTTP over a Unix socket, both ends: the control API and the update service listen on
sockets in /run/branchline, and their clients (web, console, agent, CLI) talk HTTP/1.1 to
them. `UnixHTTPConnection` is http.client's connection on a socket path;
`clear_stale_socket` removes a socket file a killed server left, and refuses to take the
place of a live one or of a file that is not a socket."""

from __future__ import annotations

import http.client
import socket
import stat
from pathlib import Path

from foundation.errors import BranchlineError


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def clear_stale_socket(path: Path, option: str, who: str,
                       error: type[BranchlineError] = BranchlineError) -> None:
    """Remove `path` when it is a socket nobody answers on. `option` names the setting
    that chose the path and `who` the server, for the error's one line."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise error(f"{option} {path}: a file that is not a socket is in the way; "
                    "move it or choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody answers: stale
        return
    finally:
        probe.close()
    raise error(f"{option} {path}: {who} is listening there; stop it first")
