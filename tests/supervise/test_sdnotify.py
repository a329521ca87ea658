"""foundation.sdnotify against a real AF_UNIX datagram socket: what systemd (or the box's
watchdog) receives, abstract '@' names, and the quiet False/None cases."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from foundation import sdnotify
from tests.supervise.notifyrx import Receiver


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temp dir: AF_UNIX paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="bl-sd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def receiver(short_dir: Path) -> Iterator[Receiver]:
    rx = Receiver(str(short_dir / "notify.sock"))
    yield rx
    rx.close()


def test_notify_sends_one_datagram_with_our_pid(receiver: Receiver) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=up", receiver.address)
    rx = receiver.drain()
    assert [(pid, text) for _t, pid, text in rx] == [(os.getpid(), "READY=1\nSTATUS=up")]


def test_notify_uses_notify_socket_from_the_environment(receiver: Receiver,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.address)
    assert sdnotify.notify("WATCHDOG=1")
    assert receiver.texts() == ["WATCHDOG=1"]


def test_notify_reaches_an_abstract_socket() -> None:
    rx = Receiver(f"@branchline-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        assert sdnotify.notify("READY=1", rx.address)
        assert rx.texts() == ["READY=1"]
    finally:
        rx.close()


def test_unset_socket_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.notify("READY=1") is False


def test_a_missing_listener_is_false_not_an_exception(short_dir: Path) -> None:
    assert sdnotify.notify("READY=1", str(short_dir / "nobody.sock")) is False
    assert sdnotify.notify("READY=1", str(short_dir / ("x" * 200))) is False  # too long
    assert sdnotify.notify("READY=1", "bad\0path") is False


@pytest.mark.parametrize(("env", "check_pid", "expected"), [
    ({"WATCHDOG_USEC": "2000000"}, True, 1.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, True, 15.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": ""}, True, 1.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, True, None),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, False, 1.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "x"}, True, None),
    ({}, True, None),
    ({"WATCHDOG_USEC": "soon"}, True, None),
    ({"WATCHDOG_USEC": "0"}, True, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str], check_pid: bool,
                                                     expected: float | None) -> None:
    assert sdnotify.watchdog_interval_s(env, check_pid=check_pid) == expected
