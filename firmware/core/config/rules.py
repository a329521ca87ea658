"""Cross-checks between settings (shared chip selects and pins, a line on the wrong chip,
shared timeslots, shadowed or emergency-blocking extensions, flash and ring-filter
windows), `validate()`, and the per-line country helpers. Each problem names the
field, the value and both users."""

from __future__ import annotations

import difflib
from typing import Any

from cext import toneplans
from firmware.core.config.schema import FXO_CHIPS, FXS_CHIPS, ConfigError, read_document

# Fixed pins of each SPI controller (BCM; SPI3-6 as the Pi 4 overlays map them). SPI0's
# CE2 is GPIO 24, a cs-gpio of the card's overlay (image/overlays/branchline-card-overlay.dts,
# as the Pi's spi1-3cs adds its third): keep OVERLAY_CS2_GPIO and the overlay in step.
OVERLAY_CS2_GPIO = 24
SPI_PINS: dict[int, dict[str, Any]] = {
    0: {"MISO": 9, "MOSI": 10, "SCLK": 11, "CE": (8, 7, OVERLAY_CS2_GPIO)},
    1: {"MISO": 19, "MOSI": 20, "SCLK": 21, "CE": (18, 17, 16)},
    3: {"MISO": 1, "MOSI": 2, "SCLK": 3, "CE": (0, 24)},
    4: {"MISO": 5, "MOSI": 6, "SCLK": 7, "CE": (4, 25)},
    5: {"MISO": 13, "MOSI": 14, "SCLK": 15, "CE": (12, 26)},
    6: {"MISO": 19, "MOSI": 20, "SCLK": 21, "CE": (18, 27)},
}
# The PCM/I2S interface that carries the lines' 8 kHz audio (PCM_CLK, FS, DIN, DOUT).
PCM_PINS = {18: "PCM_CLK", 19: "PCM_FS", 20: "PCM_DIN", 21: "PCM_DOUT"}
MAX_CS = {0: 2, 1: 2, 2: 2, 3: 1, 4: 1, 5: 1, 6: 1}  # highest chip select per bus
KIND_CHIPS = {"fxs": FXS_CHIPS, "fxo": FXO_CHIPS}


def validate(doc: Any) -> dict[str, Any]:
    """The document with defaults filled in; ConfigError lists every problem found. The
    input is never modified. Cross-checks run only when every field is valid on its own,
    so their messages never pile up on top of a type error."""
    out, problems = read_document(doc)
    if not problems:
        problems = cross_problems(out)
    if problems:
        raise ConfigError(problems)
    return out


def cross_problems(doc: dict[str, Any]) -> list[str]:
    chips, lines = doc["board"]["chips"], doc["lines"]
    lifeline = doc["board"]["lifeline"]
    return (_spi_problems(chips) + _gpio_problems(chips, bool(lines), lifeline)
            + _chip_problems(chips, lines) + _pcm_problems(doc) + _extension_problems(doc)
            + _timing_problems(doc) + _lifeline_problems(lifeline, lines))


def _spi_problems(chips: dict[str, Any]) -> list[str]:
    problems, users = [], dict[tuple[int, int], str]()
    for name, chip in chips.items():
        bus, cs = chip["spi_bus"], chip["spi_cs"]
        if cs > MAX_CS[bus]:
            overlay = " (with the card's overlay)" if bus == 0 else ""
            problems.append(f"board.chips.{name}.spi_cs: {cs} does not exist on spi{bus}; "
                            f"it has chip selects 0..{MAX_CS[bus]}{overlay}")
        elif (bus, cs) in users:
            problems.append(f"board.chips.{name}: spidev{bus}.{cs} (spi_bus {bus}, spi_cs {cs}) "
                            f"is also used by board.chips.{users[bus, cs]}; "
                            "each chip needs its own chip select")
        else:
            users[bus, cs] = name
    return problems


