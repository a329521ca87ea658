"""The ProSLIC twin at register level: the references' sequence works, each wrong drive is refused.

No driver here: a small host speaks to the emulator over its SPI (one byte per chip-select
frame) and follows DAHDI's wctdm.c wctdm_init_proslic step by step, with a knob per step
so that each rule can be broken on purpose. The twin must then say no: a sentence in
`violations` and the chip's physical answer (no battery, a DR31 that stays busy, a
calibration that never ends, no ring voltage, power alarms, no audio on the slot).
"""

import ast
from pathlib import Path

import numpy as np
import pytest

from cext import g711
from drivers.bus import tdm
from drivers.bus.gpio import SimGpio
from drivers.bus.spi import SimSpiDevice
from drivers.sim import proslic_model as M
from drivers.sim.highway import SimHighway
from drivers.sim.phone import VirtualPhone
from drivers.sim.si3215_sim import Si3215Emulator

RESET, INT = 17, 27
ROOT = Path(__file__).resolve().parents[2]
FRAME = 160


class Host:
    """A register-level host on the twin's SPI, DAHDI-style (wctdm.c __wctdm_setreg/getreg)."""

    def __init__(self, reactor, emu):
        self.reactor, self.emu = reactor, emu
        self.spi = SimSpiDevice(0, 0, emu)
        self.translate = False  # wctdm.c translate_3215, once FLAG_3215 is known

    def wr(self, reg, value):
        self.spi.transfer(bytes([reg & 0x7F]))
        self.spi.transfer(bytes([value & 0xFF]))

    def rd(self, reg):
        self.spi.transfer(bytes([reg | 0x80]))
        return self.spi.transfer(b"\x00")[0]

    def wait_access(self):
        """wctdm.c __wait_access: poll DR31 (bounded)."""
        return any(self.rd(31) == 0 for _ in range(50))

    def _addr(self, addr):
        return M.translate_3215(addr) if self.translate else addr

    def wr_ir(self, addr, value):
        addr = self._addr(addr)
        if addr is None:
            return True
        ok = self.wait_access()
        self.wr(28, value & 0xFF)
        self.wr(29, value >> 8)
        self.wr(30, addr)
        return ok

    def rd_ir(self, addr):
        addr = self._addr(addr)
        if addr is None:
            return 0
        self.wait_access()
        self.wr(30, addr)
        if not self.wait_access():
            return None
        return self.rd(28) | self.rd(29) << 8

    def until(self, cond, timeout, step=0.002):
        end = self.reactor.now() + timeout
        while self.reactor.now() < end:
            if cond():
                return True
            self.reactor.run_for(step)
        return cond()


def ir210(name):
    return M.SI3210_IR[name]


def rig(reactor, part="si3215", clock=True, board=None):
    gpio = SimGpio()
    gpio.setup_output(RESET, True)
    emu = Si3215Emulator(reactor, gpio, RESET, INT, part=part, board=board)
    highway = SimHighway(reactor, "hw:0,0")
    emu.attach_highway(highway)
    if clock:
        highway.start()
    return emu, Host(reactor, emu), highway, gpio


def insane(host):
    """wctdm.c wctdm_proslic_insane: None when sane, else the reason."""
    rev = host.rd(0) & 0x0F
    if rev in (0, 0xF) or rev < 2:
        return f"revision {rev}"
    host.translate = bool(host.rd(1) & 0x80)
    if host.rd(8) != 0x02 or host.rd(64) != 0 or host.rd(11) != 0x33:
        return "sanity registers"
    host.wr(30, 0)
    return None


def powerup(host, k):
    """wctdm.c wctdm_powerup_proslic (fast = 0): True when the battery came up."""
    if k["dr92"] is not None:
        host.wr(92, k["dr92"])
    host.wr(14, 0)
    up = host.until(lambda: host.rd(82) >= 0xC0, 0.5)
    host.wr(71, 0)
    host.wr(93, k["dr93"])
    return up


