"""Dial plan: MGCP-style digit maps (`x`, `[2-9]`, `[135]`, `.` repeats the element
before it, `|` between alternatives) with the box's own numbers in front: extensions,
emergency numbers and the park/pickup codes win on an exact match; `#` sends now."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cext import toneplans
from firmware.core.config import Config
from firmware.core.config.schema import FxsLine

DIGITS = "0123456789"


class Match(enum.Enum):
    NO_MATCH = "no_match"  # nothing can ever match: reorder now
    PARTIAL = "partial"  # a prefix of an alternative: wait for more digits
    FULL = "full"  # matched, nothing longer can: send now
    FULL_MORE = "full_more"  # matched, a longer one may: send after the inter-digit timeout


@dataclass(frozen=True)
class _Element:
    chars: frozenset[str]
    repeat: bool = False


def _parse_set(text: str, start: int, where: str) -> tuple[frozenset[str], int]:
    """A `[...]` set starting at text[start] == '['; returns (chars, index after ']')."""
    end = text.find("]", start)
    if end < 0:
        raise ValueError(f"digit map {where!r}: '[' without ']'")
    body, chars, i = text[start + 1:end], set[str](), 0
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
class Decision:  # what the digits dialled so far mean
    match: Match
    kind: str = "external"  # external | extension | emergency | park | pickup
    number: str = ""
    target: str = ""  # the port of an extension, the slot of park/pickup


NO_MATCH = Decision(Match.NO_MATCH)
PARTIAL = Decision(Match.PARTIAL)


class Dialplan:
    """The box's numbers first, then the digit map (calls.dialplan); emergency numbers are
    calls.emergency, or those of `country` (default: country.code) when it is empty."""

    def __init__(self, cfg: Config, country: str = "") -> None:
        calls = cfg.calls
        self.map = DigitMap(calls.dialplan)
        self.specials: dict[str, tuple[str, str]] = {}
        for name, line in cfg.lines.items():
            if isinstance(line, FxsLine) and line.extension:
                self.specials[line.extension] = ("extension", name)
        if calls.headset_extension and cfg.board.headset.enabled:
            self.specials[calls.headset_extension] = ("extension", "headset")
        plan = toneplans.plan(country or cfg.country.code)
        for number in calls.emergency or plan.emergency:
            self.specials[number] = ("emergency", "")
        for slot in DIGITS:
            self.specials[calls.park_prefix + slot] = ("park", slot)
            self.specials[calls.pickup_prefix + slot] = ("pickup", slot)

    def extension_port(self, number: str) -> str | None:
        kind, target = self.specials.get(number, ("", ""))
        return target if kind == "extension" else None

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