def _pin_claims(chips: dict, pcm: bool, lifeline: dict) -> list[tuple[int, str, str]]:
    """(pin, user, field path): the PCM audio pins (when lines use them), the SPI buses'
    pins, then the chips' GPIOs and the lifeline relay's."""
    claims = [(pin, f"the lines' PCM audio ({fn})", "board") for pin, fn in PCM_PINS.items()
              if pcm]
    seen: set = set()
    for name, chip in chips.items():
        bus, cs, path = chip["spi_bus"], chip["spi_cs"], f"board.chips.{name}"
        pins = SPI_PINS.get(bus)
        if pins is None:
            continue
        if bus not in seen:
            seen.add(bus)
            claims += [(pin, f"spi{bus} {fn} ({path})", f"{path}.spi_bus")
                       for fn, pin in pins.items() if fn != "CE"]
        if cs < len(pins["CE"]) and (bus, cs) not in seen:
            seen.add((bus, cs))
            claims.append((pins["CE"][cs], f"spi{bus} CE{cs} ({path})", f"{path}.spi_cs"))
    for name, chip in chips.items():
        for key in ("reset_gpio", "int_gpio"):
            path = f"board.chips.{name}.{key}"
            claims.append((chip[key], path, path))
    if lifeline["enabled"]:
        claims.append((lifeline["gpio"], "board.lifeline.gpio", "board.lifeline.gpio"))
    return claims


def _gpio_problems(chips: dict[str, Any], pcm: bool, lifeline: dict[str, Any]) -> list[str]:
    problems, owners = [], dict[int, str]()
    for pin, user, path in _pin_claims(chips, pcm, lifeline):
        if pin in owners:
            problems.append(f"{path}: GPIO {pin} is also used by {owners[pin]}; "
                            "a pin can have only one use")
        else:
            owners[pin] = user
    return problems


def _lifeline_problems(lifeline: dict, lines: dict) -> list[str]:
    """The relay switches one FXS line onto one FXO line: both must exist with that kind
    (a board without FXS or without FXO lines has nothing for the relay to switch)."""
    kinds = {line["kind"] for line in lines.values()}
    if not lifeline["enabled"] or not {"fxs", "fxo"} <= kinds:
        return []
    problems = []
    for key, kind in (("fxs", "fxs"), ("fxo", "fxo")):
        name, path = lifeline[key], f"board.lifeline.{key}"
        if name not in lines:
            problems.append(f"{path}: {name!r} is not a line in lines{suggest(name, lines)}; "
                            "name the line the relay is wired to, or set enabled = false")
        elif lines[name]["kind"] != kind:
            problems.append(f"{path}: {name!r} is an {lines[name]['kind']} line; the relay "
                            f"needs an {kind} line here")
    return problems


def _chip_problems(chips: dict[str, Any], lines: dict[str, Any]) -> list[str]:
    problems, served = [], dict[str, str]()
    for name, line in lines.items():
        chip, path = line["chip"], f"lines.{name}.chip"
        if chip not in chips:
            problems.append(f"{path}: {chip!r} is not a chip in board.chips{suggest(chip, chips)}")
            continue
        ctype, wanted = chips[chip]["type"], KIND_CHIPS[line["kind"]]
        if ctype not in wanted:
            problems.append(f"{path}: {chip!r} is a {ctype}; an {line['kind']} line needs "
                            f"a {' or '.join(wanted)} chip")
        elif chip in served:
            problems.append(f"{path}: {chip!r} already serves lines.{served[chip]}; "
                            f"a {ctype} has one port")
        else:
            served[chip] = name
    return problems


def suggest(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known) or '(none)'}"


def _pcm_problems(doc: dict[str, Any]) -> list[str]:
    problems, users = [], dict[tuple[str, int], str]()
    for name, line in doc["lines"].items():
        key = (line["alsa_device"], line["timeslot"])
        if key in users:
            problems.append(f"lines.{name}.timeslot: {key[1]} on {key[0]} is also used by "
                            f"lines.{users[key]}; each line needs its own timeslot")
        else:
            users[key] = name
    headset = doc["board"]["headset"]
    line_devices = {dev: name for (dev, _), name in reversed(users.items())}
    if headset["enabled"] and headset["alsa_device"] in line_devices:
        problems.append(f"board.headset.alsa_device: {headset['alsa_device']!r} is the line PCM "
                        f"of lines.{line_devices[headset['alsa_device']]}; "
                        "the headset needs its own device")
    return problems


