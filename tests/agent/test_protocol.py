"""The agent's protocol: topic names, the QoS/retain table, and every payload's schema
(good payloads pass; a bad one names its field and rule)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from firmware.agent import protocol as p
from firmware.agent.protocol import ProtocolError, Topic
from firmware.events import EventKind

NOW = 1_795_000_000.5
UUID = "0b7d3c9e-4f59-4b1c-9a51-6c7b8f0d2e11"

GOOD: dict[Topic, dict[str, Any]] = {
    Topic.STATUS: {"state": "offline", "time": NOW, "version": "1.2.3", "reason": "lost"},
    Topic.DESIRED: {"version": 3, "issued": NOW, "set": {"lines.fxs1.flash_max_ms": 900},
                    "confirm_s": 120, "reason": "tune flash"},
    Topic.REPORTED: {"version": 3, "state": "rejected", "time": NOW, "store_version": None,
                     "error": {"field": "lines.fxs1.flash_max_ms", "rule": "must be <= 1500"}},
    Topic.TELEMETRY: {"time": NOW, "seq": 7, "full": False,
                      "params": {"Device.DeviceInfo.UpTime": 12, "Device.X_BRANCHLINE_Wan.Up": True,
                                 "Device.Services.VoiceService.1.X_BRANCHLINE_Survivable": None,
                                 "Device.DeviceInfo.SoftwareVersion": "1.2.3",
                                 "Device.DeviceInfo.ProcessStatus.CPUUsage": 3.5}},
    Topic.EVENTS: {"id": 42, "kind": "ringing", "time": NOW, "sent": NOW + 0.01,
                   "port": "fxs1", "call_id": UUID, "ani": "5551000", "dnis": "200",
                   "direction": "inbound", "data": {}},
    Topic.QUALITY: {"call_id": UUID, "port": "fxo1", "time": NOW, "ended": NOW + 30,
                    "direction": "outbound",
                    "network": {"codec": "PCMU", "jitter_ms": 2.5, "loss_pct": 0.0,
                                "rtt_ms": None, "mos": 4.3, "r_factor": 92.1},
                    "dsp": {"erle_mean_db": 31.5, "erle_worst_db": 18.0,
                            "residual_echo_dbm0": -62.0, "echo_canceller": "on",
                            "dtmf": {"inband": 0, "rfc4733": 4, "info": 0, "digits": "1234"},
                            "modem": [{"tone": "ced", "side": "far", "at_s": 1.2}], "fax": True}},
    Topic.RECORDS: {"batch": UUID, "records": [
        {"uuid": UUID, "seq": 1, "kind": "cdr", "created": NOW, "body": {"port": "fxs1"}}]},
    Topic.RECORDS_ACK: {"batch": UUID, "uuids": [UUID]},
    Topic.CMD: {"id": UUID, "name": "sip_ping", "issued": NOW, "expires": NOW + 60,
                "args": {"account": "main"}},
    Topic.CMD_RESULT: {"id": UUID, "name": "sip_ping", "status": "ok", "time": NOW,
                       "result": {"rtt_ms": 12}},
    Topic.JOBS: {"id": UUID, "kind": "line_test", "issued": NOW, "args": {"ports": ["fxs1"]},
                 "timeout_s": 600, "step_timeout_s": 120},
    Topic.JOB_CANCEL: {"id": UUID, "issued": NOW},
    Topic.JOB_STATUS: {"id": UUID, "kind": "line_test", "state": "IN_PROGRESS", "progress": 50,
                       "step": "fxs2", "time": NOW},
}


def _without(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != name}


def _with(t: Topic, **changes: Any) -> dict[str, Any]:
    return {**GOOD[t], **changes}


# (topic, payload, field, rule fragment)
BAD: list[tuple[Topic, dict[str, Any], str, str]] = [
    (Topic.STATUS, _with(Topic.STATUS, state="maybe"), "state", "one of online, offline"),
    (Topic.STATUS, _without(GOOD[Topic.STATUS], "version"), "version", "is required"),
    (Topic.STATUS, _with(Topic.STATUS, extra=1), "extra", "not a field"),
    (Topic.DESIRED, _with(Topic.DESIRED, version=0), "version", ">= 1"),
    (Topic.DESIRED, _with(Topic.DESIRED, version="3"), "version", "must be integer, not string"),
    (Topic.DESIRED, _with(Topic.DESIRED, document={}), "document",
     "exactly one of document or set"),
    (Topic.DESIRED, _without(GOOD[Topic.DESIRED], "set"), "document", "exactly one of"),
    (Topic.DESIRED, _with(Topic.DESIRED, confirm_s=3601), "confirm_s", "<= 3600"),
    (Topic.DESIRED, _with(Topic.DESIRED, set={"bad path!": 1}), "set.bad path!", "allowed name"),
    (Topic.REPORTED, _with(Topic.REPORTED, state="done"), "state", "one of applied"),
    (Topic.REPORTED, _with(Topic.REPORTED, error={"field": None}), "error.rule", "is required"),
    (Topic.REPORTED, _without(GOOD[Topic.REPORTED], "store_version"), "store_version", "required"),
    (Topic.TELEMETRY, _with(Topic.TELEMETRY, params={"Device.A": [1]}), "params.Device.A",
     "must be string or integer or number or boolean or null"),
    (Topic.TELEMETRY, _with(Topic.TELEMETRY, params={"uptime": 1}), "params.uptime", "^Device"),
    (Topic.TELEMETRY, _with(Topic.TELEMETRY, full="yes"), "full", "boolean"),
    (Topic.EVENTS, _with(Topic.EVENTS, kind="call_quality"), "kind", "one of"),
    (Topic.EVENTS, _with(Topic.EVENTS, id=-1), "id", ">= 0"),
    (Topic.EVENTS, _without(GOOD[Topic.EVENTS], "sent"), "sent", "is required"),
    (Topic.QUALITY, _with(Topic.QUALITY, network={**GOOD[Topic.QUALITY]["network"], "mos": "4"}),
     "network.mos", "number or null"),
    (Topic.QUALITY, _with(Topic.QUALITY, dsp={**GOOD[Topic.QUALITY]["dsp"], "echo_canceller": "x"}),
     "dsp.echo_canceller", "one of on, off, bypassed"),
    (Topic.QUALITY, _with(Topic.QUALITY, dsp=_without(GOOD[Topic.QUALITY]["dsp"], "dtmf")),
     "dsp.dtmf", "is required"),
    (Topic.RECORDS, _with(Topic.RECORDS, records=[]), "records", "at least 1"),
    (Topic.RECORDS, _with(Topic.RECORDS, records=GOOD[Topic.RECORDS]["records"] * 51), "records",
     "at most 50"),
    (Topic.RECORDS, _with(Topic.RECORDS, records=[{**GOOD[Topic.RECORDS]["records"][0],
                                                    "seq": "1"}]), "records.0.seq", "integer"),
    (Topic.RECORDS_ACK, {"uuids": "x"}, "uuids", "array"),
    (Topic.RECORDS_ACK, {"uuids": ["bad id!"]}, "uuids.0", "must match"),
    (Topic.CMD, _without(GOOD[Topic.CMD], "issued"), "issued", "is required"),
    (Topic.CMD, _with(Topic.CMD, issued=True), "issued", "must be number, not boolean"),
    (Topic.CMD, _with(Topic.CMD, name=""), "name", "at least 1"),
    (Topic.CMD_RESULT, _with(Topic.CMD_RESULT, status="maybe"), "status", "one of ok, error"),
    (Topic.JOBS, _with(Topic.JOBS, kind="reformat"), "kind", "one of line_test"),
    (Topic.JOBS, _with(Topic.JOBS, timeout_s=0), "timeout_s", ">= 1"),
    (Topic.JOBS, _with(Topic.JOBS, step_timeout_s=3601), "step_timeout_s", "<= 3600"),
    (Topic.JOB_CANCEL, {"id": UUID}, "issued", "is required"),
    (Topic.JOB_STATUS, _with(Topic.JOB_STATUS, progress=101), "progress", "<= 100"),
    (Topic.JOB_STATUS, _with(Topic.JOB_STATUS, state="RUNNING"), "state", "one of QUEUED"),
]


@pytest.mark.parametrize("t", list(Topic), ids=str)
def test_good_payload_round_trips(t: Topic) -> None:
    data = p.encode(t, GOOD[t])
    assert b'", "' not in data and b'": ' not in data  # compact JSON
    assert p.decode(t, data) == GOOD[t]


@pytest.mark.parametrize(("t", "doc", "field", "rule"), BAD,
                         ids=[f"{t}-{f}" for t, _, f, _ in BAD])
def test_bad_payload_names_field_and_rule(t: Topic, doc: dict[str, Any], field: str,
                                          rule: str) -> None:
    with pytest.raises(ProtocolError) as err:
        p.validate(t, doc)
    assert err.value.field == field
    assert rule in err.value.rule
    assert str(err.value) == f"{field}: {err.value.rule}"
    with pytest.raises(ProtocolError):
        p.encode(t, doc)


def test_every_topic_has_a_strict_schema_file() -> None:
    for t in Topic:
        path = p.schema_file(t)
        assert path.name == str(t).replace("/", "_") + ".json"
        doc = json.loads(path.read_text())
        assert doc["$schema"].endswith("2020-12/schema")
        assert doc["additionalProperties"] is False
    assert sorted(f.name for f in p.SCHEMA_DIR.glob("*.json")) == sorted(
        p.schema_file(t).name for t in Topic)


def test_event_kinds_match_the_core_stream() -> None:
    kinds = set(p.schema(Topic.EVENTS)["properties"]["kind"]["enum"])
    # call_quality goes to its own topic; "dropped" is the stream's notice of lost events
    assert kinds == {str(k) for k in EventKind} - {"call_quality"} | {"dropped"}


def test_qos_retain_and_direction_table() -> None:
    assert p.QOS[Topic.TELEMETRY] == 0
    assert all(p.QOS[t] == 1 for t in Topic if t is not Topic.TELEMETRY)
    assert {t for t in Topic if p.RETAIN[t]} == {Topic.STATUS, Topic.DESIRED, Topic.REPORTED}
    assert p.INBOUND == {Topic.DESIRED, Topic.RECORDS_ACK, Topic.CMD, Topic.JOBS, Topic.JOB_CANCEL}
    assert p.INBOUND | p.OUTBOUND == set(Topic) and not p.INBOUND & p.OUTBOUND


def test_topic_names() -> None:
    assert p.topic("bl-0001", Topic.DESIRED) == "branchline/bl-0001/config/desired"
    assert p.parse_topic("branchline/bl-0001/jobs/cancel") == ("bl-0001", Topic.JOB_CANCEL)
    for name in ("branchline/bl-0001/nope", "other/bl-0001/cmd", "branchline/+/cmd",
                 "branchline/bl-0001", "branchline//cmd", "branchline/bl-0001/cmd/x"):
        assert p.parse_topic(name) is None, name
    for bad in ("", "-x", "a/b", "a+b", "x" * 65, "dev#"):
        with pytest.raises(ProtocolError, match="device"):
            p.topic(bad, Topic.STATUS)


@pytest.mark.parametrize(("data", "rule"), [
    (b"{not json", "is not JSON"),
    (b"[1, 2]", "must be a JSON object, not list"),
    (b"\xff\xfe{}", "is not UTF-8"),
    (b'{"id": NaN}', "NaN is not JSON"),
    (b"x" * (p.MAX_PAYLOAD + 1), f"over the {p.MAX_PAYLOAD} byte limit"),
])
def test_decode_refuses_bad_bytes(data: bytes, rule: str) -> None:
    with pytest.raises(ProtocolError) as err:
        p.decode(Topic.CMD, data)
    assert err.value.field == "payload"
    assert rule in err.value.rule


def test_encode_refuses_oversized_and_unserialisable() -> None:
    big = {**GOOD[Topic.CMD_RESULT], "result": {"blob": "x" * p.MAX_PAYLOAD}}
    with pytest.raises(ProtocolError, match="byte limit"):
        p.encode(Topic.CMD_RESULT, big)
    nan = {**GOOD[Topic.CMD_RESULT], "result": {"v": float("nan")}}
    with pytest.raises(ProtocolError, match="cannot be sent as JSON"):
        p.encode(Topic.CMD_RESULT, nan)
