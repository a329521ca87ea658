"""The agent's MQTT link against a real Mosquitto: identity, birth and last will, the
persistent session, reconnects and backoff, the offline queue, PUBACK tracking, inbound
validation, command responses, the password fallback and reconfiguration.

Tests that stop, kill or freeze a broker get their own (`own_broker`); the rest share the
module's `broker`.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.agent.link import QUEUE_MAX, Link, LinkError, LinkSettings, Message
from firmware.agent.protocol import MAX_PAYLOAD, ProtocolError, Topic, topic
from foundation.clock import MonotonicClock
from lab.mosquitto import Mosquitto, MqttClient, PlatformClient
from lab.pki import Pki
from lab.ports import free_port
from lab.procs import stop_process
from lab.wait import wait_until
from tests.agent.conftest import (
    LINK_VERSION,
    PASSWORD,
    PASSWORD_USER,
    ROOT,
    DeviceLink,
    Platform,
    link_settings,
)

Caplog = pytest.LogCaptureFixture


def _status(client: MqttClient, device: str, state: str, reason: str | None = None,
            timeout: float = 10.0) -> dict[str, Any]:
    def match(m: Any) -> bool:
        if m.topic != topic(device, Topic.STATUS) or not m.payload:
            return False
        doc = m.json()
        return doc["state"] == state and (reason is None or doc.get("reason") == reason)
    got: dict[str, Any] = client.wait_for(match, timeout, f"{device} {state} {reason}").json()
    return got


def _event(n: int) -> dict[str, Any]:
    return {"id": n, "kind": "ringing", "time": time.time(), "sent": time.time(), "port": "fxs1"}


def _cmd(name: str = "selftest", cid: str = "c-1") -> dict[str, Any]:
    return {"id": cid, "name": name, "issued": time.time()}


def _collect(link: Link, t: Topic) -> list[Message]:
    got: list[Message] = []
    link.on(t, got.append)
    return got


def _poll_until(link: Link, predicate: Callable[[], Any], what: str, timeout: float = 10) -> Any:
    return wait_until(predicate, timeout, what, tick=link.poll, step=0.05)


@pytest.fixture
def own_broker(pki: Pki, tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "own-broker", pki, password_users={PASSWORD_USER: PASSWORD})
    yield b
    b.thaw()
    b.stop()


@pytest.fixture
def links() -> Iterator[Callable[..., Link]]:
    """Links made by hand (for own_broker), all stopped at teardown."""
    made: list[Link] = []

    def make(settings: LinkSettings, **kw: Any) -> Link:
        kw.setdefault("backoff_min_s", 0.2)
        kw.setdefault("backoff_max_s", 1.0)
        link = Link(settings, MonotonicClock(), **kw)
        made.append(link)
        return link

    yield make
    for link in made:
        link.stop()


# ---- identity, birth, last will ----

def test_connects_with_device_cert_birth_is_retained(device_link: DeviceLink,
                                                     platform_client: Platform) -> None:
    link = device_link("dev-birth")
    assert link.connected and link.last_error == ""
    late = platform_client()  # subscribes after the birth: gets the retained copy
    late.subscribe(topic("dev-birth", Topic.STATUS))
    birth = late.wait_for(lambda m: m.topic == topic("dev-birth", Topic.STATUS))
    assert birth.retained
    doc = birth.json()
    assert doc["state"] == "online" and doc["version"] == LINK_VERSION
    assert abs(doc["time"] - time.time()) < 60


def test_clean_stop_publishes_offline_stopped(device_link: DeviceLink,
                                              platform_client: Platform) -> None:
    p = platform_client()
    p.subscribe(topic("dev-stop", Topic.STATUS))
    link = device_link("dev-stop")
    _status(p, "dev-stop", "online")
    link.stop()
    assert not link.connected
    _status(p, "dev-stop", "offline", "stopped")
    late = platform_client()
    late.subscribe(topic("dev-stop", Topic.STATUS))
    retained = late.wait_for(lambda m: m.topic == topic("dev-stop", Topic.STATUS)).json()
    assert retained["state"] == "offline" and retained["reason"] == "stopped"


RUNNER = """
import json, sys, time
from firmware.agent.link import Link, LinkSettings
from foundation.clock import MonotonicClock
link = Link(LinkSettings(**json.loads(sys.argv[1])), MonotonicClock())
link.start()
while not link.connected:
    time.sleep(0.05)