def bring_up(host, **knobs):
    """wctdm.c wctdm_init_proslic(fast=0, manual, sane=0) with a knob per step; returns
    what a driver would conclude: {"failed": reason or "", ...}."""
    k = {"translate": True, "dr92": 0xFF, "dr93": 0x19, "battery_safe": True, "flush": True,
         "manual": False, "pcm": 0x28, "slot": 0, "clear_loopback": True, "table": True,
         "skip": (), **knobs}
    out = {"failed": ""}
    reason = insane(host)
    if reason:
        return {"failed": reason}
    host.translate = host.translate and k["translate"]
    for name, value in M.WCTDM_INDIRECT.items() if k["table"] else ():
        if name in k["skip"]:
            continue
        if not host.wr_ir(ir210(name), value):
            out["failed"] = out["failed"] or "indirect access timed out"
    host.wr_ir(97, 0)  # scratch pad
    if k["clear_loopback"]:
        host.wr(8, 0)
    host.wr(108, 0xEB)
    if k["battery_safe"]:
        host.wr(67, 0x07)
        host.wr(66, 0x01)
    saved = [host.rd_ir(35 + x) for x in range(5)]
    if k["flush"]:
        for x in range(5):
            host.wr_ir(35 + x, 0x8000)
    if not powerup(host, k):
        return {**out, "failed": "battery did not come up"}
    host.wr(64, 0)  # wctdm_proslic_powerleak_test
    host.wr(14, 0x10)
    out["leaky"] = host.until(lambda: host.rd(82) <= 6, 0.5)
    if not powerup(host, k):
        return {**out, "failed": "battery did not come up (final)"}
    if not (manual_calibrate(host) if k["manual"] else auto_calibrate(host)):
        return {**out, "failed": "calibration timed out"}
    host.wr(93, 0x99)
    out["dr107"] = host.rd(107)
    for x in range(5):
        host.wr_ir(35 + x, saved[x] if saved[x] is not None else 0)
    out["verify"] = [name for name, value in M.WCTDM_INDIRECT.items()
                     if host._addr(ir210(name)) is not None and host.rd_ir(ir210(name)) != value]
    if out["verify"]:
        out["failed"] = out["failed"] or "indirect registers failed verification"
    host.wr(1, k["pcm"])
    for reg, value in ((2, k["slot"] * 8), (3, 0), (4, k["slot"] * 8), (5, 0)):
        host.wr(reg, value)
    for reg in (18, 19, 20):
        host.wr(reg, 0xFF)
    host.wr(73, 0x04)
    host.wr(34, 0x00)  # wctdm_set_ring_generator_mode, not neon
    host.wr_ir(22, 0x0000)
    host.wr_ir(29, 0x3600)
    for reg in (21, 22, 23):
        host.wr(reg, 0xFF)
    host.wr(64, 0x01)  # forward active
    return out


def auto_calibrate(host):
    """wctdm.c wctdm_proslic_calibrate."""
    host.wr(97, 0x1F)
    host.wr(96, 0x5F)
    return host.until(lambda: host.rd(96) == 0, 2.0)


def manual_calibrate(host):
    """wctdm.c wctdm_proslic_manual_calibrate."""
    for reg in (21, 22, 23, 64):
        host.wr(reg, 0)
    host.wr(97, 0x18)
    host.wr(96, 0x47)
    if not host.until(lambda: host.rd(96) == 0, 0.8):
        return False
    for addr in range(88, 94):
        host.wr_ir(addr, 0)
    host.wr(98, 0x10)
    host.wr(99, 0x10)
    for reg, sense in ((98, 88), (99, 89)):
        for i in range(0x1F, 0, -1):
            host.wr(reg, i)
            host.reactor.run_for(0.04)
            if host.rd(sense) == 0:
                break
    host.wr(64, 1)
    host.reactor.run_for(0.1)
    host.wr(64, 0)
    host.wr(23, 0x04)
    host.wr(97, 0x01)
    host.wr(96, 0x40)
    host.rd(96)
    for reg in (21, 22, 23):
        host.wr(reg, 0xFF)
    return True


