"""Builds the board from the config document: buses, chip drivers and audio per line.

`board.chips` says which chip sits on which SPI bus/chip-select with which reset and
interrupt GPIOs; `lines` says which chip and ALSA device/timeslot each port uses. A board
object holds, per line name, the chip driver (`drivers`), its PCM port (`pcm`) and, when
a bus did not open, the one-line reason (`errors`); `problems` lists each distinct
device fault once, for `hw probe`. A line whose bus fails gets no driver and the others
are still built: a missing card must not take the box down. `RealBoard` opens spidev,
RPi.GPIO and ALSA; `drivers.sim.board.SimBoard` builds the same drivers on the twins.
Both start the lines' PCM stream (one `TdmBus` per alsa_device, drivers/bus/tdm.py)
before any chip driver is built, since the chips need PCLK for their bring-up, and keep
it running until `close()`.
Chip driver modules are imported on first use, by type name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from drivers import lifeline as lifeline_relay
from drivers.bus import tdm as tdm_plan
from drivers.bus.gpio import RpiGpio
from drivers.bus.pcm import FRAME, LINE_RATE, AlsaPcm, TdmBus
from drivers.bus.spi import SpidevDevice
from drivers.chips.headset import Headset, alsa_card_present
from foundation.errors import HardwareError
from foundation.events import LineEvent

# chip type -> (module, driver class, line kind it serves)
CHIP_TYPES = {
    "si3215": ("drivers.chips.si3215", "Si3215", "fxs"),
    "si3210": ("drivers.chips.si3215", "Si3215", "fxs"),  # same register model
    "si3050": ("drivers.chips.si3050", "Si3050", "fxo"),
}
SPI_MODE = 3  # ProSLIC and DAA both sample on the rising edge with SCLK idle high


def driver_class(chip_type: str):
    module, cls, _kind = CHIP_TYPES[chip_type]
    return getattr(importlib.import_module(module), cls)


class Board:
    """What both boards share: the tables, the event fan-out and the line walk."""

    def __init__(self, reactor, doc: dict) -> None:
        self.reactor, self.doc = reactor, doc
        self.drivers: dict[str, object] = {}
        self.pcm: dict[str, object] = {}
        self.errors: dict[str, str] = {}
        self.problems: list[str] = []
        self.headset_driver: Headset | None = None
        self.tdm: dict[str, TdmBus | None] = {}  # alsa_device -> the lines' PCM bus (None: failed)
        self.lifeline = None  # drivers.lifeline.Lifeline when board.lifeline is enabled
        self._listeners: list[Callable[[LineEvent], None]] = []

    def subscribe(self, fn: Callable[[LineEvent], None]) -> None:
        self._listeners.append(fn)

    def emit(self, event: LineEvent) -> None:
        """The `on_event` every driver is built with."""
        for fn in list(self._listeners):
            fn(event)

    def lines(self) -> list[tuple[str, dict, str, dict]]:
        """(line name, line table, chip name, chip table) for every configured line."""
        chips = self.doc["board"]["chips"]
        out, used = [], {}
        for name, line in self.doc["lines"].items():
            chip = line.get("chip", "")
            if chip not in chips:
                raise HardwareError(f"lines.{name}.chip: {chip!r} is not in board.chips ({', '.join(chips)})")
            if chips[chip].get("type") not in CHIP_TYPES:
                raise HardwareError(f"board.chips.{chip}.type: {chips[chip].get('type')!r} is not "
                                    f"a supported chip; use one of {', '.join(CHIP_TYPES)}")
            kind = CHIP_TYPES[chips[chip]["type"]][2]
            if line.get("kind") != kind:
                raise HardwareError(
                    f"lines.{name}.kind: {line.get('kind')!r} but chip {chip} is a "
                    f"{chips[chip]['type']} ({kind}): fix the kind or the chip")
            if chip in used:
                raise HardwareError(f"lines.{name}.chip: {chip} is already used by {used[chip]}")
            used[chip] = name
            out.append((name, line, chip, chips[chip]))
        return out

    def problem(self, line: str | None, message: str) -> None:
        if line is not None:
            self.errors.setdefault(line, message)
        if message not in self.problems:
            self.problems.append(message)

    def build_driver(self, name: str, line: dict, chip: dict, spi, gpio):
        cls = driver_class(chip["type"])
        driver = cls(name, spi, gpio, chip["reset_gpio"], chip["int_gpio"], self.reactor,
                     self.line_settings(line), self.emit)
        self.drivers[name] = driver
        return driver

    def line_settings(self, line: dict) -> dict:
        """The line's table with the document-wide country values resolved into it, since
        a driver sees only its own line."""
        country = self.doc.get("country", {})
        pcm = self.doc["board"].get("pcm", {})
        chip = self.doc["board"]["chips"].get(line.get("chip", ""), {})
        settings = {**line, "country": line.get("country") or country.get("code", "us"),
                    "timeslot": int(line.get("timeslot", 0)),
                    "pcm_law": pcm.get("law", "ulaw"), "board": dict(chip)}
        if country.get("ring_cadence") and not line.get("ring_cadence"):
            settings["ring_cadence"] = list(country["ring_cadence"])
        return settings

    def retune(self, name: str, line: dict) -> None:
        """Hand a running line's driver its changed timing settings (no restart)."""
        driver = self.drivers.get(name)
        if driver is not None and hasattr(driver, "retune"):
            driver.retune(self.line_settings(line))

    def build_lifeline(self, gpio) -> None:
        """The power-fail relay of board.lifeline (built released: the phone stays on the
        PSTN until the core energises it)."""
        try:
            self.lifeline = lifeline_relay.build(gpio, self.reactor, self.doc["board"].get("lifeline"))
        except HardwareError as exc:
            self.problem(None, f"board.lifeline.gpio: {exc}")

    def close(self) -> None:
        if self.lifeline is not None:
            _quietly(self.lifeline.close)  # the phone gets the PSTN before the chips stop
        for driver in self.drivers.values():
            _quietly(driver.stop)
        if self.headset_driver is not None:
            _quietly(self.headset_driver.stop)


