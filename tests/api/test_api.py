"""Every control-API endpoint against a real server over real sockets (TCP and Unix),
with a real core on the twins: status, config round trip, diagnostics, CDRs, logs,
the sim routes, and the refusals (bad JSON, wrong types, unknown fields, wrong content
type, oversize bodies, unknown routes and methods)."""

from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pytest

from firmware.api import spec
from firmware.api.client import ApiClient, ApiError
from firmware.api.server import ApiServer, ApiSetupError, parse_listen
from firmware.core.config import ConfigStore
from lab.wait import wait_until


def port(status: dict, name: str) -> dict:
    return next(p for p in status["ports"] if p["name"] == name)


# ---- status ------------------------------------------------------------------------

def test_status_over_tcp_and_unix_socket(live):
    for client in (live.api, live.unix):
        status = client.status()
        assert status["box"]["mode"] == "sim" and status["box"]["name"] == "branch-01"
        names = [p["name"] for p in status["ports"]]
        assert names == ["fxs1", "fxs2", "fxo1", "headset"]
        fxs1 = port(status, "fxs1")
        assert fxs1["kind"] == "fxs" and fxs1["hook"] in ("on", "off")
        assert 40 < port(status, "fxo1")["line_voltage_v"] < 60
        assert status["wan"]["state"] in ("up", "down", "unknown")


def test_unix_socket_is_0660(live):
    assert stat.S_IMODE(os.stat(live.socket).st_mode) == 0o660


def test_sim_phone_off_hook_shows_in_status(live):
    live.api.sim_phone("fxs1", "off_hook")
    try:
        assert wait_until(lambda: port(live.api.status(), "fxs1")["state"] == "off-hook")
        assert port(live.api.status(), "fxs1")["hook"] == "off"
    finally:
        live.api.sim_phone("fxs1", "on_hook")
    assert wait_until(lambda: port(live.api.status(), "fxs1")["state"] == "on-hook")


def test_sim_co_ring_shows_ringing_then_stops(live):
    live.api.sim_co("fxo1", "ring", number="2125550199", name="TEST CALLER")
    try:
        assert wait_until(lambda: port(live.api.status(), "fxo1")["state"] == "ringing", 4)
    finally:
        live.api.sim_co("fxo1", "stop_ring")
    assert wait_until(lambda: port(live.api.status(), "fxo1")["state"] == "idle", 10)


def test_sim_headset_unplug_and_plug(live):
    live.api.sim_headset("unplug")
    assert wait_until(lambda: port(live.api.status(), "headset")["state"] == "absent", 3)
    live.api.sim_headset("plug")
    assert wait_until(lambda: port(live.api.status(), "headset")["state"] == "present", 3)


def test_sim_phone_refusals(live):
    with pytest.raises(ApiError) as err:
        live.api.sim_phone("fxs9", "off_hook")
    assert err.value.status == 404 and "fxs1" in str(err.value)
    with pytest.raises(ApiError) as err:
        live.api.sim_phone("fxs2", "dial", digits="12")
    assert err.value.status == 409 and "off_hook first" in str(err.value)
    status, body = live.post("/sim/phone/fxs2", {"action": "dial"})
    assert status == 400 and body["field"] == "digits"


# ---- config ------------------------------------------------------------------------

def test_config_round_trip_patch_disk_diff_rollback(live):
    before = live.api.config()
    assert before["document"]["lines"]["fxs1"]["flash_max_ms"] == 800
    saved = live.api.patch_config({"lines.fxs1.flash_max_ms": 600}, "longer flash")
    assert saved["changed"] == ["lines.fxs1.flash_max_ms"]
    assert saved["restart_required"] == []  # taken by the running core at once
    assert live.api.status()["box"]["restart_required"] == []
    after = live.unix.config()
    assert after["version"] == saved["version"]
    assert after["document"]["lines"]["fxs1"]["flash_max_ms"] == 600
    assert ConfigStore(live.store.directory).load()["lines"]["fxs1"]["flash_max_ms"] == 600
    versions = live.api.config_versions()
    assert versions[-1]["version"] == saved["version"] and versions[-1]["reason"] == "longer flash"
    if saved["version"] > 1:
        diff = live.api.config_diff(saved["version"] - 1)
        assert "-flash_max_ms = 800" in diff and "+flash_max_ms = 600" in diff
    second = live.api.patch_config({"lines.fxs1.name": "Lobby"})
    back = live.api.rollback(saved["version"])
    assert back["version"] == second["version"] + 1
    assert set(back["changed"]) == {"lines.fxs1.name"}
    assert live.api.config()["document"]["lines"]["fxs1"]["name"] == "Front desk"


