"""The Si3050 twin driven at register level, with no driver: what a real chip would do.

Each test plays the part of a driver by hand on a SimSpiDevice (one byte per transfer,
as wctdm.c, OAK pidma.c and 24xxp do), with the emulator attached to a SimHighway for
PCLK and PCM, and checks the physical result and the `violations` list. The reference
bring-up is 24xxp wctdm_init_voicedaa's order, in fake time.
"""

import numpy as np
import pytest

from cext import g711
from drivers.bus import tdm
from drivers.bus.gpio import SimGpio
from drivers.bus.spi import SimSpiDevice
from drivers.sim import daa_model as M
from drivers.sim.highway import SimHighway
from drivers.sim.si3050_sim import Si3050Emulator

RESET, INT = 22, 23
N = 160


class Daa:
    """An emulator on a chip-select and a highway, and register access one byte a frame."""

    def __init__(self, reactor, clock=True):
        self.reactor = reactor
        self.gpio = SimGpio()
        self.emu = Si3050Emulator(reactor, self.gpio, RESET, INT)
        self.spi = SimSpiDevice(0, 1, self.emu)
        self.highway = SimHighway(reactor)
        self.emu.attach_highway(self.highway)
        if clock:
            self.highway.start()

    def write(self, reg, value):
        for byte in (0x20, reg, value):  # wctdm.c __wctdm_setreg
            self.spi.transfer(bytes([byte]))

    def read(self, reg):
        self.spi.transfer(b"\x60")  # wctdm.c __wctdm_getreg
        self.spi.transfer(bytes([reg]))
        return self.spi.transfer(b"\x00")[0]

    def reset(self):
        self.gpio.setup_output(RESET, True)
        self.gpio.write(RESET, False)
        self.reactor.run_for(0.001)
        self.gpio.write(RESET, True)
        self.reactor.run_for(0.005)

    def bring_up(self, country="FCC", slot=0, law=0x28, reg31=None):
        """24xxp wctdm_init_voicedaa for fxo_modes.h `country`, then 33 as 24xxp sets it."""
        self.reset()
        assert self.read(2) == 0x03  # wctdm_voicedaa_insane
        self.write(1, 0x80)  # soft reset
        self.reactor.run_for(0.1)
        regs = M.reference_registers(M.FXO_MODES[country])
        if reg31 is not None:
            regs[31] = reg31
        self.write(16, regs[16])
        self.write(18, 2)  # full-wave ring detector
        self.write(24, 0)
        self.write(26, regs[26])
        self.write(30, regs[30])
        self.write(31, regs[31])
        for reg in (34, 36):  # wctdm_voicedaa_set_ts
            self.write(reg, tdm.slot_start(slot) & 0xFF)
            self.write(reg + 1, tdm.slot_start(slot) >> 8)
        self.write(6, 0x00)  # Enable ISO-Cap
        waited = 0.0
        while not self.read(11) & 0xF0 and waited < 2.0:
            self.reactor.run_for(0.1)
            waited += 0.1
        self.write(5, 0x08)  # on-hook line monitor
        self.write(33, law)

    def capture(self, seconds):
        """Run; the Pi's capture periods in that time, concatenated ((n, 2) int16)."""
        self.highway.capture.clear()
        self.reactor.run_for(seconds)
        return np.concatenate(list(self.highway.capture))


@pytest.fixture
def daa(reactor):
    return Daa(reactor)


