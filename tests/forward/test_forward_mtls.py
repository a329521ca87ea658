"""`branchline forward` with the device certificate (mutual TLS) against the lab records
receiver requiring client certificates from a CA made at test time: refused with a clear
line without a certificate or with one from another CA, delivered with it (the receiver
records the box's CN); files-only mode (cloud.broker set: the agent carries the records
over MQTT) uploads the recordings and queued files and leaves the other rows pending."""

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.agent.identity import DeviceIdentity
from firmware.cdr import CdrStore
from firmware.core.config import ConfigStore
from firmware.forward import Forwarder, HttpTransport, State, ssl_context
from lab.pki import Pki
from lab.records import RecordsReceiver
from tests.forward.helpers import call, forward_cmd, recording


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mtls(pki: Pki) -> Iterator[RecordsReceiver]:
    with RecordsReceiver(server_cert=pki.server(), client_ca=pki.ca_file) as rx:
        yield rx


def _forwarder(store: CdrStore, rx: RecordsReceiver, ca: Path,
               client: tuple[str, str] | None = None, **kw: Any) -> Forwarder:
    transport = HttpTransport(rx.url, timeout=3.0, context=ssl_context(ca_file=str(ca)),
                              client=client)
    return Forwarder(store, transport, batch=20, rng=random.Random(1), **kw)


def test_without_a_client_certificate_the_receiver_refuses_and_forward_says_why(
        store: CdrStore, mtls: RecordsReceiver, pki: Pki) -> None:
    uuids = [call(store, i) for i in range(3)]
    fwd = _forwarder(store, mtls, pki.ca_file)
    assert fwd.deliver_pending() == 0 and fwd.state is State.BACKOFF
    assert "requires a client certificate (mutual TLS) and this box gave none" \
        in fwd.last_error
    assert "--cert/--key" in fwd.last_error
    assert mtls.stats()["refused"] >= 1 and mtls.stats()["distinct"] == 0
    assert store.depth() == 3
    head = store.depth(detail=True)["head"]
    assert head["uuid"] == uuids[0] and "client certificate" in head["last_error"]


def test_a_certificate_from_another_ca_is_refused(store: CdrStore, mtls: RecordsReceiver,
                                                  pki: Pki, tmp_path: Path) -> None:
    cert, key = Pki(tmp_path / "other-ca").client("bl-stranger")
    call(store, 1)
    fwd = _forwarder(store, mtls, pki.ca_file, client=(str(cert), str(key)))
    assert fwd.deliver_pending() == 0
    assert "refused this box's client certificate" in fwd.last_error
    assert mtls.stats()["distinct"] == 0 and store.depth() == 1


def test_with_the_device_certificate_everything_is_delivered_under_its_cn(
        store: CdrStore, mtls: RecordsReceiver, pki: Pki) -> None:
    uuids = [call(store, i) for i in range(5)]
    uuids.append(recording(store, "r.wav", 4000))
    cert, key = pki.client("bl-0042")
    fwd = _forwarder(store, mtls, pki.ca_file, client=(str(cert), str(key)))
    assert fwd.deliver_pending() == 6 and store.depth() == 0
    assert mtls.order == uuids and set(mtls.files) == {uuids[-1]}
    assert {mtls.senders[u] for u in uuids} == {"bl-0042"}


def test_a_missing_client_certificate_file_is_a_config_error() -> None:
    from firmware.forward import ForwardConfigError
    with pytest.raises(ForwardConfigError, match="client certificate /nonexistent.pem does not"):
        HttpTransport("https://127.0.0.1:1/v1/records",
                      client=("/nonexistent.pem", "/nonexistent.key"))


def test_files_only_uploads_files_and_leaves_the_records_pending(
        store: CdrStore, receiver: RecordsReceiver, tmp_path: Path) -> None:
    c1 = call(store, 1)
    rec = recording(store, "call-1.wav", 3000, call_uuid=c1)
    s1 = store.state_change("CLOUD_PRIMARY", "SURVIVABLE", "wan down")
    bundle = tmp_path / "logs.tgz"
    bundle.write_bytes(b"x" * 2000)
    f1 = store.queue_file(bundle, "logs", {"job": "j-9"})
    fwd = Forwarder(store, HttpTransport(receiver.url, timeout=3.0), files_only=True)
    assert fwd.deliver_pending() == 2 and fwd.left() == 0
    assert set(receiver.files) == {rec, f1} and receiver.order == [rec, f1]
    assert receiver.records[f1]["body"]["label"] == "logs"
    assert receiver.files[f1][0] == 2000
    assert [r["uuid"] for r in store.pending(10)] == [c1, s1]  # for the agent, over MQTT


def _enrol(data_dir: Path, pki: Pki) -> str:
    ident = DeviceIdentity(data_dir)
    ident.ensure_key()
    ident.install_certificate(pki.sign_csr(ident.csr_pem()))
    return ident.device_id()


def test_the_process_uses_the_device_certificate_and_files_only_with_a_broker(
        tmp_path: Path, mtls: RecordsReceiver, pki: Pki) -> None:
    data = tmp_path / "box"
    data.mkdir()
    device = _enrol(data, pki)
    with CdrStore(data / "cdr.db") as s:
        s.recordings_dir.mkdir()
        cdr = call(s, 1)
        rec = recording(s, "r.wav", 2500)
    etc = data / "etc"
    cfg = ConfigStore(etc)
    cfg.save(cfg.load() | {"cloud": {"broker": "mqtts://127.0.0.1:8883"},
                           "survive": {**cfg.load()["survive"], "records_url": mtls.url,
                                       "records_ca_file": str(pki.ca_file)}})
    proc = forward_cmd(data, mtls.url, "--once", "--config-dir", etc, "--ca-file", pki.ca_file)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "delivered 1, 0 pending" in out and "files only" in err
    assert set(mtls.files) == {rec} and mtls.senders[rec] == device
    with CdrStore(data / "cdr.db") as s:
        assert [r["uuid"] for r in s.pending(10)] == [cdr]
    proc = forward_cmd(data, mtls.url, "--once", "--config-dir", etc, "--ca-file", pki.ca_file,
                       "--cert", data / "nope.pem", "--key", data / "nope.key")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "client certificate" in err and "Traceback" not in err
