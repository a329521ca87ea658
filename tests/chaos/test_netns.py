"""lab/netns.py itself: two namespaces joined by a veth pair, traffic across it, a cut
that silently drops (cloud side) or fails at once (box side), restore with routes back,
a flap schedule, and clean-up that leaves no namespace behind.

Skipped, with the reason, where the machine does not allow network namespaces.
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from lab.netns import NetnsLink, netem_missing, unavailable

pytestmark = pytest.mark.skipif(bool(unavailable()),
                                reason=f"network namespaces unavailable: {unavailable()}")


def _pair(link: NetnsLink) -> tuple[socket.socket, socket.socket]:
    with link.cloud.entered():
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind((link.cloud.addr, 0))
    with link.box.entered():
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.settimeout(0.3)
    return server, client


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_link_cut_restore_flap_and_cleanup():
    with NetnsLink(prefix="blt") as link:
        server, client = _pair(link)
        dest = server.getsockname()
        with server, client:
            client.sendto(b"a", dest)
            assert server.recvfrom(16)[0] == b"a"
            link.cut()  # the cloud end: the box's sends vanish silently
            client.sendto(b"lost", dest)
            with pytest.raises(TimeoutError):
                server.recvfrom(16)
            link.restore()
            client.sendto(b"b", dest)
            assert server.recvfrom(16)[0] == b"b"
            link.cut("box")  # the box's own cable: its sends fail at once
            with pytest.raises(OSError):
                client.sendto(b"x", dest)
            link.restore()
            assert "default via" in link.box.run(["ip", "route"]).stdout
            link.flap([(0.05, 0.05)] * 3)
            assert link.wait_flap(5)
            assert [w for w, _ in link.flap_events] == ["down", "up"] * 3
            client.sendto(b"c", dest)
            assert server.recvfrom(16)[0] == b"c"
        # nothing of the test is visible in the machine's own namespace
        assert link.box.addr not in subprocess.run(["ip", "-o", "addr"], capture_output=True,
                                                   text=True).stdout
        names = (link.box.ns, link.cloud.ns)
        assert all(n in _namespaces() for n in names)
        proc = link.cloud.popen(["sleep", "30"])
    assert not any(n in _namespaces() for n in names)
    assert proc.wait(5) is not None  # close() stopped what still ran inside


def test_impair_needs_netem_or_says_why():
    reason = netem_missing()
    with NetnsLink(prefix="blt") as link:
        if reason:
            with pytest.raises(Exception, match="use lab/chaos.py"):
                link.impair(loss_pct=10)
        else:
            link.impair(loss_pct=0, delay_ms=20)
            out = link.box.run(["tc", "qdisc", "show", "dev", link.box.dev]).stdout
            assert "netem" in out
