"""Shared fixtures: a fake-clock reactor for driver and call-control tests."""

import pytest

from foundation.reactor import FakeClock, Reactor


@pytest.fixture
def reactor():
    return Reactor(FakeClock())
