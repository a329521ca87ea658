"""Golden trace of the Si3050 bring-up, Klipper-style.

Every SPI transfer of Si3050.start() is recorded (a wrapper around the SimSpiDevice) and
compared, step by step, with tests/drivers/golden/si3050_bringup.json: a reference
sequence written from the references (DAHDI wctdm.c / wctdm24xxp base.c wctdm_init_voicedaa,
fxo_modes.h "UK", the Si3050 datasheet where we add to DAHDI), one citation per step.
A change in the bring-up must change that file on purpose; the failure shows a unified
diff of the two sequences and the citation of the first step that differs.
"""

import difflib
import json
from itertools import zip_longest
from pathlib import Path

import pytest
from driver_settings import driver_settings

from drivers.bus.gpio import SimGpio
from drivers.bus.spi import SimSpiDevice
from drivers.chips.si3050 import Si3050
from drivers.sim.highway import SimHighway
from drivers.sim.si3050_sim import Si3050Emulator

GOLDEN = Path(__file__).parent / "golden" / "si3050_bringup.json"
RESET, INT = 22, 23


class RecordingSpi:
    """A SimSpiDevice that keeps every transfer (one chip-select frame each)."""

    def __init__(self, inner: SimSpiDevice) -> None:
        self.inner, self.name = inner, inner.name
        self.frames: list[tuple[bytes, bytes]] = []  # (sent, received)

    def transfer(self, data: bytes) -> bytes:
        got = self.inner.transfer(data)
        self.frames.append((bytes(data), bytes(got)))
        return got

    def close(self) -> None:
        self.inner.close()


def load_golden() -> dict:
    return json.loads(GOLDEN.read_text())


def bring_up(reactor, settings: dict) -> tuple[RecordingSpi, Si3050Emulator, Si3050]:
    gpio = SimGpio()
    emu = Si3050Emulator(reactor, gpio, RESET, INT)
    highway = SimHighway(reactor)
    emu.attach_highway(highway)
    highway.start()  # PCLK runs before the chip is brought up
    spi = RecordingSpi(SimSpiDevice(0, 2, emu))
    line = driver_settings("fxo", **{"disconnect": ["loop_drop", "reversal", "tone"], **settings})
    daa = Si3050("fxo1", spi, gpio, RESET, INT, reactor, line, lambda event: None)
    daa.start()
    return spi, emu, daa


def decode(frames: list[tuple[bytes, bytes]], golden: dict) -> list[tuple[str, int, int | None]]:
    """Per-byte frames -> (op, register, value) accesses; checks the framing as it goes."""
    ctrl = {int(golden["framing"]["write_control"], 16): "write",
            int(golden["framing"]["read_control"], 16): "read"}
    bad = [sent.hex() for sent, _ in frames if len(sent) != 1]
    assert not bad, f"multi-byte chip-select frames (finding 7): {bad[:5]}"
    assert len(frames) % 3 == 0, f"{len(frames)} frames is not whole accesses of 3 bytes"
    out = []
    for i in range(0, len(frames), 3):
        (c, _), (reg, _), (data, back) = frames[i:i + 3]
        op = ctrl.get(c[0])
        assert op, f"access {i // 3}: control byte 0x{c[0]:02X} is neither write nor read"
        out.append((op, reg[0], data[0] if op == "write" else None))
    return out


def collapse_polls(accesses):
    """Consecutive reads of one register are one step (wctdm's ISO-cap poll loop)."""
    out = []
    for acc in accesses:
        if acc[0] == "read" and out and out[-1] == acc:
            continue
        out.append(acc)
    return out


def line(op: str, reg: int, value: int | None) -> str:
    return f"{op:5} {reg:2}" + ("" if value is None else f" = 0x{value:02X}")


def golden_lines(golden: dict) -> list[str]:
    return [line("read" if s["op"] == "poll" else s["op"], s["reg"],
                 int(s["value"], 16) if "value" in s else None) for s in golden["steps"]]


def test_bring_up_matches_the_reference_sequence(reactor):
    golden = load_golden()
    spi, emu, daa = bring_up(reactor, golden["settings"])
    got = [line(*acc) for acc in collapse_polls(decode(spi.frames, golden))]
    want = golden_lines(golden)
    if got != want:
        first = next(i for i, (g, w) in enumerate(zip_longest(got, want)) if g != w)
        cite = golden["steps"][first]["cite"] if first < len(golden["steps"]) else "(beyond the file)"
        diff = "\n".join(difflib.unified_diff(want, got, "golden (references)", "driver", lineterm=""))
        pytest.fail(f"bring-up differs from {GOLDEN.name} at step {first}: the reference step "
                    f"is `{want[first] if first < len(want) else ''}` ({cite})\n{diff}")
    assert emu.violations == []
    assert daa.state.value == "idle"


def test_reads_the_reference_expects_come_back_as_it_says(reactor):
    """Register 2 reads 0x03 after reset (wctdm_voicedaa_insane) on the emulated chip."""
    golden = load_golden()
    spi, _, _ = bring_up(reactor, golden["settings"])
    first_read = spi.frames[2][1][0]  # third frame of the first access
    assert first_read == int(golden["steps"][0]["expect"], 16)


def test_every_golden_step_cites_a_source():
    golden = load_golden()
    assert golden["framing"]["cite"]
    for i, step in enumerate(golden["steps"]):
        assert step["op"] in ("read", "write", "poll"), i
        assert "wctdm" in step["cite"] or "datasheet" in step["cite"] or "OURS" in step["cite"], i
        assert ("value" in step) == (step["op"] == "write"), i


def test_golden_country_steps_are_fxo_modes_uk():
    """The file's 16/26/30/31 are fxo_modes.h "UK" through wctdm_init_voicedaa (checked
    against the emulator's own copy of the table, not the driver's)."""
    from drivers.sim import daa_model as M

    golden = load_golden()
    written = {s["reg"]: int(s["value"], 16) for s in golden["steps"] if s["op"] == "write"}
    want = M.reference_registers(M.FXO_MODES["UK"])
    assert {reg: written[reg] for reg in want} == want
