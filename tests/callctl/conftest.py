"""Fixtures of the call-control tests: `rig(**changes)` builds a Rig (lab/rig.py)
with config changes given as section__key=value, and closes it after the test."""

import pytest

from lab.rig import Rig


@pytest.fixture
def rig():
    made = []

    def make(**changes):
        r = Rig({k.replace("__", "."): v for k, v in changes.items()})
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


