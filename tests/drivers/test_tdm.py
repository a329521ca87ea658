"""The PCM highway's plan: clock arithmetic, frame layout, packing and the TdmBus over it.

drivers/bus/tdm.py: 8 kHz frame sync, 32 bit clocks a frame (256 kHz = 19.2 MHz / 75,
where 2.048 MHz would need a fractional divider), two S16 channels, slot n on bit clocks
8n..8n+7 after frame sync, MSB first. drivers/bus/pcm.py TdmBus decodes and encodes the
slots with cext.g711 in the configured law; board.pcm in the config picks the master and
the law. Runs on a SimHighway in fake time (no chips: the test drives DTX and reads DRX
itself).
"""

import numpy as np
import pytest

from cext import g711
from drivers.bus import tdm
from drivers.bus.pcm import FRAME, TdmBus
from drivers.sim.highway import SimHighway, SimPcmStream
from firmware.core.config import ConfigError, default_document, validate
from firmware.core.config.schema import PCM
from foundation.errors import HardwareError

CODECS = {"ulaw": (g711.ulaw_encode, g711.ulaw_decode),
          "alaw": (g711.alaw_encode, g711.alaw_decode)}


# -- clocking ------------------------------------------------------------------------------


def test_the_bit_clock_is_19_2_mhz_over_75_exactly():
    assert tdm.BCLK_HZ == tdm.FRAME_SYNC_HZ * tdm.FRAME_BITS == 256_000
    assert tdm.integer_divider(tdm.BCLK_HZ) == 75 == tdm.PI_BCLK_DIVIDER
    assert tdm.PI_OSC_HZ / 75 == 256_000.0


def test_2_048_mhz_is_not_an_integer_division_of_the_pi_oscillator():
    assert tdm.integer_divider(2_048_000) is None
    assert tdm.pi_divider(2_048_000) == pytest.approx(9.375)


def test_the_frame_is_two_16_bit_channels_of_two_8_bit_slots():
    assert (tdm.ALSA_CHANNELS, tdm.CHANNEL_BITS) == (2, 16)
    assert tdm.SLOTS == 4 and tdm.SLOT_BITS == 8
    assert [tdm.slot_start(s) for s in range(tdm.SLOTS)] == [0, 8, 16, 24]
    with pytest.raises(ValueError, match="32-bit frame has slots 0..3"):
        tdm.slot_start(4)


# -- frame layout --------------------------------------------------------------------------


def test_slot_n_is_bit_clocks_8n_to_8n_plus_7_msb_first():
    for slot in range(tdm.SLOTS):
        words = np.zeros(1, np.uint32)
        tdm.place(words, tdm.slot_start(slot), np.array([0x80], np.uint8))  # MSB only
        first_bit_clock = 31 - int(words[0]).bit_length() + 1  # clock 0 is the word's MSB
        assert first_bit_clock == 8 * slot
        words[:] = 0
        tdm.place(words, tdm.slot_start(slot), np.array([0x01], np.uint8))  # LSB only
        assert 31 - int(words[0]).bit_length() + 1 == 8 * slot + 7


def test_slots_map_onto_the_two_s16_channels_high_byte_first():
    frames = tdm.pack_slots({0: np.array([0x12], np.uint8), 1: np.array([0x34], np.uint8),
                             2: np.array([0x56], np.uint8), 3: np.array([0x78], np.uint8)}, 1)
    assert frames.shape == (1, 2)
    assert frames.view(np.uint16)[0].tolist() == [0x1234, 0x5678]  # channel 0 leads


def test_idle_slots_carry_the_laws_silence():
    assert {law: int(enc(np.zeros(1, np.int16))[0]) for law, (enc, _) in CODECS.items()} \
        == tdm.SILENCE
    frames = tdm.pack_slots({1: np.array([0x00], np.uint8)}, 1, tdm.SILENCE["alaw"])
    assert [int(tdm.slot_bytes(frames, s)[0]) for s in range(4)] == [0xD5, 0x00, 0xD5, 0xD5]


