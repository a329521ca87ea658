"""Golden trace of the Si3215 bring-up, Klipper-style.

Every SPI transfer of `Si3215.start()` on the emulated chip is recorded, folded into
bring-up steps (tests/drivers/si3215_trace.py) and compared with
tests/drivers/golden/si3215_bringup.json: the sequence written from the references
(DAHDI wctdm.c wctdm_init_proslic and what it calls), one citation per step. A change of
the bring-up must change that file on purpose; on a mismatch the test prints a unified
diff of the two sequences, the expected side annotated with each step's citation.
"""

import difflib
import json
from pathlib import Path

from si3215_trace import make_line, steps

GOLDEN = Path(__file__).parent / "golden" / "si3215_bringup.json"


def _fmt(op: str, reg: int, value) -> str:
    if op in ("read", "iread"):
        return f"{op:6} {reg:3}"
    width = 4 if op == "iwrite" else 2
    return f"{op:6} {reg:3} 0x{value:0{width}X}"


def expected() -> tuple[dict, list[str], list[str]]:
    doc = json.loads(GOLDEN.read_text())
    lines = [_fmt(s["op"], s["reg"], int(s["value"], 16) if "value" in s else None)
             for s in doc["steps"]]
    return doc, lines, [s["cite"] for s in doc["steps"]]


def recorded(reactor, doc: dict) -> list[str]:
    s = doc["settings"]
    line = make_line(reactor, {"timeslot": s["timeslot"], "pcm_law": s["pcm_law"]},
                     part=s["part"], board=s["board"], start=False)
    line.drv.start()
    assert line.emu.violations == []
    return [_fmt(*step) for step in steps(line.spi.frames)]


def readable_diff(want: list[str], cites: list[str], got: list[str]) -> str:
    annotated = [f"{w}    # {c}" for w, c in zip(want, cites, strict=True)]
    matcher = difflib.SequenceMatcher(a=want, b=got, autojunk=False)
    out = []
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            continue
        out.append(f"@@ golden steps {a0 + 1}..{a1}, recorded steps {b0 + 1}..{b1} @@")
        out += [f"- {x}" for x in annotated[a0:a1]] + [f"+ {x}" for x in got[b0:b1]]
    return "\n".join(out)


def test_golden_file_cites_every_step():
    doc, want, cites = expected()
    assert len(want) == len(doc["steps"]) > 100
    assert all(c.strip() for c in cites)
    assert {s["op"] for s in doc["steps"]} == {"read", "write", "iwrite", "iread"}


def test_bringup_matches_the_reference_sequence(reactor):
    doc, want, cites = expected()
    got = recorded(reactor, doc)
    diff = readable_diff(want, cites, got)
    assert not diff, ("the Si3215 bring-up differs from tests/drivers/golden/si3215_bringup.json "
                      "(- golden, + recorded); change the golden file on purpose, with its "
                      "citation, if the new sequence is right:\n" + diff)


def test_readable_diff_names_the_step_and_its_source():
    want, cites = ["write  92 0xFF", "write  14 0x00"], ["wctdm.c powerup: DR92", "wctdm.c: DR14"]
    diff = readable_diff(want, cites, ["write  14 0x00"])
    assert diff.splitlines() == ["@@ golden steps 1..1, recorded steps 1..0 @@",
                                 "- write  92 0xFF    # wctdm.c powerup: DR92"]