class RealBoard(Board):
    """The box: /dev/spidevB.C, RPi.GPIO and ALSA, opened per the config."""

    def __init__(self, reactor, doc: dict, dev_dir: str = "/dev") -> None:
        super().__init__(reactor, doc)
        self._dev_dir = dev_dir
        self._gpio: RpiGpio | None = None
        self._gpio_error = ""
        self._spi: list[SpidevDevice] = []
        self._start_pcm()  # PCLK first: the chips' PLLs lock to it before bring-up
        for name, line, _chip_name, chip in self.lines():
            self._build_line(name, line, chip)
        self._build_headset()
        self._build_lifeline()

    def _build_line(self, name: str, line: dict, chip: dict) -> None:
        try:
            spi = SpidevDevice(chip["spi_bus"], chip["spi_cs"], SPI_MODE, chip["spi_hz"],
                               dev_dir=self._dev_dir).open()
            self._spi.append(spi)
            self.build_driver(name, line, chip, spi, self._open_gpio())
        except HardwareError as exc:
            self.problem(name, str(exc))
        tdm = self.tdm.get(line.get("alsa_device", ""))
        if tdm is not None:
            self.pcm[name] = tdm.port(int(line.get("timeslot", 0)), name)

    def _open_gpio(self) -> RpiGpio:
        """One RPi.GPIO for every chip; its failure is reported once."""
        if self._gpio_error:
            raise HardwareError(self._gpio_error)
        if self._gpio is None:
            try:
                self._gpio = RpiGpio(self.reactor).open()
            except HardwareError as exc:
                self._gpio_error = str(exc)
                raise
        return self._gpio

    def _build_lifeline(self) -> None:
        if not self.doc["board"].get("lifeline", {}).get("enabled", False):
            return
        try:
            self.build_lifeline(self._open_gpio())
        except HardwareError as exc:
            self.problem(None, str(exc))  # GPIO missing: already one line per box

    def _start_pcm(self) -> None:
        """Open and start one two-channel stream per alsa_device of the lines
        (drivers/bus/tdm.py: the Pi's PCM block carries two S16 channels, four 8-bit
        G.711 slots); it runs until close(). A device that does not open is reported
        once and its lines get no audio."""
        law = self.doc["board"].get("pcm", {}).get("law", "ulaw")
        for device in dict.fromkeys(ln.get("alsa_device", "") for ln in self.doc["lines"].values()):
            try:
                pcm = AlsaPcm(device, LINE_RATE, FRAME, channels=tdm_plan.ALSA_CHANNELS).open()
                self.tdm[device] = TdmBus(pcm, law, self.reactor).start()
            except HardwareError as exc:
                self.tdm[device] = None
                self.problem(None, str(exc))

    def _build_headset(self) -> None:
        settings = self.doc["board"].get("headset", {})
        if not settings.get("enabled", False):
            return
        device = settings.get("alsa_device", "default")
        self.headset_driver = Headset(
            "headset", self.reactor, settings,
            open_pcm=lambda rate, period: AlsaPcm(device, rate, period, name="headset").open(),
            present=lambda: alsa_card_present(device), on_event=self.emit)

    def close(self) -> None:
        super().close()
        for spi in self._spi:
            _quietly(spi.close)
        for tdm in self.tdm.values():
            if tdm is not None:
                _quietly(tdm.close)  # the PCM stream ends last: PCLK stops with it
        if self._gpio is not None:
            _quietly(self._gpio.close)


def _quietly(fn) -> None:
    """Shutdown keeps going past a device that already went away."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - closing what may be half-open
        pass
