"""Config schema, cross-checks, line helpers and the versioned store (in-process).

Crash safety under SIGKILL is in test_config_atomic.py, the command line in
test_config_cli.py. Countries are read from cext.toneplans, never listed here.
"""

import copy
import errno
import os
import stat
import threading

import pytest

from cext import toneplans
from firmware.core.config import (
    Config,
    ConfigError,
    ConfigStore,
    config_dir,
    default_document,
    effective_callerid,
    effective_ring_cadence,
    line_country,
    schema,
    validate,
)
from firmware.core.config.schema import FxoLine, FxsLine, LineKind


def problems_of(doc):
    with pytest.raises(ConfigError) as info:
        validate(doc)
    return info.value.problems


def one_problem(doc):
    found = problems_of(doc)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def doc():
    return default_document()


# --- defaults -----------------------------------------------------------------------------


def test_default_document_is_valid_and_complete(doc):
    assert validate(doc) == doc
    assert set(doc) == {"system", "country", "board", "lines", "sip", "calls", "survive"}
    assert list(doc["board"]["chips"]) == ["slic0", "slic1", "daa0"]
    assert doc["lines"]["fxs1"]["flash_max_ms"] == 800
    assert doc["lines"]["fxo1"]["disconnect"] == ["loop_drop", "reversal", "tone"]


def test_default_document_is_a_fresh_copy_each_time(doc):
    doc["lines"]["fxo1"]["disconnect"].append("x")
    assert default_document()["lines"]["fxo1"]["disconnect"] == ["loop_drop", "reversal", "tone"]


def test_missing_sections_and_fields_get_defaults(doc):
    del doc["system"], doc["country"]["callerid"], doc["board"]["headset"]
    for key in ("debounce_ms", "flash_min_ms", "flash_max_ms", "name", "alsa_device"):
        del doc["lines"]["fxs1"][key]
    out = validate(doc)
    assert out["system"] == {"name": "branch-01"}
    assert out["country"]["callerid"] == ""
    assert out["board"]["headset"] == {"enabled": True, "alsa_device": "default", "rate": 48000}
    line = out["lines"]["fxs1"]
    assert (line["debounce_ms"], line["flash_min_ms"], line["flash_max_ms"]) == (20, 100, 800)
    assert line["alsa_device"] == "branchline" and line["name"] == ""


def test_absent_keyed_tables_take_the_default_board_and_lines():
    out = validate({"system": {"name": "box-7"}})
    assert out["lines"] == default_document()["lines"]
    assert out["board"]["chips"] == default_document()["board"]["chips"]


def test_empty_lines_table_means_no_lines(doc):
    doc["lines"] = {}
    assert validate(doc)["lines"] == {}


def test_validate_does_not_modify_its_input(doc):
    del doc["lines"]["fxs1"]["debounce_ms"]
    before = copy.deepcopy(doc)
    validate(doc)
    assert doc == before


def test_integers_become_floats_where_seconds_are_expected(doc):
    doc["country"]["ring_cadence"] = [2, 4]
    cadence = validate(doc)["country"]["ring_cadence"]
    assert cadence == [2.0, 4.0] and all(isinstance(s, float) for s in cadence)


# --- single fields ---------------------------------------------------------------------


def test_unknown_country_names_field_value_and_known_list(doc):
    doc["lines"]["fxs1"]["country"] = "XX"
    known = ", ".join(toneplans.COUNTRIES)
    assert one_problem(doc) == f"lines.fxs1.country: 'XX' is not a known country; known: {known}"


@pytest.mark.parametrize("code", toneplans.COUNTRIES)
def test_every_known_country_is_accepted(doc, code):
    doc["country"]["code"] = code
    doc["lines"]["fxo1"]["country"] = code
    assert validate(doc)["lines"]["fxo1"]["country"] == code


def test_unknown_box_country_is_refused(doc):
    doc["country"]["code"] = "zz"
    assert one_problem(doc).startswith("country.code: 'zz' is not a known country; known: ")


def test_typo_gets_did_you_mean(doc):
    doc["lines"]["fxs1"]["debounse_ms"] = 30
    assert one_problem(doc) == "lines.fxs1.debounse_ms: unknown setting; did you mean 'debounce_ms'?"


def test_unknown_key_without_close_match_lists_known_keys(doc):
    doc["board"]["headset"]["zzz"] = 1
    assert one_problem(doc) == "board.headset.zzz: unknown setting; known: enabled, alsa_device, rate"


def test_unknown_section_is_named(doc):
    doc["line"] = {}
    assert one_problem(doc) == "line: unknown setting; did you mean 'lines'?"


