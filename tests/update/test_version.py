"""version.py: the running release from the release file the image writes into each root,
the package version without one, and PEP 440 order (1.10 after 1.9, rc before final)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from firmware.update.rauc import Reason, UpdateError
from firmware.update.version import compare, running_version


def test_release_file_names_the_running_version(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    release = tmp_path / "branchline-release"
    release.write_text('NAME=branchline\nVERSION="1.4.2"\nBUILD=abc\n')
    monkeypatch.setenv("BRANCHLINE_RELEASE_FILE", str(release))
    assert running_version() == "1.4.2"
    assert running_version(release) == "1.4.2"


def test_without_a_release_file_the_package_version(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRANCHLINE_RELEASE_FILE", str(tmp_path / "none"))
    assert running_version() == metadata.version("branchline")
    (tmp_path / "none").write_text("NAME=branchline\n")  # no VERSION= line
    assert running_version() == metadata.version("branchline")


@pytest.mark.parametrize("a, b, order", [
    ("1.10.0", "1.9.9", 1), ("1.2.0", "1.2", 0), ("2.0.0rc1", "2.0.0", -1),
    ("2.0.0.post1", "2.0.0", 1), ("0.1.0", "0.1.0.dev3", 1)])
def test_versions_order_as_pep440(a: str, b: str, order: int) -> None:
    assert compare(a, b) == order
    assert compare(b, a) == -order


def test_a_version_that_is_not_one_is_refused_naming_it() -> None:
    with pytest.raises(UpdateError) as err:
        compare("banana", "1.0")
    assert err.value.reason == Reason.CORRUPT
    assert "'banana' is not a release version" in str(err.value)
