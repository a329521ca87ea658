"""House rules that a machine can check: import direction, file headers."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"foundation", "firmware", "drivers", "cext", "lab", "bench", "tests"}
ALLOWED = {  # package -> packages of ours it may import
    "foundation": {"foundation"},
    "cext": {"cext"},
    "drivers": {"drivers", "cext", "foundation"},
    "firmware": {"firmware", "drivers", "cext", "foundation"},
}


def _sources(package):
    return sorted((ROOT / package).rglob("*.py")) + sorted((ROOT / package).rglob("*.pyx"))


def _imported_packages(path):
    text = path.read_text()
    if path.suffix == ".pyx":  # Cython: look at plain import lines only
        lines = [ln.strip() for ln in text.splitlines()]
        names = [ln.split()[1] for ln in lines if ln.startswith(("import ", "from ")) and len(ln.split()) > 1]
        return {n.split(".")[0] for n in names}
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_firmware_to_drivers_to_cext_over_foundation(package):
    wrong = []
    for path in _sources(package):
        bad = (_imported_packages(path) & OURS) - ALLOWED[package]
        if bad:
            wrong.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["foundation", "firmware", "drivers", "cext", "lab", "bench"])
def test_every_source_file_says_what_it_is_for(package):
    missing = []
    for path in _sources(package):
        head = path.read_text().lstrip()
        if path.name == "__init__.py" and not head:
            continue
        if not head.startswith(('"""', "'''", "#")):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, "files without a header: " + ", ".join(missing)


@pytest.mark.parametrize("part", ["firmware/web", "firmware/console",
                                  "firmware/auth.py", "firmware/forward.py"])
def test_processes_outside_the_core_do_not_import_the_drivers(part):
    path = ROOT / part
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    wrong = [str(f.relative_to(ROOT)) for f in files if "drivers" in _imported_packages(f)]
    assert not wrong, "import drivers outside the core: " + ", ".join(wrong)
