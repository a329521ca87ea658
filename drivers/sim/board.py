"""The simulated board: the real chip drivers wired to emulated chips and virtual devices.

Built from the same config document as the box: one SimGpio for every pin, one chip
emulator per configured chip behind a SimSpiDevice at its bus/chip-select, a VirtualPhone
on each FXS line, a VirtualCO on each FXO line and a virtual headset. Audio follows the
box's plan (drivers/bus/tdm.py) through the box's code: one SimHighway per alsa_device,
started before any driver is built (it is the Pi starting its PCM stream: PCLK for the
chips' bring-up), every chip emulator wired to it as a `HighwayDevice`, and the lines'
ports are `TdmBus` slots over a SimPcmStream, exactly as RealBoard's are over ALSA. A
phone or CO is wired to its chip's analog side (`emulator.analog.device`), so audio only
flows through a chip that was programmed for it; with board.pcm.clock_master = "card"
the highway's clock runs from power-up and outlives the stream. Chips named in `unseated`
are put in their emulator's not-seated mode (every read answers 0xFF, as MISO floats
high) to rehearse a card out of its slot. Exposes `.phones[line]`, `.cos[line]`,
`.headset` (the virtual one), `.emulators[chip]`, `.highways[alsa_device]`, and from
`Board`: `.drivers[line]`, `.pcm[line]` (the TdmBus port), `.tdm[alsa_device]`, `.headset_driver`,
`.lifeline` (the relay's driver on the SimGpio). With `lifeline_bypass=True` (the
simulated box, `branchline run --sim`) the relay's twin and its contacts
(drivers/sim/lifeline_sim.py: `.relay`, `.bypass`) sit between the lifeline's phone and
CO, as on the card: until something energises the relay (the Gateway once its ports are
up) the phone on fxs1 is on the CO's line, and a reactor that stops for longer than the
monostable's hold (1 s) drops it there, as a hung core would. Harnesses that run the
reactor only in bursts between their own steps (the e2e and demo scripts) leave the
bypass out, since their pauses would play a hung core; the default wires that phone
straight to its SLIC.
"""

from __future__ import annotations

import importlib

from drivers.board import Board
from drivers.bus.gpio import SimGpio
from drivers.bus.pcm import TdmBus
from drivers.bus.spi import SimSpiDevice
from drivers.chips.headset import Headset
from drivers.sim import lifeline_sim
from drivers.sim.headset_sim import SimHeadset
from drivers.sim.highway import SimHighway, SimPcmStream

# chip type -> the emulator class name in its drivers.sim module
EMULATORS = {
    "si3215": ("drivers.sim.si3215_sim", "Si3215Emulator"),
    "si3210": ("drivers.sim.si3215_sim", "Si3215Emulator"),
    "si3050": ("drivers.sim.si3050_sim", "Si3050Emulator"),
}
DEFAULT_CO_NUMBER = "5551230100"


def _class(module: str, name: str):
    return getattr(importlib.import_module(module), name)


def _unseat(emulator) -> None:
    """Put an emulator in its not-seated mode: it answers 0xFF to every read."""
    if hasattr(emulator, "not_seated"):
        emulator.not_seated = True
    else:
        emulator.seated = False


class SimBoard(Board):
    def __init__(self, reactor, doc: dict, unseated: tuple[str, ...] | set[str] = (),
                 lifeline_bypass: bool = False) -> None:
        super().__init__(reactor, doc)
        self.gpio = SimGpio()
        self.unseated = set(unseated)
        self.emulators: dict[str, object] = {}
        self.spi: dict[str, SimSpiDevice] = {}
        self.highways: dict[str, SimHighway] = {}
        self.phones: dict[str, object] = {}
        self.cos: dict[str, object] = {}
        wiring = (lifeline_sim.build(reactor, self.gpio, doc["board"].get("lifeline"))
                  if lifeline_bypass else None)
        self.relay, self.bypass = wiring or (None, None)
        self._start_pcm()  # the Pi starts its streams before any chip is brought up
        for name, line, chip_name, chip in self.lines():
            self._build_line(name, line, chip_name, chip)
        self._build_headset()
        self.build_lifeline(self.gpio)

    def _build_line(self, name: str, line: dict, chip_name: str, chip: dict) -> None:
        emulator = self._emulator(chip)
        self.emulators[chip_name] = emulator
        if chip_name in self.unseated:
            _unseat(emulator)
        spi = SimSpiDevice(chip["spi_bus"], chip["spi_cs"], emulator)
        self.spi[chip_name] = spi
        device = line.get("alsa_device", "")
        self.pcm[name] = self.tdm[device].port(int(line.get("timeslot", 0)), name)
        analog = self._wire_pcm(emulator, self.highways[device])
        self.build_driver(name, line, chip, spi, self.gpio)
        if line["kind"] == "fxs":
            phone_cls = _class("drivers.sim.phone", "VirtualPhone")
            slic, end = lifeline_sim.wire(self.bypass, name, emulator, analog)
            self.phones[name] = phone_cls(self.reactor, slic, end, name=f"phone-{name}")
        else:
            co_cls = _class("drivers.sim.central_office", "VirtualCO")
            daa, end = lifeline_sim.wire(self.bypass, name, emulator, analog)
            self.cos[name] = co_cls(self.reactor, daa, end,
                                    country=self.line_settings(line)["country"],
                                    number=line.get("number") or DEFAULT_CO_NUMBER)

    def _start_pcm(self) -> None:
        """One highway and TdmBus per alsa_device, running from now until close()."""
        pcm = self.doc["board"].get("pcm", {})
        card_clock = pcm.get("clock_master", "pi") == "card"
        for device in dict.fromkeys(ln.get("alsa_device", "") for ln in self.doc["lines"].values()):
            highway = SimHighway(self.reactor, device, card_clock=card_clock)
            self.highways[device] = highway
            self.tdm[device] = TdmBus(SimPcmStream(highway), pcm.get("law", "ulaw"),
                                      self.reactor).start()

    def _wire_pcm(self, emulator, highway: SimHighway):
        """PCLK, FSYNC, DTX and DRX to the chip; its analog end for the phone or CO."""
        emulator.attach_highway(highway)
        highway.attach(emulator)
        return emulator.analog.device

    def close(self) -> None:
        super().close()
        for bus in self.tdm.values():
            bus.close()  # the Pi's streams end: the highways' clocks stop

    def _emulator(self, chip: dict):
        cls = _class(*EMULATORS[chip["type"]])
        extra = {"part": chip["type"]} if chip["type"] in ("si3215", "si3210") else {}
        return cls(self.reactor, self.gpio, chip["reset_gpio"], chip["int_gpio"], **extra)

    def _build_headset(self) -> None:
        settings = self.doc["board"].get("headset", {})
        if not settings.get("enabled", False):
            self.headset = None
            return
        self.headset = SimHeadset(self.reactor, rate=int(settings.get("rate", 48000)),
                                  device=settings.get("alsa_device", "default"))
        self.headset_driver = Headset("headset", self.reactor, settings,
                                      open_pcm=self.headset.open_pcm,
                                      present=self.headset.present, on_event=self.emit)
