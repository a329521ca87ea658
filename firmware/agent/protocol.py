"""The agent's MQTT protocol: topic names, QoS and retain per topic, and the JSON Schema
of every payload (firmware/agent/schemas/, shared with the lab's fleet tool so both ends
check the same rules). Broker-agnostic: plain MQTT 5 topics under branchline/<device>/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance

from foundation.errors import BranchlineError

PREFIX = "branchline"
MAX_PAYLOAD = 64 * 1024  # bytes; bigger inbound messages are refused, outbound raise
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Topic(StrEnum):
    """The suffix under branchline/<device-id>/."""

    STATUS = "status"  # box->cloud, QoS1, retained: birth and last will
    DESIRED = "config/desired"  # cloud->box, QoS1, retained
    REPORTED = "config/reported"  # box->cloud, QoS1, retained
    TELEMETRY = "telemetry"  # box->cloud, QoS0
    EVENTS = "events"  # box->cloud, QoS1: CTI events
    QUALITY = "quality"  # box->cloud, QoS1: per-call quality at every call end
    RECORDS = "records"  # box->cloud, QoS1: outbox records
    RECORDS_ACK = "records/ack"  # cloud->box, QoS1
    CMD = "cmd"  # cloud->box, QoS1 (MQTT 5 Response Topic + Correlation Data)
    CMD_RESULT = "cmd/result"  # box->cloud, QoS1
    JOBS = "jobs/new"  # cloud->box, QoS1
    JOB_CANCEL = "jobs/cancel"  # cloud->box, QoS1
    JOB_STATUS = "jobs/status"  # box->cloud, QoS1


QOS: dict[Topic, int] = {t: (0 if t is Topic.TELEMETRY else 1) for t in Topic}
RETAIN: dict[Topic, bool] = {t: t in (Topic.STATUS, Topic.DESIRED, Topic.REPORTED) for t in Topic}
INBOUND: frozenset[Topic] = frozenset(
    {Topic.DESIRED, Topic.RECORDS_ACK, Topic.CMD, Topic.JOBS, Topic.JOB_CANCEL})
OUTBOUND: frozenset[Topic] = frozenset(Topic) - INBOUND
_BY_SUFFIX = {str(t): t for t in Topic}


class ProtocolError(BranchlineError):
    """A payload, topic or device id that breaks the protocol; str() is "<field>: <rule>"."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule = field, rule


def check_device(device: str) -> str:
    if not DEVICE_ID.fullmatch(device):
        raise ProtocolError("device", f"{device!r} is not a device id: use 1-64 of "
                            "A-Z a-z 0-9 _ . - starting with a letter or digit")
    return device


def topic(device: str, t: Topic) -> str:
    """"branchline/<device>/<suffix>"."""
    return f"{PREFIX}/{check_device(device)}/{Topic(t)}"


def prefix(device: str) -> str:
    """"branchline/<device>/": every topic of this box starts with it."""
    return f"{PREFIX}/{check_device(device)}/"


def parse_topic(name: str) -> tuple[str, Topic] | None:
    """(device, topic) of a full topic name, None for anything else."""
    parts = name.split("/", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not DEVICE_ID.fullmatch(parts[1]):
        return None
    t = _BY_SUFFIX.get(parts[2])
    return (parts[1], t) if t is not None else None


def schema_file(t: Topic) -> Path:
    return SCHEMA_DIR / (str(Topic(t)).replace("/", "_") + ".json")


@cache
def schema(t: Topic) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_file(t).read_text())
    return loaded


@cache
def _validator(t: Topic) -> Draft202012Validator:
    s = schema(t)
    Draft202012Validator.check_schema(s)
    return Draft202012Validator(s)


def _path(error: ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _missing(error: ValidationError) -> str:
    instance = error.instance if isinstance(error.instance, dict) else {}
    names = [n for n in error.validator_value if n not in instance]
    return names[0] if names else "?"


def _extra(error: ValidationError) -> str:
    known = set(error.schema.get("properties", {}))
    instance = error.instance if isinstance(error.instance, dict) else {}
    extras = sorted(n for n in instance if n not in known)
    return extras[0] if extras else "?"


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _explain(error: ValidationError) -> ProtocolError:
    """One field and one rule a person can act on, from jsonschema's error."""
    path, kind, value = _path(error), str(error.validator), error.validator_value
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if kind in ("anyOf", "oneOf", "not") and described:
        return ProtocolError(_join(path, error.schema.get("x-field", "")) or "payload", described)
    if kind in ("anyOf", "oneOf") and error.context:
        return _explain(min(error.context, key=relevance))
    if kind == "required":
        return ProtocolError(_join(path, _missing(error)), "is required")
    if kind == "additionalProperties":
        return ProtocolError(_join(path, _extra(error)), "is not a field of this message")
    if "propertyNames" in error.relative_schema_path:
        return ProtocolError(_join(path, str(error.instance)), "is not an allowed name: "
                             f"must match {error.schema.get('pattern', '?')}")
    if kind == "type":
        wanted = value if isinstance(value, str) else " or ".join(value)
        found = _json_type(error.instance)
        return ProtocolError(path or "payload", f"must be {wanted}, not {found}")
    if kind == "enum":
        return ProtocolError(path or "payload", "must be one of " + ", ".join(map(str, value)))
    rules = {"minimum": f"must be >= {value}", "maximum": f"must be <= {value}",
             "minLength": f"must have at least {value} characters",
             "maxLength": f"must have at most {value} characters",
             "minItems": f"must have at least {value} items",
             "maxItems": f"must have at most {value} items",
             "maxProperties": f"must have at most {value} entries",
             "minProperties": f"must have at least {value} entries",
             "pattern": f"must match {value}"}
    return ProtocolError(path or "payload", rules.get(kind, error.message))


def validate(t: Topic, payload: Mapping[str, Any]) -> dict[str, Any]:
    """A checked copy of `payload`; ProtocolError naming the first bad field and its rule."""
    doc = dict(payload)
    errors = list(_validator(Topic(t)).iter_errors(doc))
    if errors:
        raise _explain(min(errors, key=relevance))
    return doc


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def decode(t: Topic, data: bytes) -> dict[str, Any]:
    """The checked payload of an inbound message: at most MAX_PAYLOAD bytes of UTF-8 JSON,
    an object, valid under t's schema."""
    if len(data) > MAX_PAYLOAD:
        raise ProtocolError("payload", f"is {len(data)} bytes, over the {MAX_PAYLOAD} byte limit")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ProtocolError("payload", "is not UTF-8 text") from None
    except ValueError as exc:
        raise ProtocolError("payload", f"is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ProtocolError("payload", f"must be a JSON object, not {type(doc).__name__}")
    return validate(t, doc)


def encode(t: Topic, payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a valid payload; ProtocolError when invalid or too big."""
    doc = validate(t, payload)
    try:
        data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ProtocolError("payload", f"cannot be sent as JSON ({exc})") from None
    if len(data) > MAX_PAYLOAD:
        raise ProtocolError("payload", f"is {len(data)} bytes, over the {MAX_PAYLOAD} "
                            "byte limit: send less per message")
    return data