def has(emu, words):
    return any(words in v for v in emu.violations)


# ---------------------------------------------------------------- the rule the house keeps
def test_no_emulator_imports_the_driver_register_files_or_the_chip_drivers():
    """drivers/sim is written from the references, not from the drivers (issue 9). The
    board harness (board.py) builds the real drivers and is the one exception."""
    wrong = []
    for path in sorted((ROOT / "drivers" / "sim").glob("*.py")):
        if path.name == "board.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            wrong += [f"{path.name}: {n}" for n in names if n.startswith("drivers.chips")]
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- identity and SPI
@pytest.mark.parametrize("part, dr1", [("si3215", 0x88), ("si3210", 0x08)])
def test_identity_and_sanity_values_as_dahdi_reads_them(reactor, part, dr1):
    emu, host, _hw, gpio = rig(reactor, part)
    assert host.rd(1) == dr1  # base.c proslic_insane: an Si3215 reads 0x88
    assert host.rd(0) & 0x0F == 5 and host.rd(0) & 0x30 == 0
    assert (host.rd(8), host.rd(11), host.rd(64), host.rd(14)) == (0x02, 0x33, 0x00, 0x10)
    host.wr(1, 0x28)
    host.wr(8, 0)
    assert host.rd(1) == dr1 | 0x20 and host.rd(8) == 0
    gpio.write(RESET, False)
    assert host.rd(8) == 0xFF  # in reset SDO floats high
    gpio.write(RESET, True)
    assert host.rd(1) == dr1 and host.rd(8) == 0x02  # reset values back
    emu.not_seated = True
    assert host.rd(0) == 0xFF


def test_a_two_byte_chip_select_frame_is_refused(reactor):
    emu, host, _hw, _gpio = rig(reactor)
    emu.spi_transfer(bytes([8, 0x00]))  # control and data in one frame
    assert host.rd(8) == 0x02
    assert has(emu, "one byte")


# ---------------------------------------------------------------- the references' sequence
@pytest.mark.parametrize("part", ["si3215", "si3210"])
@pytest.mark.parametrize("manual", [False, True])
def test_the_wctdm_sequence_brings_the_chip_up(reactor, part, manual):
    emu, host, _hw, _gpio = rig(reactor, part)
    out = bring_up(host, manual=manual)
    assert out["failed"] == "" and not out["leaky"], out
    assert emu.violations == []
    assert out["dr107"] in M.DC_PEAK_CAL_OK
    assert emu.battery_v() == pytest.approx(75, abs=0.5)
    assert host.until(lambda: host.rd(96) == 0, 0.5)  # the last (longitudinal) step too
    if manual:  # the DR98/DR99 searches stopped at the chip's trims
        assert (host.rd(98), host.rd(99)) == (0x11, 0x10)
    assert emu.ring_hz() == pytest.approx(20.5, abs=0.5)
    assert 60 < emu.ring_vpk() < 70
    assert emu.linefeed == M.Linefeed.FORWARD_ACTIVE
    emu.set_loop(True)
    reactor.run_for(1.0)
    assert host.rd(68) & 0x01 and emu.solve()[2] >= 19.9  # DR71 = 0: 20 mA limit
    assert emu.alarm_log == [] and emu.linefeed == M.Linefeed.FORWARD_ACTIVE


def test_ringing_puts_ring_voltage_on_the_line(reactor):
    emu, host, _hw, _gpio = rig(reactor)
    bring_up(host)
    host.wr(64, 0x04)
    reactor.run_for(0.5)
    assert emu.ring_voltage
    host.wr(64, 0x01)
    assert not emu.ring_voltage