def tone(freq=1000.0, peak=8000.0, n=N, start=0):
    t = np.arange(start, start + n) / 8000
    return np.round(peak * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def co_talks(daa, seconds, freq=1000.0, peak=8000.0):
    """The CO writes a tone on the line every 20 ms (as VirtualCO does)."""
    pos = [0]

    def frame(eventtime):
        daa.emu.analog.device.write(tone(freq, peak, start=pos[0]))
        pos[0] += N
        return eventtime + 0.02

    timer = daa.reactor.register_timer(frame, daa.reactor.now())
    got = daa.capture(seconds)
    daa.reactor.unregister_timer(timer)
    return got


def rms(x):
    return float(np.sqrt(np.mean(np.asarray(x, float) ** 2)))


# ---- identity, SPI framing, reset ----

def test_reference_bring_up_one_byte_per_frame_brings_the_line_side_up(daa):
    daa.bring_up("GERMANY")
    assert daa.read(11) >> 4 == M.LSID_SI3019 and daa.read(11) & 0x0F == M.REVA
    assert daa.read(12) & M.FDT
    assert (daa.read(13) >> 2) & 0x0F == M.LRV
    assert daa.emu.violations == [] and daa.emu.bad_frames == 0


def test_a_three_byte_frame_is_refused_and_named(daa):
    daa.reset()
    assert daa.spi.transfer(bytes((0x60, 2, 0))) == b"\xff\xff\xff"  # what the old driver read
    daa.spi.transfer(bytes((0x20, 6, 0x00)))  # tries to power the line side
    assert daa.emu.regs[6] == M.PDL and daa.emu.bad_frames == 2
    (rule,) = daa.emu.violations
    assert "3-byte SPI frame" in rule and "chip-select must rise" in rule and "wctdm.c" in rule
    assert daa.read(2) == 0x03  # one byte a frame still works afterwards


def test_control_byte_without_bit5_is_not_taken(daa):
    daa.reset()
    for byte in (0x00, 6, 0x00):
        daa.spi.transfer(bytes([byte]))
    assert daa.emu.regs[6] == M.PDL
    assert any("without bit 5" in v for v in daa.emu.violations)


def test_reset_pin_and_soft_reset_restore_reset_values(daa):
    daa.bring_up()
    daa.write(26, 0xC2)
    daa.write(1, 0x80)  # SR
    assert daa.read(26) == 0 and daa.read(6) == M.PDL and not daa.read(11) >> 4
    daa.write(30, 3)
    daa.gpio.setup_output(RESET, False)
    assert daa.emu.regs[30] == 0
    assert daa.spi.transfer(b"\x60") == b"\xff"
    assert any("RESET is held low" in v for v in daa.emu.violations)


def test_register_table_is_complete_and_cited():
    assert set(M.REGISTERS) == set(range(1, 8)) | set(range(10, 27)) | set(range(28, 53)) | {59}
    assert all(r.source for r in M.REGISTERS.values())
    assert M.REGISTERS[2].reset == 0x03 and M.REGISTERS[6].reset == M.PDL
    assert M.REGISTERS[31].reset == 0x20 and M.REGISTERS[24].reset == 0x19


# ---- PCLK and the isolation link ----

def test_without_pclk_the_line_side_never_comes_up(reactor):
    daa = Daa(reactor, clock=False)
    daa.bring_up()
    assert daa.read(11) >> 4 == 0 and not daa.read(12) & M.FDT
    assert any("without PCLK" in v for v in daa.emu.violations)
    daa.highway.start()  # the clock comes: the link frames
    reactor.run_for(0.2)
    assert daa.read(11) >> 4 == M.LSID_SI3019


def test_pclk_stopping_drops_the_link_and_the_line(daa):
    hook = []
    daa.emu.watch_hook(hook.append)
    daa.bring_up()
    daa.write(5, 0x09)
    assert hook == [True] and daa.emu.loop_current() > 20
    daa.highway.stop()
    assert daa.read(11) >> 4 == 0 and not daa.read(12) & M.FDT
    daa.reactor.run_for(0.01)
    assert hook == [True, False] and daa.emu.loop_current() == 0
    assert any("PCLK stopped" in v for v in daa.emu.violations)


def test_no_line_side_device_never_links(reactor):
    daa = Daa(reactor)
    daa.emu.line_side = False
    daa.bring_up()
    assert daa.read(11) >> 4 == 0


# ---- country settings and their consequences ----

def test_programmed_line_settings_read_back_as_fxo_modes_fields(daa):
    daa.bring_up("AUSTRALIA")
    got = daa.emu.line_settings()
    mode = M.FXO_MODES["AUSTRALIA"]
    assert {k: got[k] for k in mode._fields} == mode._asdict()
    assert got["full"] == 1 and got["rfwe"] == 1
    assert daa.emu.ac_termination == "220 ohm + (820 ohm || 120 nF)"
    assert daa.emu.on_hook_speed_ms == 26.0  # OHS: Australian spark quenching
    assert daa.emu.country_mismatches("AUSTRALIA") == []


def test_generic_tbr21_for_the_uk_is_caught_at_seizure(daa):
    daa.bring_up("TBR21")  # what the old driver wrote for uk/de/fr
    daa.emu.expect_country("UK")
    daa.write(5, 0x09)  # off hook
    text = "\n".join(daa.emu.violations)
    assert "register 30" in text and 'fxo_modes.h "UK"' in text  # ACIM 2, UK gives 5
    assert "register 31" in text  # OHS2 missing


def test_missing_full_bit_is_caught_and_makes_the_line_hotter(reactor):
    good, bad = Daa(reactor), Daa(reactor)
    good.bring_up("FCC")
    bad.bring_up("FCC", reg31=0x23)  # the old driver's register 31: FULL left out
    for d in (good, bad):
        d.emu.expect_country("FCC")
        d.write(5, 0x09)
    assert good.emu.violations == []
    assert any("register 31" in v and "0x23" in v for v in bad.emu.violations)
    loud = [rms(g711.ulaw_decode(tdm.slot_bytes(co_talks(d, 0.2), 0))) for d in (good, bad)]
    assert 20 * np.log10(loud[1] / loud[0]) == pytest.approx(3.2, abs=0.3)


def test_ilim_limits_loop_current_to_60_ma(reactor):
    limited, plain = Daa(reactor), Daa(reactor)
    limited.bring_up("TBR21")
    plain.bring_up("FCC")
    for d in (limited, plain):
        d.emu.line_feed(battery_v=60.0, loop_ohm=0.0)  # short loop, strong battery
        d.write(5, 0x09)
    assert limited.emu.loop_current() == pytest.approx(60.0, abs=0.1)
    assert plain.emu.loop_current() > 100
    assert limited.read(28) * M.LCS2_MA_PER_BIT == pytest.approx(60.0, abs=1.1)


def test_dcv_sets_the_off_hook_voltage(reactor):
    high, low = Daa(reactor), Daa(reactor)
    high.bring_up("FCC")  # DCV = 11
    low.bring_up("BRAZIL")  # DCV = 00
    for d in (high, low):
        d.write(5, 0x09)
    assert high.emu.line_voltage() - low.emu.line_voltage() == pytest.approx(0.4, abs=0.05)
    assert 5 <= high.read(29) <= 12


def test_off_hook_before_the_link_is_up_seizes_nothing(reactor):
    daa = Daa(reactor, clock=False)
    daa.reset()
    daa.write(5, 0x09)
    assert not daa.emu.offhook
    assert any("OH set with the isolation link down" in v for v in daa.emu.violations)


# ---- ring detection and interrupts ----

def test_validated_ring_latches_rdti_and_drives_int_low_until_cleared(daa):
    daa.bring_up()
    daa.write(22, 0x0E)  # RMX
    daa.write(23, 0x0A)  # RTO 128 ms, RCC 200 ms
    daa.write(24, M.RNGV | 0x0F)  # RAS
    daa.write(3, M.RDTI)
    daa.write(2, M.INTE | M.HBE | M.RXE)
    daa.emu.line_ring(20.0)
    daa.reactor.run_for(0.19)
    assert not daa.read(4) & M.RDTI
    daa.reactor.run_for(0.02)
    assert daa.read(4) & M.RDTI and daa.read(5) & M.RDT and not daa.gpio.read(INT)
    daa.write(4, 0x00)
    assert daa.gpio.read(INT)


# ---- PCM: the programmed slot, the programmed law, the audio path ----

@pytest.mark.parametrize("law, code, decode", [("ulaw", 0x28, g711.ulaw_decode),
                                               ("alaw", 0x20, g711.alaw_decode)])
def test_line_audio_lands_on_the_programmed_slot_in_the_programmed_law(daa, law, code, decode):
    daa.bring_up(slot=2, law=code)
    daa.write(5, 0x09)
    frames = co_talks(daa, 0.3)
    assert daa.emu.pcm_law == law
    got = decode(tdm.slot_bytes(frames, 2))[N:]  # from the second period on
    assert rms(got) == pytest.approx(rms(tone()), rel=0.05)
    for other in (0, 1, 3):  # nobody drives these: DTX idles high
        assert (tdm.slot_bytes(frames, other) == 0xFF).all()


def test_the_pis_playback_reaches_the_line_from_the_programmed_rx_slot(daa):
    daa.bring_up(slot=1)
    daa.write(5, 0x09)
    for i in range(10):
        slots = {1: g711.ulaw_encode(tone(500, start=i * N)), 2: np.zeros(N, np.uint8)}
        daa.highway.playback.append(tdm.pack_slots(slots, N))
    daa.reactor.run_for(0.2)
    heard = []
    while (frame := daa.emu.analog.device.read()) is not None:
        heard.append(frame)
    heard = np.concatenate(heard)
    assert rms(heard) == pytest.approx(rms(tone(500)), rel=0.05)


def test_no_line_audio_on_hook_without_monitor_and_none_without_pcm(daa):
    daa.bring_up()
    daa.write(5, 0x00)  # on hook, ONHM off
    assert (tdm.slot_bytes(co_talks(daa, 0.1), 0) == 0xFF).all()
    daa.write(5, 0x08)  # line monitor on: caller ID can be heard on hook
    assert rms(g711.ulaw_decode(tdm.slot_bytes(co_talks(daa, 0.1), 0))[N:]) > 1000
    daa.write(33, 0x08)  # PCME off
    assert (tdm.slot_bytes(co_talks(daa, 0.1), 0) == 0xFF).all()


def test_a_start_count_outside_the_frame_puts_nothing_on_the_wire(daa):
    daa.bring_up()
    daa.write(34, 2 * 16)  # the old driver's timeslot * 16 for slot 2: bit 32 of a 32-bit frame
    daa.write(5, 0x09)
    frames = co_talks(daa, 0.2)
    assert all((tdm.slot_bytes(frames, s) == 0xFF).all() for s in range(tdm.SLOTS))


@pytest.mark.parametrize("reg, value", [(33, M.PCML | 0x28), (10, M.DDL)])
def test_loopback_returns_the_received_slot_one_period_later(daa, reg, value):
    daa.bring_up(slot=3)  # on hook: loopback needs no line
    daa.write(reg, value | (daa.read(reg) if reg == 10 else 0))
    sent = g711.ulaw_encode(tone(700, n=5 * N))
    for i in range(5):
        daa.highway.playback.append(tdm.pack_slots({3: sent[i * N:(i + 1) * N]}, N))
    frames = daa.capture(0.1)
    back = tdm.slot_bytes(frames, 3)
    assert (back[N:5 * N] == sent[:4 * N]).all()


@pytest.mark.parametrize("gain, regs", [(-35, (16 + 3, 16 + 5)), (60, (6, 0))])
def test_hw_gain_as_wctdm_set_hwgain_writes_it_scales_the_line_audio(daa, gain, regs):
    daa.bring_up()
    daa.write(5, 0x09)
    flat = rms(g711.ulaw_decode(tdm.slot_bytes(co_talks(daa, 0.2, peak=4000), 0))[N:])
    daa.write(39, regs[0])  # rx gain: from the line into PCM
    daa.write(41, regs[1])
    louder = rms(g711.ulaw_decode(tdm.slot_bytes(co_talks(daa, 0.2, peak=4000), 0))[N:])
    assert 20 * np.log10(louder / flat) == pytest.approx(gain / 10, abs=0.3)
    daa.write(15, 0x08)  # RXM
    assert rms(g711.ulaw_decode(tdm.slot_bytes(co_talks(daa, 0.2), 0))[N:]) < 10


def test_an_access_for_another_daisy_chain_channel_is_ignored(daa):
    daa.reset()
    for byte in (0x20 | 0x08, 6, 0x00):  # OAK's bit-reversed channel 1
        daa.spi.transfer(bytes([byte]))
    assert daa.emu.regs[6] == M.PDL
    assert any("daisy-chain channel 8" in v for v in daa.emu.violations)
