"""The simulated board: the real chip drivers wired to emulated chips and virtual devices.

Built from the box's config document: one SimGpio, one chip emulator per chip behind a
SimSpiDevice, a VirtualPhone per FXS line, a VirtualCO per FXO line, a virtual headset,
and the box's audio plan (one SimHighway per alsa_device, `TdmBus` slots over it), so
audio only flows through a chip programmed for it. Exposes `.phones`, `.cos`, `.headset`,
`.emulators`, `.highways` besides what every `Board` has.
"""

from __future__ import annotations

import importlib
from typing import Any

from drivers.board import BaseBoard, Doc, line_settings
from drivers.bus.gpio import SimGpio
from drivers.bus.pcm import TdmBus
from drivers.bus.spi import SimSpiDevice
from drivers.chips.headset import Headset
from drivers.sim import lifeline_sim
from drivers.sim.central_office import VirtualCO
from drivers.sim.headset_sim import SimHeadset
from drivers.sim.highway import SimHighway, SimPcmStream
from drivers.sim.phone import VirtualPhone
from foundation.reactor import Reactor

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


class SimBoard(BaseBoard):
    """`unseated` chips answer 0xFF to every read (a card out of its slot). With
    `lifeline_bypass` (`branchline run --sim`) the relay's twin (drivers/sim/lifeline_sim.py:
    `.relay`, `.bypass`) sits between the lifeline's phone and CO as on the card, so a
    reactor stalled past the monostable's hold drops the phone onto the CO; harnesses that
    run the reactor in bursts leave it out, and the phone goes straight to its SLIC."""

    def __init__(self, reactor: Reactor, doc: Doc,
                 unseated: tuple[str, ...] | set[str] = (),
                 lifeline_bypass: bool = False) -> None:
        super().__init__(reactor, doc)
        self.gpio = SimGpio()
        self.unseated = set(unseated)
        self.emulators: dict[str, Any] = {}
        self.spi: dict[str, SimSpiDevice] = {}
        self.highways: dict[str, SimHighway] = {}
        self.sim_tdm: dict[str, TdmBus] = {}  # `tdm` without the None of a failed device
        self.phones: dict[str, VirtualPhone] = {}
        self.cos: dict[str, VirtualCO] = {}
        self.headset: SimHeadset | None = None
        wiring = (lifeline_sim.build(reactor, self.gpio, doc["board"]["lifeline"])
                  if lifeline_bypass else None)
        self.relay: lifeline_sim.SimRelay | None = None
        self.bypass: lifeline_sim.LifelineBypass | None = None
        if wiring is not None:
            self.relay, self.bypass = wiring
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
        device = line["alsa_device"]
        self.pcm[name] = self.sim_tdm[device].port(line["timeslot"], name)
        analog = self._wire_pcm(emulator, self.highways[device])
        self.build_driver(name, line, chip, spi, self.gpio)
        if line["kind"] == "fxs":
            slic, end = lifeline_sim.wire(self.bypass, name, emulator, analog)
            self.phones[name] = VirtualPhone(self.reactor, slic, end, name=f"phone-{name}")
        else:
            daa, end = lifeline_sim.wire(self.bypass, name, emulator, analog)
            self.cos[name] = VirtualCO(self.reactor, daa, end,
                                    country=line_settings(self.doc, line)["country"],
                                    number=line["number"] or DEFAULT_CO_NUMBER)

    def _start_pcm(self) -> None:
        """One highway and TdmBus per alsa_device, running from now until close()."""
        pcm = self.doc["board"]["pcm"]
        card_clock = pcm["clock_master"] == "card"
        for device in dict.fromkeys(ln["alsa_device"] for ln in self.doc["lines"].values()):
            highway = SimHighway(self.reactor, device, card_clock=card_clock)
            self.highways[device] = highway
            bus = TdmBus(SimPcmStream(highway), pcm["law"], self.reactor).start()
            self.tdm[device] = self.sim_tdm[device] = bus

    def _wire_pcm(self, emulator, highway: SimHighway):
        """PCLK, FSYNC, DTX and DRX to the chip; its analog end for the phone or CO."""
        emulator.attach_highway(highway)
        highway.attach(emulator)
        return emulator.analog.device

    def close(self) -> None:
        super().close()
        for bus in self.sim_tdm.values():
            bus.close()  # the Pi's streams end: the highways' clocks stop

    def _emulator(self, chip: dict):
        cls = _class(*EMULATORS[chip["type"]])
        extra = {"part": chip["type"]} if chip["type"] in ("si3215", "si3210") else {}
        return cls(self.reactor, self.gpio, chip["reset_gpio"], chip["int_gpio"], **extra)

    def _build_headset(self) -> None:
        settings = self.doc["board"]["headset"]
        if not settings["enabled"]:
            self.headset = None
            return
        self.headset = SimHeadset(self.reactor, rate=settings["rate"],
                                  device=settings["alsa_device"])
        self.headset_driver = Headset("headset", self.reactor, settings,
                                      open_pcm=self.headset.open_pcm,
                                      present=self.headset.present, on_event=self.emit)
