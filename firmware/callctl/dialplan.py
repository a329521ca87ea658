"""Dial plan: MGCP-style digit maps and the box's own numbers, matched digit by digit.

A digit map is alternatives separated by `|`; each is a sequence of elements: a digit,
`*`, `#` or A-D (itself), `x` (any digit 0-9), `[2-9]` / `[135]` / `[1-35]` (a set with
ranges), and `.` after an element (that element zero or more times, as in MGCP:
`011x.` is 011 and then any number of digits). `DigitMap.match(digits)` answers:
  NO_MATCH   no alternative can ever match: reorder now
  PARTIAL    a prefix of some alternative, none matched yet: wait for more digits
  FULL       an alternative matched and no longer match is possible: send now
  FULL_MORE  an alternative matched but a longer one may still: send after the
             inter-digit timeout unless more digits come
`Dialplan` puts the box's own numbers in front of the map: local extensions
(lines.*.extension, calls.headset_extension), emergency numbers (calls.emergency, or
the country plan's), and the park/pickup codes (calls.park_prefix / pickup_prefix and
one slot digit). An exact match of one of those wins over the map (an extension "201"
is dialled at once although `[2-9]xxxxxx` could go on). `#` sends now: unless the map
itself uses `#` there, "digits#" is decided as if the inter-digit timer had run out.

Assumes the config document has passed validation (firmware.core.config).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cext import toneplans

DIGITS = "0123456789"


class Match(enum.Enum):
    NO_MATCH = "no_match"
    PARTIAL = "partial"
    FULL = "full"
    FULL_MORE = "full_more"


@dataclass(frozen=True)
class _Element:
    chars: frozenset[str]
    repeat: bool = False


def _parse_set(text: str, start: int, where: str) -> tuple[frozenset[str], int]:
    """A `[...]` set starting at text[start] == '['; returns (chars, index after ']')."""
    end = text.find("]", start)
    if end < 0:
        raise ValueError(f"digit map {where!r}: '[' without ']'")
    body, chars, i = text[start + 1:end], set(), 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            if not (lo.isdigit() and hi.isdigit() and lo <= hi):
                raise ValueError(f"digit map {where!r}: bad range {lo}-{hi}")
            chars.update(str(d) for d in range(int(lo), int(hi) + 1))
            i += 3
        else:
            chars.add(body[i].upper())
            i += 1
    if not chars:
        raise ValueError(f"digit map {where!r}: empty []")
    return frozenset(chars), end + 1


def _parse_alternative(text: str) -> list[_Element]:
    elements: list[_Element] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "[":
            chars, i = _parse_set(text, i, text)
            elements.append(_Element(chars))
            continue
        if ch == ".":
            if not elements or elements[-1].repeat:
                raise ValueError(f"digit map {text!r}: '.' must follow an element")
            elements[-1] = _Element(elements[-1].chars, True)
        elif ch in "xX":
            elements.append(_Element(frozenset(DIGITS)))
        elif ch in DIGITS + "*#ABCDabcd":
            elements.append(_Element(frozenset(ch.upper())))
        else:
            raise ValueError(f"digit map {text!r}: {ch!r} is not a digit map element")
        i += 1
    return elements


class DigitMap:
    """A compiled digit map; match() simulates each alternative as a small NFA."""

    def __init__(self, text: str) -> None:
        self.text = text
        alternatives = [alt for alt in text.split("|") if alt]
        if not alternatives:
            raise ValueError("digit map is empty")
        self.alternatives = [_parse_alternative(alt) for alt in alternatives]

    def match(self, digits: str) -> Match:
        full = more = False
        for elements in self.alternatives:
            alive = _run(elements, digits.upper())
            if not alive:
                continue
            end = len(elements)
            full = full or end in alive
            more = more or any(pos < end for pos in alive)
        if full:
            return Match.FULL_MORE if more else Match.FULL
        return Match.PARTIAL if more else Match.NO_MATCH


def _closure(elements: list[_Element], positions: set[int]) -> set[int]:
    """Positions reachable without a digit: a repeated element may match zero times."""
    out, todo = set(positions), list(positions)
    while todo:
        pos = todo.pop()
        if pos < len(elements) and elements[pos].repeat and pos + 1 not in out:
            out.add(pos + 1)
            todo.append(pos + 1)
    return out


def _run(elements: list[_Element], digits: str) -> set[int]:
    alive = _closure(elements, {0})
    for ch in digits:
        step = set()
        for pos in alive:
            if pos < len(elements) and ch in elements[pos].chars:
                step.add(pos if elements[pos].repeat else pos + 1)
        alive = _closure(elements, step)
        if not alive:
            break
    return alive


@dataclass(frozen=True)
class Decision:
    """What the digits dialled so far mean: match state, kind and the number to call."""

    match: Match
    kind: str = "external"  # external | extension | emergency | park | pickup
    number: str = ""
    target: str = ""  # the port of an extension, the slot of park/pickup

    @property
    def send_now(self) -> bool:
        return self.match is Match.FULL


NO_MATCH = Decision(Match.NO_MATCH)
PARTIAL = Decision(Match.PARTIAL)


def emergency_numbers(doc: dict, country: str) -> tuple[str, ...]:
    """calls.emergency, or the country plan's numbers when that list is empty."""
    listed = tuple(doc.get("calls", {}).get("emergency") or ())
    return listed or tuple(toneplans.plan(country).emergency)


