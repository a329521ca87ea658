"""A line editor over a raw serial byte stream, in the manner of network-equipment consoles:
one line with a cursor and a history, echo through `write(bytes)`, and the hooks on_line
(CR, LF or CRLF), on_help (`?`), on_complete (TAB), on_interrupt (Ctrl-C). It never needs
more than a VT100-ish terminal (BS and CR + prompt redraws) and never raises on input:
bytes >= 0x80, NUL (a BREAK), other control bytes and unknown or cut-off escape sequences
(ended by their final byte, a control byte, or after 16 bytes) are dropped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

MAX_LINE = 512
HISTORY = 50
_ESC_MAX = 16

BEL = b"\x07"
CRLF = b"\r\n"


class Hooks(Protocol):
    def on_line(self, text: str) -> None: ...
    def on_help(self, text: str) -> list[str]: ...
    def on_complete(self, text: str) -> tuple[str, list[str]]: ...
    def on_interrupt(self) -> None: ...


class LineEditor:
    """One editable line, its prompt and history, driven byte by byte."""

    def __init__(self, write: Callable[[bytes], None], hooks: Hooks) -> None:
        self.write = write
        self.hooks = hooks
        self.prompt = ""
        self.echo = True  # False for passwords: nothing shown, nothing kept in history
        self.buf = ""
        self.pos = 0
        self.history: list[str] = []
        self._hist_at = 0
        self._saved = ""
        self._esc = b""  # the escape sequence being read (starts with ESC)
        self._last_cr = False
        self._controls: dict[int, Callable[[], None]] = {
            0x0D: self._enter, 0x0A: self._enter, 0x08: self._backspace, 0x7F: self._backspace,
            0x03: self._interrupt, 0x15: lambda: self.set_line(""), 0x17: self._erase_word,
            0x01: lambda: self._move(0), 0x05: lambda: self._move(len(self.buf)),
            0x02: lambda: self._move(self.pos - 1), 0x06: lambda: self._move(self.pos + 1),
            0x0C: self.redraw, 0x09: self._complete, 0x10: lambda: self._history(-1),
            0x0E: lambda: self._history(+1), 0x1B: self._escape_start}
        home, end = lambda: self._move(0), lambda: self._move(len(self.buf))
        self._sequences: dict[bytes, Callable[[], None]] = {
            b"[A": lambda: self._history(-1), b"[B": lambda: self._history(+1),
            b"[C": lambda: self._move(self.pos + 1), b"[D": lambda: self._move(self.pos - 1),
            b"[H": home, b"[1~": home, b"[F": end, b"[4~": end, b"[3~": self._delete}
        for csi in (b"[A", b"[B", b"[C", b"[D", b"[H", b"[F"):  # SS3 twins: ESC O A ...
            self._sequences[b"O" + csi[1:]] = self._sequences[csi]

    # --- the caller's side ------------------------------------------------------------

    def start(self, prompt: str, echo: bool = True) -> None:
        """Begin a new, empty line with this prompt."""
        self.prompt, self.echo = prompt, echo
        self.buf, self.pos = "", 0
        self._hist_at = len(self.history)
        self.write(prompt.encode())

    def redraw(self) -> None:
        shown = self.buf if self.echo else ""
        back = len(self.buf) - self.pos if self.echo else 0
        self.write(b"\r" + (self.prompt + shown).encode() + b"\x1b[K" + b"\b" * back)

    def feed(self, data: bytes) -> None:
        for byte in data:
            self._byte(byte)

    # --- bytes ------------------------------------------------------------------------

    def _byte(self, b: int) -> None:
        if self._esc:
            self._escape_byte(b)
            return
        was_cr, self._last_cr = self._last_cr, b == 0x0D
        if b == 0x0A and was_cr:
            return  # the LF of a CRLF
        if b == 0x3F and self.echo:  # ?
            self._show(self.hooks.on_help(self.buf[:self.pos]))
        elif 0x20 <= b < 0x7F:
            self._insert(chr(b))
        elif (action := self._controls.get(b)) is not None:
            action()

    def _escape_byte(self, b: int) -> None:
        seq = self._esc + bytes([b])
        if len(seq) == 2:
            if b in (0x5B, 0x4F):  # ESC [ (CSI) or ESC O (SS3)
                self._esc = seq
                return
            self._esc = b""
            self._byte(b)  # a lone ESC: drop it, keep the byte
            return
        if b < 0x20 or b == 0x7F or len(seq) > _ESC_MAX:
            self._esc = b""  # cut off: forget it, keep a control byte
            if b < 0x20 or b == 0x7F:
                self._byte(b)
            return
        if 0x40 <= b <= 0x7E:
            self._esc = b""
            if (action := self._sequences.get(seq[1:])) is not None:
                action()
            return
        self._esc = seq

    def _escape_start(self) -> None:
        self._esc = b"\x1b"

    # --- editing ----------------------------------------------------------------------

    def _insert(self, text: str) -> None:
        if len(self.buf) + len(text) > MAX_LINE:
            self.write(BEL)
            return
        at_end = self.pos == len(self.buf)
        self.buf = self.buf[:self.pos] + text + self.buf[self.pos:]
        self.pos += len(text)
        if not self.echo:
            return
        if at_end:
            self.write(text.encode())
        else:
            self.redraw()

    def _backspace(self) -> None:
        if self.pos == 0:
            self.write(BEL) if self.echo else None
            return
        at_end = self.pos == len(self.buf)
        self.buf = self.buf[:self.pos - 1] + self.buf[self.pos:]
        self.pos -= 1
        if self.echo:
            self.write(b"\b \b") if at_end else self.redraw()

    def _delete(self) -> None:
        if self.pos < len(self.buf):
            self.buf = self.buf[:self.pos] + self.buf[self.pos + 1:]
            self.redraw()

    def _erase_word(self) -> None:
        head = self.buf[:self.pos].rstrip(" ")
        cut = head.rfind(" ") + 1
        self.buf = self.buf[:cut] + self.buf[self.pos:]
        self.pos = cut
        self.redraw()

    def set_line(self, text: str) -> None:
        """Replace the line (history, completion) and put the cursor at its end."""
        self.buf, self.pos = text[:MAX_LINE], min(len(text), MAX_LINE)
        self.redraw()

    def _move(self, to: int) -> None:
        to = max(0, min(len(self.buf), to))
        if to < self.pos and self.echo:
            self.write(b"\b" * (self.pos - to))
        elif to > self.pos and self.echo:
            self.write(self.buf[self.pos:to].encode())
        self.pos = to

    def _history(self, step: int) -> None:
        if not self.echo:
            return
        at = self._hist_at + step
        if not 0 <= at <= len(self.history):
            self.write(BEL)
            return
        if self._hist_at == len(self.history):
            self._saved = self.buf
        self._hist_at = at
        self.set_line(self.history[at] if at < len(self.history) else self._saved)

    # --- hooks ------------------------------------------------------------------------

    def _enter(self) -> None:
        text = self.buf
        self.write(CRLF)
        if self.echo and text.strip() and (not self.history or self.history[-1] != text):
            self.history = (self.history + [text])[-HISTORY:]
        self.buf, self.pos = "", 0
        self._hist_at = len(self.history)
        self.hooks.on_line(text)

    def _interrupt(self) -> None:
        self.write(b"^C" + CRLF)
        self.buf, self.pos = "", 0
        self.hooks.on_interrupt()

    def _complete(self) -> None:
        if not self.echo:
            return
        head, tail = self.buf[:self.pos], self.buf[self.pos:]
        new, choices = self.hooks.on_complete(head)
        self.buf, self.pos = (new + tail)[:MAX_LINE], min(len(new), MAX_LINE)
        if choices:
            self._show(choices)
            return
        if new == head:
            self.write(BEL)
        self.redraw()

    def _show(self, lines: list[str]) -> None:
        """Print lines below the input, then the prompt and the line again."""
        self.write(CRLF + b"".join(line.encode("ascii", "replace") + CRLF for line in lines))
        self.redraw()
