"""Outbox records over MQTT: the agent's Records part, a real Link and Mosquitto, and the
platform's client playing the cloud (it acknowledges batches on records/ack). CDRs of
real calls on a sim core reach the platform with their UUIDs; without an ack a batch is
resent after the timeout (fake time) and stays pending; an ack marks exactly the UUIDs
it names, once; strangers are ignored with a log line; big bodies split batches under
the size limit and a row no message can carry stays in the outbox; file rows are left to
`branchline forward`; a broker killed mid-batch loses nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from firmware.agent.link import Link
from firmware.agent.protocol import MAX_PAYLOAD, Topic, topic
from firmware.agent.records import Records
from firmware.api.client import ApiClient
from firmware.cdr import MAX_PAGE, CdrStore
from foundation.clock import FakeClock, MonotonicClock
from lab.mosquitto import Mosquitto, PlatformClient
from lab.wait import wait_until
from tests.forward.helpers import call, recording

if TYPE_CHECKING:
    from tests.agent.conftest import Core

Clock = FakeClock | MonotonicClock


class Cloud:
    """The platform's records consumer: reads every batch, acknowledges when `acking`."""

    def __init__(self, platform: PlatformClient, device: str) -> None:
        self.platform, self.device = platform, device
        self.records_topic = topic(device, Topic.RECORDS)
        self.platform.subscribe(self.records_topic)
        self.acking = True
        self.handled = 0                       # messages looked at
        self.batches: list[dict[str, Any]] = []  # every batch received, copies included
        self.acked: set[str] = set()

    def received_uuids(self) -> list[str]:
        return [r["uuid"] for b in self.batches for r in b["records"]]

    def pump(self) -> None:
        msgs = self.platform.messages(self.records_topic)
        for m in msgs[self.handled:]:
            self.handled += 1
            self.batches.append(m.json())
            if self.acking:
                self.ack(m.json())

    def ack(self, batch: dict[str, Any], uuids: list[str] | None = None) -> None:
        named = uuids if uuids is not None else [r["uuid"] for r in batch["records"]]
        self.platform.publish(topic(self.device, Topic.RECORDS_ACK),
                              {"batch": batch["batch"], "uuids": named})
        self.acked |= set(named)


class Rig:
    """A device's Link and Records on a store, driven as the agent's main loop would."""

    def __init__(self, link: Link, store: CdrStore, clock: Clock, cloud: Cloud,
                 **kw: Any) -> None:
        self.link, self.store, self.clock, self.cloud = link, store, clock, cloud
        self.records = Records(link, store, clock, **kw)
        link.on_connect(self.records.connected)

    def step(self, seconds: float = 0.05) -> None:
        self.link.poll(seconds)
        self.records.tick(self.clock.now())
        self.cloud.pump()

    def until(self, predicate: Callable[[], object], what: str, timeout: float = 15.0) -> None:
        wait_until(predicate, timeout, what, tick=self.step,
                   detail=lambda: f"{len(self.cloud.batches)} batches, "
                                  f"{len(self.pending())} pending")

    def pending(self) -> list[str]:
        return [r["uuid"] for r in self.store.pending(MAX_PAGE, files=False)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CdrStore]:
    s = CdrStore(tmp_path / "cdr.db")
    s.recordings_dir.mkdir()
    yield s
    s.close()


@pytest.fixture
def rig(device_link: Callable[..., Link], platform_client: Callable[..., PlatformClient],
        store: CdrStore, request: pytest.FixtureRequest) -> Callable[..., Rig]:
    def make(device: str, clock: Clock | None = None, **kw: Any) -> Rig:
        cloud = Cloud(platform_client(), device)
        return Rig(device_link(device), store, clock or MonotonicClock(), cloud, **kw)
    return make


