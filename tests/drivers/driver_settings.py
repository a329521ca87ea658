"""A chip driver's settings for a test: a hand-written partial line table completed by the
schema's defaults and handed over as the board does (drivers.board.line_settings)."""

from drivers.board import line_settings
from firmware.core.config import default_document, validate

LINES = {"fxs": "fxs1", "fxo": "fxo1"}
DRIVER_ONLY = ("ring_hz", "ring_vpk")  # a driver's own knobs, not config settings


def driver_settings(kind: str, board: dict | None = None, pcm_law: str = "ulaw", **line) -> dict:
    """The settings a driver of an `kind` line gets; `board` overrides its chip's table."""
    doc = default_document()
    name = LINES[kind]
    own = {key: line.pop(key) for key in DRIVER_ONLY if key in line}
    line.pop("kind", None)
    doc["lines"] = {name: {**doc["lines"][name], **line}}
    doc["board"]["lifeline"]["enabled"] = False
    doc["board"]["pcm"]["law"] = pcm_law
    doc["board"]["chips"][doc["lines"][name]["chip"]].update(board or {})
    valid = validate(doc)
    return {**line_settings(valid, valid["lines"][name]), **own}
