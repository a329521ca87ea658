"""Fixtures of the store-and-forward tests: an outbox on a real SQLite file (wall time
from a FakeClock), recordings in its data_dir/recordings/, and a records receiver on
127.0.0.1 that each test stops."""

import pytest

from firmware.cdr import CdrStore
from foundation.reactor import FakeClock
from lab.records import RecordsReceiver


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(tmp_path, clock):
    s = CdrStore(tmp_path / "cdr.db", wall=clock.wall)
    s.recordings_dir.mkdir()
    yield s
    s.close()


@pytest.fixture
def receiver():
    with RecordsReceiver() as rx:
        yield rx