# ---------------------------------------------------------------- PCLK
def test_without_pclk_indirect_access_never_completes(reactor):
    emu, host, highway, _gpio = rig(reactor, clock=False)
    host.translate = True
    host.wr_ir(ir210("RING_OSC"), 0x7EF0)
    reactor.run_for(1.0)
    assert host.rd(31) != 0 and not host.wait_access()  # DR31 stays busy
    assert emu.ir_named("RING_OSC") == 0
    assert has(emu, "without PCLK")
    highway.start()  # the Pi starts its stream: the pending access completes
    assert host.wait_access() and emu.ir_named("RING_OSC") == 0x7EF0


def test_without_pclk_no_battery_and_no_calibration(reactor):
    emu, host, highway, _gpio = rig(reactor, clock=False)
    insane(host)
    host.wr(92, 0xFF)
    host.wr(14, 0)
    reactor.run_for(0.5)
    assert host.rd(82) == 0 and has(emu, "without PCLK")
    host.wr(97, 0x1F)
    host.wr(96, 0x5F)
    assert not host.until(lambda: host.rd(96) == 0, 2.5)  # a driver times out: ChipFailed
    highway.start()
    assert host.until(lambda: host.rd(82) >= 0xC0, 0.5)  # the converter switches now


def test_stopping_the_clock_collapses_the_battery(reactor):
    emu, host, highway, _gpio = rig(reactor)
    bring_up(host)
    highway.stop()
    reactor.run_for(10)
    assert emu.battery_v() < 2


# ---------------------------------------------------------------- DC-DC converter
def test_no_battery_when_dr92_was_not_programmed_before_dr14(reactor):
    emu, host, _hw, _gpio = rig(reactor)
    out = bring_up(host, dr92=None)
    assert out["failed"] == "battery did not come up"
    assert emu.battery_v() == 0 and has(emu, "before its PWM period DR92")
    host.wr(92, 0xFF)  # too late: the converter was already told to start
    reactor.run_for(0.5)
    assert emu.battery_v() == 0
    host.wr(14, 0x10)
    host.wr(14, 0x00)  # a new power-up with the period programmed
    assert host.until(lambda: host.rd(82) >= 0xC0, 0.5)


@pytest.mark.parametrize("dr92, dr93", [(0x10, 0x19), (0xFF, 0x3F)])
def test_a_misprogrammed_converter_sags_alarms_and_fails_its_calibration(reactor, dr92, dr93):
    emu, host, _hw, _gpio = rig(reactor)
    host.wr(22, 0xFF)
    out = bring_up(host, dr92=dr92, dr93=dr93)
    assert has(emu, "outside this board's")
    assert out["failed"].startswith("battery did not come up")  # it sags below 0xc0
    reactor.run_for(1.0)
    assert emu.alarm_log and emu.linefeed == M.Linefeed.OPEN  # DR67 bit 0: auto-open
    assert 0.4 * 75 < emu.battery_v() < 0.6 * 75


def test_dc_dc_calibration_of_a_misprogrammed_converter_reads_out_of_range(reactor):
    emu, host, _hw, _gpio = rig(reactor)
    assert bring_up(host)["failed"] == ""
    host.wr(93, 0x3F)
    host.wr(93, 0xBF)
    assert host.rd(107) not in M.DC_PEAK_CAL_OK and has(emu, "outside this board's")


def test_a_board_with_another_inductor_has_its_own_window(reactor):
    board = M.BoardParts.from_dict({"dcdc_period": [0x08, 0x20]})
    emu, host, _hw, _gpio = rig(reactor, board=board)
    out = bring_up(host, dr92=0x10, dr93=0x1F)
    assert out["failed"] == "" and emu.violations == []