def _extension_problems(doc: dict) -> list[str]:
    problems, seen = [], {}
    headset = doc["calls"]["headset_extension"]
    if headset:
        seen[headset] = "headset (calls.headset_extension)"
    for name, line in doc["lines"].items():
        ext = line["extension"] if line["kind"] == "fxs" else ""
        if not ext:
            continue
        path = f"lines.{name}.extension"
        problems += _emergency_problems(doc, name, ext, path)
        for other_ext, other in seen.items():
            problems += _overlap(ext, other_ext, other, path)
        seen[ext] = name
    return problems


def _overlap(ext: str, other_ext: str, other: str, path: str) -> list[str]:
    owner = other if other.startswith("headset") else f"lines.{other}"
    if ext == other_ext:
        return [f"{path}: {ext!r} is also the extension of {owner}"]
    if other_ext.startswith(ext) or ext.startswith(other_ext):
        short, long_ = sorted((ext, other_ext), key=len)
        return [f"{path}: {ext!r} and {other_ext!r} ({owner}) overlap; a caller "
                f"dialling {long_} would reach {short} first"]
    return []


def _emergency_problems(doc: dict, name: str, ext: str, path: str) -> list[str]:
    country = line_country(doc, name)
    for number in toneplans.plan(country).emergency:
        if number.startswith(ext) or ext.startswith(number):
            return [f"{path}: {ext!r} overlaps the emergency number {number} of {country}; "
                    f"dialling {number} must always work"]
    return []


def _timing_problems(doc: dict) -> list[str]:
    problems = []
    for name, line in doc["lines"].items():
        path = f"lines.{name}"
        if line["kind"] == "fxs":
            problems += _flash_problems(line, path)
        else:
            problems += _ring_filter_problems(doc, name, line, path)
    return problems


def _flash_problems(line: dict, path: str) -> list[str]:
    debounce, low, high = line["debounce_ms"], line["flash_min_ms"], line["flash_max_ms"]
    if low <= debounce:
        return [f"{path}.flash_min_ms: {low} must be above debounce_ms ({debounce}); "
                "a flash shorter than the debounce is never seen"]
    if high <= low:
        return [f"{path}.flash_max_ms: {high} must be above flash_min_ms ({low}); "
                "otherwise no hook flash is possible"]
    return []


def _ring_filter_problems(doc: dict, name: str, line: dict, path: str) -> list[str]:
    bursts = effective_ring_cadence(doc, name)[0::2]
    if not bursts:
        return []
    shortest = round(min(bursts) * 1000)
    if line["ring_min_ms"] >= shortest:
        return [f"{path}.ring_min_ms: {line['ring_min_ms']} would reject every ring burst of "
                f"the {line_country(doc, name)} cadence (shortest {shortest} ms); "
                "set it lower"]
    return []


def line_country(doc: dict[str, Any], line_name: str) -> str:
    """The line's own country, or the box's `country.code` when the line leaves it empty."""
    lines = doc["lines"]
    if line_name not in lines:
        raise ConfigError([f"lines.{line_name}: no such line{suggest(line_name, lines)}"])
    return str(lines[line_name]["country"] or doc["country"]["code"])


def effective_ring_cadence(doc: dict[str, Any], line_name: str) -> tuple[float, ...]:
    """`country.ring_cadence` when set, else the ring cadence of the line's country."""
    cadence = (doc["country"]["ring_cadence"]
               or toneplans.plan(line_country(doc, line_name)).ring_cadence)
    return tuple(float(s) for s in cadence)


def effective_callerid(doc: dict[str, Any], line_name: str) -> str:
    """`country.callerid` when set, else the caller-ID standard of the line's country."""
    override = doc["country"]["callerid"]
    return str(override or toneplans.plan(line_country(doc, line_name)).callerid)