def test_unknown_board_table_is_named(doc):
    doc["board"]["chip"] = {}
    assert one_problem(doc) == "board.chip: unknown setting; did you mean 'chips'?"


def test_setting_of_the_other_line_kind_is_refused(doc):
    doc["lines"]["fxs1"]["ring_min_ms"] = 200
    doc["lines"]["fxo1"]["flash_max_ms"] = 700
    assert problems_of(doc) == [
        "lines.fxs1.ring_min_ms: not a setting of an fxs line; it belongs to fxo lines",
        "lines.fxo1.flash_max_ms: not a setting of an fxo line; it belongs to fxs lines",
    ]


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("lines.fxs1.debounce_ms", "20", "lines.fxs1.debounce_ms: '20' must be an integer (ms)"),
    ("lines.fxs1.debounce_ms", 20.0, "lines.fxs1.debounce_ms: 20.0 must be an integer (ms)"),
    ("lines.fxs1.debounce_ms", True, "lines.fxs1.debounce_ms: True must be an integer (ms)"),
    ("board.headset.enabled", 1, "board.headset.enabled: 1 must be true or false"),
    ("lines.fxs1.extension", 201,
     'lines.fxs1.extension: 201 must be a string; quote it: "201"'),
    ("country.ring_cadence", "2,4", "country.ring_cadence: '2,4' must be a list (s)"),
    ("lines.fxo1.disconnect", "tone", "lines.fxo1.disconnect: 'tone' must be a list"),
])
def test_wrong_type_names_field_value_and_type(doc, path, value, expected):
    set_path(doc, path, value)
    assert one_problem(doc) == expected


def set_path(doc, path, value):
    *parents, key = path.split(".")
    table = doc
    for part in parents:
        table = table[part]
    table[key] = value


@pytest.mark.parametrize(("path", "low", "high", "unit"), [
    ("lines.fxs1.debounce_ms", 5, 100, " ms"),
    ("lines.fxs1.flash_min_ms", 21, 1000, " ms"),  # above the 20 ms debounce
    ("lines.fxs1.flash_max_ms", 101, 2000, " ms"),  # above the 100 ms flash_min
    ("lines.fxo1.ring_min_ms", 100, 1000, " ms"),
    ("board.chips.slic0.spi_hz", 100_000, 10_000_000, " Hz"),
    ("board.chips.daa0.spi_bus", 0, 6, ""),
    ("lines.fxs2.timeslot", 0, 3, " (the PCM frame is 32 bits: 4 slots of 8 bits per alsa_device)"),
])
def test_range_boundaries(doc, path, low, high, unit):
    if path == "lines.fxs1.flash_min_ms":
        doc["lines"]["fxs1"]["flash_max_ms"] = 2000
    if path == "lines.fxo1.ring_min_ms":
        doc["country"]["ring_cadence"] = [2.0, 4.0]  # bursts long enough for any filter
    if path.endswith("timeslot"):
        doc["lines"]["fxs2"]["alsa_device"] = "hw:1,0"  # alone on its PCM
    if path.endswith("debounce_ms"):
        doc["lines"]["fxs1"]["flash_min_ms"] = 150
    if path.endswith("spi_bus"):  # the DAA alone on the board, on a chip select every bus has
        doc["board"]["chips"] = {"daa0": {**doc["board"]["chips"]["daa0"], "spi_cs": 0}}
        doc["lines"] = {}
    for good in (low, high):
        set_path(doc, path, good)
        assert validate(doc) is not None
    field = path.rsplit(".", 1)[1]
    minimum = {"flash_min_ms": 20, "flash_max_ms": 50}.get(field, low)
    for bad in (minimum - 1, high + 1):
        set_path(doc, path, bad)
        assert problems_of(doc)[0].startswith(f"{path}: {bad} is out of range; allowed ")
        assert problems_of(doc)[0].endswith(f"..{high}{unit}")


@pytest.mark.parametrize(("path", "value"), [
    ("board.chips.slic0.type", "si3217"),
    ("board.headset.rate", 8000),
    ("country.callerid", "etsi"),
    ("lines.fxo1.kind", "fxx"),
])
def test_values_outside_the_choices_are_refused(doc, path, value):
    set_path(doc, path, value)
    assert problems_of(doc)[0].startswith(f"{path}: {value!r} is not allowed; choose one of: ")


@pytest.mark.parametrize("standard", ["bell202", "v23", "dtmf", ""])
def test_callerid_standards(doc, standard):
    doc["country"]["callerid"] = standard
    assert validate(doc)["country"]["callerid"] == standard


