"""The config's `cloud` section (the management agent's broker and cadences): optional in a
document, its defaults in the typed view, every rule naming field and fix, the password a
secret, and every cloud.* setting live for a running core (the agent reads them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from firmware.core import liveconfig
from firmware.core.config import Config, ConfigError, ConfigStore, default_document, validate
from firmware.core.config.schema import CLOUD, SECTIONS, field_at


def test_optional_section_with_defaults_in_the_typed_view() -> None:
    doc = default_document()
    assert "cloud" not in doc
    cfg = Config.from_doc(doc)
    assert cfg.cloud.broker == "" and cfg.cloud.keepalive_s == 60
    assert cfg.cloud.telemetry_s == 60 and cfg.cloud.telemetry_full_s == 3600
    assert cfg.cloud.confirm_s == 120 and cfg.cloud.command_max_age_s == 300
    assert cfg.to_doc() == validate(doc)  # no section appears from nowhere
    assert SECTIONS["cloud"] is CLOUD
    assert field_at(doc, "cloud.confirm_s") is CLOUD["confirm_s"]


def test_section_given_is_filled_and_round_trips() -> None:
    doc = default_document()
    doc["cloud"] = {"broker": "mqtts://broker.example.com:8883", "confirm_s": 0}
    valid = validate(doc)
    assert valid["cloud"]["broker"] == "mqtts://broker.example.com:8883"
    assert valid["cloud"]["confirm_s"] == 0 and valid["cloud"]["telemetry_s"] == 60
    cfg = Config.from_doc(doc)
    assert cfg.cloud.broker == "mqtts://broker.example.com:8883"
    assert cfg.to_doc() == valid


@pytest.mark.parametrize("values, problem", [
    ({"broker": "http://broker:8883"}, "cloud.broker: 'http://broker:8883' must be "
                                       "mqtts://host:port or mqtt://host:port"),
    ({"broker": "mqtts://broker.example.com"}, "must be mqtts://host:port"),
    ({"ca_file": "ca.pem"}, "cloud.ca_file: 'ca.pem' must be an absolute file path"),
    ({"confirm_s": 7200}, "cloud.confirm_s: 7200 is out of range; allowed 0..3600 s"),
    ({"telemetry_s": "60"}, "cloud.telemetry_s: '60' must be an integer (s)"),
    ({"brokr": "x"}, "cloud.brokr: unknown setting; did you mean 'broker'?"),
])
def test_rules_name_the_field_and_the_fix(values: dict[str, Any], problem: str) -> None:
    doc = default_document()
    doc["cloud"] = values
    with pytest.raises(ConfigError) as err:
        validate(doc)
    assert problem in err.value.problems[0]


def test_broker_forms_accepted() -> None:
    for url in ("mqtt://127.0.0.1:1883", "mqtts://[::1]:8883", "mqtts://b-1.fleet.example:443"):
        doc = default_document()
        doc["cloud"] = {"broker": url}
        assert validate(doc)["cloud"]["broker"] == url


def test_password_is_a_secret_never_in_a_repr() -> None:
    doc = default_document()
    doc["cloud"] = {"username": "box-7", "password": "s3cret-pw"}
    doc["sip"]["password"] = "sip-pw-123"
    cfg = Config.from_doc(doc)
    assert cfg.cloud.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(cfg) and "sip-pw-123" not in repr(cfg)
    assert "box-7" in repr(cfg.cloud)


def test_cloud_settings_are_live_for_the_core() -> None:
    running = validate(default_document())
    new = validate({**default_document(), "cloud": {"broker": "mqtt://127.0.0.1:1883"}})
    changed = liveconfig.changed_paths(running, new)
    assert "cloud.broker" in changed
    live, restart = liveconfig.split(changed, running, new)
    assert restart == [] and sorted(live) == sorted(changed)


def test_stored_and_rolled_back(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.save(default_document(), "start")
    doc = store.load()
    doc["cloud"] = {"broker": "mqtts://fleet.example:8883"}
    store.save(doc, "cloud on")
    assert store.load()["cloud"]["broker"] == "mqtts://fleet.example:8883"
    store.rollback(None)
    assert "cloud" not in store.load()
