"""A running core follows its config store when someone else writes it (the way
`branchline config set` does on the box): live settings are taken within a couple of
seconds, restart-only ones are reported in /status, and a hand-broken file is refused
with its problem logged while the core keeps running on what it has.
"""

from __future__ import annotations

from firmware.core.config import ConfigStore
from lab.wait import wait_until


def _until(predicate, timeout: float = 5.0):
    return wait_until(predicate, timeout, "running core following the store", step=0.1)


def _store_set(live, reason: str, **paths) -> int:
    """Write the store directly, as `branchline config set` does."""
    store = ConfigStore(live.store.directory)
    doc = store.load()
    for path, value in paths.items():
        *parents, key = path.split("__")
        table = doc
        for p in parents:
            table = table[p]
        table[key] = value
    return store.save(doc, reason)


def test_a_store_write_reaches_the_running_core(live_nocloud):
    live = live_nocloud
    name = live.api.status()["box"]["name"]
    new = "branch-77" if name != "branch-77" else "branch-78"
    _store_set(live, "cli: rename", system__name=new)
    _until(lambda: live.api.status()["box"]["name"] == new)
    assert live.on_reactor(lambda: live.core.doc["system"]["name"]) == new

    _store_set(live, "cli: flash", lines__fxs1__flash_max_ms=444)
    _until(lambda: live.on_reactor(lambda: live.board.drivers["fxs1"].flash_max) == 0.444)
    assert live.api.status()["box"]["restart_required"] == []


def test_a_restart_setting_written_to_the_store_is_reported(live_nocloud):
    live = live_nocloud
    _store_set(live, "cli: expiry", sip__register_expires_s=1200)
    _until(lambda: live.api.status()["box"]["restart_required"] == ["sip.register_expires_s"])
    _store_set(live, "cli: expiry back", sip__register_expires_s=300)
    _until(lambda: live.api.status()["box"]["restart_required"] == [])


def test_a_hand_broken_file_is_refused_and_the_core_keeps_running(live_nocloud):
    live = live_nocloud
    path = ConfigStore(live.store.directory).path
    good = path.read_bytes()
    try:
        path.write_bytes(good.replace(b"flash_max_ms = ", b"flash_max_ms = 99999 #", 1))
        _until(lambda: any("is not valid" in item["message"]
                           for item in live.api.logs(limit=50)["items"]))
        assert live.on_reactor(lambda: live.board.drivers["fxs1"].flash_max) < 2.0
        assert live.api.status()["box"]["name"]  # still answering
    finally:
        path.write_bytes(good)