@pytest.mark.parametrize(("cadence", "rule"), [
    ([2.0], "must be on/off pairs"),
    ([0.4, 0.2, 0.4, 0.2, 0.4, 0.2, 0.4, 0.2, 0.4, 2.0], "must be on/off pairs"),
    ([10.0, 10.0, 10.0, 10.0], "must repeat within 30 s"),
])
def test_bad_ring_cadence(doc, cadence, rule):
    doc["country"]["ring_cadence"] = cadence
    assert rule in one_problem(doc)


def test_ring_cadence_segment_out_of_range_names_its_index(doc):
    doc["country"]["ring_cadence"] = [2.0, 0.05]
    assert one_problem(doc).startswith("country.ring_cadence[1]: 0.05 is out of range; allowed 0.1..10 s")


@pytest.mark.parametrize(("signals", "rule"), [
    ([], "must name at least one signal"),
    (["tone", "tone"], "names a signal twice"),
])
def test_bad_disconnect_list(doc, signals, rule):
    doc["lines"]["fxo1"]["disconnect"] = signals
    assert rule in one_problem(doc)


def test_unknown_disconnect_signal_names_its_index(doc):
    doc["lines"]["fxo1"]["disconnect"] = ["loop_drop", "silence"]
    assert one_problem(doc).startswith("lines.fxo1.disconnect[1]: 'silence' is not allowed")


@pytest.mark.parametrize(("path", "value", "rule"), [
    ("lines.fxs1.extension", "20a", "must be 1 to 8 digits"),
    ("lines.fxs1.extension", "123456789", "must be 1 to 8 digits"),
    ("lines.fxo1.number", "555-1230", "must be a phone number"),
    ("system.name", "branch 01", "must be 1 to 63 letters"),
    ("system.name", "", "must be 1 to 63 letters"),
    ("board.headset.alsa_device", "hw 1", "is not an ALSA device name"),
    ("lines.fxs1.name", "Front\ndesk", "must be at most 40 printable characters"),
])
def test_text_patterns(doc, path, value, rule):
    set_path(doc, path, value)
    assert rule in one_problem(doc)
    assert one_problem(doc).startswith(f"{path}: {value!r} ")


def test_international_number_is_accepted(doc):
    doc["lines"]["fxo1"]["number"] = "+442071234567"
    assert validate(doc)["lines"]["fxo1"]["number"] == "+442071234567"


def test_bad_line_and_chip_names(doc):
    doc["lines"]["1st line"] = doc["lines"].pop("fxs2")
    assert one_problem(doc).startswith("lines.1st line: the name must start with a letter")


def test_required_identity_fields_have_no_default(doc):
    del doc["board"]["chips"]["slic1"]["spi_cs"]
    del doc["lines"]["fxs2"]["kind"]
    assert problems_of(doc) == [
        "board.chips.slic1.spi_cs: missing; this setting has no default",
        "lines.fxs2.kind: missing; this setting has no default",
    ]


def test_table_expected(doc):
    doc["lines"]["fxs2"] = 3
    doc["board"] = []
    assert problems_of(doc) == ["board: [] must be a table", "lines.fxs2: 3 must be a table"]


def test_document_must_be_a_table():
    assert problems_of([1, 2]) == ["the config document must be a table, not list"]


def test_error_message_is_the_first_problem_and_counts_the_rest(doc):
    doc["lines"]["fxs1"]["country"] = "XX"
    doc["lines"]["fxs2"]["debounce_ms"] = 0
    doc["system"]["name"] = "a b"
    with pytest.raises(ConfigError) as info:
        validate(doc)
    assert len(info.value.problems) == 3
    assert str(info.value) == info.value.problems[0] + " (and 2 more problems)"
    assert "\n" not in str(info.value)


# --- cross-checks ----------------------------------------------------------------------


def test_line_chip_must_exist_with_did_you_mean(doc):
    doc["lines"]["fxs1"]["chip"] = "slc0"
    assert one_problem(doc) == "lines.fxs1.chip: 'slc0' is not a chip in board.chips; did you mean 'slic0'?"


def test_line_chip_unknown_lists_known_chips(doc):
    doc["lines"]["fxs1"]["chip"] = "card"
    assert one_problem(doc) == "lines.fxs1.chip: 'card' is not a chip in board.chips; known: slic0, slic1, daa0"


