"""Dial plan: MGCP-style digit maps, and the box's own numbers matched before them."""

import pytest

from firmware.callctl.dialplan import Dialplan, DigitMap, Match
from firmware.core.config import Config, default_document

FULL, MORE, PART, NONE = Match.FULL, Match.FULL_MORE, Match.PARTIAL, Match.NO_MATCH


@pytest.mark.parametrize("pattern,digits,want", [
    ("911", "9", PART), ("911", "91", PART), ("911", "911", FULL), ("911", "912", NONE),
    ("911", "9111", NONE),
    ("[2-9]xxxxxx", "1", NONE), ("[2-9]xxxxxx", "2", PART), ("[2-9]xxxxxx", "555123", PART),
    ("[2-9]xxxxxx", "5551234", FULL), ("[2-9]xxxxxx", "55512345", NONE),
    ("1[2-9]xxxxxxxxx", "12125551234", FULL), ("1[2-9]xxxxxxxxx", "11", NONE),
    ("[135]x", "3", PART), ("[135]x", "2", NONE), ("[135]x", "59", FULL),
    ("[1-35]x", "2", PART), ("[1-35]x", "4", NONE), ("[1-35]x", "50", FULL),
    ("*xx", "*", PART), ("*xx", "*72", FULL), ("*xx", "#72", NONE),
    ("011x.", "01", PART), ("011x.", "011", MORE), ("011x.", "01144207", MORE),
    ("011x.", "0114a", NONE),
    ("x.#", "123", PART), ("x.#", "123#", FULL),
    ("xx|xxx", "12", MORE), ("xx|xxx", "123", FULL), ("xx|xxx", "1234", NONE),
])
def test_digit_map_match(pattern, digits, want):
    assert DigitMap(pattern).match(digits) is want


def test_default_dial_plan_alternatives():
    m = DigitMap("[2-9]xxxxxx|1[2-9]xxxxxxxxx|911|*xx")
    # in the bare map 911 could still grow into a 7-digit number: it would wait for the
    # inter-digit timeout; Dialplan's emergency list is what sends it at once
    assert m.match("911") is MORE
    assert m.match("9") is PART
    assert m.match("91") is PART
    assert m.match("9115") is PART  # 7-digit numbers starting 911 exist in the map
    assert m.match("1") is PART and m.match("12") is PART and m.match("0") is NONE


@pytest.mark.parametrize("bad", ["", "[2-9", "[]", ".x", "x..", "[9-2]x", "12y"])
def test_bad_digit_maps_are_refused(bad):
    with pytest.raises(ValueError):
        DigitMap(bad)


@pytest.fixture
def plan():
    return Dialplan(Config.from_doc(default_document()), "us")


def test_local_extensions_win_over_the_map(plan):
    d = plan.decide("202")
    assert d.match is FULL and d.kind == "extension" and d.target == "fxs2"
    d = plan.decide("200")
    assert d.match is FULL and d.kind == "extension" and d.target == "headset"
    assert plan.decide("20").match is PART  # the map and the extensions both go on


def test_emergency_is_matched_first_and_sent_at_once(plan):
    d = plan.decide("911")
    assert d.match is FULL and d.kind == "emergency" and d.number == "911"


def test_country_emergency_numbers_and_override():
    doc = default_document()
    doc["country"]["code"] = "uk"
    doc["calls"]["dialplan"] = "0xxxxxxxxxx|999|112"
    uk = Dialplan(Config.from_doc(doc), "uk")
    assert uk.decide("999").kind == "emergency" and uk.decide("112").kind == "emergency"
    doc["calls"]["emergency"] = ["112"]
    only = Dialplan(Config.from_doc(doc), "uk")
    assert only.decide("999").kind == "external" and only.decide("112").kind == "emergency"


def test_park_and_pickup_codes(plan):
    d = plan.decide("*71")
    assert d.match is FULL and d.kind == "park" and d.target == "1"
    d = plan.decide("*84")
    assert d.match is FULL and d.kind == "pickup" and d.target == "4"
    assert plan.decide("*7").match is PART
    assert plan.decide("*55").kind == "external"  # any other *xx code goes to the cloud


def test_hash_sends_now_and_timeout_decides(plan):
    assert plan.decide("5551").match is PART
    assert plan.decide("5551", final=True).match is NONE  # incomplete at the timeout
    assert plan.decide("5551234#").match is FULL and plan.decide("5551234#").number == "5551234"
    assert plan.decide("555#").match is NONE  # '#' after an incomplete number: reorder
    assert plan.decide("#").match is NONE


def test_full_with_longer_possible_waits_for_the_timeout():
    doc = default_document()
    doc["calls"]["dialplan"] = "011x.|[2-9]xxxxxx"
    plan = Dialplan(Config.from_doc(doc), "us")
    assert plan.decide("011442079").match is MORE
    d = plan.decide("011442079", final=True)
    assert d.match is FULL and d.number == "011442079"
    assert plan.decide("011442079#").match is FULL


def test_no_match_is_immediate(plan):
    assert plan.decide("0").match is NONE
    assert plan.decide("11").match is NONE
