"""Fixtures the three sources' end-to-end tests share (the web page, the console, the
agent's job): the bundles' signer, one loop-device card running real RAUC per module, and
`held`, which holds an install at its first slot write so a test sees its progress move.
tests/conftest.py registers them for every test; each test module defines its own `service`
on its own core's address with `serve`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.updatesvc import RaucBox, UpdateService
from tests.update.updaterig import Signer


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return Signer(tmp_path_factory.mktemp("keys"), "fleet")


@pytest.fixture(scope="module")
def box(signer: Signer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaucBox]:
    card = RaucBox(tmp_path_factory.mktemp("box"), signer.ca)
    try:
        yield card.start()
    finally:
        card.close()


def serve(address: str, signer: Signer, box: RaucBox,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpdateService]:
    """The body of a module's `service` fixture: the update service on `box` for the core
    at `address`."""
    svc = UpdateService(tmp_path_factory.mktemp("update"), signer.ca, address, box=box)
    try:
        yield svc.start()
    finally:
        svc.stop()


@pytest.fixture
def held(box: RaucBox, service: UpdateService) -> Iterator[RaucBox]:
    """The card with installs held at their first write (the test releases them); after
    the test, RAUC without the hook and the update service with no update state."""
    box.hold()
    try:
        yield box
    finally:
        box.disarm()
        service.reset()
