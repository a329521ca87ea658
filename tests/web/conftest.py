"""Fixtures of the web tests: a sim core with its control API, the web process (shared,
or fresh with its own data dir), headless Chromium. See peers.py."""

from __future__ import annotations

import pytest

from tests.web.peers import CHROMIUM, CHROMIUM_ARGS, Core, Web, _stop


@pytest.fixture(scope="session")
def core(tmp_path_factory):
    c = Core(tmp_path_factory.mktemp("core"))
    yield c
    _stop(c.proc)


@pytest.fixture(scope="session")
def web(core, tmp_path_factory):
    w = Web(tmp_path_factory.mktemp("web"), core.addr, "--login-rate", "500")
    yield w
    _stop(w.proc)


@pytest.fixture
def fresh_web(core, tmp_path):
    """A web process of its own (new data dir: setup code pending)."""
    w = Web(tmp_path, core.addr)
    yield w
    _stop(w.proc)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


