"""The config schema: each section is a frozen dataclass whose fields carry their rule
(default, unit, range or choices) as metadata; the tables the reader, console and web
forms use are derived from them, so every setting is declared once. Stdlib dataclasses,
not pydantic: the rules and their messages are our own (tests assert them), a rule is
plain data on its field, and the box gains no dependency."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import re
import typing
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from cext import toneplans
from drivers.bus import tdm
from drivers.chips import daa_countries
from foundation.errors import BranchlineError


class ConfigError(BranchlineError):
    """The document breaks a rule; each problem names the field path, the value and the rule."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        more = len(self.problems) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
        super().__init__(self.problems[0] + tail)


class _Invalid(Exception):
    """One field's problem, collected by the table reader."""


REQUIRED: Any = object()  # sentinel: the field has no default
DERIVED = {"derived": True}  # metadata of a typed-view field worked out, not a setting

FXS_CHIPS = ("si3215", "si3210")
FXO_CHIPS = ("si3050",)
CHIP_TYPES = FXS_CHIPS + FXO_CHIPS
CALLERID_STANDARDS = ("bell202", "v23", "dtmf")
DISCONNECT_SIGNALS = ("loop_drop", "reversal", "tone")
_NAME_RULE = "must start with a letter and hold only letters, digits, '_' or '-' (at most 32)"
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")

_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


class LineKind(enum.StrEnum):
    FXS = "fxs"
    FXO = "fxo"


def _countries() -> tuple[str, ...]:
    return tuple(toneplans.COUNTRIES)  # read at call time: the tone plans grow


def _known_country_rule() -> str:
    return "is not a known country; known: " + ", ".join(_countries())