def test_fxs_line_on_a_daa_is_refused(doc):
    doc["lines"]["fxs1"]["chip"] = "daa0"
    doc["lines"]["fxo1"]["chip"] = "slic0"
    assert problems_of(doc) == [
        "lines.fxs1.chip: 'daa0' is a si3050; an fxs line needs a si3215 or si3210 chip",
        "lines.fxo1.chip: 'slic0' is a si3215; an fxo line needs a si3050 chip",
    ]


def test_si3210_serves_an_fxs_line(doc):
    doc["board"]["chips"]["slic1"]["type"] = "si3210"
    assert validate(doc)["board"]["chips"]["slic1"]["type"] == "si3210"


def test_one_chip_serves_one_line(doc):
    doc["lines"]["fxs2"]["chip"] = "slic0"
    assert one_problem(doc) == "lines.fxs2.chip: 'slic0' already serves lines.fxs1; a si3215 has one port"


def test_two_chips_on_one_chip_select(doc):
    doc["board"]["chips"]["slic1"]["spi_cs"] = 0
    assert one_problem(doc) == (
        "board.chips.slic1: spidev0.0 (spi_bus 0, spi_cs 0) is also used by board.chips.slic0; "
        "each chip needs its own chip select")


def test_chip_select_must_exist_on_the_bus(doc):
    doc["board"]["chips"]["daa0"].update(spi_bus=3, spi_cs=2)
    assert one_problem(doc) == (
        "board.chips.daa0.spi_cs: 2 does not exist on spi3; it has chip selects 0..1")


def test_gpio_used_twice_names_both_users(doc):
    doc["board"]["chips"]["daa0"]["int_gpio"] = 17
    assert one_problem(doc) == (
        "board.chips.daa0.int_gpio: GPIO 17 is also used by board.chips.slic0.reset_gpio; "
        "a pin can have only one use")


def test_reset_and_interrupt_of_one_chip_must_differ(doc):
    doc["board"]["chips"]["slic1"]["int_gpio"] = 5
    assert "GPIO 5 is also used by board.chips.slic1.reset_gpio" in one_problem(doc)


def test_gpio_on_a_spi_pin_names_the_bus_and_its_chip(doc):
    doc["board"]["chips"]["slic1"]["reset_gpio"] = 10  # spi0 MOSI
    assert one_problem(doc) == (
        "board.chips.slic1.reset_gpio: GPIO 10 is also used by spi0 MOSI (board.chips.slic0); "
        "a pin can have only one use")


def test_chip_select_pin_in_use_is_refused(doc):
    doc["board"]["chips"]["slic1"]["reset_gpio"] = 7  # spi0 CE1, which slic1 itself selects
    assert "GPIO 7 is also used by spi0 CE1 (board.chips.slic1)" in one_problem(doc)


def test_spi_pins_of_unused_buses_are_free(doc):
    doc["board"]["chips"]["slic1"]["reset_gpio"] = 13  # spi5 MISO, spi5 not in use
    assert validate(doc)["board"]["chips"]["slic1"]["reset_gpio"] == 13


def test_spi1_and_spi6_share_pins(doc):
    doc["lines"] = {}  # no PCM audio in use, so only the two buses compete for the pins
    doc["board"]["chips"]["daa0"].update(spi_bus=1, spi_cs=0)
    doc["board"]["chips"]["slic1"].update(spi_bus=6, spi_cs=1)
    assert problems_of(doc)[0] == ("board.chips.daa0.spi_bus: GPIO 19 is also used by spi6 MISO "
                                   "(board.chips.slic1); a pin can have only one use")


def test_two_lines_in_one_timeslot(doc):
    doc["lines"]["fxo1"]["timeslot"] = 0
    assert one_problem(doc) == ("lines.fxo1.timeslot: 0 on branchline is also used by lines.fxs1; "
                                "each line needs its own timeslot")


def test_same_timeslot_on_another_pcm_device_is_fine(doc):
    doc["lines"]["fxo1"].update(timeslot=0, alsa_device="hw:1,0")
    assert validate(doc)["lines"]["fxo1"]["timeslot"] == 0


def test_headset_may_not_use_a_line_pcm(doc):
    doc["board"]["headset"]["alsa_device"] = "branchline"
    assert one_problem(doc).startswith("board.headset.alsa_device: 'branchline' is the line PCM of lines.")
    doc["board"]["headset"]["enabled"] = False
    assert validate(doc)


def test_extensions_are_unique(doc):
    doc["lines"]["fxs2"]["extension"] = "201"
    assert one_problem(doc) == "lines.fxs2.extension: '201' is also the extension of lines.fxs1"


