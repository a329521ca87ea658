"""Fixtures of the survivability scenarios (fake time): `srig(**changes)` is a call-control
Rig (lab/rig.py: SimBoard twins, real drivers and DSP, SimCloud) whose cloud has
two edges and the WAN model on (OPTIONS every 1 s, down after 2 misses, RTP timeout
2 s), with a CDR store in tmp_path unless cdr=False; closed after the test."""

import pytest

from firmware.cdr import CdrStore
from lab.rig import Rig

EDGES = ["sip:edge1.sim", "sip:edge2.sim"]


@pytest.fixture
def srig(tmp_path):
    made = []

    def make(cdr=True, **changes):
        changes = {k.replace("__", "."): v for k, v in changes.items()}
        changes.setdefault("sip.edges", list(EDGES))
        store = CdrStore(tmp_path / f"cdr{len(made)}.db") if cdr else None
        r = Rig(changes, cdr=store)
        r.cloud.enable_wan(tuple(EDGES), interval_s=1.0, misses=2, rtp_timeout_s=2.0)
        r.run(0.5)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()
        if r.store is not None:
            r.store.close()