# ---------------------------------------------------------------- Si3215 indirect map
def test_si3210_addresses_on_an_si3215_land_on_other_registers(reactor):
    emu, host, _hw, _gpio = rig(reactor, "si3215")
    host.wr(22, 0xFF)
    out = bring_up(host, translate=False)
    # read-back returns what is there: a verify at the same wrong addresses passes
    assert out["verify"] == []
    assert has(emu, "indirect register 28 does not exist on the si3215")
    assert emu.ir_named("PWR_ALARM_Q3Q4") == 0x7EF0  # RING_OSC landed on a threshold
    assert emu.ir_named("PWR_ALARM_Q5Q6") == 0x0160  # RING_X too
    assert emu.ir_named("RING_OSC") == 0x0198  # a DTMF ratio landed on the ring oscillator
    host.wr(64, 0x04)
    reactor.run_for(1.0)
    assert not emu.ring_voltage and emu.ring_vpk() < 5
    host.wr(64, 0x01)
    emu.set_loop(True)
    reactor.run_for(0.5)
    assert emu.alarm_log and host.rd(19) & 0xFC and emu.linefeed == M.Linefeed.OPEN


def test_an_unwritten_indirect_table_leaves_power_alarm_thresholds_at_zero(reactor):
    emu, host, _hw, _gpio = rig(reactor, "si3210")
    host.wr(22, 0xFF)
    out = bring_up(host, table=False)
    assert out["verify"]  # a driver that reads back sees it
    emu.set_loop(True)
    reactor.run_for(0.5)
    assert has(emu, "PWR_ALARM_Q1Q2 (IR32) reads 0") and emu.linefeed == M.Linefeed.OPEN


def test_si3210_reads_its_own_addresses(reactor):
    emu, host, _hw, _gpio = rig(reactor, "si3210")
    bring_up(host, translate=False)
    assert emu.ir_named("RING_OSC") == 0x7EF0 and emu.violations == []


# ---------------------------------------------------------------- calibration
def test_calibration_without_battery_never_finishes(reactor):
    emu, host, _hw, _gpio = rig(reactor)
    insane(host)
    assert not auto_calibrate(host)
    assert has(emu, "without battery")


def test_calibration_with_unflushed_filters_is_flagged(reactor):
    emu, host, _hw, _gpio = rig(reactor)
    out = bring_up(host, flush=False)
    assert has(emu, "not flushed")
    assert (host.rd(98), host.rd(99)) == (0x1F, 0x1F) and out["failed"] == ""


def test_common_mode_calibration_with_the_phone_off_hook_raises_cm_bal(reactor):
    emu, host, _hw, _gpio = rig(reactor)
    bring_up(host)
    emu.set_loop(True)
    host.wr(64, 0)
    host.wr(23, 0x04)
    host.wr(97, 0x01)
    host.wr(96, 0x40)
    reactor.run_for(0.5)
    assert host.rd(20) & 0x04  # SiLabs API Si321x_Cal: off-hook phone during calibration


def test_stuck_calibration(reactor):
    emu, host, _hw, _gpio = rig(reactor)
    emu.stuck_calibration = True
    assert bring_up(host)["failed"] == "calibration timed out"


def test_a_hanging_automatic_calibration_leaves_the_manual_path(reactor):
    """What wctdm.c's fallback relies on (wctdm_hardware_init retries with manual = 1)."""
    emu, host, _hw, _gpio = rig(reactor)
    emu.auto_calibration_stuck = True
    assert bring_up(host)["failed"] == "calibration timed out"
    emu.gpio.write(RESET, False)
    emu.gpio.write(RESET, True)
    assert bring_up(host, manual=True)["failed"] == ""


# ---------------------------------------------------------------- battery switching, alarms
def test_automatic_battery_switching_left_on_heats_q7(reactor):
    emu, host, _hw, _gpio = rig(reactor)
    host.wr(22, 0xFF)
    bring_up(host, battery_safe=False)
    assert has(emu, "Q7")
    reactor.run_for(1.0)
    assert any(q == (5, 6) for _t, q, _why in emu.alarm_log)
    assert host.rd(19) & 0xC0 and emu.linefeed == M.Linefeed.OPEN


