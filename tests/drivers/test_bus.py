"""The three buses: real implementations' error paths on this machine, and the twins.

The real classes are driven for real where this machine allows it (no /dev/spidev*, and
spidev, RPi.GPIO and alsaaudio are not installed in the venv); where a Pi would be needed
(an edge from RPi.GPIO's thread, ALSA's period sizes), a stand-in module sits exactly at
the hardware boundary, in place of the C extension.
"""

import errno
import sys
import threading
import types

import numpy as np
import pytest

from cext import g711
from drivers.bus import gpio as gpio_mod
from drivers.bus import tdm
from drivers.bus.gpio import BOTH, FALLING, RISING, RpiGpio, SimGpio
from drivers.bus.pcm import FRAME, AlsaPcm, SimPcmLink, TdmBus
from drivers.bus.spi import SimSpiDevice, SpidevDevice, open_error
from foundation.errors import HardwareError

# -- SPI --------------------------------------------------------------------------------


def test_spidev_node_missing_on_the_real_dev_names_node_and_overlay():
    with pytest.raises(HardwareError) as exc:
        SpidevDevice(9, 7).open()  # the real open() on the real /dev; no Pi has bus 9
    msg = str(exc.value)
    assert msg.startswith("/dev/spidev9.7 not found: install the card's overlay "
                          "(image/overlays/branchline-card-overlay.dts")
    assert "\n" not in msg


def test_spidev_node_missing_in_a_dev_dir(tmp_path):
    with pytest.raises(HardwareError, match=r"spidev0\.1 not found: install the card's overlay"):
        SpidevDevice(0, 1, dev_dir=str(tmp_path)).open()


def test_spidev_module_missing_is_named_with_the_install_hint(tmp_path, monkeypatch):
    (tmp_path / "spidev0.0").write_bytes(b"")  # the node is there; the module is not
    monkeypatch.setitem(sys.modules, "spidev", None)
    with pytest.raises(HardwareError) as exc:
        SpidevDevice(0, 0, dev_dir=str(tmp_path)).open()
    assert str(exc.value) == (
        "python module spidev is not installed: pip install 'branchline[hw]' on the box")


def test_spidev_permission_denied_names_node_and_group():
    err = open_error("/dev/spidev0.1", OSError(errno.EACCES, "Permission denied"))
    assert "/dev/spidev0.1" in str(err) and "'spi' group" in str(err)


class _FakeSpiDev:
    """Stands in for spidev.SpiDev (the C extension): echoes bytes + 1."""

    def __init__(self):
        self.opened, self.mode, self.max_speed_hz, self.closed = None, None, None, False

    def open(self, bus, cs):
        self.opened = (bus, cs)

    def xfer2(self, data):
        return [(b + 1) & 0xFF for b in data]

    def close(self):
        self.closed = True


def test_spidev_sets_mode_and_speed_and_transfers_bytes(tmp_path, monkeypatch):
    (tmp_path / "spidev1.0").write_bytes(b"")
    made = []
    fake = types.ModuleType("spidev")
    fake.SpiDev = lambda: made.append(_FakeSpiDev()) or made[-1]
    monkeypatch.setitem(sys.modules, "spidev", fake)
    dev = SpidevDevice(1, 0, mode=3, hz=1_000_000, dev_dir=str(tmp_path)).open()
    assert dev.transfer(b"\x00\xfe\xff") == b"\x01\xff\x00"
    assert (made[0].opened, made[0].mode, made[0].max_speed_hz) == ((1, 0), 3, 1_000_000)
    dev.close()
    assert made[0].closed


def test_sim_spi_with_nothing_seated_floats_high():
    assert SimSpiDevice(0, 1, None).transfer(b"\x80\x00") == b"\xff\xff"


# -- GPIO -------------------------------------------------------------------------------


def test_rpi_gpio_module_missing(monkeypatch, reactor):
    monkeypatch.setitem(sys.modules, "RPi", None)
    with pytest.raises(HardwareError, match=r"RPi\.GPIO is not installed: pip install 'branchline\[hw\]'"):
        RpiGpio(reactor).open()