@dataclass(frozen=True)
class Field:
    """One setting: type, default, unit and range or choices, plus optional rules."""

    type: type
    default: Any = REQUIRED
    unit: str = ""
    minval: float | None = None
    maxval: float | None = None
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    choice_rule: str | Callable[[], str] = ""
    allow_empty: bool = False  # "" (or []) means "inherit", accepted besides the choices
    pattern: str = ""
    pattern_rule: str = ""
    item: Field | None = None  # the element field of a list
    extra: Callable[[Any], str] | None = None  # whole-value rule; returns "" when fine
    range_rule: str = ""  # why the range is what it is, added to an out-of-range message
    help: str = ""

    def check(self, value: Any, path: str) -> Any:
        """The value converted to the field's type, or _Invalid naming path, value, rule."""
        value = self._typed(value, path)
        if self.allow_empty and value in ("", []):
            return value
        if self.item is not None:
            value = [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]
        self._check_range(value, path)
        self._check_choice(value, path)
        self._check_pattern(value, path)
        rule = self.extra(value) if self.extra else ""
        if rule:
            raise _Invalid(f"{path}: {value!r} {rule}")
        return value

    def range_text(self) -> str:
        """The range as min..max; "" without one."""
        if self.minval is None or self.maxval is None:
            return ""
        return f"{_num(self.minval)}..{_num(self.maxval)}"

    def choice_list(self) -> Sequence[Any]:
        return (self.choices() if callable(self.choices) else self.choices) or ()

    def _typed(self, value: Any, path: str) -> Any:
        wanted = self.type
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, wanted) and not (wanted is int and isinstance(value, bool)):
            return value
        unit = f" ({self.unit})" if self.unit else ""
        hint = ""
        if wanted is str and isinstance(value, int) and not isinstance(value, bool):
            hint = f'; quote it: "{value}"'  # extensions and numbers are digit strings
        raise _Invalid(f"{path}: {value!r} must be {_TYPE_WORDS[wanted]}{unit}{hint}")

    def _check_range(self, value: Any, path: str) -> None:
        if self.minval is None or self.maxval is None or not isinstance(value, int | float):
            return
        if not self.minval <= value <= self.maxval:
            unit = f" {self.unit}" if self.unit else ""
            why = f" ({self.range_rule})" if self.range_rule else ""
            raise _Invalid(f"{path}: {value!r} is out of range; allowed "
                           f"{self.range_text()}{unit}{why}")

    def _check_choice(self, value: Any, path: str) -> None:
        if self.choices is None or value in (choices := self.choice_list()):
            return
        rule = self.choice_rule() if callable(self.choice_rule) else self.choice_rule
        rule = rule or "is not allowed; choose one of: " + ", ".join(map(str, choices))
        raise _Invalid(f"{path}: {value!r} {rule}")

    def _check_pattern(self, value: Any, path: str) -> None:
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise _Invalid(f"{path}: {value!r} {self.pattern_rule}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def setting(default: Any = REQUIRED, *, secret: bool = False, **rules: Any) -> Any:
    """A section field with its rule: a `Field` of the annotated type (a tuple is a list
    in the document, `item` holds its element's rules; a StrEnum gives the choices). A
    secret (a password) is left out of the section's repr, so no log line shows it."""
    return dataclasses.field(repr=not secret, metadata={"setting": (default, rules)})


def _rule(hint: Any, default: Any, rules: dict[str, Any]) -> Field:
    if typing.get_origin(hint) is tuple:
        item = Field(typing.get_args(hint)[0], **rules.get("item", {}))
        return Field(list, default, **{**rules, "item": item})
    if isinstance(hint, type) and issubclass(hint, enum.StrEnum):
        return Field(str, default, **{"choices": tuple(hint), **rules})
    return Field(hint, default, **rules)


def table(cls: type, skip: Collection[str] = ()) -> dict[str, Field]:
    """The settings of a section dataclass, by name, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: _rule(hints[f.name], *f.metadata["setting"])
            for f in dataclasses.fields(cls) if "setting" in f.metadata and f.name not in skip}


def _cadence_rule(cadence: list[float]) -> str:
    if len(cadence) % 2 or len(cadence) > 8:
        return "must be on/off pairs in seconds (2, 4, 6 or 8 values), e.g. [2.0, 4.0]"
    if sum(cadence) > 30.0:
        return "must repeat within 30 s"
    return ""


def _once(what: str) -> Callable[[list[str]], str]:
    return lambda names: f"names a {what} twice" if len(set(names)) != len(names) else ""


def _disconnect_rule(signals: list[str]) -> str:
    if not signals:
        return "must name at least one signal, or a dropped call keeps the line seized"
    return _once("signal")(signals)


_ALSA: dict[str, Any] = dict(
    pattern=r"[A-Za-z0-9_:,=.-]{1,64}",
    pattern_rule="is not an ALSA device name (e.g. default, hw:0,0, plughw:CARD=Headset)")
_COUNTRY: dict[str, Any] = dict(choices=_countries, choice_rule=_known_country_rule)
_NAME: dict[str, Any] = dict(pattern=_NAME_RE.pattern, pattern_rule=_NAME_RULE)
_DIGITS8: dict[str, Any] = dict(pattern=r"\d{1,8}", pattern_rule="must be 1 to 8 digits")
_OUTAGE_DIGITS: dict[str, Any] = dict(allow_empty=True, pattern=r"[0-9*#]{1,8}",
                                      pattern_rule="must be 1 to 8 digits")
_SIP_NAME: dict[str, Any] = dict(
    allow_empty=True, pattern=r"[^\s:@]{1,64}",
    pattern_rule="must be 1 to 64 characters without spaces, ':' or '@'")


@dataclass(frozen=True)
class System:
    name: str = setting("branch-01", pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
                        pattern_rule="must be 1 to 63 letters, digits, '-', '_' or '.'",
                        help="box name")


@dataclass(frozen=True)
class Country:
    code: str = setting("us", **_COUNTRY, help="default country of every line")
    callerid: str = setting("", choices=CALLERID_STANDARDS, allow_empty=True,
                            help='"" = the country\'s standard')
    ring_cadence: tuple[float, ...] = setting(
        [], unit="s", allow_empty=True, extra=_cadence_rule,
        item=dict(unit="s", minval=0.1, maxval=10.0), help="[] = the country's; else on/off pairs")


@dataclass(frozen=True)
class Chip:
    type: str = setting(choices=CHIP_TYPES)
    spi_bus: int = setting(0, minval=0, maxval=6)
    spi_cs: int = setting(minval=0, maxval=3)
    spi_hz: int = setting(2_000_000, unit="Hz", minval=100_000, maxval=10_000_000)
    reset_gpio: int = setting(unit="BCM", minval=0, maxval=27)
    int_gpio: int = setting(unit="BCM", minval=0, maxval=27)
    # ProSLIC (si3215/si3210) board electrics: they depend on the card's DC-DC inductor,
    # switching transistor and Q7, so they live with the chip; unused by other chips.
    slic_dcdc_period: int = setting(0xFF, minval=0, maxval=255, help=(
        "ProSLIC DR92, the DC-DC PWM period written before power-up: 0xff as DAHDI wctdm.c "
        "and OAK pitdm.c wctdm_powerup_proslic (wctdm24xxp/base.c uses 0xc0)"))
    slic_dcdc_engage: int = setting(0x19, minval=0, maxval=0x7F, help=(
        "ProSLIC DR93 after power-up (wctdm.c wctdm_powerup_proslic 0x19); bit 7 is added "
        "for the DC-DC calibration (0x99)"))
    slic_auto_battery: bool = setting(False, help=(
        "ProSLIC automatic battery switching (DR67 ABAT): only for a card whose Q7 is built "
        "for it; DAHDI wctdm.c turns it off and Q7 off (DR67=0x07, DR66=1) so Q7 cannot "
        "burn out"))
    slic_calibration: str = setting("auto", choices=("auto", "manual"), help=(
        "ProSLIC calibration: auto, falling back to manual (wctdm.c wctdm_hardware_init), "
        "or manual only (OAK pitdm.c wctdm_init_proslic forces manual)"))


@dataclass(frozen=True)
class Headset:
    enabled: bool = setting(True)
    alsa_device: str = setting("default", **_ALSA)
    rate: int = setting(48000, unit="Hz", choices=(16000, 32000, 44100, 48000))


@dataclass(frozen=True)
class Pcm:
    """The lines' PCM highway (drivers/bus/tdm.py has the plan and its arithmetic)."""

    clock_master: str = setting(tdm.DEFAULT_CLOCK_MASTER, choices=tdm.CLOCK_MASTERS, help=(
        "pi: the Pi drives PCLK/FSYNC, 256 kHz = 19.2 MHz / 75 exactly, no oscillator on "
        "the card; card: the card's own clock (the overlay's card_master; bcm2835-i2s "
        "warns DSP_B is unstable so)"))
    law: str = setting("ulaw", choices=tdm.LAWS, help=(
        "G.711 law the chips compand in; ulaw: an undriven slot reads 0xFF (DTX idles high), "
        "which is mu-law silence (A-law: a DC level)"))


@dataclass(frozen=True)
class Lifeline:
    """The power-fail lifeline relay (drivers/lifeline.py: why pulse drive and GPIO 26)."""

    enabled: bool = setting(True, help="the card has the relay that gives fxs the PSTN when down")
    gpio: int = setting(26, unit="BCM", minval=0, maxval=27)
    fxs: str = setting("fxs1", **_NAME)
    fxo: str = setting("fxo1", **_NAME)
    drive: str = setting("pulse", choices=("level", "pulse"),
                         help="pulse: the card's monostable drops the relay when the core hangs")
    pulse_hold_ms: int = setting(1000, unit="ms", minval=300, maxval=10000,
                                 help="the card's monostable time (its RC); pulse drive only")


@dataclass(frozen=True)
class Line:
    """The settings every line has; `effective_*` are its country's plan where the
    document leaves them empty (firmware.core.config.rules)."""

    effective_country: str = dataclasses.field(metadata=DERIVED)
    effective_ring_cadence: tuple[float, ...] = dataclasses.field(metadata=DERIVED)
    effective_callerid: str = dataclasses.field(metadata=DERIVED)
    kind: LineKind = setting()
    chip: str = setting(**_NAME)
    alsa_device: str = setting("branchline", **_ALSA, help=(
        "the card's PCM link: the full-duplex device image/asound.conf defines over the "
        "branchline-card overlay's sound card"))
    timeslot: int = setting(
        minval=0, maxval=tdm.SLOTS - 1,
        range_rule=f"the PCM frame is {tdm.FRAME_BITS} bits: {tdm.SLOTS} slots "
                   f"of {tdm.SLOT_BITS} bits per alsa_device",
        help="8-bit slot in the 32-bit PCM frame (drivers/bus/tdm.py)")
    name: str = setting("", pattern=r"[^\x00-\x1f\x7f]{0,40}",
                        pattern_rule="must be at most 40 printable characters")
    country: str = setting("", allow_empty=True, **_COUNTRY, help='"" = country.code')
    # DTMF twist limits of the port's detector (cext/dtmf.pyx): Telcordia LSSGR / ITU-T
    # Q.24 North America, as spandsp dtmf.c dtmf_rx and Asterisk dsp.c dtmf_detect
    dtmf_row_above_column_max_db: float = setting(8.0, unit="dB", minval=0.0, maxval=12.0, help=(
        "DTMF: how far the row (low) tone may be above the column (high) tone; "
        "long loops lose the column tone first (LSSGR/Q.24: 8)"))
    dtmf_column_above_row_max_db: float = setting(4.0, unit="dB", minval=0.0, maxval=8.0, help=(
        "DTMF: how far the column (high) tone may be above the row (low) tone (LSSGR/Q.24: 4)"))


@dataclass(frozen=True)
class FxsLine(Line):
    extension: str = setting("", allow_empty=True, **_DIGITS8)
    debounce_ms: int = setting(20, unit="ms", minval=5, maxval=100)
    flash_min_ms: int = setting(100, unit="ms", minval=20, maxval=1000)
    flash_max_ms: int = setting(800, unit="ms", minval=50, maxval=2000)
    interdigit_ms: int = setting(300, unit="ms", minval=100, maxval=1000)  # ends a pulse digit
    sip_user: str = setting("", **_SIP_NAME, help='per_line registration: "" = the extension')
    sip_password: str = setting("", allow_empty=True, secret=True)


@dataclass(frozen=True)
class FxoLine(Line):
    number: str = setting("", allow_empty=True, pattern=r"\+?\d{1,20}",
                          pattern_rule="must be a phone number: digits, optionally after '+'")
    disconnect: tuple[str, ...] = setting(list(DISCONNECT_SIGNALS), extra=_disconnect_rule,
                                          item=dict(choices=DISCONNECT_SIGNALS))
    ring_min_ms: int = setting(200, unit="ms", minval=100, maxval=1000)
    # No ring for this long: the caller gave up (longer than any country's ring pause).
    ring_timeout_ms: int = setting(6000, unit="ms", minval=4500, maxval=15000)
    # Loop current gone for this long while seized: the far end hung up.
    loop_drop_ms: int = setting(200, unit="ms", minval=100, maxval=1000)
    # The DAA's line settings: a row of DAHDI's fxo_modes.h (drivers/chips/daa_countries.py).
    fxo_mode: str = setting(
        "", allow_empty=True, choices=daa_countries.mode_names,
        choice_rule="is not a row of fxo_modes.h; known: " + ", ".join(daa_countries.mode_names()),
        help='"" = the country\'s row (us: FCC, uk: UK, de: GERMANY...); '
             'else an fxo_modes.h name, e.g. NEWZEALAND')


@dataclass(frozen=True)
class Sip:
    transport: str = setting("udp", choices=("udp", "tcp", "tls"))
    local_port: int = setting(5060, minval=0, maxval=65535, help="0 = any free port")
    bind_address: str = setting("0.0.0.0", pattern=r"[0-9a-fA-F.:]{2,45}",
                                pattern_rule="must be an IP address")
    public_address: str = setting("", allow_empty=True, pattern=r"[A-Za-z0-9.:-]{1,253}",
                                  pattern_rule="must be a host name or IP address",
                                  help="address to advertise behind NAT")
    edges: tuple[str, ...] = setting(
        [], item=dict(pattern=r"sips?:[^\s<>\"]{1,200}",
                      pattern_rule="must be a SIP URI, e.g. sip:edge1.example.com:5060"),
        help="cloud edges, primary first; [] = no cloud (local calls only)")
    domain: str = setting("", allow_empty=True, pattern=r"[A-Za-z0-9.-]{1,253}",
                          pattern_rule="must be a domain name")
    registration: str = setting("trunk", choices=("trunk", "per_line", "none"))
    username: str = setting("", **_SIP_NAME)
    password: str = setting("", allow_empty=True, secret=True)
    register_expires_s: int = setting(300, unit="s", minval=60, maxval=3600)
    options_interval_s: float = setting(0.5, unit="s", minval=0.2, maxval=60.0)
    options_timeout_s: float = setting(0.5, unit="s", minval=0.2, maxval=10.0)
    options_misses: int = setting(2, minval=1, maxval=10)
    nat_keepalive_s: int = setting(15, unit="s", minval=0, maxval=300)
    # G722 makes the headset wideband, but pjsua2's conference bridge then runs at 16 kHz
    # and every 8 kHz analog line pays ~32 ms each way (bench/bench_calls.py): opt in.
    codecs: tuple[str, ...] = setting(
        ["PCMU", "PCMA"], item=dict(choices=("PCMU", "PCMA", "G722")),
        help="add G722 for a wideband headset (costs analog lines ~32 ms)")
    dtmf: str = setting("rfc4733", choices=("rfc4733", "info"))
    tls_verify: bool = setting(True)


@dataclass(frozen=True)
class Calls:
    dialplan: str = setting(
        "[2-9]xxxxxx|1[2-9]xxxxxxxxx|911|*xx", pattern=r"[0-9xX*#\[\]\-.|]{1,400}",
        pattern_rule="must be a digit map like [2-9]xxxxxx|1[2-9]xxxxxxxxx|*xx")
    first_digit_s: float = setting(10.0, unit="s", minval=2.0, maxval=60.0)
    interdigit_s: float = setting(4.0, unit="s", minval=1.0, maxval=20.0)
    emergency: tuple[str, ...] = setting(
        [], allow_empty=True, item=dict(pattern=r"\d{2,6}", pattern_rule="must be 2 to 6 digits"),
        help="[] = the country's emergency numbers")
    call_waiting: bool = setting(True)
    park_prefix: str = setting("*7", pattern=r"\*\d", pattern_rule="must be * and one digit")
    pickup_prefix: str = setting("*8", pattern=r"\*\d", pattern_rule="must be * and one digit")
    headset_auto_answer: bool = setting(False)
    headset_extension: str = setting("200", **_DIGITS8)
    answer_fxo_after_rings: int = setting(2, minval=1, maxval=10,
                                          help="inbound PSTN calls wait for caller ID on ring 1")


@dataclass(frozen=True)
class Survive:
    """Survivability: where the outbox goes (`branchline forward`), outage detection
    (edge health from the SIP OPTIONS pings) and the local fallback chain."""

    records_url: str = setting(
        "", allow_empty=True, pattern=r"https?://[^\s<>\"]{1,500}", pattern_rule=(
            "must be an http:// or https:// URL, e.g. https://records.example.com/v1/records"),
        help='where the outbox is delivered; "" = keep records on the box')
    records_tls_verify: bool = setting(True, help="verify the records server's certificate")
    records_ca_file: str = setting("", allow_empty=True, pattern=r"/[^\x00-\x1f]{0,255}",
                                   pattern_rule="must be an absolute file path",
                                   help='CA or self-signed certificate to trust; "" = system CAs')
    outbox_max_mb: int = setting(
        256, unit="MB", minval=1, maxval=65536,
        help="cap; over it recordings go first, oldest first; records never")
    outbox_keep_days: int = setting(30, unit="days", minval=1, maxval=3650,
                                    help="delivered rows are pruned after this many days")
    rtp_timeout_s: float = setting(2.0, unit="s", minval=0.5, maxval=30.0,
                                   help="no RTP on a call for this long: MEDIA_TIMEOUT")
    blip_window_s: float = setting(10.0, unit="s", minval=0.0, maxval=60.0,
                                   help="a call whose media stopped is kept (hold tone) this long")
    failback_stable_s: float = setting(30.0, unit="s", minval=0.0, maxval=3600.0,
                                       help="a better edge must answer steadily this long first")
    flap_count: int = setting(3, minval=1, maxval=100,
                              help="edge losses within flap_hold_s that make a flapping WAN")
    flap_hold_s: float = setting(120.0, unit="s", minval=0.0, maxval=3600.0,
                                 help="a flapping WAN must answer this long before failback")
    fallback: tuple[str, ...] = setting(
        ["headset", "hunt", "queue", "callback"], extra=_once("stage"),
        item=dict(choices=("headset", "hunt", "queue", "callback")),
        help="stages in order; [] = the caller hears reorder")
    hunt_group: tuple[str, ...] = setting([], allow_empty=True, item=_NAME,
                                          help="FXS lines rung in order; [] = every FXS line")
    headset_ring_s: float = setting(10.0, unit="s", minval=1.0, maxval=120.0)
    hunt_step_s: float = setting(5.0, unit="s", minval=0.5, maxval=60.0,
                                 help="cascaded ringing: the next phone joins after this long")
    hunt_ring_s: float = setting(20.0, unit="s", minval=1.0, maxval=300.0,
                                 help="time in the hunt group before the queue")
    queue_timeout_s: float = setting(60.0, unit="s", minval=5.0, maxval=3600.0,
                                     help="time in the queue before callback capture")
    announce_every_s: float = setting(20.0, unit="s", minval=5.0, maxval=600.0)
    announcement: str = setting("tones", choices=("tones", "chime"),
                                help="generated prompts: tone patterns or a three-note chime")
    callback_confirm: bool = setting(True, help="play the number back; 1 confirms")
    record_calls: bool = setting(False, help=(
        "record PSTN calls the box handles locally in an outage (stereo mu-law WAV, "
        "uploaded with the records)"))
    outage_strip_prefix: str = setting(
        "", **_OUTAGE_DIGITS, help="cut from numbers dialled out of FXO in an outage")
    outage_add_prefix: str = setting(
        "", **_OUTAGE_DIGITS, help="put in front of them (after the strip)")


@dataclass(frozen=True)
class Cloud:
    """The cloud management agent (`branchline agent`): its MQTT broker and cadences. The
    agent reads them live; the core ignores them. The section is optional in a document:
    a box that never had a broker keeps none (the typed view gives the defaults)."""

    broker: str = setting(
        "", allow_empty=True,
        pattern=r"mqtts?://(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253}):\d{1,5}",
        pattern_rule="must be mqtts://host:port or mqtt://host:port, "
                     "e.g. mqtts://broker.example.com:8883",
        help='the fleet\'s MQTT 5 broker; "" = the agent stays idle')
    ca_file: str = setting("", allow_empty=True, pattern=r"/[^\x00-\x1f]{0,255}",
                           pattern_rule="must be an absolute file path",
                           help='the broker\'s CA, pinned; "" = <data_dir>/agent/broker-ca.pem')
    username: str = setting("", allow_empty=True, pattern=r"[^\s]{1,128}",
                            pattern_rule="must be 1 to 128 characters without spaces",
                            help="fallback login when the box has no certificate yet")
    password: str = setting("", allow_empty=True, secret=True,
                            help="fallback only; never logged or published")
    keepalive_s: int = setting(60, unit="s", minval=10, maxval=1200)
    telemetry_s: int = setting(60, unit="s", minval=5, maxval=86400,
                               help="telemetry cadence; unchanged values are not sent")
    telemetry_full_s: int = setting(3600, unit="s", minval=60, maxval=86400,
                                    help="a full telemetry snapshot this often")
    confirm_s: int = setting(120, unit="s", minval=0, maxval=3600, help=(
        "a pushed config that takes the box off the cloud for this long is rolled back; "
        "0 = no confirmation"))
    command_max_age_s: int = setting(300, unit="s", minval=10, maxval=86400,
                                     help="older commands are refused as stale")


_HHMM = r"([01][0-9]|2[0-3]):[0-5][0-9]"


def _window_rule(window: str) -> str:
    start, _, end = window.partition("-")
    return "starts and ends at the same minute; give \"\" for any time" if start == end else ""


@dataclass(frozen=True)
class Update:
    """The update service (`branchline update serve`): when it may install a bundle and
    how long a trial boot has to pass its health check. Optional in a document, like
    `cloud`; the service reads it at each decision, the core ignores it."""

    window: str = setting(
        "", allow_empty=True, pattern=f"{_HHMM}-{_HHMM}", extra=_window_rule,
        pattern_rule='must be HH:MM-HH:MM in local time, e.g. 01:00-05:00 ("" = any time)',
        help='quiet window for installs, local time; may span midnight; "" = any time')
    health_timeout_s: int = setting(300, unit="s", minval=30, maxval=3600, help=(
        "a trial boot that does not pass the health check within this is rolled back"))


SYSTEM, COUNTRY, CHIP = table(System), table(Country), table(Chip)
HEADSET, PCM, LIFELINE = table(Headset), table(Pcm), table(Lifeline)
LINE = table(Line)
LINE_CLASSES: dict[str, type[FxsLine | FxoLine]] = {LineKind.FXS: FxsLine, LineKind.FXO: FxoLine}
KIND_FIELDS = {kind: table(cls, skip=LINE) for kind, cls in LINE_CLASSES.items()}
FXS_LINE, FXO_LINE = KIND_FIELDS[LineKind.FXS], KIND_FIELDS[LineKind.FXO]
SIP, CALLS, SURVIVE, CLOUD = table(Sip), table(Calls), table(Survive), table(Cloud)
UPDATE = table(Update)
SECTIONS = {"system": SYSTEM, "country": COUNTRY, "board.headset": HEADSET, "board.pcm": PCM,
            "board.lifeline": LIFELINE, "sip": SIP, "calls": CALLS, "survive": SURVIVE,
            "cloud": CLOUD, "update": UPDATE}

# The default board: what its chips and lines set beyond the schema's defaults.
_DEFAULT_CHIPS = {
    "slic0": {"type": "si3215", "spi_cs": 0, "reset_gpio": 17, "int_gpio": 27},
    "slic1": {"type": "si3215", "spi_cs": 1, "reset_gpio": 5, "int_gpio": 6},
    "daa0": {"type": "si3050", "spi_cs": 2, "reset_gpio": 22, "int_gpio": 23},
}
_DEFAULT_LINES = {
    "fxs1": {"kind": "fxs", "chip": "slic0", "timeslot": 0, "name": "Front desk",
             "extension": "201"},
    "fxs2": {"kind": "fxs", "chip": "slic1", "timeslot": 1, "name": "Back office",
             "extension": "202"},
    "fxo1": {"kind": "fxo", "chip": "daa0", "timeslot": 2, "name": "PSTN 1"},
}


def default_document() -> dict[str, Any]:
    """The document a new box starts with: two FXS ports and one FXO line, US plan."""
    return read_document({})[0]


def field_at(doc: dict[str, Any], path: str) -> Field | None:
    """The schema field of a leaf path (`lines.fxs1.flash_max_ms`), when there is one."""
    table, _, key = path.rpartition(".")
    parts = table.split(".")
    if parts[:2] == ["board", "chips"] and len(parts) == 3:
        return CHIP.get(key)
    if parts[0] == "lines" and len(parts) == 2:
        kind = str((doc.get("lines", {}).get(parts[1]) or {}).get("kind"))
        return {**LINE, **KIND_FIELDS.get(kind, {})}.get(key)
    return SECTIONS.get(table, {}).get(key)


class _Reader:
    """Reads tables against their fields, collecting every problem instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def table(self, value: Any, path: str, fields: dict[str, Field],
              foreign: dict[str, str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problems.append(f"{path}: {value!r} must be a table")
            return {}
        out = {key: self._field(value, key, field, f"{path}.{key}")
               for key, field in fields.items()}
        self.unknown(value, path, list(fields), foreign or {})
        return {k: v for k, v in out.items() if v is not REQUIRED}

    def _field(self, table: dict[str, Any], key: str, field: Field, path: str) -> Any:
        if key not in table:
            if field.default is REQUIRED:
                self.problems.append(f"{path}: missing; this setting has no default")
            return copy.deepcopy(field.default)
        try:
            return field.check(table[key], path)
        except _Invalid as exc:
            self.problems.append(str(exc))
            return REQUIRED

    def unknown(self, table: dict[str, Any], path: str, known: Sequence[str],
                foreign: dict[str, str]) -> None:
        """Report keys nobody reads: in a config file they are typos."""
        for key in table:
            if key in known:
                continue
            where = f"{path}.{key}" if path else key
            if key in foreign:
                self.problems.append(f"{where}: {foreign[key]}")
                continue
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            self.problems.append(f"{where}: unknown setting{hint}")

    def keyed(self, value: Any, path: str,
              read_entry: Callable[[Any, str], dict[str, Any]]) -> dict[str, Any]:
        """A keyed table (board.chips, lines); its entries' identity fields (chip select,
        pins, timeslot) have no default, as a default could only collide."""
        if not isinstance(value, dict):
            self.problems.append(f"{path}: {value!r} must be a table")
            return {}
        out = {}
        for name, entry in value.items():
            if not _NAME_RE.fullmatch(name):
                self.problems.append(f"{path}.{name}: the name {_NAME_RULE}")
                continue
            out[name] = read_entry(entry, f"{path}.{name}")
        return out


def _read_line(reader: _Reader, entry: Any, path: str) -> dict[str, Any]:
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if not (isinstance(kind, str) and kind in KIND_FIELDS):
        # The kind's own problem is reported; accept either kind's settings meanwhile.
        return reader.table(entry, path, {**LINE, **FXS_LINE, **FXO_LINE})
    foreign = {key: f"not a setting of an {kind} line; it belongs to {other} lines"
               for other, fields in KIND_FIELDS.items() if other != kind for key in fields}
    return reader.table(entry, path, {**LINE, **KIND_FIELDS[kind]}, foreign)


def _read_board(reader: _Reader, board: Any) -> dict[str, Any]:
    if not isinstance(board, dict):
        reader.problems.append(f"board: {board!r} must be a table")
        return {}
    reader.unknown(board, "board", ("chips", "headset", "lifeline", "pcm"), {})
    return {
        "chips": reader.keyed(board.get("chips", _DEFAULT_CHIPS), "board.chips",
                              lambda entry, path: reader.table(entry, path, CHIP)),
        "headset": reader.table(board.get("headset", {}), "board.headset", HEADSET),
        "lifeline": reader.table(board.get("lifeline", {}), "board.lifeline", LIFELINE),
        "pcm": reader.table(board.get("pcm", {}), "board.pcm", PCM),
    }


def _read_document(reader: _Reader, doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ConfigError([f"the config document must be a table, not {type(doc).__name__}"])
    reader.unknown(doc, "", ("system", "country", "board", "lines", "sip", "calls", "survive",
                             "cloud", "update"), {})
    out = {
        "system": reader.table(doc.get("system", {}), "system", SYSTEM),
        "country": reader.table(doc.get("country", {}), "country", COUNTRY),
        "board": _read_board(reader, doc.get("board", {})),
        "lines": reader.keyed(doc.get("lines", _DEFAULT_LINES), "lines",
                              lambda entry, path: _read_line(reader, entry, path)),
        "sip": reader.table(doc.get("sip", {}), "sip", SIP),
        "calls": reader.table(doc.get("calls", {}), "calls", CALLS),
        "survive": reader.table(doc.get("survive", {}), "survive", SURVIVE),
    }
    if "cloud" in doc:  # optional: present (defaults filled) once anything set it
        out["cloud"] = reader.table(doc["cloud"], "cloud", CLOUD)
    if "update" in doc:  # optional as well: the update service's window and health time
        out["update"] = reader.table(doc["update"], "update", UPDATE)
    return out


def read_document(doc: Any) -> tuple[dict[str, Any], list[str]]:
    """The document typed and defaulted field by field, and the problems found."""
    reader = _Reader()
    out = _read_document(reader, copy.deepcopy(doc))
    return out, reader.problems