def test_a_board_built_for_battery_switching_takes_it(reactor):
    emu, host, _hw, _gpio = rig(reactor, board=M.BoardParts(battery_switching=True))
    bring_up(host, battery_safe=False)
    reactor.run_for(1.0)
    assert emu.violations == [] and emu.alarm_log == []


@pytest.mark.parametrize("auto, opened", [(0x07, True), (0x06, False)])
def test_injected_power_alarm_and_auto_open(reactor, auto, opened):
    emu, host, _hw, gpio = rig(reactor)
    bring_up(host)
    host.wr(67, auto)
    emu.inject_power_alarm(3)
    assert host.rd(19) & (1 << 4) and gpio.read(INT) is False
    assert (emu.linefeed == M.Linefeed.OPEN) is opened
    host.wr(19, 0xFF)
    assert gpio.read(INT) is True


# ---------------------------------------------------------------- PCM
def tone(freq=1000.0, amp=8000, n=FRAME * 25):
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / 8000)).astype(np.int16)


def audio_rig(reactor, slot=2, part="si3215", **knobs):
    emu, host, highway, _gpio = rig(reactor, part)
    out = bring_up(host, slot=slot, **knobs)
    assert out["failed"] == ""
    phone = VirtualPhone(reactor, emu, emu.analog.device)
    phone.off_hook()
    reactor.run_for(0.2)
    highway.capture.clear()
    return emu, host, highway, phone


def captured(highway, slot):
    frames = list(highway.capture)
    return np.concatenate([tdm.slot_bytes(f, slot) for f in frames]) if frames else np.zeros(0, np.uint8)


def rms(x):
    return float(np.sqrt(np.mean(np.asarray(x, float) ** 2))) if len(x) else 0.0


def play(highway, slot, codes):
    for i in range(0, len(codes), FRAME):
        highway.playback.append(tdm.pack_slots({slot: codes[i:i + FRAME]}, FRAME))


def test_phone_audio_goes_out_on_exactly_the_programmed_slot(reactor):
    _emu, _host, highway, phone = audio_rig(reactor, slot=2)
    phone.speak(tone())
    reactor.run_for(0.4)
    for slot in range(4):
        got = g711.ulaw_decode(captured(highway, slot))
        assert (rms(got) > 3000) is (slot == 2), slot


def test_gateway_audio_reaches_the_phone_within_one_period(reactor):
    _emu, _host, highway, phone = audio_rig(reactor, slot=1)
    heard_before = len(phone.heard)
    play(highway, 1, g711.ulaw_encode(tone(n=FRAME * 5)))
    reactor.run_for(0.02 * 5 + 0.045)  # five periods out, plus one period in, plus the phone's tick
    heard = phone.heard[heard_before:]
    assert rms(heard) > 1500 and len(heard) >= 5 * FRAME  # DAHDI's table: -6 dB, see below


def test_a_wrong_start_count_puts_the_byte_on_the_wrong_slot(reactor):
    _emu, host, highway, phone = audio_rig(reactor, slot=2)
    host.wr(2, 1 * 8)  # DR2 says slot 1
    highway.capture.clear()
    phone.speak(tone())
    reactor.run_for(0.4)
    assert rms(g711.ulaw_decode(captured(highway, 2))) < 50
    assert rms(g711.ulaw_decode(captured(highway, 1))) > 3000