print("UP", flush=True)
time.sleep(600)
"""


def test_last_will_when_the_box_dies(broker: Mosquitto, pki: Pki,
                                     platform_client: Platform) -> None:
    settings = link_settings(broker, pki, "dev-will")
    p = platform_client()
    p.subscribe(topic("dev-will", Topic.STATUS))
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(settings.__dict__)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == b"UP", line
        online = _status(p, "dev-will", "online")
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        will = _status(p, "dev-will", "offline", "lost")
        assert will["version"] == LINK_VERSION
        assert will["time"] == pytest.approx(online["time"], abs=5)  # the connect time
    finally:
        stop_process(proc)
    late = platform_client()
    late.subscribe(topic("dev-will", Topic.STATUS))
    retained = late.wait_for(lambda m: m.topic == topic("dev-will", Topic.STATUS)).json()
    assert retained["reason"] == "lost"


# ---- sessions and reconnects ----

def test_commands_queued_while_the_agent_restarts_arrive(broker: Mosquitto, pki: Pki,
                                                         links: DeviceLink,
                                                         platform_client: Platform) -> None:
    settings = link_settings(broker, pki, "dev-session")
    first = links(settings)
    _collect(first, Topic.CMD)
    first.start()
    wait_until(lambda: first.subscribed, 10, "first link subscribed")
    first.stop()
    p = platform_client()
    assert p.publish(topic("dev-session", Topic.CMD), _cmd(cid="while-away")) == 0
    second = links(settings)
    got = _collect(second, Topic.CMD)
    second.start()
    _poll_until(second, lambda: got, "the queued command")
    assert got[0].payload["id"] == "while-away"


def test_broker_down_at_start_then_up(own_broker: Mosquitto, pki: Pki, links: DeviceLink,
                                      caplog: Caplog) -> None:
    caplog.set_level(logging.WARNING, "firmware.agent.link")
    link = links(link_settings(own_broker, pki, "dev-late"))
    link.start()
    wait_until(lambda: "cannot connect" in link.last_error, 10, "a failed connect",
               detail=lambda: link.last_error)
    assert not link.connected
    assert str(own_broker.tls_port) in link.last_error
    own_broker.start()
    wait_until(lambda: link.connected, 10, "link up once the broker is",
               detail=lambda: link.last_error)
    assert link.last_error == ""
    assert any("cannot connect" in r.getMessage() for r in caplog.records)


def test_reconnects_after_broker_restart_and_sends_what_waited(own_broker: Mosquitto, pki: Pki,
                                                               links: DeviceLink) -> None:
    own_broker.start()
    p = PlatformClient(own_broker, client_id="plat-restart", clean_start=False,
                       session_expiry_s=300)
    try:
        p.subscribe("branchline/dev-restart/#")
        link = links(link_settings(own_broker, pki, "dev-restart"))
        ups: list[bool] = []
        link.on_connect(ups.append)
        link.start()
        _poll_until(link, lambda: ups == [True], "link up")
        own_broker.stop()
        _poll_until(link, lambda: ups == [True, False], "link down")
        waiting = [link.publish(Topic.EVENTS, _event(n)) for n in range(3)]
        dropped = link.publish(Topic.TELEMETRY, {"time": time.time(), "seq": 1, "full": True,
                                                 "params": {}})
        assert dropped.failed and "QoS 0" in dropped.error
        assert not any(d.done or d.failed for d in waiting)
        own_broker.start()
        _poll_until(link, lambda: ups == [True, False, True], "link up again")
        assert all(d.wait(10) for d in waiting)
        ids = [m.json()["id"] for m in
               wait_until(lambda: [m for m in p.messages(topic("dev-restart", Topic.EVENTS))]
                          if len(p.messages(topic("dev-restart", Topic.EVENTS))) >= 3 else None,
                          10, "the three events")]
        assert ids == [0, 1, 2]
    finally:
        p.close()


def test_broker_killed_mid_publish_resends(own_broker: Mosquitto, pki: Pki, links: DeviceLink,
                                           platform_client: Platform) -> None:
    own_broker.start()
    link = links(link_settings(own_broker, pki, "dev-kill"))
    link.start()
    wait_until(lambda: link.connected, 10, "link up")
    own_broker.freeze()  # PUBLISHes are written, no PUBACK can come
    sent = [link.publish(Topic.REPORTED, {"version": v, "state": "applied", "time": time.time(),
                                          "store_version": v}) for v in (1, 2, 3)]
    assert not any(d.wait(0.5) for d in sent)  # a frozen broker acknowledges nothing
    own_broker.kill()
    wait_until(lambda: not link.connected, 10, "link down after the kill")
    assert not any(d.done for d in sent)
    own_broker.start()
    assert all(d.wait(15) for d in sent), [d.error for d in sent]
    p = PlatformClient(own_broker)
    try:
        p.subscribe(topic("dev-kill", Topic.REPORTED))
        last = p.wait_for(lambda m: m.topic == topic("dev-kill", Topic.REPORTED)).json()
        assert last["version"] == 3  # the resent messages reached the new broker, in order
    finally:
        p.close()


def test_backoff_grows_with_jitter_and_stays_bounded() -> None:
    import random
    clock = MonotonicClock()
    dead = LinkSettings("dev-backoff", "127.0.0.1", free_port("tcp"), tls=False)
    link = Link(dead, clock, rng=random.Random(7), backoff_min_s=1.0, backoff_max_s=8.0)
    delays = []
    for _ in range(8):
        before = clock.now()
        link._failed("test")
        delays.append(link._next_try - before)
    for n, d in enumerate(delays):
        cap = min(8.0, 2.0 ** n)
        assert 0.5 * cap - 0.01 <= d <= cap + 0.01, (n, d)
    assert len({round(d, 3) for d in delays}) == len(delays)  # jittered


# ---- the offline queue ----

def test_offline_queue_is_bounded_and_keeps_records(links: DeviceLink, caplog: Caplog) -> None:
    caplog.set_level(logging.WARNING, "firmware.agent.link")
    link = links(LinkSettings("dev-queue", "127.0.0.1", free_port("tcp"), tls=False))
    record = link.publish(Topic.RECORDS, {"batch": "b-1", "records": [
        {"uuid": "u-1", "seq": 1, "kind": "cdr", "created": time.time(), "body": {}}]})
    events = [link.publish(Topic.EVENTS, _event(n)) for n in range(QUEUE_MAX)]
    assert not record.failed
    assert events[0].failed and "offline queue full" in events[0].error
    assert not any(d.failed for d in events[1:])
    assert link.dropped == 1
    assert any("dropped the oldest events message" in r.getMessage() for r in caplog.records)


def test_publish_refuses_bad_outbound_payloads(device_link: DeviceLink) -> None:
    link = device_link("dev-out")
    with pytest.raises(ProtocolError, match="state: must be one of"):
        link.publish(Topic.STATUS, {"state": "busy", "time": 1.0, "version": ""})
    with pytest.raises(ProtocolError, match="byte limit"):
        link.publish(Topic.CMD_RESULT, {"id": "c", "name": "n", "status": "ok", "time": 1.0,
                                        "result": {"x": "y" * MAX_PAYLOAD}})
    with pytest.raises(ProtocolError, match="to: "):
        link.publish(Topic.EVENTS, _event(1), to="branchline/other-dev/events")


def test_a_refused_puback_fails_the_delivery(device_link: DeviceLink, caplog: Caplog) -> None:
    caplog.set_level(logging.ERROR, "firmware.agent.link")
    link = device_link("dev-refused")
    d = link.publish(Topic.CMD_RESULT, {"id": "c", "name": "n", "status": "ok", "time": 1.0},
                     to=topic("dev-refused", Topic.CMD))  # its own inbound topic: ACL says no
    wait_until(lambda: d.failed, 10, "the refused delivery")
    assert not d.wait(0) and "0x87" in d.error
    assert any("refused a message on branchline/dev-refused/cmd" in r.getMessage()
               and "0x87" in r.getMessage() for r in caplog.records)
    ok = link.publish(Topic.EVENTS, _event(2))
    assert ok.wait(10) and ok.done and not ok.failed


# ---- inbound ----

def test_inbound_bad_payloads_are_dropped_with_a_log_line(device_link: DeviceLink,
                                                          platform_client: Platform,
                                                          caplog: Caplog) -> None:
    caplog.set_level(logging.WARNING, "firmware.agent.link")
    link = device_link("dev-in", wait=False, start=False)
    got = _collect(link, Topic.CMD)
    link.start()
    wait_until(lambda: link.subscribed, 10, "subscribed")
    p = platform_client()
    where = topic("dev-in", Topic.CMD)
    p.publish(where, b"{not json")
    p.publish(where, {"id": 5, "name": "selftest", "issued": time.time()})
    p.publish(where, {"id": "c-2", "name": "selftest"})
    p.publish(where, b'{"id": "c-3", "pad": "' + b"x" * (MAX_PAYLOAD + 10) + b'"}')
    p.publish(where, _cmd(cid="good"))
    _poll_until(link, lambda: got, "the good command")
    assert [m.payload["id"] for m in got] == ["good"]
    lines = [r.getMessage() for r in caplog.records if "dropped a message on" in r.getMessage()]
    assert len(lines) == 4, lines
    assert all(where in line for line in lines)
    assert "payload: is not JSON" in lines[0]
    assert "id: must be string, not integer" in lines[1]
    assert "issued: is required" in lines[2]
    assert "payload: is" in lines[3] and "byte limit" in lines[3]


def test_retained_desired_reaches_a_late_handler(device_link: DeviceLink,
                                                 platform_client: Platform) -> None:
    p = platform_client()
    desired = {"version": 4, "issued": time.time(), "set": {"cloud.telemetry_s": 30}}
    p.publish(topic("dev-desired", Topic.DESIRED), desired, retain=True)
    link = device_link("dev-desired")
    got = _collect(link, Topic.DESIRED)  # subscribes on the live session
    _poll_until(link, lambda: got, "the retained desired config")
    assert got[0].retained and got[0].payload == desired
    p.publish(topic("dev-desired", Topic.DESIRED), b"", retain=True)  # clear it


def test_handler_errors_are_logged_and_do_not_stop_dispatch(device_link: DeviceLink,
                                                            platform_client: Platform,
                                                            caplog: Caplog) -> None:
    link = device_link("dev-crash", start=False)
    seen: list[str] = []

    def broken(msg: Message) -> None:
        raise RuntimeError("boom")
    link.on(Topic.JOBS, broken)
    link.on(Topic.JOBS, lambda m: seen.append(m.payload["id"]))
    link.start()
    wait_until(lambda: link.subscribed, 10, "subscribed")
    platform_client().publish(topic("dev-crash", Topic.JOBS),
                              {"id": "j-1", "kind": "line_test", "issued": time.time()})
    _poll_until(link, lambda: seen, "the second handler")
    assert any("failed on jobs/new" in r.getMessage() for r in caplog.records)


def test_on_refuses_outbound_topics(device_link: DeviceLink) -> None:
    link = device_link("dev-on", start=False)
    with pytest.raises(ValueError, match="not a topic the box receives"):
        link.on(Topic.EVENTS, lambda m: None)


def test_respond_uses_the_response_topic_and_correlation(device_link: DeviceLink,
                                                         platform_client: Platform,
                                                         caplog: Caplog) -> None:
    link = device_link("dev-cmd", start=False)
    got = _collect(link, Topic.CMD)
    link.start()
    wait_until(lambda: link.subscribed, 10, "subscribed")
    p = platform_client()
    p.subscribe("branchline/dev-cmd/cmd/result/#")
    own = topic("dev-cmd", Topic.CMD_RESULT)
    p.publish(topic("dev-cmd", Topic.CMD), _cmd(cid="a"), response_topic=own + "/req-a",
              correlation=b"corr-a")
    p.publish(topic("dev-cmd", Topic.CMD), _cmd(cid="b"),
              response_topic="branchline/somebody-else/cmd/result", correlation=b"corr-b")
    _poll_until(link, lambda: len(got) == 2, "two commands")
    for msg in got:
        d = link.respond(msg, {"id": msg.payload["id"], "name": "selftest", "status": "ok",
                               "time": time.time()})
        assert d.wait(10)
    a = p.wait_for(lambda m: m.topic == own + "/req-a")
    assert a.correlation == b"corr-a" and a.json()["id"] == "a"
    b = p.wait_for(lambda m: m.topic == own)
    assert b.correlation == b"corr-b" and b.json()["id"] == "b"
    assert any("somebody-else" in r.getMessage() for r in caplog.records)


# ---- the password fallback, settings, reconfigure ----

def test_password_fallback(broker: Mosquitto, pki: Pki, links: DeviceLink,
                           platform_client: Platform, caplog: Caplog) -> None:
    caplog.set_level(logging.DEBUG)
    p = platform_client()
    p.subscribe(topic(PASSWORD_USER, Topic.STATUS))
    good = LinkSettings(PASSWORD_USER, broker.host, broker.password_port,
                        ca_file=str(pki.ca_file), username=PASSWORD_USER, password=PASSWORD)
    assert PASSWORD not in repr(good)
    link = links(good)
    link.start()
    wait_until(lambda: link.connected, 10, "password link up", detail=lambda: link.last_error)
    _status(p, PASSWORD_USER, "online")
    link.stop()

    bad = links(LinkSettings(PASSWORD_USER, broker.host, broker.password_port,
                             ca_file=str(pki.ca_file), username=PASSWORD_USER,
                             password="wrong-password"))
    bad.start()
    wait_until(lambda: "refused the connection" in bad.last_error, 10, "a refusal",
               detail=lambda: bad.last_error)
    assert "Not authorized" in bad.last_error or "Bad user name" in bad.last_error
    assert not bad.connected
    assert "wrong-password" not in caplog.text and PASSWORD not in caplog.text


def test_no_client_certificate_on_the_mtls_listener_is_refused(broker: Mosquitto, pki: Pki,
                                                               links: DeviceLink) -> None:
    link = links(LinkSettings("dev-nocert", broker.host, broker.tls_port,
                              ca_file=str(pki.ca_file)))
    link.start()
    wait_until(lambda: link.last_error, 10, "a failed connect")
    assert not link.connected


def test_a_broker_outside_the_pinned_ca_is_refused(broker: Mosquitto, pki: Pki, links: DeviceLink,
                                                   tmp_path: Path) -> None:
    other = Pki(tmp_path / "other-ca")
    cert, key = pki.client("dev-pinned")
    link = links(LinkSettings("dev-pinned", broker.host, broker.tls_port,
                              ca_file=str(other.ca_file), cert_file=str(cert), key_file=str(key)))
    link.start()
    wait_until(lambda: "certificate verify failed" in link.last_error, 10, "a TLS refusal",
               detail=lambda: link.last_error)
    assert not link.connected


def test_missing_identity_files_are_named(broker: Mosquitto, pki: Pki, links: DeviceLink,
                                          tmp_path: Path) -> None:
    link = links(LinkSettings("dev-nofile", broker.host, broker.tls_port,
                              ca_file=str(pki.ca_file), cert_file=str(tmp_path / "nope.pem"),
                              key_file=str(tmp_path / "nope.key")))
    link.start()
    wait_until(lambda: link.last_error, 10, "a failed connect")
    assert "cert_file" in link.last_error and "nope.pem" in link.last_error
    assert "missing or unreadable" in link.last_error and not link.connected


def test_settings_from_url() -> None:
    s = LinkSettings.from_url("mqtts://broker.example:8884", device="bl-1")
    assert (s.host, s.port, s.tls) == ("broker.example", 8884, True)
    s = LinkSettings.from_url("mqtt://10.0.0.5", device="bl-1")
    assert (s.host, s.port, s.tls) == ("10.0.0.5", 1883, False)
    assert LinkSettings.from_url("mqtts://h", device="d").port == 8883
    for bad in ("http://h:1", "mqtts://", "h:8883", "mqtts://h:notaport"):
        with pytest.raises(LinkError, match="cloud.broker"):
            LinkSettings.from_url(bad, device="d")


def test_reconfigure_moves_to_new_settings(broker: Mosquitto, pki: Pki, links: DeviceLink,
                                           platform_client: Platform) -> None:
    p = platform_client()
    p.subscribe("branchline/+/status")
    link = links(link_settings(broker, pki, "dev-old"))
    got = _collect(link, Topic.CMD)
    link.start()
    wait_until(lambda: link.subscribed, 10, "subscribed")
    link.reconfigure(LinkSettings(PASSWORD_USER, broker.host, broker.password_port,
                                  ca_file=str(pki.ca_file), username=PASSWORD_USER,
                                  password=PASSWORD, version="2"))
    _status(p, "dev-old", "offline", "reconfigured")
    assert _status(p, PASSWORD_USER, "online")["version"] == "2"
    wait_until(lambda: link.subscribed and link.device == PASSWORD_USER, 10, "resubscribed")
    p.publish(topic(PASSWORD_USER, Topic.CMD), _cmd(cid="after-switch"))
    _poll_until(link, lambda: [m for m in got if m.payload["id"] == "after-switch"],
                "a command on the new identity")
