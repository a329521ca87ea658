"""Fixtures for the real-network chaos scenarios.

`netlink`: two network namespaces joined by a veth pair (lab/netns.py), box 10.77.0.1
and cloud 10.77.0.2; its tests skip with the precise reason where the machine
does not allow namespaces (CI runs as root, so there they run).
`netcloud`: Kamailio and two lab agents (agent1 440 Hz, agent2 660 Hz) INSIDE the cloud
namespace, on its 10.77.0.2 address; "2001"/"2002" route to the box's trunk
registration. `box_in(link, doc)`: a PjBridge whose SIP thread (and so every socket it
opens, RTP included) lives in the box namespace. Everything is stopped by its fixture
and the namespaces are deleted at the end.

The proxy tests (test_proxy.py) and the loopback scenarios use tests/sip's session
Kamailio on 127.0.0.1.
"""

from __future__ import annotations

import pytest

from lab.agentctl import Agent
from lab.kamailio import Kamailio
from lab.netns import NetnsLink, unavailable
from tests.sip.conftest import (  # noqa: F401  (agents, kamailio: fixtures used here)
    ALIASES,
    USERS,
    Harness,
    agents,
    kamailio,
    sip_doc,
)


@pytest.fixture(scope="session")
def netlink():
    reason = unavailable()
    if reason:
        pytest.skip(f"network namespace scenarios need root with netns and veth: {reason}")
    with NetnsLink() as link:
        yield link


@pytest.fixture(scope="session")
def netcloud(netlink, tmp_path_factory):
    """(kamailio, {"agent1": Agent, "agent2": Agent}) inside the cloud namespace."""
    started: dict[str, Agent] = {}
    with netlink.cloud.entered():
        kam = Kamailio(tmp_path_factory.mktemp("kam-ns"), users=USERS, aliases=ALIASES,
                       invite_timeout_ms=2000, host=netlink.cloud.addr)
        kam.start()
        try:
            for user, hz in (("agent1", 440.0), ("agent2", 660.0)):
                started[user] = Agent(user, registrar=kam, tone_hz=hz, host=netlink.cloud.addr,
                                      workdir=tmp_path_factory.mktemp(f"{user}-ns"))
                started[user].start()
        except BaseException:
            _stop(kam, started)
            raise
    yield kam, started
    _stop(kam, started)


def _stop(kam: Kamailio, agents_: dict[str, Agent]) -> None:
    for agent in agents_.values():
        agent.stop()
    kam.stop()


def box_doc(link: NetnsLink, kam: Kamailio, **sip) -> dict:
    return sip_doc(kam, bind_address=link.box.addr, **sip)


def box_in(link: NetnsLink, doc: dict, lines: dict | None = None) -> Harness:
    """A started PjBridge living in the box namespace (its SIP thread starts there)."""
    with link.box.entered():
        return Harness(doc, lines).start()