def _local_call(api: ApiClient) -> None:
    def port(name: str) -> dict[str, Any]:
        return dict(next(p for p in api.status()["ports"] if p["name"] == name))

    def state(name: str) -> str:
        return str(port(name)["state"])

    api.sim_phone("fxs1", "off_hook")
    wait_until(lambda: state("fxs1") == "off-hook", 5, "fxs1 off hook")
    api.sim_phone("fxs1", "dial", digits="202")
    wait_until(lambda: port("fxs2")["ringing"], 10, "fxs2 ringing")
    api.sim_phone("fxs2", "off_hook")
    wait_until(lambda: state("fxs2") == "in-call", 5, "the call answered")
    api.sim_phone("fxs1", "on_hook")
    api.sim_phone("fxs2", "on_hook")
    wait_until(lambda: state("fxs2") == "on-hook", 5, "fxs2 on hook")


def test_cdrs_of_real_calls_reach_the_platform_and_are_delivered(
        core: Core, device_link: Callable[..., Link],
        platform_client: Callable[..., PlatformClient]) -> None:
    before = core.api.cdrs(limit=1)["total"]
    for _ in range(2):
        _local_call(core.api)
    cdrs = wait_until(lambda: (lambda c: c if c["total"] >= before + 2 else None)(
        core.api.cdrs(limit=2)), 10, "two CDRs")["items"]
    uuids = {c["uuid"] for c in cdrs}
    device = "bl-records-calls"
    with CdrStore(core.data_dir / "cdr.db") as store:
        r = Rig(device_link(device), store, MonotonicClock(), Cloud(platform_client(), device))
        r.until(lambda: uuids <= r.cloud.acked and not uuids & set(r.pending()),
                "the calls' CDRs acknowledged and delivered")
        got = {rec["uuid"]: rec for b in r.cloud.batches for rec in b["records"]}
        for u in uuids:
            assert got[u]["kind"] == "cdr" and got[u]["body"]["ani"] == "201"
            assert got[u]["body"]["dnis"] == "202" and got[u]["body"]["direction"] == "local"
        seqs = [rec["seq"] for b in r.cloud.batches for rec in b["records"]]
        assert seqs == sorted(seqs)
        delivered = store.read("SELECT uuid, delivered FROM outbox WHERE uuid IN (?, ?)",
                               sorted(uuids))
        assert all(row["delivered"] for row in delivered)


def test_without_an_ack_the_batch_is_resent_after_the_timeout_and_stays_pending(
        rig: Callable[..., Rig], store: CdrStore) -> None:
    clock = FakeClock()
    uuids = [call(store, i) for i in range(5)]
    r = rig("bl-records-noack", clock, ack_timeout_s=30.0)
    r.cloud.acking = False
    r.until(lambda: r.cloud.batches, "the first batch")
    first = r.cloud.batches[0]
    assert [x["uuid"] for x in first["records"]] == uuids
    clock.set(clock.now() + 29.0)
    r.step()
    assert r.records.resends == 0
    clock.set(clock.now() + 2.0)
    r.step()
    assert r.records.resends == 1
    r.until(lambda: len(r.cloud.batches) == 2, "the batch again")
    again = r.cloud.batches[1]
    assert again["batch"] == first["batch"] and again["records"] == first["records"]
    assert r.pending() == uuids and r.records.delivered == 0
    head = store.depth(detail=True)["head"]
    assert head["uuid"] == uuids[0] and "records/ack" in head["last_error"]


def test_an_ack_marks_exactly_the_named_uuids_once(rig: Callable[..., Rig], store: CdrStore,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="firmware.agent.records")
    uuids = [call(store, i) for i in range(60)]
    r = rig("bl-records-ack")
    r.cloud.acking = False
    r.until(lambda: r.cloud.batches, "the first batch")
    batch = r.cloud.batches[0]
    assert [x["uuid"] for x in batch["records"]] == uuids[:50]
    r.cloud.ack(batch, uuids[:20] + ["never-sent-1"])
    r.until(lambda: r.records.delivered == 20, "20 delivered")
    assert r.pending() == uuids[20:]
    assert "never-sent-1" in caplog.text and "ignored" in caplog.text
    marks = {row[0]: row[1] for row in store.read("SELECT uuid, delivered FROM outbox")}
    r.cloud.ack(batch, uuids[:20])  # the same ack again: nothing changes
    r.until(lambda: caplog.text.count("not in flight") >= 2, "the repeated ack ignored")
    assert r.records.delivered == 20
    assert {row[0]: row[1] for row in store.read("SELECT uuid, delivered FROM outbox")} == marks
    assert r.records.inflight is not None and len(r.records.inflight.rows) == 30
    r.cloud.acking = True
    r.cloud.ack(batch, uuids[20:50])
    r.until(lambda: not r.pending(), "everything delivered")
    assert r.records.delivered == 60
    sent = r.cloud.received_uuids()
    assert sent == uuids  # seq order, each batch once (no timeout passed)


