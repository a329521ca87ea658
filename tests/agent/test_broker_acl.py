"""The broker's ACL (lab/mosquitto/acl): a box reads only its own inbound topics and
writes only its own outbound ones. Device B, with its own valid certificate, tries
device A's topics; device A is a real Link.

Publishes are refused with PUBACK 0x87 (Not authorized). Subscriptions: MQTT 5 lets a
broker refuse them in the SUBACK (0x87), which clustered brokers do; Mosquitto's acl_file
grants the SUBACK and checks read access on every delivery instead. Either way nothing
may arrive, so the tests check the codes the broker gave AND that nothing was delivered,
using a sentinel message sent after the attempts (same topic order) instead of a sleep.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from firmware.agent.link import Link, Message
from firmware.agent.protocol import INBOUND, OUTBOUND, Topic, topic
from lab.mosquitto import Mosquitto, MqttClient
from lab.pki import Pki
from lab.wait import wait_until
from tests.agent.conftest import PASSWORD, PASSWORD_USER, DeviceLink, Platform

NOT_AUTHORIZED = 0x87
BoxA = tuple[Link, list[Message]]  # device A's link and what its handlers received
A, B = "dev-acl-a", "dev-acl-b"

SAMPLE: dict[Topic, dict[str, Any]] = {
    Topic.DESIRED: {"version": 9, "issued": 1.0, "set": {"cloud.telemetry_s": 5}},
    Topic.RECORDS_ACK: {"uuids": ["forged"]},
    Topic.CMD: {"id": "forged", "name": "reboot", "issued": 1.0},
    Topic.JOBS: {"id": "forged", "kind": "firmware_update", "issued": 1.0},
    Topic.JOB_CANCEL: {"id": "forged", "issued": 1.0},
}


def _inbound_collector(link: Link) -> list[Message]:
    got: list[Message] = []
    for t in sorted(INBOUND):
        link.on(t, got.append)
    return got


def _refused(code: Any) -> bool:
    return code is not None and code.value == NOT_AUTHORIZED


@pytest.fixture
def box_a(device_link: DeviceLink) -> BoxA:
    link = device_link(A, start=False)
    got = _inbound_collector(link)
    link.start()
    wait_until(lambda: link.subscribed, 10, "A subscribed")
    return link, got


def test_b_cannot_publish_on_a_inbound_topics(broker: Mosquitto, box_a: BoxA,
                                              platform_client: Platform) -> None:
    link, got = box_a
    b = broker.client(B)
    try:
        for t, payload in SAMPLE.items():
            code = b.publish(topic(A, t), payload, retain=t is Topic.DESIRED)
            assert _refused(code), (t, code)
    finally:
        b.close()
    sentinel = {"id": "sentinel", "name": "selftest", "issued": time.time()}
    assert platform_client().publish(topic(A, Topic.CMD), sentinel) == 0
    wait_until(lambda: got, 10, "the sentinel at A", tick=link.poll)
    assert [m.payload["id"] for m in got] == ["sentinel"]
    assert not any(m.topic is Topic.DESIRED for m in got)  # no forged retained config


def test_b_cannot_publish_on_a_outbound_topics(broker: Mosquitto, box_a: BoxA,
                                               platform_client: Platform) -> None:
    link, _ = box_a
    p = platform_client()
    p.subscribe(f"branchline/{A}/#")
    b = broker.client(B)
    forged = {"state": "offline", "time": 1.0, "version": "forged", "reason": "forged"}
    try:
        for t in sorted(OUTBOUND):
            assert _refused(b.publish(topic(A, t), forged)), t
    finally:
        b.close()
    ev = {"id": 1, "kind": "wan", "time": time.time(), "sent": time.time(), "data": {"up": True}}
    assert link.publish(Topic.EVENTS, ev).wait(10)
    p.wait_for(lambda m: m.topic == topic(A, Topic.EVENTS), what="A's own event")
    assert not [m for m in p.snapshot() if b"forged" in m.payload]


def test_b_cannot_read_a_topics(broker: Mosquitto, box_a: BoxA, platform_client: Platform) -> None:
    link, _ = box_a
    p = platform_client()
    p.publish(topic(A, Topic.DESIRED), SAMPLE[Topic.DESIRED], retain=True)  # A's retained config
    b = broker.client(B)
    try:
        codes = {f: b.subscribe(f) for f in (topic(A, Topic.DESIRED), topic(A, Topic.CMD),
                                              topic(A, Topic.EVENTS), topic(A, Topic.STATUS),
                                              f"branchline/{A}/#", "branchline/+/cmd",
                                              "branchline/#")}
        for f, code in codes.items():
            assert len(code) == 1 and (code[0].is_failure or code[0].value in (0, 1)), (f, code)
        # traffic on A's topics both ways, then B's own command as the sentinel
        assert p.publish(topic(A, Topic.CMD), SAMPLE[Topic.CMD]) == 0
        ev = {"id": 2, "kind": "wan", "time": time.time(), "sent": time.time()}
        assert link.publish(Topic.EVENTS, ev).wait(10)
        assert p.publish(topic(B, Topic.CMD), {"id": "mine", "name": "selftest",
                                               "issued": time.time()}) == 0
        mine = b.wait_for(lambda m: m.topic == topic(B, Topic.CMD), what="B's own command")
        assert mine.json()["id"] == "mine"
        leaked = [m.topic for m in b.snapshot() if m.topic.startswith(f"branchline/{A}/")]
        assert leaked == [], f"B received A's messages: {leaked}"
    finally:
        b.close()
        p.publish(topic(A, Topic.DESIRED), b"", retain=True)


def test_a_device_cannot_write_its_own_inbound_topics(broker: Mosquitto) -> None:
    b = broker.client(B)
    try:
        for t, payload in SAMPLE.items():
            assert _refused(b.publish(topic(B, t), payload, retain=t is Topic.DESIRED)), t
        ok = b.publish(topic(B, Topic.EVENTS), {"id": 1, "kind": "wan", "time": 1.0, "sent": 1.0})
        assert ok is not None and not ok.is_failure  # its outbound topics are fine
    finally:
        b.close()


def test_password_fallback_user_is_confined_too(broker: Mosquitto, pki: Pki, box_a: BoxA) -> None:
    c = MqttClient(broker.host, broker.password_port, pki.ca_file, username=PASSWORD_USER,
                   password=PASSWORD, client_id=PASSWORD_USER)
    try:
        assert not c.refused
        assert _refused(c.publish(topic(A, Topic.CMD), SAMPLE[Topic.CMD]))
        assert _refused(c.publish(topic(PASSWORD_USER, Topic.CMD), SAMPLE[Topic.CMD]))
        ok = c.publish(topic(PASSWORD_USER, Topic.EVENTS),
                       {"id": 1, "kind": "wan", "time": 1.0, "sent": 1.0})
        assert ok is not None and not ok.is_failure
    finally:
        c.close()


def test_no_anonymous_or_uncertified_access(broker: Mosquitto, pki: Pki) -> None:
    anon = MqttClient(broker.host, broker.password_port, pki.ca_file, client_id="anon-x")
    try:
        assert anon.refused or anon.disconnected.is_set()
    finally:
        anon.close()