def test_settings_that_need_a_restart_are_reported_until_rolled_back(live):
    assert live.api.status()["box"]["restart_required"] == []
    saved = live.api.patch_config({"sip.nat_keepalive_s": 25, "calls.interdigit_s": 5.0})
    assert saved["restart_required"] == ["sip.nat_keepalive_s"]
    assert live.api.status()["box"]["restart_required"] == ["sip.nat_keepalive_s"]
    back = live.api.rollback()
    assert sorted(back["changed"]) == ["calls.interdigit_s", "sip.nat_keepalive_s"]
    assert back["restart_required"] == []
    assert live.api.status()["box"]["restart_required"] == []


def test_config_rule_broken_is_422_and_nothing_changes(live):
    version = live.api.config()["version"]
    with pytest.raises(ApiError) as err:
        live.api.patch_config({"lines.fxs1.flash_max_ms": 99999})
    assert err.value.status == 422
    assert err.value.field == "lines.fxs1.flash_max_ms"
    assert "out of range" in str(err.value) and err.value.problems
    with pytest.raises(ApiError) as err:
        live.api.patch_config({"lines.fxs1.flash_max_msx": 600})
    assert err.value.status == 422 and "did you mean" in str(err.value)
    assert live.api.config()["version"] == version


def test_validate_and_put(live):
    doc = live.api.config()["document"]
    assert live.api.validate_config(doc)["ok"] is True
    bad = json.loads(json.dumps(doc))
    bad["sip"]["transport"] = "carrier-pigeon"
    with pytest.raises(ApiError) as err:
        live.api.validate_config(bad)
    assert err.value.status == 422 and err.value.field == "sip.transport"
    with pytest.raises(ApiError):
        live.api.put_config(bad)
    doc["system"]["name"] = "branch-77"
    saved = live.api.put_config(doc, "rename")
    assert saved["changed"] == ["system.name"] and saved["restart_required"] == []
    assert live.api.status()["box"]["name"] == "branch-77"
    same = live.api.put_config(doc, "again")
    assert same == {"version": saved["version"], "changed": [], "restart_required": []}


def test_rollback_and_diff_refusals(live):
    with pytest.raises(ApiError) as err:
        live.api.rollback(9999)
    assert err.value.status == 404 and err.value.field == "version"
    with pytest.raises(ApiError) as err:
        live.api.config_diff(9999)
    assert err.value.status == 404
    status, _h, body = live.raw("GET", "/config/diff")
    assert status == 400 and json.loads(body)["field"] == "against"


# ---- diagnostics -------------------------------------------------------------------

def test_ring_rings_the_phone_then_stops(live):
    phone = live.board.phones["fxs2"]
    assert live.api.ring("fxs2", 1.0)["ok"] is True
    assert wait_until(lambda: live.on_reactor(lambda: phone.is_ringing), 2)
    assert wait_until(lambda: not live.on_reactor(lambda: phone.is_ringing), 4)


def test_ring_refusals(live):
    with pytest.raises(ApiError) as err:
        live.api.ring("fxo1", 1)
    assert err.value.status == 409 and "FXS" in str(err.value)
    with pytest.raises(ApiError) as err:
        live.api.ring("nope", 1)
    assert err.value.status == 404 and err.value.field == "port"


def test_tone_plays_then_restores(live):
    media = live.core.cc.ports["fxs2"].media
    live.api.sim_phone("fxs2", "off_hook")
    try:
        assert wait_until(lambda: live.on_reactor(lambda: media.tone_name) == "dial")
        live.api.tone("fxs2", "busy", 0.6)
        assert live.on_reactor(lambda: media.tone_name) == "busy"
        assert wait_until(lambda: live.on_reactor(lambda: media.tone_name) == "dial", 3)
    finally:
        live.api.sim_phone("fxs2", "on_hook")