def test_big_bodies_split_batches_and_a_row_no_message_can_carry_stays(
        rig: Callable[..., Rig], store: CdrStore, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    big = [store.enqueue("state_change", {"n": i, "blob": "x" * 20_000}) for i in range(5)]
    huge = store.enqueue("state_change", {"blob": "y" * 70_000})
    small = [call(store, i) for i in range(3)]
    rec = recording(store, "call.wav", 5000)
    bundle = tmp_path / "logs.tgz"
    bundle.write_bytes(b"z" * 3000)
    queued = store.queue_file(bundle, "logs", {})
    r = rig("bl-records-split")
    r.until(lambda: set(big + small) <= r.cloud.acked and r.pending() == [huge],
            "all but the huge row delivered")
    sizes = [len(m.payload) for m in r.cloud.platform.messages(r.cloud.records_topic)]
    assert len(sizes) >= 2 and max(sizes) <= MAX_PAYLOAD
    assert r.cloud.received_uuids() == big + small  # in seq order, the huge one left out
    assert huge in r.records.unsendable and "cannot go over MQTT" in caplog.text
    left = [x["uuid"] for x in store.pending(10)]
    assert left == [huge, rec, queued]  # files wait for `branchline forward`


def test_a_broker_killed_mid_batch_loses_nothing(rig: Callable[..., Rig], store: CdrStore,
                                                broker: Mosquitto,
                                                platform_client: Callable[..., PlatformClient]
                                                ) -> None:
    uuids = [call(store, i) for i in range(260)]
    r = rig("bl-records-kill", ack_timeout_s=1.0)
    r.until(lambda: len(r.cloud.acked) >= 100, "two batches acknowledged")
    r.cloud.acking = False
    seen = len(r.cloud.batches)  # all acknowledged: the next one stays unacknowledged
    r.until(lambda: len(r.cloud.batches) > seen, "a batch in flight, unacknowledged")
    inflight = r.records.inflight
    assert inflight is not None and inflight.rows
    unacked = {row["uuid"] for row in inflight.rows}
    assert not unacked & r.cloud.acked
    broker.kill()
    r.until(lambda: not r.link.connected, "the link down")
    r.cloud.platform.close()
    broker.start()
    cloud = Cloud(platform_client(), "bl-records-kill")
    cloud.acked = r.cloud.acked
    r.cloud = cloud
    r.until(lambda: not r.pending(), "every record delivered after the broker came back",
            timeout=30.0)
    assert set(uuids) <= cloud.acked and r.records.delivered == 260
    assert unacked <= set(cloud.received_uuids()) and r.records.resends >= 1
    assert store.depth() == 0
    marks = store.read("SELECT COUNT(*) FROM outbox WHERE delivered IS NOT NULL")[0][0]
    assert marks == 260
    firsts = [b["records"][0]["seq"] for b in cloud.batches]
    assert firsts == sorted(firsts)  # after the outage too, in seq order


def test_delivered_rows_are_pruned_now_and_then(rig: Callable[..., Rig],
                                                store: CdrStore) -> None:
    clock = FakeClock()
    done = [call(store, i) for i in range(3)]
    store.mark_delivered(done)
    keep = call(store, 9)
    r = rig("bl-records-prune", clock, keep_days=0.0)
    r.cloud.acking = False
    r.step()
    assert store.read("SELECT COUNT(*) FROM outbox")[0][0] == 4  # not in the first minute
    clock.set(clock.now() + 61.0)
    r.step()
    assert [row[0] for row in store.read("SELECT uuid FROM outbox")] == [keep]
