"""The simulated board: the real chip drivers wired to emulated chips and virtual devices.

Built from the same config document as the box: one SimGpio for every pin, one chip
emulator per configured chip behind a SimSpiDevice at its bus/chip-select, one
SimPcmLink per line, a VirtualPhone on each FXS line, a VirtualCO on each FXO line and
a virtual headset. Chips named in `unseated` are put in their emulator's not-seated mode
(every read answers 0xFF, as MISO floats high) to rehearse a card out of its slot.
Exposes `.phones[line]`, `.cos[line]`, `.headset` (the virtual one), `.emulators[chip]`,
and from `Board`: `.drivers[line]`, `.pcm[line]` (gateway end), `.headset_driver`.
"""

from __future__ import annotations

import importlib

from drivers.board import Board
from drivers.bus.gpio import SimGpio
from drivers.bus.pcm import SimPcmLink
from drivers.bus.spi import SimSpiDevice
from drivers.chips.headset import Headset
from drivers.sim.headset_sim import SimHeadset

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
    def __init__(self, reactor, doc: dict, unseated: tuple[str, ...] | set[str] = ()) -> None:
        super().__init__(reactor, doc)
        self.gpio = SimGpio()
        self.unseated = set(unseated)
        self.emulators: dict[str, object] = {}
        self.spi: dict[str, SimSpiDevice] = {}
        self.links: dict[str, SimPcmLink] = {}
        self.phones: dict[str, object] = {}
        self.cos: dict[str, object] = {}
        for name, line, chip_name, chip in self.lines():
            self._build_line(name, line, chip_name, chip)
        self._build_headset()

    def _build_line(self, name: str, line: dict, chip_name: str, chip: dict) -> None:
        emulator = self._emulator(chip)
        self.emulators[chip_name] = emulator
        if chip_name in self.unseated:
            _unseat(emulator)
        spi = SimSpiDevice(chip["spi_bus"], chip["spi_cs"], emulator)
        self.spi[chip_name] = spi
        link = SimPcmLink(name)
        self.links[name], self.pcm[name] = link, link.gateway
        self.build_driver(name, line, chip, spi, self.gpio)
        if line["kind"] == "fxs":
            phone_cls = _class("drivers.sim.phone", "VirtualPhone")
            self.phones[name] = phone_cls(self.reactor, emulator, link.device, name=f"phone-{name}")
        else:
            co_cls = _class("drivers.sim.central_office", "VirtualCO")
            self.cos[name] = co_cls(self.reactor, emulator, link.device,
                                    country=self.line_settings(line)["country"],
                                    number=line.get("number") or DEFAULT_CO_NUMBER)

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
