"""The box's process tree for the supervisor tests: the product's supervisord.conf run by a
real supervisord with every path in a temporary folder (lab.supervisor.LabSupervisor),
stopped after the test whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.supervisor import LabSupervisor


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSupervisor]:
    """One process tree for a module's tests (each test leaves no call behind)."""
    box = LabSupervisor(tmp_path_factory.mktemp("box"))
    with box:
        box.wait_core()
        yield box


@pytest.fixture
def fresh_box(tmp_path: Path) -> Iterator[LabSupervisor]:
    """A process tree of the test's own (for tests that stop or break it)."""
    box = LabSupervisor(tmp_path / "box")
    with box:
        box.wait_core()
        yield box
