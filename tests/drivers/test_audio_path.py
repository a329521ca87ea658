"""Audio through the Pi's PCM block, end to end in the simulation, through the box's code.

SimBoard follows drivers/bus/tdm.py as the box does: one SimHighway per alsa_device
started before any driver is built, every chip emulator on it as a HighwayDevice, the
lines' ports TdmBus slots over a SimPcmStream, phones and the CO on the chips' analog
side. So audio only flows through a chip the driver brought up and programmed: on its
own timeslot, companded in the configured law. RealBoard is checked against a stand-in
for pyalsaaudio: the lines' two-channel stream is opened and started before any chip is
touched and kept flowing. Fake time throughout.
"""

import sys
import types

import numpy as np
import pytest

from drivers.board import RealBoard
from drivers.bus import tdm
from drivers.bus.pcm import FRAME, LINE_RATE
from drivers.bus.spi import SpidevDevice
from drivers.sim.board import SimBoard
from firmware.core.config import default_document, validate
from foundation.errors import ChipFailed

TONE_HZ = 1000.0


@pytest.fixture
def doc():
    return validate(default_document())


def tone(seconds: float, hz: float = TONE_HZ, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(round(seconds * LINE_RATE)) / LINE_RATE
    return np.round(amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def level(samples: np.ndarray, hz: float = TONE_HZ) -> float:
    """Amplitude of the `hz` component (a single-bin DFT over the whole buffer)."""
    if len(samples) == 0:
        return 0.0
    t = np.arange(len(samples)) / LINE_RATE
    return float(2 * abs(np.dot(samples.astype(float), np.exp(-2j * np.pi * hz * t))) / len(samples))


def drain(port) -> np.ndarray:
    frames = []
    while (frame := port.read()) is not None:
        frames.append(frame)
    return np.concatenate(frames) if frames else np.zeros(0, np.int16)


def run_collecting(reactor, board, seconds: float) -> dict[str, np.ndarray]:
    """Run in 20 ms steps, reading every line's port as call control would."""
    heard = {name: [] for name in board.pcm}
    for _ in range(round(seconds / 0.02)):
        reactor.run_for(0.02)
        for name, port in board.pcm.items():
            heard[name].append(drain(port))
    return {name: np.concatenate(parts) for name, parts in heard.items()}


def start_lines(board, *names: str) -> None:
    for name in names:
        board.drivers[name].start()
    board.lifeline.energise()  # fxs1's phone on its SLIC (released, it is on the PSTN line)


# -- the order: the Pi's stream first ---------------------------------------------------------


def test_the_highway_runs_before_any_chip_driver_is_built(reactor, doc, monkeypatch):
    seen = []
    original = SimBoard.build_driver

    def spy(self, name, line, chip, spi, gpio):
        seen.append((name, all(h.clock_running for h in self.highways.values())))
        return original(self, name, line, chip, spi, gpio)

    monkeypatch.setattr(SimBoard, "build_driver", spy)
    board = SimBoard(reactor, doc)
    assert seen == [("fxs1", True), ("fxs2", True), ("fxo1", True)]
    assert set(board.highways) == {"branchline"} and board.highways["branchline"].bclk_hz == tdm.BCLK_HZ


def test_nothing_flows_before_the_highway_starts(reactor, doc):
    board = SimBoard(reactor, doc)
    highway = board.highways["branchline"]
    highway.stop()  # as if the core had not started the Pi's PCM stream yet
    with pytest.raises(ChipFailed, match="no PCLK"):
        start_lines(board, "fxo1")  # the DAA's isolation link needs PCLK
    board.pcm["fxo1"].write(tone(0.02))
    heard = run_collecting(reactor, board, 0.5)
    assert highway.frames == 0
    assert all(len(samples) == 0 for samples in heard.values())


def test_the_stream_flows_while_idle_and_stops_with_the_board(reactor, doc):
    board = SimBoard(reactor, doc)
    highway = board.highways["branchline"]
    reactor.run_for(2.0)
    assert highway.frames == 100 * FRAME and highway.underruns == 0
    board.close()
    assert not highway.clock_running


def test_with_the_card_as_clock_master_the_clock_outlives_the_stream(reactor, doc):
    doc["board"]["pcm"]["clock_master"] = "card"
    board = SimBoard(reactor, doc)
    highway = board.highways["branchline"]
    assert highway.card_clock and highway.clock_running
    board.close()
    assert highway.clock_running  # the card's oscillator does not stop with the Pi's stream


# -- FXO: the CO's line through the DAA --------------------------------------------------------


def seized_fxo(reactor, doc):
    board = SimBoard(reactor, doc)
    start_lines(board, "fxo1")
    board.drivers["fxo1"].seize()
    reactor.run_for(0.3)
    assert board.cos["fxo1"].answered
    return board


def test_audio_written_to_fxo1_reaches_the_co(reactor, doc):
    board = seized_fxo(reactor, doc)
    co, port = board.cos["fxo1"], board.pcm["fxo1"]
    before = len(co.heard)
    samples = tone(1.0)
    for k in range(0, len(samples), FRAME):
        port.write(samples[k:k + FRAME])
        reactor.run_for(0.02)
    reactor.run_for(0.2)
    assert level(co.heard[before:]) > 2000  # the tone, through two G.711 conversions


def test_the_cos_dial_tone_arrives_at_fxo1_and_only_there(reactor, doc):
    board = seized_fxo(reactor, doc)
    heard = run_collecting(reactor, board, 1.0)
    assert level(heard["fxo1"], 350.0) > 200 and level(heard["fxo1"], 440.0) > 200
    for other in ("fxs1", "fxs2"):
        assert level(heard[other], 350.0) < 20 and level(heard[other], 440.0) < 20


@pytest.mark.parametrize("law", tdm.LAWS)
def test_the_board_runs_the_configured_law_end_to_end(reactor, doc, law):
    doc["board"]["pcm"]["law"] = law
    board = seized_fxo(reactor, doc)
    assert board.tdm["branchline"].law == law
    assert board.drivers["fxo1"].settings["pcm_law"] == law
    heard = run_collecting(reactor, board, 1.0)
    assert level(heard["fxo1"], 350.0) > 200


def test_a_daa_programmed_on_the_wrong_slot_gets_nobodys_audio(reactor, doc):
    board = SimBoard(reactor, doc)
    board.drivers["fxo1"].settings["timeslot"] = 3  # the chip on slot 3, the port on slot 2
    start_lines(board, "fxo1")
    board.drivers["fxo1"].seize()
    co = board.cos["fxo1"]
    before = len(co.heard)
    samples = tone(1.0)
    heard = {name: [] for name in board.pcm}
    for k in range(0, len(samples), FRAME):
        board.pcm["fxo1"].write(samples[k:k + FRAME])
        reactor.run_for(0.02)
        for name, port in board.pcm.items():
            heard[name].append(drain(port))
    assert co.answered and level(co.heard[before:]) < 50  # slot 3 carries silence
    for name, parts in heard.items():  # the CO's dial tone went out on slot 3: no port
        samples_in = np.concatenate(parts)
        assert level(samples_in, 350.0) < 20, name


# -- FXS: the phone through the ProSLIC -------------------------------------------------------


def test_a_tone_from_the_phone_on_fxs1_arrives_at_its_port_and_only_there(reactor, doc):
    board = SimBoard(reactor, doc)
    start_lines(board, "fxs1", "fxs2")
    phone = board.phones["fxs1"]
    phone.off_hook()
    reactor.run_for(0.3)
    phone.speak(tone(1.0))
    heard = run_collecting(reactor, board, 1.2)
    assert level(heard["fxs1"]) > 2000
    for other in ("fxs2", "fxo1"):
        assert level(heard[other]) < 20


def test_audio_written_to_fxs1_reaches_its_phone(reactor, doc):
    board = SimBoard(reactor, doc)
    start_lines(board, "fxs1")
    phone = board.phones["fxs1"]
    phone.off_hook()
    reactor.run_for(0.3)
    before = len(phone.heard)
    samples = tone(1.0)
    for k in range(0, len(samples), FRAME):
        board.pcm["fxs1"].write(samples[k:k + FRAME])
        reactor.run_for(0.02)
    reactor.run_for(0.2)
    assert level(phone.heard[before:]) > 2000


def test_a_slic_programmed_on_the_wrong_slot_gets_nobodys_audio(reactor, doc):
    board = SimBoard(reactor, doc)
    board.drivers["fxs1"].settings["timeslot"] = 3
    start_lines(board, "fxs1", "fxs2")
    phone = board.phones["fxs1"]
    phone.off_hook()
    reactor.run_for(0.3)
    phone.speak(tone(1.0))
    heard = run_collecting(reactor, board, 1.2)
    assert all(level(samples) < 20 for samples in heard.values())


# -- the box: RealBoard over ALSA ----------------------------------------------------------------


class FakeAlsa(types.ModuleType):
    """Stands in for pyalsaaudio: a card whose capture delivers one period per 20 ms of
    reactor time once started, and a log of what the board did, in order."""

    PCM_CAPTURE, PCM_PLAYBACK, PCM_NONBLOCK, PCM_FORMAT_S16_LE = 1, 0, 1, 2
    ALSAAudioError = type("ALSAAudioError", (Exception,), {})

    def __init__(self, reactor) -> None:
        super().__init__("alsaaudio")
        self.reactor, self.log, self.started = reactor, [], None

    def PCM(self, type, mode, device, channels, rate, format, periodsize):  # noqa: A002, N802
        self.log.append(("open", "capture" if type == self.PCM_CAPTURE else "playback",
                         device, channels))
        return FakePcm(self, type, channels, periodsize)


class FakePcm:
    def __init__(self, alsa: FakeAlsa, kind: int, channels: int, period: int) -> None:
        self.alsa, self.kind, self.channels, self.period = alsa, kind, channels, period
        self.delivered = 0

    def read(self):
        if self.alsa.started is None:
            self.alsa.started = self.alsa.reactor.now()
            self.alsa.log.append(("capture started",))
        due = int((self.alsa.reactor.now() - self.alsa.started) / 0.02 + 1e-9)
        if self.delivered >= due:
            return -11, b""  # -EAGAIN
        self.delivered += 1
        return self.period, bytes(self.period * self.channels * 2)

    def write(self, data):
        self.alsa.log.append(("write", len(data)))
        return len(data) // (2 * self.channels)

    def close(self):
        self.alsa.log.append(("close",))


def test_real_board_starts_the_lines_stream_before_it_touches_a_chip(reactor, doc, tmp_path,
                                                                      monkeypatch):
    doc["board"]["headset"]["enabled"] = False
    alsa = FakeAlsa(reactor)
    monkeypatch.setitem(sys.modules, "alsaaudio", alsa)
    original = SpidevDevice.open

    def spy(self):
        alsa.log.append(("spi", self.name))
        return original(self)

    monkeypatch.setattr(SpidevDevice, "open", spy)
    board = RealBoard(reactor, doc, dev_dir=str(tmp_path))  # no spidev here: chips fail
    first_spi = alsa.log.index(("spi", "spidev0.0"))
    before = alsa.log[:first_spi]
    assert ("open", "capture", "branchline", 2) in before and ("open", "playback", "branchline", 2) in before
    assert ("capture started",) in before
    assert [e for e in before if e[0] == "write"] == [("write", FRAME * 2 * 2)] * 2  # prefill
    assert set(board.pcm) == {"fxs1", "fxs2", "fxo1"} and board.tdm["branchline"] is not None
    reactor.run_for(2.01)  # nobody reads or writes: the board keeps the stream flowing
    # (2 s of periods; the pump runs half a period after each one ends)
    bus = board.tdm["branchline"]
    assert bus.captured == 100 and bus.sent == bus.captured + bus.prefill
    assert bus.stream.frames == 100 * FRAME
    board.close()
    assert alsa.log[-2:] == [("close",), ("close",)]


def test_real_board_reports_a_pcm_device_that_does_not_open_once(reactor, doc, tmp_path,
                                                                   monkeypatch):
    doc["board"]["headset"]["enabled"] = False
    alsa = FakeAlsa(reactor)

    def refuse(**_kw):
        raise alsa.ALSAAudioError("No such file or directory [branchline]")

    alsa.PCM = refuse
    monkeypatch.setitem(sys.modules, "alsaaudio", alsa)
    board = RealBoard(reactor, doc, dev_dir=str(tmp_path))
    assert board.tdm == {"branchline": None} and board.pcm == {}
    alsa_problems = [p for p in board.problems if "ALSA device 'branchline'" in p]
    assert len(alsa_problems) == 1 and "arecord -l" in alsa_problems[0]