def test_pack_then_unpack_round_trips_every_slot():
    rng = np.random.default_rng(9)
    slots = {s: rng.integers(0, 256, FRAME).astype(np.uint8) for s in range(tdm.SLOTS)}
    frames = tdm.pack_slots(slots, FRAME)
    assert frames.dtype == np.int16 and frames.shape == (FRAME, 2)
    for slot, data in slots.items():
        assert np.array_equal(tdm.slot_bytes(frames, slot), data)
    words = tdm.words_from_channels(frames)
    assert np.array_equal(tdm.words_from_channels(tdm.channels_from_words(words)), words)


def test_a_start_off_the_slot_grid_straddles_two_slots():
    words = np.zeros(1, np.uint32)
    tdm.place(words, 4, np.array([0xFF], np.uint8))
    assert int(tdm.take(words, 0)[0]) == 0x0F and int(tdm.take(words, 8)[0]) == 0xF0


# -- the TdmBus on a highway ----------------------------------------------------------------


class Wire:
    """A chip stand-in on the highway: drives one slot's bytes, keeps what DRX carried."""

    def __init__(self, slot: int, data: np.ndarray | None = None) -> None:
        self.slot, self.data, self.rx = slot, data, []

    def pcm_transmit(self, n):
        return None if self.data is None else (tdm.slot_start(self.slot), self.data[:n])

    def pcm_receive(self, words):
        self.rx.append(tdm.take(words, tdm.slot_start(self.slot)))


@pytest.fixture
def highway(reactor):
    return SimHighway(reactor)


@pytest.mark.parametrize("law", tdm.LAWS)
def test_each_port_hears_only_its_slot_decoded_in_the_law(reactor, highway, law):
    encode, decode = CODECS[law]
    tone = np.round(8000 * np.sin(np.arange(FRAME) * 2 * np.pi * 1000 / 8000)).astype(np.int16)
    highway.attach(Wire(2, encode(tone)))
    bus = TdmBus(SimPcmStream(highway), law, reactor).start()
    ports = [bus.port(s, f"line{s}") for s in range(4)]
    reactor.run_for(0.1)
    heard = {s: port.read() for s, port in enumerate(ports)}
    assert np.array_equal(heard[2], decode(encode(tone)))
    silent = decode(np.full(1, tdm.SILENCE[law], np.uint8))[0]
    undriven = decode(np.full(1, 0xFF, np.uint8))[0]  # DTX nobody drives idles high
    for s in (0, 1, 3):
        assert set(heard[s].tolist()) == {undriven}
    assert law != "ulaw" or undriven == silent == 0


@pytest.mark.parametrize("law", tdm.LAWS)
def test_a_port_write_reaches_its_slot_and_idle_slots_send_silence(reactor, highway, law):
    encode, _ = CODECS[law]
    wires = [Wire(s) for s in range(4)]
    for wire in wires:
        highway.attach(wire)
    bus = TdmBus(SimPcmStream(highway), law, reactor).start()
    port = bus.port(1, "line1")
    reactor.run_for(0.1)  # the prefill and keep-alive periods: silence on every slot
    assert all(set(np.concatenate(w.rx).tolist()) == {tdm.SILENCE[law]} for w in wires)
    for wire in wires:
        wire.rx.clear()
    for _ in range(10):
        port.write(np.full(FRAME, 3000, np.int16))
        reactor.run_for(0.02)
    assert int(encode(np.array([3000]))[0]) in np.concatenate(wires[1].rx).tolist()
    for s in (0, 2, 3):
        assert set(np.concatenate(wires[s].rx).tolist()) == {tdm.SILENCE[law]}


def test_the_stream_keeps_flowing_when_nobody_reads_or_writes(reactor, highway):
    bus = TdmBus(SimPcmStream(highway), "ulaw", reactor).start()
    bus.port(0, "line0")
    reactor.run_for(5.0)
    assert highway.frames == 250 * FRAME
    assert highway.underruns == 0  # the playback was kept fed
    assert len(highway.capture) <= 1  # and the capture drained
    assert bus.sent - bus.captured == bus.prefill


