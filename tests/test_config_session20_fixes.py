"""Session 20 fixes of the config review (tests/test_config_session20_review.py): exact
problems for blank locations, secrets in the did-you-mean hint, a list's other problems
beside a bad item, missing credentials and source in one report, demo --events's bound."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from config_kit import problems, run
from mp2amp.config import load_config

NO_KEY = ("amplitude: set AMPLITUDE_API_KEY in the environment (the project's API key; it is "
          "never read from the config file)")
BLANK = "must be a path or URL, got a string {!r}; write \".\" for the config file's own folder"




def refused(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert res.returncode == 2, (res.returncode, res.stderr)
    error = json.loads(res.stdout)["error"]
    assert error["type"] == "ConfigError"
    return list(error["problems"])


@pytest.mark.parametrize("text,expected", [
    ('[amplitude]\noutput_dir = "  "\n', [f"amplitude.output_dir: {BLANK.format('  ')}"]),
    ('[source]\nfiles = ["a.json", "", 3]\n',
     ["source.files[2]: must be a string, got an integer 3",
      f"source.files[1]: {BLANK.format('')}"]),
    ('[source]\nfiles = ["a.json"]\nidentity_table = " "\n',
     [f"source.identity_table: {BLANK.format(' ')}"]),
    ('[run]\nworkdir = "  "\n', ["run.workdir: must be a path (a string), got a string '  '"]),
])
def test_blank_locations_are_refused_naming_the_key(tmp_path: Path, text: str,
                                                    expected: list[str]) -> None:
    assert problems(tmp_path, text) == expected


def test_a_dot_is_still_the_config_files_folder(tmp_path: Path) -> None:
    (tmp_path / "mp2amp.toml").write_text('[amplitude]\noutput_dir = "."\n')
    config = load_config(tmp_path / "mp2amp.toml", env={})
    assert config.amplitude.output_dir == str(tmp_path.resolve() / ".")


@pytest.mark.parametrize("text,expected", [
    ('[amplitude]\nsecretkey = "x"\n',
     "amplitude.secretkey: unknown key; secrets are read only from the environment: set "
     "AMPLITUDE_SECRET_KEY there and remove this key from the file"),
    ('[mixpanel]\nservice_acount = "x"\n',
     "mixpanel.service_acount: unknown key; secrets are read only from the environment: set "
     "MIXPANEL_SERVICE_ACCOUNT there and remove this key from the file"),
    ('[amplitude]\nendpont = "batch"\n', "amplitude.endpont: unknown key; did you mean "
     "'endpoint'?"),
    ('[amplitude]\nzzzz = 1\n', "amplitude.zzzz: unknown key (known: api_host, "
     "batch_max_bytes, endpoint, gzip, min_id_length, output_dir, project_throttle_wait, "
     "region)"),
])
def test_unknown_key_hints_never_send_a_secret_into_the_file(tmp_path: Path, text: str,
                                                             expected: str) -> None:
    assert problems(tmp_path, text) == [expected]


def test_a_bad_list_item_leaves_the_keys_other_problems_reported(tmp_path: Path) -> None:
    doc = '[transform]\ngroups = ["a", "a", "", "b", "c", "d", "e", 1]\n'
    assert problems(tmp_path, doc) == [
        "transform.groups[2]: must be a property name, got a blank value ''; give one, or "
        "remove it from the list",
        "transform.groups[7]: must be a string, got an integer 1",
        "transform.groups: Amplitude allows 5 group types, got 6",
        "transform.groups: a group key is listed twice",
    ]


def test_missing_credentials_come_in_one_report(tmp_path: Path) -> None:
    (tmp_path / "mp2amp.toml").write_text(
        '[source]\nfrom_date = 2024-01-01\nto_date = 2024-01-02\n')
    res = run(["migrate", "--config", "mp2amp.toml", "--json", "--quiet"], tmp_path)
    assert refused(res) == [
        "mixpanel: the Export API (source.from_date/to_date) needs credentials: set "
        "MIXPANEL_SERVICE_ACCOUNT (user:secret) or MIXPANEL_SECRET in the environment",
        NO_KEY]
    assert not (tmp_path / ".mp2amp").exists()  # nothing started


def test_missing_key_and_source_come_in_one_report(tmp_path: Path) -> None:
    (tmp_path / "mp2amp.toml").write_text('[run]\nconcurrency = 2\n')
    res = run(["migrate", "--config", "mp2amp.toml", "--json", "--quiet"], tmp_path)
    assert refused(res) == [NO_KEY, "source: give from_date and to_date (Export API) or files"]
    # a resume is not asked for a source here (the run's own settings are in its ledger;
    # a resume whose config lost the source is refused there, as a changed setting):
    # with no ledger yet, only the missing key is refused
    res = run(["migrate", "--config", "mp2amp.toml", "--json", "--quiet", "--resume"], tmp_path)
    assert refused(res) == [NO_KEY]


def test_demo_events_bound_names_events(tmp_path: Path) -> None:
    res = run(["demo", "--events", "1000000000", "--workdir", str(tmp_path / "d"), "--json",
               "--quiet"], tmp_path)
    assert refused(res) == ["--events must be between 1,000 and 364,000,000, got "
                            "1,000,000,000; nothing was generated"]
    assert not (tmp_path / "d").exists()
