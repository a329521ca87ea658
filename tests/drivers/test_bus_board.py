"""Board builders and the gateway core: the real drivers on the twins, and on no hardware.

SimBoard must build every port of the default config with the drivers wired to chip
emulators at the configured bus/chip-select and pins; a chip that is not seated is marked
failed while the other ports keep working; RealBoard on this machine (no spidev) must
collect one reason per line instead of raising.
"""

import copy

import numpy as np
import pytest

from drivers.board import RealBoard
from drivers.bus.pcm import FRAME
from drivers.bus.spi import SPI_HINT
from drivers.chips.si3050 import Si3050
from drivers.chips.si3215 import Si3215
from drivers.sim.board import SimBoard
from firmware.core.config import Config, default_document, validate
from firmware.gateway import SEIZED, Gateway
from foundation.errors import HardwareError
from foundation.events import CHIP_FAILED, OFF_HOOK, ON_HOOK, RING_START


@pytest.fixture
def doc():
    return validate(default_document())


def _boot(reactor, doc, **kw):
    """The board, the gateway, and the port book's events from boot on."""
    board = SimBoard(reactor, doc, **kw)
    gateway = Gateway(Config.from_doc(doc), board, reactor)
    log = []
    gateway.book.listeners.append(lambda event, _old, _new: log.append(event))
    gateway.start()
    reactor.run_for(0.5)
    return board, gateway, log


def test_sim_board_builds_every_port_of_the_default_config(reactor, doc):
    board = SimBoard(reactor, doc)
    assert isinstance(board.drivers["fxs1"], Si3215) and isinstance(board.drivers["fxs2"], Si3215)
    assert isinstance(board.drivers["fxo1"], Si3050)
    assert set(board.phones) == {"fxs1", "fxs2"} and set(board.cos) == {"fxo1"}
    assert set(board.pcm) == {"fxs1", "fxs2", "fxo1"} and board.headset is not None
    assert {c: s.name for c, s in board.spi.items()} == {
        "slic0": "spidev0.0", "slic1": "spidev0.1", "daa0": "spidev0.2"}
    assert board.problems == [] and board.errors == {}


def test_gateway_brings_every_port_up_and_follows_the_phone(reactor, doc):
    board, gateway, log = _boot(reactor, doc)
    states = {n: p.state for n, p in gateway.book.ports.items()}
    assert states == {"fxs1": "on-hook", "fxs2": "on-hook", "fxo1": "idle", "headset": "present"}
    assert all(board.spi[c].transfers > 0 for c in board.spi)  # every chip was talked to
    board.phones["fxs1"].off_hook()
    reactor.run_for(0.3)
    assert gateway.book.ports["fxs1"].state == "off-hook"
    board.phones["fxs1"].on_hook()
    reactor.run_for(1.5)
    kinds = [(e.port, e.kind) for e in log if e.port == "fxs1"]
    assert kinds == [("fxs1", OFF_HOOK), ("fxs1", ON_HOOK)]
    assert gateway.book.ports["fxs1"].state == "on-hook"


def test_a_chip_not_seated_is_marked_failed_and_the_rest_runs(reactor, doc):
    board, gateway, log = _boot(reactor, doc, unseated={"slic1"})
    fxs2 = gateway.book.ports["fxs2"]
    assert fxs2.state == "failed"
    assert "spidev0.1" in fxs2.reason and "0xFF" in fxs2.reason
    assert [e.kind for e in log if e.port == "fxs2"] == [CHIP_FAILED]
    board.phones["fxs1"].off_hook()
    board.cos["fxo1"].ring(callerid=None)
    reactor.run_for(2.5)
    assert gateway.book.ports["fxs1"].state == "off-hook"
    assert gateway.book.ports["fxo1"].state == "ringing"
    assert RING_START in [e.kind for e in log if e.port == "fxo1"]
    assert gateway.status()["fxs2"]["state"] == "failed"


def test_seize_and_release_reach_the_central_office(reactor, doc):
    board, gateway, log = _boot(reactor, doc)
    gateway.seize("fxo1")
    reactor.run_for(0.3)
    assert board.cos["fxo1"].answered and gateway.book.ports["fxo1"].state == "seized"
    assert log[-1].kind == SEIZED
    gateway.release("fxo1")
    reactor.run_for(0.3)
    assert not board.cos["fxo1"].answered and gateway.book.ports["fxo1"].state == "idle"


def test_line_audio_flows_between_gateway_and_phone(reactor, doc):
    board, _gateway, _log = _boot(reactor, doc)
    phone = board.phones["fxs1"]
    phone.off_hook()
    reactor.run_for(0.3)
    before = len(phone.heard)
    t = np.arange(5 * FRAME) / 8000
    samples = np.round(4000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    for k in range(5):  # 1 kHz through the ProSLIC's timeslot (G.711 both ways)
        board.pcm["fxs1"].write(samples[k * FRAME:(k + 1) * FRAME])
        reactor.run_for(0.02)
    reactor.run_for(0.1)
    heard = phone.heard[before:].astype(float)
    reference = np.exp(-2j * np.pi * 1000 * np.arange(len(heard)) / 8000)
    assert 2 * abs(np.dot(heard, reference)) / (4 * FRAME) > 2000  # 4 frames' worth


def test_board_config_naming_a_missing_chip_names_the_field(reactor, doc):
    bad = copy.deepcopy(doc)
    bad["lines"]["fxs2"]["chip"] = "slic9"
    with pytest.raises(HardwareError, match=r"lines\.fxs2\.chip: 'slic9' is not in board\.chips"):
        SimBoard(reactor, bad)


def test_board_config_with_a_kind_that_does_not_match_the_chip(reactor, doc):
    bad = copy.deepcopy(doc)
    bad["lines"]["fxo1"]["chip"] = "slic1"
    del bad["lines"]["fxs2"]
    with pytest.raises(HardwareError, match=r"lines\.fxo1\.kind: 'fxo' but chip slic1 is a si3215"):
        SimBoard(reactor, bad)


def test_real_board_without_devices_reports_each_line_and_keeps_going(reactor, doc, tmp_path):
    board = RealBoard(reactor, doc, dev_dir=str(tmp_path))
    assert board.drivers == {}
    assert board.errors == {
        line: f"{tmp_path}/spidev0.{cs} not found: {SPI_HINT}"
        for line, cs in (("fxs1", 0), ("fxs2", 1), ("fxo1", 2))}
    assert "dtoverlay=branchline-card" in SPI_HINT and "spidev0.0-0.2" in SPI_HINT
    gateway = Gateway(Config.from_doc(doc), board, reactor)
    gateway.start()
    reactor.run_for(1.5)
    assert {n: p.state for n, p in gateway.book.ports.items()} == {
        "fxs1": "failed", "fxs2": "failed", "fxo1": "failed", "headset": "absent"}
    gateway.stop()


def test_drivers_get_the_documents_country_and_cadence(reactor, doc):
    doc["country"]["code"] = "uk"
    doc["country"]["ring_cadence"] = [1.0, 3.0]
    doc["lines"]["fxs2"]["country"] = "de"
    board = SimBoard(reactor, doc)
    assert board.drivers["fxs1"].settings["country"] == "uk"
    assert board.drivers["fxs2"].settings["country"] == "de"
    assert board.drivers["fxs1"].settings["ring_cadence"] == [1.0, 3.0]
    assert board.drivers["fxo1"].settings["country"] == "uk"