@pytest.mark.parametrize("dr1, why", [(0x08, "PCM not enabled"), (0x28, "linefeed open")])
def test_no_audio_without_pcm_enable_or_a_fed_line(reactor, dr1, why):
    _emu, host, highway, phone = audio_rig(reactor, slot=0)
    host.wr(1, dr1)
    if why == "linefeed open":
        host.wr(64, 0)
    highway.capture.clear()
    phone.speak(tone())
    heard_before = len(phone.heard)
    play(highway, 0, g711.ulaw_encode(tone(n=FRAME * 5)))
    reactor.run_for(0.3)
    assert rms(g711.ulaw_decode(captured(highway, 0))) < 50, why
    assert rms(phone.heard[heard_before:]) == 0, why


def test_alaw_when_dr1_asks_for_it(reactor):
    _emu, _host, highway, phone = audio_rig(reactor, slot=3, pcm=0x20)
    phone.speak(tone(amp=4000))
    reactor.run_for(0.4)
    codes = captured(highway, 3)
    assert rms(g711.alaw_decode(codes)) == pytest.approx(4000 / np.sqrt(2), rel=0.1)
    assert abs(rms(g711.ulaw_decode(codes)) - 4000 / np.sqrt(2)) > 500


def test_no_audio_once_the_clock_stops(reactor):
    emu, _host, highway, phone = audio_rig(reactor)
    highway.stop()
    assert emu.pcm_transmit(FRAME) is None


def test_digital_loopback_returns_drx_on_dtx(reactor):
    _emu, _host, highway, phone = audio_rig(reactor, slot=1, clear_loopback=False)
    codes = g711.ulaw_encode(tone(n=FRAME * 10))
    heard_before = len(phone.heard)
    play(highway, 1, codes)
    reactor.run_for(0.3)
    back = captured(highway, 1)
    assert rms(g711.ulaw_decode(back)) > 3000
    assert np.array_equal(back[FRAME:FRAME * 10], codes[:FRAME * 9])  # one period later
    assert rms(phone.heard[heard_before:]) == 0  # the analog side is out of the loop


def test_sixteen_bit_linear_spans_two_slots(reactor):
    emu, host, _highway, phone = audio_rig(reactor, slot=0, pcm=0x38)
    phone.speak(tone())
    reactor.run_for(0.1)
    start, data = emu.pcm_transmit(FRAME)
    assert start == 0 and data.dtype == np.uint16
    assert rms(data.view(np.int16)) > 3000


# ---------------------------------------------------------------- audio gains, table order
def peak_heard(reactor, highway, phone, slot, amp=8000):
    """Play a 1 kHz tone of peak `amp` on `slot`: the peak the phone heard."""
    heard_before = len(phone.heard)
    play(highway, slot, g711.ulaw_encode(tone(amp=amp, n=FRAME * 6)))
    reactor.run_for(0.2)
    return int(np.abs(phone.heard[heard_before:]).max(initial=0))


def peak_sent(reactor, highway, phone, slot, amp=8000):
    """Speak a 1 kHz tone of peak `amp` into the phone: the peak on `slot`."""
    highway.capture.clear()
    phone.speak(tone(amp=amp, n=FRAME * 6))
    reactor.run_for(0.2)
    return int(np.abs(g711.ulaw_decode(captured(highway, slot))).max(initial=0))


def test_indirect_registers_read_zero_after_reset(reactor):
    """The twin's power-on value (M.IR_RESET): no reference gives one, all load the table."""
    emu, host, _hw, _gpio = rig(reactor, "si3210")
    insane(host)
    assert [host.rd_ir(a) for a in (26, 27, 28, 32)] == [M.IR_RESET] * 4 == [0] * 4
    assert emu.gain_db(M.RX_GAIN) == emu.gain_db(M.TX_GAIN) == -np.inf


