"""End-to-end fixtures: the whole core (firmware.core.runtime.Core: the real drivers on the
register-level twins, the real DSP, call control, the pjsua2 bridge, CDRs in SQLite) on a
real-clock reactor, against a real Kamailio and real agent processes on loopback.

The cloud's numbering (Kamailio aliases):
  8005550100  the FXO line's number (its DNIS) -> agent1, the contact center (440 Hz)
  5551234     -> agent2 (660 Hz)            5552000 -> agent3 (880 Hz), transfer target
  5553486 / 5553503 / 5553408 -> agents answering 486 / 503 / never (408)
  5556722     -> `wide`, a G.722-only agent playing 5 kHz (the headset's wideband test)
  201, 202, 200 (extensions) and 5557777 (a PSTN number) -> the box's trunk registration
The box registers as `branch` (trunk). One Kamailio and the agents serve the session; a
Box (lab/box.py) serves a module.
"""

from __future__ import annotations

import pytest

from firmware.core.config import validate
from lab.agentctl import Agent
from lab.box import Box, agent_call, agent_hears, last_id, start_all, tone_of, trunk_doc
from lab.kamailio import Kamailio
from lab.rig import sine

__all__ = ["Box", "agent_call", "agent_hears", "last_id", "sine", "tone_of"]

FXO_NUMBER = "8005550100"
AGENT_NUMBERS = {"agent1": FXO_NUMBER, "agent2": "5551234", "agent3": "5552000",
                 "busy": "5553486", "down": "5553503", "slow": "5553408", "wide": "5556722"}
AGENT_TONES = {"agent1": 440.0, "agent2": 660.0, "agent3": 880.0, "wide": 5000.0}
# "wide" speaks only G.722 and hears at 16 kHz: a 5 kHz tone only a wideband path carries
WIDEBAND = {"wide": {"codecs": "G722", "port_rate": 16000}}
AGENT_CODES = {"busy": 486, "down": 503, "slow": 408}
PSTN_NUMBER = "5557777"
# Kamailio ends an unanswered INVITE with 408 after this: longer than a phone's first
# ring cycle (6 s in the US) so inbound calls can be answered on the second ring.
INVITE_TIMEOUT_MS = 9000
USERS = {"branch": "secret", **{name: "secret" for name in AGENT_NUMBERS}}
ALIASES = {**{num: name for name, num in AGENT_NUMBERS.items()},
           "201": "branch", "202": "branch", "200": "branch", PSTN_NUMBER: "branch"}


def e2e_doc(kam: Kamailio, **sip) -> dict:
    """The default document with the cloud at `kam` (trunk registration as `branch`)."""
    doc = trunk_doc(kam, FXO_NUMBER, options_interval_s=0.5, options_timeout_s=0.5,
                    options_misses=2)
    doc["sip"]["codecs"] = ["PCMU", "PCMA", "G722"]  # the headset test needs wideband
    doc["sip"].update(sip)
    doc["board"]["headset"]["enabled"] = True
    doc["board"]["headset"]["rate"] = 16000
    return validate(doc)


@pytest.fixture(scope="session")
def kamailio(tmp_path_factory):
    kam = Kamailio(tmp_path_factory.mktemp("kamailio-e2e"), users=USERS, aliases=ALIASES,
                   invite_timeout_ms=INVITE_TIMEOUT_MS)
    kam.start()
    yield kam
    kam.stop()


@pytest.fixture(scope="session")
def agents(kamailio, tmp_path_factory):
    started: dict[str, Agent] = {}
    try:
        for user in AGENT_NUMBERS:
            started[user] = Agent(user, registrar=kamailio, tone_hz=AGENT_TONES.get(user, 0.0),
                                  answer_code=AGENT_CODES.get(user, 200),
                                  workdir=tmp_path_factory.mktemp(user),
                                  **WIDEBAND.get(user, {}))
        start_all(started.values())
        yield started
    finally:
        for agent in started.values():
            agent.stop()


@pytest.fixture(scope="module")
def box(kamailio, agents, tmp_path_factory):
    b = Box(e2e_doc(kamailio), tmp_path_factory.mktemp("data")).start()
    try:
        b.until(b.registered, 10, "trunk registration")
        yield b
    finally:
        b.stop()


@pytest.fixture
def clean(box, agents):
    """Leave no call behind: agents hang up, phones go on hook, the box goes idle."""
    yield box
    for agent in agents.values():
        try:
            agent.hangup()
        except Exception:  # noqa: BLE001 - its calls ended already
            pass
    for phone in box.board.phones.values():
        if phone.is_off_hook:
            phone.on_hook()
    box.idle()
