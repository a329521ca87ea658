"""`branchline config ...`: the command line over the config store.

Most cases run in-process through firmware.cli.main (fast); the exit code, stderr and
the absence of a traceback for a user's error are also checked on a real subprocess.
"""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cext import toneplans
from firmware.cli import main
from firmware.core.config import ConfigStore, default_document

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    """A config directory chosen through the environment, as on the box."""
    directory = tmp_path / "etc-branchline"
    monkeypatch.setenv("BRANCHLINE_CONFIG_DIR", str(directory))
    return directory


def run(capsys, *argv):
    code = main(["config", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(directory):
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_help_lists_every_action(capsys):
    with pytest.raises(SystemExit):
        main(["config", "--help"])
    out = capsys.readouterr().out
    for action in ("show", "validate", "set", "apply", "versions", "rollback"):
        assert action in out


def test_top_level_help_lists_config(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "config" in capsys.readouterr().out


def test_show_prints_the_default_before_any_save(cfg, capsys):
    code, out, _ = run(capsys, "show")
    assert code == 0 and tomllib.loads(out) == default_document()
    assert not cfg.exists()


def test_show_default_ignores_the_saved_document(cfg, capsys):
    doc = default_document()
    doc["system"]["name"] = "saved"
    ConfigStore(cfg).save(doc)
    assert tomllib.loads(run(capsys, "show")[1])["system"]["name"] == "saved"
    assert tomllib.loads(run(capsys, "show", "--default")[1]) == default_document()


def test_show_a_kept_version(cfg, capsys):
    run(capsys, "set", "system.name", "first")
    run(capsys, "set", "system.name", "second")
    assert tomllib.loads(run(capsys, "show", "--version", "1")[1])["system"]["name"] == "first"
    code, _, err = run(capsys, "show", "--version", "9")
    assert code == 2 and "version 9 is not kept; kept: 1..2" in err


def test_set_an_integer(cfg, capsys):
    code, out, _ = run(capsys, "set", "lines.fxs1.flash_max_ms", "600")
    assert code == 0 and out == "lines.fxs1.flash_max_ms = 600 (version 1)\n"
    assert ConfigStore(cfg).load()["lines"]["fxs1"]["flash_max_ms"] == 600
    assert ConfigStore(cfg).versions()[-1]["reason"] == "set lines.fxs1.flash_max_ms = 600"


def test_set_digits_on_a_text_setting_keeps_them_text(cfg, capsys):
    assert run(capsys, "set", "lines.fxs1.extension", "205")[0] == 0
    assert ConfigStore(cfg).load()["lines"]["fxs1"]["extension"] == "205"


def test_set_a_bare_word_and_a_quoted_string(cfg, capsys):
    run(capsys, "set", "system.name", "branch-02")
    assert ConfigStore(cfg).load()["system"]["name"] == "branch-02"
    run(capsys, "set", "lines.fxs1.name", "Front desk")
    assert ConfigStore(cfg).load()["lines"]["fxs1"]["name"] == "Front desk"


def test_set_a_list_and_a_boolean(cfg, capsys):
    run(capsys, "set", "country.ring_cadence", "[0.4, 0.2, 0.4, 2.0]")
    run(capsys, "set", "board.headset.enabled", "false")
    doc = ConfigStore(cfg).load()
    assert doc["country"]["ring_cadence"] == [0.4, 0.2, 0.4, 2.0]
    assert doc["board"]["headset"]["enabled"] is False


def test_set_with_a_reason(cfg, capsys):
    run(capsys, "set", "system.name", "b3", "--reason", "ticket 42")
    assert ConfigStore(cfg).versions()[-1]["reason"] == "ticket 42"


def test_set_to_the_same_value_saves_nothing(cfg, capsys):
    run(capsys, "set", "lines.fxs1.debounce_ms", "30")
    code, out, _ = run(capsys, "set", "lines.fxs1.debounce_ms", "30")
    assert code == 0 and "nothing saved" in out
    assert len(ConfigStore(cfg).versions()) == 1


def test_set_a_bad_country_is_refused_and_changes_nothing(cfg, capsys):
    run(capsys, "set", "system.name", "b1")
    before = snapshot(cfg)
    code, out, err = run(capsys, "set", "lines.fxs1.country", "XX")
    known = ", ".join(toneplans.COUNTRIES)
    assert code == 2 and out == ""
    assert err == f"branchline: lines.fxs1.country: 'XX' is not a known country; known: {known}\n"
    assert snapshot(cfg) == before


def test_set_a_typo_gets_did_you_mean(cfg, capsys):
    code, _, err = run(capsys, "set", "lines.fxs1.flash_max", "600")
    assert code == 2
    assert err == "branchline: lines.fxs1.flash_max: unknown setting; did you mean 'flash_max_ms'?\n"
    assert not cfg.exists()


def test_set_below_a_setting_is_refused(cfg, capsys):
    code, _, err = run(capsys, "set", "system.name.first", "x")
    assert code == 2 and err == "branchline: system.name.first: system.name is a setting, not a table\n"


def test_validate_a_good_file(cfg, capsys, tmp_path):
    path = tmp_path / "new.toml"
    path.write_text(run(capsys, "show", "--default")[1])
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 0 and out == f"{path}: ok (3 chips, 3 lines)\n"


def test_validate_lists_every_problem_one_per_line(cfg, capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[system]\nname = "a b"\n[lines.fxs1]\nkind = "fxs"\nchip = "slic0"\n'
                    'timeslot = 0\ncountry = "XX"\ndebounse_ms = 20\n')
    code, out, err = run(capsys, "validate", str(path))
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 3
    assert all(line.startswith(f"branchline: {path}: ") for line in lines)
    assert "system.name: 'a b'" in lines[0]
    assert "lines.fxs1.country: 'XX' is not a known country" in err
    assert "lines.fxs1.debounse_ms: unknown setting; did you mean 'debounce_ms'?" in err


def test_validate_a_syntax_error_names_the_line(cfg, capsys, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[system]\nname = "a"\nname2 = \n')
    code, _, err = run(capsys, "validate", str(path))
    assert code == 2 and "TOML syntax error" in err and "line 3" in err


def test_validate_a_missing_file(cfg, capsys, tmp_path):
    code, _, err = run(capsys, "validate", str(tmp_path / "nope.toml"))
    assert code == 2 and err == f"branchline: {tmp_path / 'nope.toml'}: cannot read: No such file or directory\n"


def test_apply_a_file(cfg, capsys, tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[system]\nname = "site-9"\n')
    code, out, _ = run(capsys, "apply", str(path))
    assert code == 0 and out == f"{path}: applied as version 1\n"
    assert ConfigStore(cfg).load()["system"]["name"] == "site-9"
    assert run(capsys, "apply", str(path))[1].endswith("nothing saved\n")


def test_apply_a_bad_file_changes_nothing(cfg, capsys, tmp_path):
    run(capsys, "set", "system.name", "b1")
    before = snapshot(cfg)
    path = tmp_path / "bad.toml"
    path.write_text('[lines.fxs1]\nkind = "fxo"\nchip = "slic0"\ntimeslot = 0\n')
    code, _, err = run(capsys, "apply", str(path))
    assert code == 2 and "lines.fxs1.chip: 'slic0' is a si3215; an fxo line needs" in err
    assert snapshot(cfg) == before


def test_apply_repairs_a_broken_live_file(cfg, capsys, tmp_path):
    cfg.mkdir()
    (cfg / "branchline.toml").write_text("[system\n")
    path = tmp_path / "good.toml"
    path.write_text('[system]\nname = "fixed"\n')
    assert run(capsys, "apply", str(path))[0] == 0
    assert ConfigStore(cfg).load()["system"]["name"] == "fixed"


def test_versions_and_rollback(cfg, capsys):
    assert run(capsys, "versions")[1] == f"no versions kept in {cfg}\n"
    for name in ("one", "two", "three"):
        run(capsys, "set", "system.name", name)
    code, out, _ = run(capsys, "versions")
    rows = out.splitlines()
    assert code == 0 and rows[0].split() == ["version", "saved", "(UTC)", "reason"]
    assert rows[3].endswith("set system.name = three  (current)")
    assert "(current)" not in rows[1] + rows[2]
    assert run(capsys, "rollback")[1] == "rollback to version 2: now version 4\n"
    assert ConfigStore(cfg).load()["system"]["name"] == "two"
    assert run(capsys, "rollback", "1")[1] == "rollback to version 1: now version 5\n"
    assert ConfigStore(cfg).load()["system"]["name"] == "one"


def test_versions_points_out_a_hand_edit(cfg, capsys):
    run(capsys, "set", "system.name", "one")
    live = cfg / "branchline.toml"
    live.write_text(live.read_text().replace('"one"', '"by-hand"'))
    out = run(capsys, "versions")[1]
    assert "(current)" not in out
    assert out.splitlines()[-1].startswith(f"{live} was edited by hand since version 1")


def test_rollback_with_nothing_to_roll_back(cfg, capsys):
    code, _, err = run(capsys, "rollback")
    assert code == 2 and err.startswith("branchline: ") and "no earlier version" in err


def test_config_dir_option_wins_over_the_environment(cfg, capsys, tmp_path):
    other = tmp_path / "other"
    assert run(capsys, "set", "system.name", "elsewhere", "--config-dir", str(other))[0] == 0
    assert ConfigStore(other).load()["system"]["name"] == "elsewhere"
    assert not (cfg / "branchline.toml").exists()


def test_real_process_user_error_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {**os.environ, "BRANCHLINE_CONFIG_DIR": str(blocker / "cfg")}
    env.pop("BRANCHLINE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "firmware", "config", "set", "system.name", "x"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"branchline: {blocker}")
    assert proc.stderr.endswith(": Not a directory; check --config-dir (or $BRANCHLINE_CONFIG_DIR)\n")


def test_real_process_set_show_round_trip(tmp_path):
    env = {**os.environ, "BRANCHLINE_CONFIG_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "firmware", "config"]
    set_proc = subprocess.run([*cmd, "set", "lines.fxo1.ring_min_ms", "250"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    assert set_proc.returncode == 0, set_proc.stderr
    show = subprocess.run([*cmd, "show"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert tomllib.loads(show.stdout)["lines"]["fxo1"]["ring_min_ms"] == 250
