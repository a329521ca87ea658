"""The control API's OpenAPI 3.0 document, kept in the repo as openapi.json (regenerate:
`python -m firmware.api.spec`; a test checks they match). The server checks request bodies
(closed JSON objects) and query strings against these same schemas."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from firmware.events import EventKind

BASE = "/api/v1"
SPEC_FILE = Path(__file__).with_name("openapi.json")
PORT_NAME = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,31}$", "maxLength": 32}
TONES = ["dial", "busy", "ringback", "reorder", "congestion", "call_waiting"]
LEVELS = ["debug", "info", "warning", "error"]
DIRECTIONS = ["inbound", "outbound", "local", "emergency"]
MEDIA_MODE = {"type": "string", "enum": ["voice", "fax", "modem"],
              "description": "fax / modem: the call went to G.711 passthrough on a "
                             "detected fax or modem tone"}


def _n(schema: dict) -> dict:
    return {**schema, "nullable": True}


def obj(props: dict, required: list[str] | None = None, closed: bool = True) -> dict:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if closed:
        out["additionalProperties"] = False
    return out


STR, INT, NUM, BOOL = ({"type": t} for t in ("string", "integer", "number", "boolean"))
ANY_OBJ = {"type": "object", "additionalProperties": True}
REASON = {"type": "string", "maxLength": 200}

ERROR = obj({"error": STR, "field": _n(STR), "problems": {"type": "array", "items": STR}},
            ["error"], closed=False)

CALL = obj({"direction": STR, "remote": STR, "state": STR, "since": _n(NUM),
            "codec": _n(STR), "mos": _n(NUM), "media_mode": MEDIA_MODE}, closed=False)
PORT = obj({"name": STR, "kind": {"type": "string", "enum": ["fxs", "fxo", "headset"]},
            "state": STR, "hook": _n(STR), "ringing": BOOL, "loop_current_ma": _n(NUM),
            "line_voltage_v": _n(NUM), "erle_db": _n(NUM), "failed_reason": _n(STR),
            "call": _n(CALL)}, ["name", "kind", "state"], closed=False)
EDGE = obj({"uri": STR, "ok": _n(BOOL), "rtt_ms": _n(NUM)}, ["uri", "ok"], closed=False)
TRANSITION = obj({"time": _n(NUM), "from": STR, "to": STR, "reason": STR},
                 ["from", "to", "reason"], closed=False)
SURVIVABILITY = obj({
    "state": {"type": "string", "description": "CLOUD_PRIMARY, CLOUD_SECONDARY, "
              "SURVIVABLE (unknown: no call control yet)"},
    "since": _n(NUM), "for_s": _n(NUM), "transitions": INT, "last_reason": STR,
    "edge": _n(STR), "recent": {"type": "array", "items": TRANSITION},
    "blips": INT, "in_fallback": INT, "callbacks": INT,
    "counters": {"type": "object", "additionalProperties": INT}},
    ["state", "transitions", "recent"], closed=False)
OUTBOX = obj({"pending": _n(INT), "bytes": INT,
              "by_kind": {"type": "object", "additionalProperties": INT},
              "oldest_age_s": _n(NUM), "over_cap": BOOL, "max_bytes": _n(INT),
              "error": STR}, ["pending"], closed=False)
LIFELINE = obj({"relay": {"type": "string", "enum": ["energised", "released"]},
                "reason": STR, "gpio": INT, "drive": STR, "fxs": STR, "fxo": STR,
                "phone_on": {"type": "string", "enum": ["slic", "pstn"]},
                "hold_ms": _n(INT)}, ["relay", "phone_on"], closed=False)
STATUS = obj({
    "box": obj({"name": STR, "version": STR, "uptime_s": NUM,
                "mode": {"type": "string", "enum": ["sim", "hw"]},
                "restart_required": {"type": "array", "items": STR},
                "lifeline": _n(LIFELINE)},
               ["name", "version", "uptime_s", "mode"], closed=False),
    "wan": obj({"state": {"type": "string", "enum": ["up", "down", "unknown"]},
                "edges": {"type": "array", "items": EDGE}}, ["state", "edges"], closed=False),
    "survivability": SURVIVABILITY,
    "registrations": {"type": "array", "items": obj(
        {"account": STR, "ok": BOOL, "code": _n(INT), "reason": _n(STR)},
        ["account", "ok"], closed=False)},
    "ports": {"type": "array", "items": PORT},
    "calls": {"type": "array", "items": obj(
        {"port": STR, "direction": STR, "remote": STR, "state": STR,
         "duration_s": _n(NUM), "codec": _n(STR), "mos": _n(NUM),
         "media_mode": MEDIA_MODE}, ["port", "state"],
        closed=False)},
    "outbox": _n(OUTBOX),
}, ["box", "wan", "survivability", "registrations", "ports", "calls", "outbox"],
    closed=False)

CONFIG = obj({"version": _n(INT), "document": ANY_OBJ}, ["version", "document"], closed=False)
VERSIONS = {"type": "array", "items": obj(
    {"version": INT, "time": NUM, "reason": STR, "current": BOOL},
    ["version", "time", "reason"], closed=False)}
SAVED = obj({"version": INT, "changed": {"type": "array", "items": STR},
             "restart_required": {"type": "array", "items": STR}}, ["version"], closed=False)
OK = obj({"ok": BOOL, "detail": STR}, ["ok"], closed=False)
MEASURE = obj({"port": STR, "kind": STR, "line_voltage_v": _n(NUM),
               "loop_current_ma": _n(NUM)}, ["port", "line_voltage_v", "loop_current_ma"],
              closed=False)
PING = obj({"edges": {"type": "array", "items": EDGE}}, ["edges"], closed=False)
CDR = obj({"uuid": STR, "direction": STR, "port": STR, "ani": STR, "dnis": STR,
           "started": NUM, "answered": _n(NUM), "ended": _n(NUM),
           "disposition": _n(STR), "duration_s": _n(NUM), "mos": _n(NUM),
           "media_mode": MEDIA_MODE},
          ["uuid", "direction", "port", "started"], closed=False)
EVENT = obj({"kind": {"type": "string", "enum": [k.value for k in EventKind]}, "time": NUM,
             "port": STR, "call_id": STR, "ani": STR, "dnis": STR, "direction": STR,
             "data": ANY_OBJ}, ["kind", "time"], closed=False)
LOG = obj({"time": NUM, "level": STR, "source": STR, "message": STR},
          ["time", "level", "source", "message"], closed=False)


def page(item: dict) -> dict:
    return obj({"total": INT, "items": {"type": "array", "items": item}}, ["total", "items"],
               closed=False)


# Request bodies (closed: an unknown field is a 400 naming it).
BODY_VALIDATE = obj({"document": ANY_OBJ}, ["document"])
BODY_PUT = obj({"document": ANY_OBJ, "reason": REASON}, ["document"])
BODY_PATCH = obj({"set": {"type": "object", "minProperties": 1, "maxProperties": 100,
                          "additionalProperties": True}, "reason": REASON}, ["set"])
BODY_ROLLBACK = obj({"version": _n({"type": "integer", "minimum": 1})})
BODY_RING = obj({"port": PORT_NAME, "seconds": {"type": "number", "minimum": 0.5,
                                                 "maximum": 60}}, ["port"])
BODY_TONE = obj({"port": PORT_NAME, "tone": {"type": "string", "enum": TONES},
                 "seconds": {"type": "number", "minimum": 0.5, "maximum": 60}},
                ["port", "tone"])
BODY_ECHO = obj({"port": PORT_NAME, "seconds": {"type": "number", "minimum": 1,
                                                 "maximum": 120}}, ["port"])
BODY_PORT = obj({"port": PORT_NAME}, ["port"])
BODY_LINE_TEST = obj({"port": PORT_NAME, "test_call_s": {
    "type": "number", "minimum": 0, "maximum": 300,
    "description": "FXO: also wait this long for a test call (caller ID, disconnect signal)"}},
    ["port"])
BODY_EMPTY = obj({})
BODY_RESTART = obj({"when": {"type": "string", "enum": ["idle", "now"], "description":
                             "idle: 409 while a call is up; now: calls are hung up "
                             "(their CDRs written)"}}, ["when"])
BODY_PHONE = obj({"action": {"type": "string", "enum": ["off_hook", "on_hook", "flash", "dial"]},
                  "digits": {"type": "string", "pattern": "^[0-9*#A-Da-d]{1,32}$"},
                  "method": {"type": "string", "enum": ["dtmf", "pulse"]}}, ["action"])
BODY_CO = obj({"action": {"type": "string", "enum": ["ring", "stop_ring", "disconnect"]},
               "number": {"type": "string", "pattern": "^\\+?[0-9]{0,20}$"},
               "name": {"type": "string", "maxLength": 15},
               "signal": {"type": "string", "enum": ["loop_drop", "reversal", "tone"]}},
              ["action"])
BODY_HEADSET = obj({"action": {"type": "string", "enum": ["plug", "unplug"]}}, ["action"])


def _q(name: str, schema: dict, text: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": text}


PAGING = [_q("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000}, "skip this many"),
          _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (default 50)")]
CDR_FILTERS = [
    _q("since", {"type": "number", "minimum": 0, "maximum": 1e11}, "started at or after (epoch s)"),
    _q("until", {"type": "number", "minimum": 0, "maximum": 1e11}, "started before (epoch s)"),
    _q("port", PORT_NAME, "exact port name"),
    _q("direction", {"type": "string", "enum": DIRECTIONS}, "call direction"),
    _q("q", {"type": "string", "maxLength": 100}, "text in ANI, DNIS, call-id or UUID"),
]
KINDS = [_q("kinds", {"type": "string", "maxLength": 300, "pattern": "^[a-z_,]*$"},
            "only these event kinds, comma-separated, e.g. ringing,answered,hung_up")]
LOG_FILTERS = [_q("level", {"type": "string", "enum": LEVELS}, "this level and above")]
DIFF_QUERY = [{"name": "against", "in": "query", "required": True,
               "schema": {"type": "integer", "minimum": 1}, "description": "a kept version"}]
PORT_PATH = [{"name": "port", "in": "path", "required": True, "schema": PORT_NAME}]

ERRORS_ANY = ("400", "404", "405", "409", "413", "415", "422", "500", "503")


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, text: str = "OK") -> dict:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


def op(summary: str, response: dict | str, *, body: dict | None = None,
       body_required: bool = True, params: list | None = None,
       response_text: dict | None = None) -> dict:
    """One operation: the 200 response, the body schema, every documented error."""
    ok = response_text or _json(response if isinstance(response, dict) else _ref(response))
    out: dict[str, Any] = {"summary": summary, "responses": {"200": ok}}
    for code in ERRORS_ANY:
        out["responses"][code] = {"$ref": "#/components/responses/Error"}
    if body is not None:
        out["requestBody"] = {"required": body_required,
                              "content": {"application/json": {"schema": body}}}
    if params:
        out["parameters"] = params
    return out


EVENTS = {"description": "One `event: <kind>` / `id: <sequence>` / `data: <Event as JSON>` "
          "block per event; `: ping` every 15 s; `event: dropped` with data {count} when "
          "this client fell behind and its oldest events were dropped. 503 when too many "
          "streams are open.", "content": {"text/event-stream": {"schema": STR}}}


def paths() -> dict[str, dict]:
    csv = {"description": "CSV, one record a line",
           "content": {"text/csv": {"schema": {"type": "string"}}}}
    return {
        "/status": {"get": op("ports, calls, registrations, WAN and survivability", "Status")},
        "/events": {"get": op("live core events as server-sent events (text/event-stream)",
                              STR, params=KINDS, response_text=EVENTS)},
        "/config": {
            "get": op("the live config document and its version", CONFIG),
            "put": op("replace the document (validated; 422 changes nothing)", SAVED, body=BODY_PUT),
            "patch": op("set dotted settings, e.g. lines.fxs1.flash_max_ms", SAVED, body=BODY_PATCH),
        },
        "/config/versions": {"get": op("the kept versions, oldest first", VERSIONS)},
        "/config/validate": {"post": op("check a document without saving it", OK,
                                        body=BODY_VALIDATE)},
        "/config/rollback": {"post": op("restore the previous (or given) version", SAVED,
                                        body=BODY_ROLLBACK, body_required=False)},
        "/config/diff": {"get": op("unified diff: the version given -> the live document",
                                   obj({"diff": STR}, ["diff"], closed=False), params=DIFF_QUERY)},
        "/diag/ring": {"post": op("ring a phone for some seconds", OK, body=BODY_RING)},
        "/diag/tone": {"post": op("play a call-progress tone on a port", OK, body=BODY_TONE)},
        "/diag/dtmf-echo": {"post": op("play back the digits heard on a port", OK, body=BODY_ECHO)},
        "/diag/measure": {"post": op("line voltage and loop current", MEASURE, body=BODY_PORT)},
        "/diag/line-test": {"post": op("commission a port: GR-909 (FXS) or line study (FXO)",
                                       ANY_OBJ, body=BODY_LINE_TEST)},
        "/diag/ping": {"post": op("SIP OPTIONS health of every cloud edge", PING,
                                  body=BODY_EMPTY, body_required=False)},
        "/cdrs": {"get": op("call detail records, newest first", page(CDR),
                            params=PAGING + CDR_FILTERS)},
        "/cdrs.csv": {"get": op("the matching CDRs as CSV", STR, params=CDR_FILTERS,
                                response_text=csv)},
        "/logs": {"get": op("recent log records, newest first", page(LOG),
                            params=PAGING + LOG_FILTERS)},
        "/reboot": {"post": op("reboot the box (sim: logged only)", OK, body=BODY_EMPTY,
                               body_required=False)},
        "/restart": {"post": op("stop the core cleanly; its supervisor starts it again "
                                "(409 when it has none, or when=idle and a call is up)", OK,
                                body=BODY_RESTART)},
        "/sim/phone/{port}": {"post": op("sim only: work a virtual phone", OK, body=BODY_PHONE,
                                         params=PORT_PATH)},
        "/sim/co/{port}": {"post": op("sim only: work the virtual central office", OK,
                                      body=BODY_CO, params=PORT_PATH)},
        "/sim/headset": {"post": op("sim only: plug or unplug the virtual headset", OK,
                                    body=BODY_HEADSET)},
        "/openapi.json": {"get": op("this document", ANY_OBJ)},
    }


def build() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "branchline control API", "version": "1",
                 "description": "The core's control API (see firmware/api/__init__.py). "
                                "Errors are {error, field, problems}; /sim/* exist in sim "
                                "mode only."},
        "servers": [{"url": BASE}],
        "paths": paths(),
        "components": {"schemas": {"Error": ERROR, "Status": STATUS, "Event": EVENT},
                       "responses": {"Error": _json(_ref("Error"),
                                                    "error: one line, and the field")}},
    }


def load() -> dict:
    """The document as kept in the repo (what the server serves and validates with)."""
    return json.loads(SPEC_FILE.read_text())


def dump(value: Any, indent: str = "") -> str:
    """JSON with one entry a line, small objects and lists kept on one line."""
    flat = json.dumps(value)
    if len(indent) + len(flat) <= 96 or not isinstance(value, dict | list) or not value:
        return flat
    inner = indent + " "
    items = ([f"{inner}{json.dumps(k)}: {dump(v, inner)}" for k, v in value.items()]
             if isinstance(value, dict) else [inner + dump(v, inner) for v in value])
    ends = "{}" if isinstance(value, dict) else "[]"
    return ends[0] + "\n" + ",\n".join(items) + "\n" + indent + ends[1]


def main() -> int:
    sys.stdout.write(dump(build()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