class Dialplan:
    """The box's numbers first, then the digit map (calls.dialplan)."""

    def __init__(self, doc: dict, country: str = "us") -> None:
        calls = doc.get("calls", {})
        self.map = DigitMap(calls.get("dialplan", "[2-9]xxxxxx|1[2-9]xxxxxxxxx|911|*xx"))
        self.specials: dict[str, tuple[str, str]] = {}
        for name, line in doc.get("lines", {}).items():
            if line.get("kind") == "fxs" and line.get("extension"):
                self.specials[line["extension"]] = ("extension", name)
        if calls.get("headset_extension") and doc.get("board", {}).get("headset", {}).get(
                "enabled", True):
            self.specials[calls["headset_extension"]] = ("extension", "headset")
        for number in emergency_numbers(doc, country):
            self.specials[number] = ("emergency", "")
        for slot in DIGITS:
            self.specials[calls.get("park_prefix", "*7") + slot] = ("park", slot)
            self.specials[calls.get("pickup_prefix", "*8") + slot] = ("pickup", slot)

    def extension_port(self, number: str) -> str | None:
        kind, target = self.specials.get(number, ("", ""))
        return target if kind == "extension" else None

    def is_emergency(self, number: str) -> bool:
        return self.specials.get(number, ("", ""))[0] == "emergency"

    def decide(self, digits: str, final: bool = False) -> Decision:
        """The decision for `digits`; final=True when the inter-digit timer ran out."""
        if digits.endswith("#") and self.map.match(digits) is Match.NO_MATCH:
            return self.decide(digits[:-1], final=True) if digits[:-1] else NO_MATCH
        decision = self._decide(digits)
        if final and decision.match is Match.FULL_MORE:
            return Decision(Match.FULL, decision.kind, decision.number, decision.target)
        if final and decision.match is Match.PARTIAL:
            return NO_MATCH
        return decision

    def _decide(self, digits: str) -> Decision:
        longer = any(code != digits and code.startswith(digits) for code in self.specials)
        if digits in self.specials:
            kind, target = self.specials[digits]
            return Decision(Match.FULL_MORE if longer else Match.FULL, kind, digits, target)
        found = self.map.match(digits)
        if found is Match.FULL and longer:
            found = Match.FULL_MORE
        if found is Match.NO_MATCH and longer:
            return PARTIAL
        return Decision(found, "external", digits) if found is not Match.NO_MATCH else NO_MATCH