def test_extension_that_is_a_prefix_of_another_is_refused(doc):
    doc["calls"]["headset_extension"] = "300"
    doc["lines"]["fxs2"]["extension"] = "20"
    assert one_problem(doc) == ("lines.fxs2.extension: '20' and '201' (lines.fxs1) overlap; "
                                "a caller dialling 201 would reach 20 first")


def test_lines_without_extension_do_not_clash(doc):
    doc["lines"]["fxs1"]["extension"] = ""
    doc["lines"]["fxs2"]["extension"] = ""
    assert validate(doc)


def _country_with_emergency():
    for code in toneplans.COUNTRIES:
        if toneplans.plan(code).emergency:
            return code, toneplans.plan(code).emergency[0]
    raise AssertionError("no tone plan lists an emergency number")


def test_extension_may_not_shadow_the_emergency_number(doc):
    code, number = _country_with_emergency()
    doc["lines"]["fxs1"].update(country=code, extension=number[:-1] or number)
    assert one_problem(doc) == (
        f"lines.fxs1.extension: {number[:-1] or number!r} overlaps the emergency number "
        f"{number} of {code}; dialling {number} must always work")


def test_flash_window_must_lie_above_the_debounce(doc):
    doc["lines"]["fxs1"].update(debounce_ms=50, flash_min_ms=50)
    assert one_problem(doc).startswith("lines.fxs1.flash_min_ms: 50 must be above debounce_ms (50)")


def test_flash_max_must_exceed_flash_min(doc):
    doc["lines"]["fxs1"].update(flash_min_ms=600, flash_max_ms=600)
    assert one_problem(doc).startswith("lines.fxs1.flash_max_ms: 600 must be above flash_min_ms (600)")


def test_ring_filter_must_pass_the_countrys_shortest_burst(doc):
    doc["country"]["ring_cadence"] = [0.3, 0.2, 0.3, 2.0]
    doc["lines"]["fxo1"]["ring_min_ms"] = 300
    assert one_problem(doc).startswith(
        "lines.fxo1.ring_min_ms: 300 would reject every ring burst of the us cadence "
        "(shortest 300 ms)")
    doc["lines"]["fxo1"]["ring_min_ms"] = 299
    assert validate(doc)


def test_ring_filter_follows_the_line_country_plan(doc):
    code = min(toneplans.COUNTRIES, key=lambda c: min(toneplans.plan(c).ring_cadence[0::2]))
    shortest = round(min(toneplans.plan(code).ring_cadence[0::2]) * 1000)
    doc["lines"]["fxo1"].update(country=code, ring_min_ms=min(shortest, 1000))
    if shortest <= 1000:
        assert f"(shortest {shortest} ms)" in one_problem(doc)
    doc["lines"]["fxo1"]["ring_min_ms"] = 100
    assert validate(doc)


def test_cross_checks_wait_for_valid_fields(doc):
    doc["lines"]["fxs1"]["debounce_ms"] = "x"
    doc["lines"]["fxs2"]["chip"] = "slic0"  # would be a cross-check problem
    assert problems_of(doc) == ["lines.fxs1.debounce_ms: 'x' must be an integer (ms)"]


# --- line helpers ------------------------------------------------------------------------


def test_line_country_falls_back_to_the_box_country(doc):
    other = toneplans.COUNTRIES[-1]
    doc["country"]["code"] = other
    assert line_country(doc, "fxs1") == other
    doc["lines"]["fxs1"]["country"] = "us"
    assert line_country(doc, "fxs1") == "us"


def test_effective_ring_cadence_override_and_plan(doc):
    code = toneplans.COUNTRIES[-1]
    doc["lines"]["fxs2"]["country"] = code
    assert effective_ring_cadence(doc, "fxs2") == tuple(toneplans.plan(code).ring_cadence)
    doc["country"]["ring_cadence"] = [1.0, 3.0]
    assert effective_ring_cadence(doc, "fxs2") == (1.0, 3.0)


def test_effective_callerid_override_and_plan(doc):
    code = toneplans.COUNTRIES[-1]
    doc["lines"]["fxo1"]["country"] = code
    assert effective_callerid(doc, "fxo1") == toneplans.plan(code).callerid
    doc["country"]["callerid"] = "dtmf"
    assert effective_callerid(doc, "fxo1") == "dtmf"


def test_helpers_name_an_unknown_line(doc):
    with pytest.raises(ConfigError, match=r"lines.fxs11: no such line; did you mean 'fxs1'\?"):
        line_country(doc, "fxs11")


# --- the store ---------------------------------------------------------------------------


def named(name):
    doc = default_document()
    doc["system"]["name"] = name
    return doc


def snapshot(directory):
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