def test_rpi_gpio_off_a_pi_names_gpiomem(tmp_path, monkeypatch, reactor):
    # A module that behaves like RPi.GPIO does on import when it is not on a Pi.
    pkg = tmp_path / "RPi"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "GPIO.py").write_text(
        "raise RuntimeError('This module can only be run on a Raspberry Pi!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("RPi", "RPi.GPIO"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(HardwareError) as exc:
        RpiGpio(reactor).open()
    assert str(exc.value) == gpio_mod.GPIO_HINT and "/dev/gpiomem" in str(exc.value)


def _fake_rpi_gpio():
    """Stands in for RPi.GPIO (C extension): records setup, keeps edge callbacks."""
    g = types.ModuleType("RPi.GPIO")
    g.BCM, g.OUT, g.IN, g.HIGH, g.LOW = "BCM", "OUT", "IN", 1, 0
    g.PUD_UP, g.PUD_OFF, g.RISING, g.FALLING, g.BOTH = "up", "off", "r", "f", "b"
    g.levels, g.setups, g.edges, g.cleaned = {}, {}, {}, None
    g.setwarnings = lambda on: None
    g.setmode = lambda mode: None
    g.setup = lambda pin, d, **kw: g.setups.__setitem__(pin, (d, kw))
    g.output = lambda pin, level: g.levels.__setitem__(pin, level)
    g.input = lambda pin: g.levels.get(pin, 1)
    g.add_event_detect = lambda pin, edge, callback: g.edges.__setitem__(pin, (edge, callback))
    g.cleanup = lambda pins: setattr(g, "cleaned", pins)
    pkg = types.ModuleType("RPi")
    pkg.GPIO = g
    return pkg, g


def test_rpi_gpio_edges_from_its_thread_run_on_the_reactor(monkeypatch, reactor):
    pkg, g = _fake_rpi_gpio()
    monkeypatch.setitem(sys.modules, "RPi", pkg)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", g)
    gpio = RpiGpio(reactor).open()
    gpio.setup_output(17, False)
    gpio.setup_input(27, pull_up=True)
    seen = []
    gpio.on_edge(27, FALLING, lambda pin, level: seen.append((pin, level, threading.current_thread())))
    assert g.setups[17] == ("OUT", {"initial": 0}) and g.setups[27] == ("IN", {"pull_up_down": "up"})
    worker = threading.Thread(target=g.edges[27][1], args=(27,))
    worker.start()
    worker.join()
    assert seen == []  # not run on RPi.GPIO's thread
    reactor.run_for(0.01)
    assert seen == [(27, False, threading.current_thread())]
    gpio.close()
    assert g.cleaned == [17, 27]


def test_sim_gpio_falling_edge_fires_once_per_transition():
    gpio = SimGpio()
    gpio.setup_input(27, pull_up=True)
    falls, rises, both = [], [], []
    gpio.on_edge(27, FALLING, lambda p, lv: falls.append(lv))
    gpio.on_edge(27, RISING, lambda p, lv: rises.append(lv))
    gpio.on_edge(27, BOTH, lambda p, lv: both.append(lv))
    gpio.drive(27, False)
    gpio.drive(27, False)  # still low: no new edge
    assert (falls, rises, gpio.read(27)) == ([False], [], False)
    gpio.drive(27, None)  # released: the pull-up brings it high
    assert (falls, rises, both, gpio.read(27)) == ([False], [True], [False, True], True)


def test_sim_gpio_outputs_are_watched_and_inputs_cannot_be_written():
    gpio = SimGpio()
    writes = []
    gpio.watch_output(17, writes.append)
    gpio.setup_output(17, True)
    gpio.write(17, False)
    assert writes == [True, False] and gpio.level(17) is False
    gpio.setup_input(27)
    with pytest.raises(ValueError, match="GPIO27 is not set up as an output"):
        gpio.write(27, True)


def test_sim_gpio_input_without_pull_follows_the_driver():
    gpio = SimGpio()
    gpio.drive(6, False)  # driven before the driver set the pin up
    gpio.setup_input(6, pull_up=True)
    assert gpio.read(6) is False


# -- PCM --------------------------------------------------------------------------------


def test_sim_pcm_link_carries_frames_both_ways_and_checks_size():
    link = SimPcmLink("fxs1")
    a = np.arange(FRAME, dtype=np.int16)
    link.gateway.write(a)
    link.device.write(-a)
    assert np.array_equal(link.device.read(), a) and np.array_equal(link.gateway.read(), -a)
    assert link.gateway.read() is None
    with pytest.raises(ValueError, match="fxs1: frame of"):
        link.gateway.write(np.zeros(80, dtype=np.int16))


def test_sim_pcm_link_keeps_only_the_newest_frames_when_nobody_reads():
    link = SimPcmLink("fxo1", depth=3)
    for i in range(5):
        link.device.write(np.full(FRAME, i, dtype=np.int16))
    assert [int(link.gateway.read()[0]) for _ in range(3)] == [2, 3, 4]


def test_alsa_module_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "alsaaudio", None)
    with pytest.raises(HardwareError, match=r"alsaaudio is not installed: pip install 'branchline\[hw\]'"):
        AlsaPcm("hw:0,0", 8000, FRAME).open()


