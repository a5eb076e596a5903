"""Second review of be25e36 (blank locations, secret hints, migrate's combined report,
demo --events bound): missed cases (pinned as strict xfails, fixed since), plus a few guards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config_kit import EVENT, problems, run
from mp2amp.config import load_config
from mp2amp.generate.project import MAX_USERS
from mp2amp.pipeline.demo import DEMO_DAYS, EVENTS_PER_USER_DAY, MAX_EVENTS
from mp2amp.pipeline.migrate import _check_run_inputs

# --- a list's failing location item is named by the wrong index ---------------------------


def test_blank_location_after_a_bad_item_is_named_by_its_own_index(tmp_path: Path) -> None:
    found = problems(tmp_path, '[source]\nfiles = [1, ""]\n')
    assert "source.files[0]: must be a string, got an integer 1" in found
    assert any(p.startswith("source.files[1]: must be a path or URL") for p in found), found


# --- a blank --workdir is the current folder, while a blank [run] workdir is refused ------


def test_blank_workdir_flag_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ev.json").write_text(EVENT)
    (tmp_path / "mp2amp.toml").write_text(
        '[source]\nfiles = ["ev.json"]\n[amplitude]\noutput_dir = "out"\n[run]\nworkdir = "wd"\n')
    res = run(["migrate", "--config", "mp2amp.toml", "--workdir", "", "--json", "--quiet"],
              tmp_path)
    assert not (tmp_path / "ledger.sqlite").exists(), "the run used the current folder"
    assert res.returncode == 2, (res.returncode, res.stdout[-400:])
    doc = json.loads(res.stdout)
    assert any("--workdir" in p for p in doc["error"]["problems"])


# --- a secret written under its environment variable's name gets no environment hint ----


@pytest.mark.parametrize("text,var", [
    ('[amplitude]\nAMPLITUDE_API_KEY = "k"\n', "AMPLITUDE_API_KEY"),
    ('[mixpanel]\nMIXPANEL_SECRET = "s"\n', "MIXPANEL_SECRET"),
])
def test_secret_under_its_variable_name_points_to_the_environment(
        tmp_path: Path, text: str, var: str) -> None:
    [problem] = problems(tmp_path, text)
    assert f"set {var} there" in problem, problem


# --- guards: what must behave as before ------------------------------------------------


@pytest.mark.parametrize("text", [
    '[source]\nfiles = ["s3://b/x/*.json", "gs://b/y", "~/x", "*.json", "."]\n'
    'identity_table = "s3://b/id"\n[amplitude]\noutput_dir = "gs://b/out"\n',
])
def test_urls_globs_home_and_dot_still_load(tmp_path: Path, text: str) -> None:
    (tmp_path / "mp2amp.toml").write_text(text)
    cfg = load_config(tmp_path / "mp2amp.toml", env={})
    files = cfg.source.files
    assert files[:2] == ("s3://b/x/*.json", "gs://b/y")
    assert files[2] == str(Path.home() / "x")
    assert files[3] == str(tmp_path.resolve() / "*.json")
    assert cfg.source.identity_table == "s3://b/id" and cfg.amplitude.output_dir == "gs://b/out"


def test_resume_with_no_source_and_staged_export_needs_no_credentials(tmp_path: Path) -> None:
    (tmp_path / "mp2amp.toml").write_text(
        '[source]\nfrom_date = 2024-01-01\nto_date = 2024-01-02\n'
        '[amplitude]\noutput_dir = "out"\n')
    cfg = load_config(tmp_path / "mp2amp.toml", env={})
    _check_run_inputs(cfg, resume=True, sink_mode=True, fresh=False)  # nothing asked
    bare = load_config(None, env={"AMPLITUDE_API_KEY": "k"})
    _check_run_inputs(bare, resume=True, sink_mode=False, fresh=False)
    export = load_config(tmp_path / "mp2amp.toml", env={"MIXPANEL_SECRET": "s",
                                                        "AMPLITUDE_API_KEY": "k"})
    _check_run_inputs(export, resume=False, sink_mode=False, fresh=True)


def test_sink_run_without_key_then_resume(tmp_path: Path) -> None:
    (tmp_path / "ev.json").write_text(EVENT)
    (tmp_path / "mp2amp.toml").write_text(
        '[source]\nfiles = ["ev.json"]\n[amplitude]\noutput_dir = "out"\n')
    res = run(["migrate", "--config", "mp2amp.toml", "--json", "--quiet"], tmp_path)
    assert res.returncode == 0, res.stdout[-600:] + res.stderr[-600:]
    res = run(["migrate", "--config", "mp2amp.toml", "--json", "--quiet", "--resume"],
              tmp_path)
    assert res.returncode == 0, res.stdout[-600:] + res.stderr[-600:]
    assert json.loads(res.stdout)["resumed"] is True


def test_demo_events_upper_bound_is_the_generators_user_limit(tmp_path: Path) -> None:
    assert MAX_EVENTS == 364_000_000
    assert round(MAX_EVENTS / (DEMO_DAYS * EVENTS_PER_USER_DAY)) <= MAX_USERS
    for events in ("999", "abc"):
        res = run(["demo", "--events", events, "--workdir", str(tmp_path / "d"), "--json",
                   "--quiet"], tmp_path)
        assert res.returncode == 2 and not (tmp_path / "d").exists()