class Ticks:
    """A wall clock for version stamps that advances one minute per read."""

    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self):
        self.now += 60.0
        return self.now


def test_config_dir_option_then_env_then_etc(monkeypatch, tmp_path):
    monkeypatch.delenv("BRANCHLINE_CONFIG_DIR", raising=False)
    assert str(config_dir()) == "/etc/branchline"
    monkeypatch.setenv("BRANCHLINE_CONFIG_DIR", str(tmp_path))
    assert config_dir() == tmp_path
    assert str(config_dir("/srv/x")) == "/srv/x"


def test_load_without_a_file_gives_the_default_and_writes_nothing(tmp_path):
    store = ConfigStore(tmp_path / "cfg")
    assert store.load() == default_document()
    assert store.versions() == []
    assert not (tmp_path / "cfg").exists()


def test_save_then_load_round_trip(tmp_path):
    store = ConfigStore(tmp_path)
    doc = named("box-2")
    doc["country"]["ring_cadence"] = [0.4, 0.2, 0.4, 2.0]
    assert store.save(doc, reason="first") == 1
    assert store.load() == validate(doc)
    assert ConfigStore(tmp_path).load()["system"]["name"] == "box-2"


def test_saved_file_has_a_header_and_parses_as_toml(tmp_path):
    ConfigStore(tmp_path, clock=lambda: 1_700_000_000.0).save(named("a"), reason="multi\nline")
    text = (tmp_path / "branchline.toml").read_text()
    assert text.startswith("# branchline configuration version 1, saved 2023-11-14T22:13:20Z")
    assert "# reason: multi line\n" in text


def test_files_are_owner_and_group_only_even_with_an_open_umask(tmp_path):
    old = os.umask(0)
    try:
        ConfigStore(tmp_path / "cfg").save(named("a"))
    finally:
        os.umask(old)
    base = tmp_path / "cfg"
    for path in [base, base / "versions"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o750, path
    for path in [base / "branchline.toml", base / "versions" / "index.json",
                 base / "versions" / "v000001.toml"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path
    assert stat.S_IMODE((base / ".lock").stat().st_mode) == 0o600


def test_bad_document_changes_nothing_on_disk(tmp_path):
    store = ConfigStore(tmp_path)
    store.save(named("good"))
    before = snapshot(tmp_path)
    bad = named("good")
    bad["lines"]["fxs1"]["country"] = "XX"
    with pytest.raises(ConfigError, match="lines.fxs1.country: 'XX'"):
        store.save(bad)
    assert snapshot(tmp_path) == before


def test_bad_document_in_a_new_directory_creates_nothing(tmp_path):
    bad = named("x y")
    with pytest.raises(ConfigError):
        ConfigStore(tmp_path / "cfg").save(bad)
    assert not (tmp_path / "cfg").exists()


def test_toml_syntax_error_names_file_and_line(tmp_path):
    (tmp_path / "branchline.toml").write_text('[system]\nname = "a"\n[country\ncode = "us"\n')
    with pytest.raises(ConfigError) as info:
        ConfigStore(tmp_path).load()
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'branchline.toml'}: TOML syntax error: ")
    assert "line 3" in message


def test_invalid_live_file_names_file_and_field(tmp_path):
    (tmp_path / "branchline.toml").write_text('[lines.fxs1]\ndebounce_ms = 1\n')
    with pytest.raises(ConfigError) as info:
        ConfigStore(tmp_path).load()
    assert str(info.value).startswith(f"{tmp_path / 'branchline.toml'}: lines.fxs1.")


def test_versions_record_time_and_reason_from_the_injected_clock(tmp_path):
    clock = Ticks()
    store = ConfigStore(tmp_path, clock=clock)
    for i in range(3):
        store.save(named(f"n{i}"), reason=f"change {i}")
    rows = store.versions()
    assert [r["version"] for r in rows] == [1, 2, 3]
    assert [r["reason"] for r in rows] == ["change 0", "change 1", "change 2"]
    assert [r["time"] for r in rows] == [1_700_000_060.0, 1_700_000_120.0, 1_700_000_180.0]
    assert [r["current"] for r in rows] == [False, False, True]


def test_only_the_last_n_versions_are_kept(tmp_path):
    store = ConfigStore(tmp_path, keep=3)
    for i in range(7):
        store.save(named(f"n{i}"))
    assert [r["version"] for r in store.versions()] == [5, 6, 7]
    files = sorted(p.name for p in (tmp_path / "versions").glob("v*.toml"))
    assert files == ["v000005.toml", "v000006.toml", "v000007.toml"]
    assert store.read_version(5)["system"]["name"] == "n4"


def test_default_keep_is_ten(tmp_path):
    store = ConfigStore(tmp_path)
    for i in range(12):
        store.save(named(f"n{i}"))
    assert [r["version"] for r in store.versions()] == list(range(3, 13))


def test_rollback_restores_the_previous_version_as_a_new_one(tmp_path):
    store = ConfigStore(tmp_path)
    store.save(named("one"))
    store.save(named("two"))
    assert store.rollback() == 3
    assert store.load()["system"]["name"] == "one"
    assert store.versions()[-1]["reason"] == "rollback to version 1"
    assert store.rollback() == 4  # the previous of a rollback is the state it undid
    assert store.load()["system"]["name"] == "two"


def test_rollback_to_a_given_version(tmp_path):
    store = ConfigStore(tmp_path)
    for name in ("one", "two", "three"):
        store.save(named(name))
    assert store.rollback(1) == 4
    assert store.load()["system"]["name"] == "one"


def test_rollback_to_a_pruned_version_names_the_kept_ones(tmp_path):
    store = ConfigStore(tmp_path, keep=2)
    for name in ("one", "two", "three"):
        store.save(named(name))
    with pytest.raises(ConfigError, match=r"version 1 is not kept; kept: 2\.\.3"):
        store.rollback(1)


def test_rollback_needs_an_earlier_version(tmp_path):
    store = ConfigStore(tmp_path)
    store.save(named("one"))
    with pytest.raises(ConfigError, match="no earlier version to roll back to"):
        store.rollback()


def test_rollback_refuses_a_version_the_current_schema_rejects(tmp_path):
    store = ConfigStore(tmp_path)
    store.save(named("one"))
    store.save(named("two"))
    path = tmp_path / "versions" / "v000001.toml"
    path.write_text(path.read_text().replace('name = "one"', 'name = "o n e"'))
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="version 1: system.name: 'o n e'"):
        store.rollback()
    assert snapshot(tmp_path) == before