@pytest.mark.parametrize("part", ["si3215", "si3210"])
def test_dahdi_receive_gain_is_6_db_down_at_the_phone_and_0x4000_is_0_db(reactor, part):
    """RECV_DIGITAL_GAIN at the part's own address (IR13 / IR26): DAHDI's 0x2000 halves
    the level toward the phone; 0x4000 passes it unchanged (M.GAIN_UNITY)."""
    emu, host, highway, phone = audio_rig(reactor, slot=1, part=part)
    assert emu.gain_db(M.RX_GAIN) == pytest.approx(-6.02, abs=0.01)
    assert peak_heard(reactor, highway, phone, 1) == pytest.approx(4000, rel=0.03)
    host.wr_ir(ir210(M.RX_GAIN), M.GAIN_UNITY)  # at the part's own address (translate_3215)
    assert emu.ir[{"si3215": 13, "si3210": 26}[part]] == M.GAIN_UNITY
    assert peak_heard(reactor, highway, phone, 1) == pytest.approx(8000, rel=0.03)


def test_transmit_gain_scales_what_the_phone_sends(reactor):
    emu, host, highway, phone = audio_rig(reactor, slot=2)
    assert emu.gain_db(M.TX_GAIN) == 0  # DAHDI's XMIT 0x4000
    assert peak_sent(reactor, highway, phone, 2) == pytest.approx(8000, rel=0.03)
    host.wr_ir(ir210(M.TX_GAIN), 0x2000)
    assert peak_sent(reactor, highway, phone, 2) == pytest.approx(4000, rel=0.03)
    host.wr_ir(ir210(M.TX_GAIN), 0x7FFF)  # about +6 dB: a loud talker clips at 16 bits
    assert peak_sent(reactor, highway, phone, 2, amp=30000) >= 31000


def test_a_table_without_its_gains_mutes_the_line_both_ways(reactor):
    """The physical symptom of a driver that skips the table: a fed line, dial-tone-ready,
    on which the phone hears nothing and says nothing."""
    emu, host, highway, _gpio = rig(reactor)
    out = bring_up(host, slot=0, skip=(M.RX_GAIN, M.TX_GAIN))
    assert out["verify"] == [M.RX_GAIN, M.TX_GAIN]  # a driver that reads back sees it
    assert has(emu, "RECV_DIGITAL_GAIN (IR13)") and has(emu, "XMIT_DIGITAL_GAIN (IR14)")
    phone = VirtualPhone(reactor, emu, emu.analog.device)
    phone.off_hook()
    reactor.run_for(0.2)
    assert emu.linefeed == M.Linefeed.FORWARD_ACTIVE and emu.solve()[2] > 15  # the line is fed
    assert peak_heard(reactor, highway, phone, 0) == 0
    assert peak_sent(reactor, highway, phone, 0) == 0
    assert set(captured(highway, 0)) == {0xFF}  # the mu-law idle code: DTX carries nothing


@pytest.mark.parametrize("lf", [0x01, 0x02, 0x04])
def test_feeding_the_line_before_the_table_is_flagged(reactor, lf):
    """wctdm.c wctdm_init_proslic loads the table first; active, OHT and ringing before
    it are refused by name, each threshold and gain at this part's own address."""
    emu, host, _hw, _gpio = rig(reactor)
    insane(host)
    host.wr(64, 0x00)  # open is no feed: allowed
    assert emu.violations == []
    host.wr(64, lf)
    assert has(emu, "before the indirect table's thresholds and gains were loaded")
    for name in M.LOADED_BEFORE_FEED:
        assert has(emu, f"{name} (IR{M.SI3215_IR[name]})")


def test_dr107_read_before_any_dc_dc_calibration_is_flagged(reactor):
    """DR107 holds its reset value 0x08 until a DC-DC calibration has run: inside
    wctdm.c's 0x2..0xd window, so a check of it proves nothing without DR93 bit 7."""
    emu, host, _hw, _gpio = rig(reactor)
    insane(host)
    assert host.rd(107) in M.DC_PEAK_CAL_OK
    assert has(emu, "DR107 read before any DC-DC calibration")
    emu2, host2, _hw2, _gpio2 = rig(reactor)
    bring_up(host2)  # DR93 = 0x99, then DR107: in order
    assert emu2.violations == []
