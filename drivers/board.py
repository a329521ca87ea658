"""Builds the board from the config document: buses, chip drivers and audio per line.

`Board` is what the core and call control use of one; `RealBoard` opens spidev, RPi.GPIO
and ALSA, `drivers.sim.board.SimBoard` builds the same drivers on the twins. A line whose
bus fails gets no driver (its reason in `errors`) and the others are still built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from drivers import lifeline as lifeline_relay
from drivers.bus import tdm as tdm_plan
from drivers.bus.gpio import Gpio, RpiGpio
from drivers.bus.pcm import FRAME, LINE_RATE, AlsaPcm, PcmPort, TdmBus
from drivers.bus.spi import SpidevDevice, SpiDevice
from drivers.chips.headset import Headset, alsa_card_present
from drivers.chips.si3050 import Si3050
from drivers.chips.si3215 import Si3215
from drivers.lifeline import Lifeline
from foundation.errors import HardwareError
from foundation.events import LineEvent
from foundation.reactor import Reactor

LineDriver = Si3215 | Si3050  # the chip driver of one line
Doc = dict[str, Any]  # the validated config document
# chip type -> (driver class, line kind it serves)
CHIP_TYPES: dict[str, tuple[type[Si3215] | type[Si3050], str]] = {
    "si3215": (Si3215, "fxs"),
    "si3210": (Si3215, "fxs"),  # same register model
    "si3050": (Si3050, "fxo"),
}
SPI_MODE = 3  # ProSLIC and DAA both sample on the rising edge with SCLK idle high


class Board(Protocol):
    """What the core and call control use of a board: per line its chip driver (`drivers`),
    its PCM port (`pcm`) and, when its bus did not open, the reason (`errors`)."""

    reactor: Reactor
    doc: Doc
    drivers: dict[str, LineDriver]
    pcm: dict[str, PcmPort]
    errors: dict[str, str]
    problems: list[str]  # each distinct device fault once, for `hw probe`
    headset_driver: Headset | None
    lifeline: Lifeline | None
    tdm: dict[str, TdmBus | None]  # alsa_device -> the lines' PCM bus (None: failed)

    def subscribe(self, fn: Callable[[LineEvent], None]) -> None: ...

    def lines(self) -> list[tuple[str, Doc, str, Doc]]: ...

    def retune(self, name: str, line: Doc) -> None: ...

    def close(self) -> None: ...


class BaseBoard:
    """What both boards share: the tables, the event fan-out and the line walk. Both start
    the lines' PCM streams before any chip driver is built (the chips need PCLK for their
    bring-up) and keep them running until `close()`."""

    def __init__(self, reactor: Reactor, doc: Doc) -> None:
        self.reactor, self.doc = reactor, doc
        self.drivers: dict[str, LineDriver] = {}
        self.pcm: dict[str, PcmPort] = {}
        self.errors: dict[str, str] = {}
        self.problems: list[str] = []
        self.headset_driver: Headset | None = None
        self.tdm: dict[str, TdmBus | None] = {}
        self.lifeline: Lifeline | None = None  # when board.lifeline is enabled
        self._listeners: list[Callable[[LineEvent], None]] = []

    def subscribe(self, fn: Callable[[LineEvent], None]) -> None:
        self._listeners.append(fn)

    def emit(self, event: LineEvent) -> None:
        """The `on_event` every driver is built with."""
        for fn in list(self._listeners):
            fn(event)

    def lines(self) -> list[tuple[str, Doc, str, Doc]]:
        """(line name, line table, chip name, chip table) for every configured line."""
        chips = self.doc["board"]["chips"]
        out: list[tuple[str, Doc, str, Doc]] = []
        used: dict[str, str] = {}
        for name, line in self.doc["lines"].items():
            chip = line["chip"]
            if chip not in chips:
                raise HardwareError(f"lines.{name}.chip: {chip!r} is not in board.chips ({', '.join(chips)})")
            if chips[chip]["type"] not in CHIP_TYPES:
                raise HardwareError(f"board.chips.{chip}.type: {chips[chip]['type']!r} is not "
                                    f"a supported chip; use one of {', '.join(CHIP_TYPES)}")
            kind = CHIP_TYPES[chips[chip]["type"]][1]
            if line["kind"] != kind:
                raise HardwareError(
                    f"lines.{name}.kind: {line['kind']!r} but chip {chip} is a "
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

    def build_driver(self, name: str, line: Doc, chip: Doc, spi: SpiDevice,
                     gpio: Gpio) -> LineDriver:
        cls = CHIP_TYPES[chip["type"]][0]
        driver = cls(name, spi, gpio, chip["reset_gpio"], chip["int_gpio"], self.reactor,
                     line_settings(self.doc, line), self.emit)
        self.drivers[name] = driver
        return driver

    def retune(self, name: str, line: Doc) -> None:
        """Hand a running line's driver its changed timing settings (no restart)."""
        driver = self.drivers.get(name)
        if driver is not None:
            driver.retune(line_settings(self.doc, line))

    def build_lifeline(self, gpio: Gpio) -> None:
        """The power-fail relay of board.lifeline (built released: the phone stays on the
        PSTN until the core energises it)."""
        try:
            self.lifeline = lifeline_relay.build(gpio, self.reactor, self.doc["board"]["lifeline"])
        except HardwareError as exc:
            self.problem(None, f"board.lifeline.gpio: {exc}")

    def close(self) -> None:
        if self.lifeline is not None:
            _quietly(self.lifeline.close)  # the phone gets the PSTN before the chips stop
        for driver in self.drivers.values():
            _quietly(driver.stop)
        if self.headset_driver is not None:
            _quietly(self.headset_driver.stop)