def test_a_hand_edit_is_kept_as_a_version_before_it_is_replaced(tmp_path):
    store = ConfigStore(tmp_path)
    store.save(named("saved"))
    live = tmp_path / "branchline.toml"
    live.write_text(live.read_text().replace('name = "saved"', 'name = "by-hand"'))
    assert store.load()["system"]["name"] == "by-hand"
    assert store.versions()[-1]["current"] is False
    assert store.save(named("new")) == 3
    rows = store.versions()
    assert rows[1]["reason"] == "hand edit found on disk"
    assert store.read_version(2)["system"]["name"] == "by-hand"
    store.rollback()
    assert store.load()["system"]["name"] == "by-hand"


def test_a_hand_written_first_file_becomes_version_one(tmp_path):
    (tmp_path / "branchline.toml").write_text('[system]\nname = "installer"\n')
    store = ConfigStore(tmp_path)
    assert store.save(named("first-save")) == 2
    assert store.read_version(1)["system"]["name"] == "installer"


def test_an_unwritable_directory_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write the config: Not a directory; check --config-dir"):
        ConfigStore(blocker / "cfg").save(named("a"))


def test_concurrent_writers_get_distinct_versions(tmp_path):
    def writer(tag):
        store = ConfigStore(tmp_path, keep=50)
        for i in range(8):
            store.save(named(f"{tag}-{i}"), reason=f"{tag} {i}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = ConfigStore(tmp_path).versions()
    assert [r["version"] for r in rows] == list(range(1, 17))
    assert sorted(r["reason"] for r in rows) == sorted(f"{t} {i}" for t in "ab" for i in range(8))
    assert rows[-1]["current"]


def test_permission_denied_says_run_as_root(tmp_path, monkeypatch):
    (tmp_path / "branchline.toml").write_text("")

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("pathlib.Path.read_bytes", refuse)  # we run as root: fake the EACCES
    with pytest.raises(ConfigError) as info:
        ConfigStore(tmp_path).load()
    assert str(info.value) == (f"{tmp_path / 'branchline.toml'}: cannot read: Permission denied; "
                               "run as root, or choose another --config-dir")


def test_spi1_is_refused_because_its_pins_carry_the_lines_pcm_audio(doc):
    doc["board"]["chips"]["daa0"].update(spi_bus=1, spi_cs=0)
    assert problems_of(doc)[0] == (
        "board.chips.daa0.spi_bus: GPIO 19 is also used by the lines' PCM audio (PCM_FS); "
        "a pin can have only one use")


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("sip.edges", ["edge1.example.com"], "sip.edges[0]: 'edge1.example.com' must be a SIP URI"),
    ("sip.transport", "sctp", "sip.transport: 'sctp' is not allowed; choose one of: udp, tcp, tls"),
    ("sip.codecs", ["PCMU", "opus"], "sip.codecs[1]: 'opus' is not allowed"),
    ("calls.dialplan", "[2-9]xxx; rm", "calls.dialplan: '[2-9]xxx; rm' must be a digit map"),
    ("calls.interdigit_s", 0.5, "calls.interdigit_s: 0.5 is out of range; allowed 1..20 s"),
    ("calls.emergency", ["9-1-1"], "calls.emergency[0]: '9-1-1' must be 2 to 6 digits"),
])
def test_sip_and_calls_sections_are_checked(doc, path, value, expected):
    set_path(doc, path, value)
    assert problems_of(doc)[0].startswith(expected)