def test_a_late_writer_cannot_stretch_the_playback_delay(reactor, highway):
    bus = TdmBus(SimPcmStream(highway), "ulaw", reactor).start()
    port = bus.port(0, "line0")
    reactor.run_for(0.1)
    for _ in range(20):  # a burst: twenty frames at once
        port.write(np.zeros(FRAME, np.int16))
    assert len(highway.playback) <= bus.prefill + 1
    reactor.run_for(1.0)
    assert len(highway.playback) <= bus.prefill + 1 and highway.underruns == 0


def test_the_bus_refuses_a_stream_that_is_not_two_channels_and_an_unknown_law(highway):
    stream = SimPcmStream(highway)
    with pytest.raises(ValueError, match="use one of ulaw, alaw"):
        TdmBus(stream, "linear")
    stream.channels = 3
    with pytest.raises(ValueError, match="needs a 2-channel stream, not 3"):
        TdmBus(stream, "ulaw")


def test_closing_the_bus_stops_the_pis_clock_unless_the_card_drives_it(reactor):
    pi = SimHighway(reactor)
    bus = TdmBus(SimPcmStream(pi), "ulaw", reactor).start()
    assert pi.clock_running and pi.bclk_hz == 256_000
    bus.close()
    assert not pi.clock_running and pi.bclk_hz == 0
    card = SimHighway(reactor, card_clock=True)
    assert card.clock_running  # from power-up, before any stream
    TdmBus(SimPcmStream(card), "ulaw", reactor).start().close()
    assert card.clock_running


def test_a_stream_that_fails_is_reported_and_does_not_stop_the_reactor(reactor, highway):
    stream = SimPcmStream(highway)
    bus = TdmBus(stream, "ulaw", reactor).start()

    def gone():
        raise HardwareError("ALSA device 'hw:0,0' stopped: No such device")

    stream.read_all = gone
    reactor.run_for(0.5)  # the pump keeps running on its timer, and so does the reactor
    assert bus.error == "ALSA device 'hw:0,0' stopped: No such device"
    del stream.read_all
    reactor.run_for(0.1)
    assert bus.error == ""


# -- the config that selects the plan -------------------------------------------------------


def test_board_pcm_defaults_to_the_pi_as_master_and_mu_law_with_the_reason():
    doc = validate(default_document())
    assert doc["board"]["pcm"] == {"clock_master": "pi", "law": "ulaw"}
    assert "19.2 MHz / 75" in PCM["clock_master"].help
    assert "0xFF" in PCM["law"].help


@pytest.mark.parametrize(("key", "value"), [("clock_master", "fpga"), ("law", "linear")])
def test_board_pcm_refuses_what_the_plan_does_not_have(key, value):
    doc = default_document()
    doc["board"]["pcm"] = {key: value}
    with pytest.raises(ConfigError, match=rf"board\.pcm\.{key}: '{value}' is not allowed"):
        validate(doc)


def test_a_timeslot_beyond_the_32_bit_frame_is_refused_by_name():
    doc = default_document()
    doc["lines"]["fxs2"]["timeslot"] = 4
    with pytest.raises(ConfigError) as exc:
        validate(doc)
    assert str(exc.value) == ("lines.fxs2.timeslot: 4 is out of range; allowed 0..3 (the PCM "
                              "frame is 32 bits: 4 slots of 8 bits per alsa_device)")


@pytest.mark.parametrize("slot", range(tdm.SLOTS))
def test_the_byte_indexed_hot_path_agrees_with_the_bit_level_wire_model(slot):
    """slot_bytes/pack_slots index bytes of the S16_LE frames; place/take model the wire
    bit by bit (what the simulated highway uses): on slot boundaries they must agree."""
    rng = np.random.default_rng(slot)
    data = rng.integers(0, 256, 160, dtype=np.uint8)
    frames = tdm.pack_slots({slot: data}, 160, idle=0xD5)
    words = tdm.words_from_channels(frames)
    assert np.array_equal(tdm.take(words, tdm.slot_start(slot)), data)
    for other in set(range(tdm.SLOTS)) - {slot}:
        assert np.all(tdm.take(words, tdm.slot_start(other)) == 0xD5)
    wire = np.zeros(160, dtype=np.uint32)
    tdm.place(wire, tdm.slot_start(slot), data)
    assert np.array_equal(tdm.slot_bytes(tdm.channels_from_words(wire), slot), data)