def test_dtmf_echo_plays_back_what_it_hears(live):
    from cext.dtmf import DtmfDetector

    phone = live.board.phones["fxs2"]
    live.api.sim_phone("fxs2", "off_hook")
    try:
        time.sleep(0.3)
        live.api.dtmf_echo("fxs2", 3)
        start = live.on_reactor(lambda: len(phone.heard))
        live.api.sim_phone("fxs2", "dial", digits="7")

        def echoed() -> bool:
            heard = live.on_reactor(lambda: phone.heard)
            return "7" in [d for d, *_ in DtmfDetector().process(heard[start:])]

        assert wait_until(echoed, 3, step=0.2)
        logs = live.api.logs(limit=50, level="info")["items"]
        assert any("heard 7" in r["message"] for r in logs), [
            (r["source"], r["message"][:80]) for r in logs]
    finally:
        live.api.sim_phone("fxs2", "on_hook")


def test_measure(live):
    fxs = live.api.measure("fxs1")
    assert fxs["kind"] == "fxs" and fxs["line_voltage_v"] > 40 and fxs["loop_current_ma"] == 0
    fxo = live.api.measure("fxo1")
    assert fxo["kind"] == "fxo" and abs(fxo["line_voltage_v"]) > 40


def test_line_test(live):
    try:
        import firmware.diag.commission  # noqa: F401
    except ImportError:
        with pytest.raises(ApiError) as err:
            live.api.line_test("fxs1")
        assert err.value.status == 503 and "commissioning" in str(err.value)
        return
    result = live.api.line_test("fxs1")
    assert isinstance(result, dict) and result
    fxo = live.api.line_test("fxo1")
    assert isinstance(fxo, dict) and fxo


def test_ping_reports_edges(live):
    assert isinstance(live.api.ping()["edges"], list)


def test_ping_without_cloud_is_503(live_nocloud):
    with pytest.raises(ApiError) as err:
        live_nocloud.api.ping()
    assert err.value.status == 503 and "sip.edges" in str(err.value)


def test_reboot_in_sim_is_logged_only(live):
    assert live.api.reboot()["ok"] is True
    logs = live.api.logs(level="warning")["items"]
    assert any("reboot requested" in r["message"] for r in logs)


# ---- CDRs and logs -----------------------------------------------------------------

def _seed_cdrs(live, n: int) -> None:
    def seed() -> None:
        cdr = live.core.cdr
        for i in range(n):
            uuid = cdr.open_call("inbound" if i % 2 else "outbound", "fxo1" if i % 3 else "fxs1",
                                 f"20155501{i:02d}", "201", started=1_700_000_000.0 + i)
            cdr.ended(uuid, 1_700_000_030.0 + i, "answered")

    live.on_reactor(seed)


def test_cdrs_paging_filters_and_csv(live):
    _seed_cdrs(live, 25)
    first = live.api.cdrs(limit=10)
    assert first["total"] >= 25 and len(first["items"]) == 10
    second = live.api.cdrs(offset=10, limit=10)
    assert not {r["uuid"] for r in first["items"]} & {r["uuid"] for r in second["items"]}
    inbound = live.api.cdrs(direction="inbound", limit=100)
    assert inbound["items"] and all(r["direction"] == "inbound" for r in inbound["items"])
    assert live.api.cdrs(q="2015550107")["total"] == 1
    window = live.api.cdrs(since=1_700_000_005, until=1_700_000_010)
    assert window["total"] == 5
    csv_text = live.api.cdrs_csv(port="fxs1")
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("uuid,direction,port")
    assert len(lines) - 1 == live.api.cdrs(port="fxs1")["total"]
    status, headers, _ = live.raw("GET", "/cdrs.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")


def test_cdrs_without_data_dir_is_503(tmp_path):
    from tests.api.conftest import LiveCore

    rig = LiveCore(tmp_path, cloud=False)
    try:
        rig.on_reactor(lambda: setattr(rig.core, "cdr", None))
        with pytest.raises(ApiError) as err:
            rig.api.cdrs()
        assert err.value.status == 503 and "--data-dir" in str(err.value)
    finally:
        rig.close()