def test_headset_extension_may_not_clash_with_a_line(doc):
    doc["calls"]["headset_extension"] = "201"
    assert problems_of(doc)[0] == (
        "lines.fxs1.extension: '201' is also the extension of headset (calls.headset_extension)")


# --- the typed config -----------------------------------------------------------------------


def test_typed_config_has_the_sections_and_the_defaults(doc):
    cfg = Config.from_doc(doc)
    assert cfg.country.code == schema.COUNTRY["code"].default == "us"
    assert cfg.sip.codecs == ("PCMU", "PCMA") and cfg.sip.transport == "udp"
    assert cfg.board.lifeline.gpio == 26 and cfg.board.chips["daa0"].type == "si3050"
    assert cfg.survive.fallback == ("headset", "hunt", "queue", "callback")
    assert cfg.calls.headset_extension == "200"


def test_typed_config_round_trips_to_the_validated_document(doc):
    doc["lines"]["fxs2"]["country"] = "uk"
    doc["country"]["ring_cadence"] = [1.0, 3.0]
    valid = validate(doc)
    assert Config.from_doc(doc).to_doc() == valid
    assert list(Config.from_doc(doc).to_doc()["board"]["chips"]["slic0"]) == list(
        valid["board"]["chips"]["slic0"])


def test_typed_config_is_frozen(doc):
    cfg = Config.from_doc(doc)
    with pytest.raises(AttributeError):
        cfg.sip.transport = "tls"
    with pytest.raises(TypeError):
        cfg.lines["fxs9"] = cfg.lines["fxs1"]


def test_typed_lines_carry_their_kind_and_effective_plan(doc):
    other = next(c for c in toneplans.COUNTRIES if c != "us")
    doc["lines"]["fxs2"]["country"] = other
    cfg = Config.from_doc(doc)
    fxs1, fxs2 = cfg.line("fxs1"), cfg.line_as("fxs2", FxsLine)
    assert isinstance(fxs1, FxsLine) and fxs1.kind is LineKind.FXS and fxs1.flash_max_ms == 800
    assert fxs1.effective_country == "us" and fxs2.effective_country == other
    assert fxs2.effective_ring_cadence == effective_ring_cadence(doc, "fxs2")
    assert cfg.line_as("fxo1", FxoLine).effective_callerid == effective_callerid(doc, "fxo1")
    assert cfg.line("fxo1").disconnect == ("loop_drop", "reversal", "tone")


def test_typed_config_refuses_what_validate_refuses(doc):
    doc["lines"]["fxs1"]["flash_max_ms"] = 5000
    with pytest.raises(ConfigError) as info:
        Config.from_doc(doc)
    assert str(info.value).startswith("lines.fxs1.flash_max_ms: 5000 is out of range")


def test_typed_config_names_an_unknown_or_wrong_kind_of_line(doc):
    cfg = Config.from_doc(doc)
    with pytest.raises(ConfigError, match="lines.fxs11: no such line; did you mean 'fxs1'"):
        cfg.line("fxs11")
    with pytest.raises(ConfigError, match="lines.fxo1: an fxo line, not an FxsLine"):
        cfg.line_as("fxo1", FxsLine)


def test_schema_tables_are_derived_from_the_sections():
    assert list(schema.FXS_LINE) == [f for f in FxsLine.__dataclass_fields__
                                     if f in schema.FXS_LINE]
    assert "effective_country" not in schema.LINE and "kind" in schema.LINE
    assert schema.LINE["kind"].choice_list() == ("fxs", "fxo")
    assert schema.SIP["codecs"].type is list and schema.SIP["codecs"].item.type is str
    assert schema.field_at(default_document(), "lines.fxo1.ring_min_ms") is schema.FXO_LINE[
        "ring_min_ms"]