class RealBoard(BaseBoard):
    """The box: /dev/spidevB.C, RPi.GPIO and ALSA, opened per the config."""

    def __init__(self, reactor: Reactor, doc: Doc, dev_dir: str = "/dev") -> None:
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

    def _build_line(self, name: str, line: Doc, chip: Doc) -> None:
        try:
            spi = SpidevDevice(chip["spi_bus"], chip["spi_cs"], SPI_MODE, chip["spi_hz"],
                               dev_dir=self._dev_dir).open()
            self._spi.append(spi)
            self.build_driver(name, line, chip, spi, self._open_gpio())
        except HardwareError as exc:
            self.problem(name, str(exc))
        tdm = self.tdm.get(line["alsa_device"])
        if tdm is not None:
            self.pcm[name] = tdm.port(line["timeslot"], name)

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
        if not self.doc["board"]["lifeline"]["enabled"]:
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
        law = self.doc["board"]["pcm"]["law"]
        for device in dict.fromkeys(ln["alsa_device"] for ln in self.doc["lines"].values()):
            try:
                pcm = AlsaPcm(device, LINE_RATE, FRAME, channels=tdm_plan.ALSA_CHANNELS).open()
                self.tdm[device] = TdmBus(pcm, law, self.reactor).start()
            except HardwareError as exc:
                self.tdm[device] = None
                self.problem(None, str(exc))

    def _build_headset(self) -> None:
        settings = self.doc["board"]["headset"]
        if not settings["enabled"]:
            return
        device = settings["alsa_device"]
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


def line_settings(doc: Doc, line: Doc) -> Doc:
    """What a line's driver is given, as it sees only its own line: the line's table of the
    validated `doc` with its effective country, `country.ring_cadence` when set, the
    highway's `pcm_law` and its chip's table as `board`."""
    country, board = doc["country"], doc["board"]
    ring = {"ring_cadence": list(country["ring_cadence"])} if country["ring_cadence"] else {}
    return {**line, "country": line["country"] or country["code"], **ring,
            "pcm_law": board["pcm"]["law"], "board": dict(board["chips"][line["chip"]])}


def _quietly(fn: Callable[[], object]) -> None:
    """Shutdown keeps going past a device that already went away."""
    try:
        fn()
    except Exception:  # noqa: BLE001 - closing what may be half-open
        pass