class _FakeAlsaPcm:
    """Stands in for alsaaudio.PCM: hands out captured bytes in uneven chunks."""

    def __init__(self, module, type, mode, device, channels, rate, format, periodsize):
        if device not in module.cards:
            raise module.ALSAAudioError(f"No such file or directory [{device}]")
        self.kind, self.channels, self.module = type, channels, module
        self.closed = False

    def read(self):
        if not self.module.chunks:
            return -11, b""  # -EAGAIN: nothing yet (non-blocking)
        data = self.module.chunks.pop(0)
        return len(data) // (2 * self.channels), data

    def write(self, data):
        self.module.played.append(data)
        return len(data) // (2 * self.channels)

    def close(self):
        self.closed = True


def _fake_alsa(cards=("hw:0,0",)):
    m = types.ModuleType("alsaaudio")
    m.PCM_CAPTURE, m.PCM_PLAYBACK, m.PCM_NONBLOCK, m.PCM_FORMAT_S16_LE = 1, 0, 1, 2
    m.ALSAAudioError = type("ALSAAudioError", (Exception,), {})
    m.cards, m.chunks, m.played = set(cards), [], []
    m.PCM = lambda **kw: _FakeAlsaPcm(m, **kw)
    return m


def test_alsa_device_that_does_not_open_names_device_and_arecord(monkeypatch):
    monkeypatch.setitem(sys.modules, "alsaaudio", _fake_alsa())
    with pytest.raises(HardwareError) as exc:
        AlsaPcm("hw:3,0", 8000, FRAME).open()
    assert "ALSA device 'hw:3,0' did not open" in str(exc.value)
    assert "arecord -l" in str(exc.value)


def test_alsa_read_returns_whole_periods_and_keeps_leftovers(monkeypatch):
    alsa = _fake_alsa()
    monkeypatch.setitem(sys.modules, "alsaaudio", alsa)
    pcm = AlsaPcm("hw:0,0", 8000, FRAME).open()
    samples = np.arange(2 * FRAME + 30, dtype="<i2")
    raw = samples.tobytes()
    alsa.chunks = [raw[:100], raw[100:500], raw[500:]]  # cuts inside periods and samples
    assert pcm.read() is None  # 50 samples so far
    first = pcm.read()
    second = pcm.read()
    assert np.array_equal(first, samples[:FRAME]) and np.array_equal(second, samples[FRAME:2 * FRAME])
    assert pcm.read() is None  # 30 samples left over, kept for later


def test_tdm_bus_splits_timeslots_and_fills_idle_slots_with_silence(monkeypatch):
    """The lines' ALSA stream is two S16 channels carrying four 8-bit mu-law slots
    (drivers/bus/tdm.py); ports see 160 linear samples, idle slots send 0xFF."""
    alsa = _fake_alsa()
    monkeypatch.setitem(sys.modules, "alsaaudio", alsa)
    bus = TdmBus(AlsaPcm("hw:0,0", 8000, FRAME, channels=2).open(), "ulaw")
    codes = {slot: np.full(FRAME, g711.ulaw_encode(np.array([1000 * (slot + 1)]))[0], np.uint8)
             for slot in range(4)}
    alsa.chunks = [tdm.pack_slots(codes, FRAME).astype("<i2").tobytes()]
    slots = [bus.port(slot, f"line{slot}") for slot in range(3)]
    assert [int(s.read()[0]) for s in slots] == [
        int(g711.ulaw_decode(codes[slot][:1])[0]) for slot in range(3)]
    slots[2].write(np.full(FRAME, 7000, dtype=np.int16))  # the only active port: it goes out
    sent = np.frombuffer(alsa.played[0], dtype="<i2").reshape(-1, 2)
    assert sent.shape == (FRAME, 2)
    assert tdm.slot_bytes(sent, 0)[0] == 0xFF and tdm.slot_bytes(sent, 1)[0] == 0xFF
    assert tdm.slot_bytes(sent, 2)[0] == g711.ulaw_encode(np.array([7000]))[0]