def test_logs_paging_and_level(live):
    everything = live.api.logs(limit=1000)
    assert everything["total"] >= 3
    page = live.api.logs(offset=1, limit=2)
    assert page["items"] == everything["items"][1:3]
    warnings = live.api.logs(level="warning", limit=1000)["items"]
    assert all(r["level"] in ("warning", "error", "critical") for r in warnings)
    assert everything["items"][0]["time"] >= everything["items"][-1]["time"]


# ---- refusals ----------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("body, field, words", [
    (b"{not json", None, "not valid JSON"),
    (b"\xff\xfe", None, "not UTF-8"),
    (b'{"port": "fxs1", "seconds": NaN}', None, "not valid JSON"),
    (b"[1, 2]", None, "must be an object"),
    (b'{"port": 5}', "port", "must be a string"),
    (b'{"port": "fxs1", "seconds": "abc"}', "seconds", "must be a number"),
    (b'{"port": "fxs1", "seconds": true}', "seconds", "must be a number"),
    (b'{"port": "fxs1", "seconds": 999}', "seconds", "out of range"),
    (b'{"seconds": 2}', "port", "required"),
    (b'{"port": "fxs1", "volume": 11}', "volume", "unknown field"),
    (b'{"port": null}', "port", "must not be null"),
    (b"", None, "missing"),
])
def test_bad_bodies_are_400_naming_the_field(live, body, field, words):
    status, _h, data = live.raw("POST", "/diag/ring", body, JSON)
    reply = json.loads(data)
    assert status == 400, reply
    assert reply["field"] == field and words in reply["error"]


def test_wrong_types_in_config_bodies(live):
    status, reply = live.post("/config", {"set": {"lines.fxs1.flash_max_ms": 600}})
    assert status == 405
    for body, field in (({"set": []}, "set"), ({"set": {}}, "set"),
                        ({"document": "x"}, "document"), ({"version": "2"}, "version")):
        path = {"set": "/config", "document": "/config/validate", "version": "/config/rollback"}
        method = "PATCH" if "set" in body else "POST"
        status, _h, data = live.raw(method, path[next(iter(body))], json.dumps(body).encode(),
                                    JSON)
        assert status == 400 and json.loads(data)["field"] == field


