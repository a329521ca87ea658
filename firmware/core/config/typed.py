"""The typed, frozen configuration, read once from a document. Lists are tuples and keyed
tables read-only mappings, so sections can be shared freely.

    cfg = Config.from_doc(doc)            # validated first: ConfigError as validate() raises
    cfg.sip.transport, cfg.board.lifeline.gpio, cfg.survive.fallback
    cfg.line("fxs1").effective_callerid   # the line's country plan where the document is empty
    cfg.to_doc()                          # the validated dict again (API, CLI, storage)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from firmware.core.config import rules, schema
from firmware.core.config.schema import ConfigError, FxoLine, FxsLine, Line

S = TypeVar("S")
L = TypeVar("L", bound=Line)


def section(cls: type[S], table: Mapping[str, Any], **derived: Any) -> S:
    """A section dataclass from its validated table (lists become tuples)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    return cls(**values, **derived)


@dataclass(frozen=True)
class Board:
    chips: Mapping[str, schema.Chip]
    headset: schema.Headset
    lifeline: schema.Lifeline
    pcm: schema.Pcm


@dataclass(frozen=True)
class Config:
    system: schema.System
    country: schema.Country
    board: Board
    lines: Mapping[str, FxsLine | FxoLine]
    sip: schema.Sip
    calls: schema.Calls
    survive: schema.Survive
    cloud: schema.Cloud  # optional in a document: its defaults when the document has none
    update: schema.Update  # optional too (the update service's window and health time)
    cloud_in_doc: bool = dataclasses.field(default=False, metadata=schema.DERIVED)
    update_in_doc: bool = dataclasses.field(default=False, metadata=schema.DERIVED)

    @classmethod
    def from_doc(cls, doc: Any) -> Config:
        return cls.from_valid(rules.validate(doc))

    @classmethod
    def from_valid(cls, valid: dict[str, Any]) -> Config:
        """From a complete document validated elsewhere (the capacity bench's 48-line
        board, which no Pi header could wire, is the one caller that needs this)."""
        board = valid["board"]
        return cls(
            system=section(schema.System, valid["system"]),
            country=section(schema.Country, valid["country"]),
            board=Board(chips=MappingProxyType({name: section(schema.Chip, chip)
                                                for name, chip in board["chips"].items()}),
                        headset=section(schema.Headset, board["headset"]),
                        lifeline=section(schema.Lifeline, board["lifeline"]),
                        pcm=section(schema.Pcm, board["pcm"])),
            lines=MappingProxyType({name: _line(valid, name) for name in valid["lines"]}),
            sip=section(schema.Sip, valid["sip"]),
            calls=section(schema.Calls, valid["calls"]),
            survive=section(schema.Survive, valid["survive"]),
            cloud=section(schema.Cloud, valid.get("cloud") or _defaults(schema.CLOUD)),
            update=section(schema.Update, valid.get("update") or _defaults(schema.UPDATE)),
            cloud_in_doc="cloud" in valid, update_in_doc="update" in valid)

    def line(self, name: str) -> FxsLine | FxoLine:
        """The named line; ConfigError naming it (and the closest name) when there is none."""
        if name not in self.lines:
            raise ConfigError([f"lines.{name}: no such line{rules.suggest(name, self.lines)}"])
        return self.lines[name]

    def line_as(self, name: str, cls: type[L]) -> L:
        """The named line as `cls` (FxsLine or FxoLine); ConfigError when it is not one."""
        line = self.line(name)
        if not isinstance(line, cls):
            raise ConfigError([f"lines.{name}: an {line.kind} line, not an {cls.__name__}"])
        return line

    def to_doc(self) -> dict[str, Any]:
        """The validated document this config was read from, as a new dict."""
        doc = _plain(self)
        if not self.cloud_in_doc:
            doc.pop("cloud")
        if not self.update_in_doc:
            doc.pop("update")
        return doc


def _defaults(fields: Mapping[str, schema.Field]) -> dict[str, Any]:
    return {name: f.default for name, f in fields.items()}


def _line(doc: dict[str, Any], name: str) -> FxsLine | FxoLine:
    entry = doc["lines"][name]
    return section(schema.LINE_CLASSES[entry["kind"]],
                   {**entry, "kind": schema.LineKind(entry["kind"])},
                   effective_country=rules.line_country(doc, name),
                   effective_ring_cadence=rules.effective_ring_cadence(doc, name),
                   effective_callerid=rules.effective_callerid(doc, name))


def _plain(value: Any) -> Any:
    """Dataclasses, mappings, tuples and enums back to dicts, lists and strings; the
    derived fields (worked out, not settings) are left out."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if "derived" not in f.metadata}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, enum.Enum) else value
