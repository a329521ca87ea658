"""Shared fixtures: a fake-clock reactor for driver and call-control tests; and, for the
update sources' end-to-end tests in web/, console/ and agent/, the signer, the RAUC card
and the held install of tests/update/fixtures.py (a module's own fixture of the same name
takes precedence)."""

import pytest

from foundation.reactor import FakeClock, Reactor

pytest_plugins = ["tests.update.fixtures"]


@pytest.fixture
def reactor():
    return Reactor(FakeClock())
