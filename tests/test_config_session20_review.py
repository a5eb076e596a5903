"""Review of the configuration and command-line input of migrate/status/transform/demo
(session 20): bad input must get every problem at once, naming the file and key, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config_kit import EVENT, problems, run

# --- an empty location string silently means the config file's own folder ---------------


def test_empty_output_dir_is_refused_not_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ev.json").write_text(EVENT)
    (tmp_path / "mp2amp.toml").write_text(
        '[source]\nfiles = ["in/ev.json"]\n[amplitude]\noutput_dir = ""\n')
    res = run(["migrate", "--config", "mp2amp.toml", "--json", "--quiet"], tmp_path,
              AMPLITUDE_API_KEY="k")
    written = sorted(p.name for p in tmp_path.glob("mp2amp-a*.json.gz"))
    assert res.returncode == 2 and not written, (res.returncode, written)
    doc = json.loads(res.stdout)
    assert doc["error"]["type"] == "ConfigError"
    assert any(p.startswith("amplitude.output_dir:") for p in doc["error"]["problems"])


@pytest.mark.parametrize("text,key", [
    ('[source]\nfiles = [""]\n', "source.files"),
    ('[source]\nfiles = ["x.json"]\nidentity_table = ""\n', "source.identity_table"),
])
def test_empty_location_strings_are_refused(tmp_path: Path, text: str, key: str) -> None:
    assert any(p.startswith(key) for p in problems(tmp_path, text))


def test_empty_path_key_is_refused(tmp_path: Path) -> None:  # the guard the above lack
    assert problems(tmp_path, '[run]\nworkdir = ""\n') == [
        "run.workdir: must be a path (a string), got a string ''"]


# --- did-you-mean points at keys that must never be in the file ------------------------


def test_misspelled_secret_key_is_not_suggested_as_a_file_key(tmp_path: Path) -> None:
    found = problems(tmp_path, '[amplitude]\napikey = "abc"\n')
    assert len(found) == 1 and found[0].startswith("amplitude.apikey:")
    assert "did you mean 'api_key'" not in found[0]
    assert "AMPLITUDE_API_KEY" in found[0]


def test_misspelled_mixpanel_secret_is_not_suggested_as_a_file_key(tmp_path: Path) -> None:
    found = problems(tmp_path, '[mixpanel]\napi_secret = "abc"\n')
    assert "did you mean 'secret'" not in found[0] and "MIXPANEL_SECRET" in found[0]


# --- every problem at once ------------------------------------------------------------


def test_missing_credentials_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "mp2amp.toml").write_text(
        '[source]\nfrom_date = 2024-01-01\nto_date = 2024-01-02\n')
    res = run(["migrate", "--config", "mp2amp.toml", "--json", "--quiet"], tmp_path)
    assert res.returncode == 2
    found = json.loads(res.stdout)["error"]["problems"]
    assert any("MIXPANEL_SECRET" in p for p in found), found
    assert any("AMPLITUDE_API_KEY" in p for p in found), found


def test_list_item_type_does_not_hide_the_keys_other_problems(tmp_path: Path) -> None:
    found = problems(tmp_path, '[transform]\ngroups = ["a", "a", 1]\n')
    assert "transform.groups[2]: must be a string, got an integer 1" in found
    assert any("listed twice" in p for p in found), found


# --- demo ---------------------------------------------------------------------------------


def test_demo_too_many_events_names_the_events_option(tmp_path: Path) -> None:
    res = run(["demo", "--events", "1000000000", "--workdir", str(tmp_path / "d"), "--json",
               "--quiet"], tmp_path)
    assert res.returncode == 2
    message = json.loads(res.stdout)["error"]["message"]
    assert "--events" in message and "--users" not in message, message