def test_wrong_content_type_is_415(live):
    status, _h, data = live.raw("POST", "/diag/ring", b'{"port": "fxs1"}',
                                {"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in json.loads(data)["error"]
    status, _h, _d = live.raw("POST", "/diag/ring", b"port=fxs1",
                              {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415


def test_oversize_body_is_413(live):
    big = b'{"document": {"pad": "' + b"x" * (1 << 20) + b'"}}'
    status, headers, data = live.raw("POST", "/config/validate", big, JSON)
    assert status == 413 and "limit" in json.loads(data)["error"]
    assert headers.get("Connection") == "close"


def test_unknown_route_404_and_wrong_method_405_with_allow(live):
    status, _h, data = live.raw("GET", "/nope")
    assert status == 404 and "openapi.json" in json.loads(data)["error"]
    status, _h, _d = live.raw("GET", "/../etc/passwd")
    assert status == 404
    status, headers, data = live.raw("DELETE", "/config")
    assert status == 405 and headers["Allow"] == "GET, PATCH, PUT"
    status, headers, _d = live.raw("GET", "/diag/ring")
    assert status == 405 and headers["Allow"] == "POST"
    status, _h, data = live.raw("BREW", "/status")
    assert status == 501 and json.loads(data)["error"]


def test_bad_query_parameters_are_400(live):
    for query, field in (("limit=abc", "limit"), ("limit=0", "limit"), ("offset=-1", "offset"),
                         ("direction=sideways", "direction"), ("colour=red", "colour"),
                         ("limit=1&limit=2", "limit"), ("since=nan", "since")):
        status, _h, data = live.raw("GET", f"/cdrs?{query}")
        assert status == 400, query
        assert json.loads(data)["field"] == field


def test_keep_alive_survives_refusals(live):
    import http.client

    host, port_no = live.tcp.split(":")
    conn = http.client.HTTPConnection(host, int(port_no), timeout=5)
    try:
        for body, want in ((b"{bad", 400), (b'{"port": "fxs1"}', 200), (b"{}", 400)):
            conn.request("POST", "/api/v1/diag/measure", body=body, headers=JSON)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == want
        conn.request("DELETE", "/api/v1/status", body=b"xyz")
        resp = conn.getresponse()
        resp.read()
        conn.request("GET", "/api/v1/status")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_handler_bug_is_one_line_500_and_logged(live):
    adapter = live.server.adapter
    saved = adapter.versions
    adapter.versions = lambda: {}["boom"]  # a bug in a handler, injected
    try:
        status, _h, data = live.raw("GET", "/config/versions")
    finally:
        adapter.versions = saved
    reply = json.loads(data)
    assert status == 500 and "\n" not in reply["error"] and "KeyError" in reply["error"]
    assert any("failed" in r["message"] for r in live.api.logs(level="error")["items"])


def test_busy_reactor_gives_503_not_a_hang(live):
    adapter = live.server.adapter
    adapter.hop_timeout = 0.3
    try:
        live.reactor.call_soon(time.sleep, 1.0)  # the reactor thread is stuck for 1 s
        with pytest.raises(ApiError) as err:
            live.api.status()
        assert err.value.status == 503 and "did not answer" in str(err.value)
    finally:
        adapter.hop_timeout = 5.0
    assert wait_until(lambda: live.api.status(), 3)


# ---- the document, the client, the listeners ----------------------------------------

def test_openapi_served_and_in_sync_with_spec_py(live):
    assert live.api.openapi() == spec.load() == spec.build()


def test_client_errors():
    dead = ApiClient(tcp="127.0.0.1:9")
    with pytest.raises(ApiError) as err:
        dead.status()
    assert err.value.status == 0 and "--api" in str(err.value)
    with pytest.raises(ApiError):
        ApiClient()


@pytest.mark.parametrize("text", ["0.0.0.0:8080", "192.168.1.10:80", "example.com:80",
                                  "127.0.0.1", "127.0.0.1:99999"])
def test_non_loopback_or_bad_listen_is_refused(text):
    with pytest.raises(ApiSetupError):
        parse_listen(text)


def test_loopback_forms_accepted():
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    assert parse_listen("localhost:0") == ("localhost", 0)


def test_stale_socket_replaced_live_one_refused(live, tmp_path):
    import socket

    path = tmp_path / "core.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a killed core leaves
    server = ApiServer(live.core, live.store, unix_path=str(path))
    server.start()
    try:
        assert ApiClient(unix_path=str(path)).status()["box"]["mode"] == "sim"
        with pytest.raises(ApiSetupError):
            ApiServer(live.core, live.store, unix_path=str(path)).start()
    finally:
        server.stop()
    assert not path.exists()


def test_responses_are_strict_json(live):
    """NaN never leaves the server: a float that is not finite becomes null."""
    from firmware.api.server import _clean

    assert _clean({"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(3)]}) == \
        {"a": None, "b": 1.5, "c": [3]}
    json.dumps(live.api.status(), allow_nan=False)


def test_a_real_local_call_shows_in_status_and_cdrs(live):
    before = live.api.cdrs()["total"]
    live.api.sim_phone("fxs1", "off_hook")
    try:
        time.sleep(0.3)
        live.api.sim_phone("fxs1", "dial", digits="202")
        assert wait_until(lambda: port(live.api.status(), "fxs2")["ringing"], 8)
        live.api.sim_phone("fxs2", "off_hook")
        def connected():
            status = live.api.status()
            states = {c["port"]: c["state"] for c in status["calls"]}
            return status if states.get("fxs1") == "connected" else None

        status = wait_until(connected, 5)
        assert status, live.api.status()["calls"]
        calls = {c["port"]: c for c in status["calls"]}
        assert calls["fxs1"]["direction"] == "local" and "fxs2" in calls
        assert port(status, "fxs1")["call"]["remote"] == "202"
        assert calls["fxs1"]["duration_s"] is not None
    finally:
        live.api.sim_phone("fxs1", "on_hook")
        live.api.sim_phone("fxs2", "on_hook")
    assert wait_until(lambda: live.api.cdrs()["total"] > before, 5)
    assert wait_until(lambda: live.api.cdrs(limit=1)["items"][0]["disposition"] == "answered", 5)
    assert live.api.cdrs(limit=1)["items"][0]["direction"] == "local"
