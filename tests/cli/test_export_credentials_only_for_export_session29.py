"""A malformed MIXPANEL_SERVICE_ACCOUNT stops only what reads Mixpanel's Export API.

Before: the config loader refused it for every command (``transform`` of local files,
``status``, a ``migrate`` of files), though only the Export API uses it; a shell that
holds it for another tool could not run them. ``migrate`` of the Export API still refuses
it before it records anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from shared_kit import clean_env

REFUSAL = "mixpanel.service_account: MIXPANEL_SERVICE_ACCOUNT must be 'username:secret'"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clean_env(monkeypatch)
    monkeypatch.setenv("MIXPANEL_SERVICE_ACCOUNT", "no-colon")
    monkeypatch.setenv("AMPLITUDE_API_KEY", "k")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text(json.dumps(
        {"event": "A", "properties": {"time": 1700000000, "distinct_id": "u1",
                                      "$insert_id": "i1"}}) + "\n")
    (tmp_path / "export.toml").write_text(
        "[mixpanel]\nproject_id = 7\n[source]\nfrom_date = 2024-01-01\nto_date = 2024-01-01\n")
    return tmp_path


def test_transform_of_files_runs_with_an_export_config(folder: Path) -> None:
    result = CliRunner().invoke(app, ["transform", "-c", "export.toml", "in.jsonl",
                                      "--out", "out.jsonl", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "out.jsonl").read_text())["user_id"] == "u1"


def test_status_reads_the_ledger_whatever_the_environment_holds(folder: Path) -> None:
    result = CliRunner().invoke(app, ["status", "-c", "export.toml", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["message"].startswith("no migration in ")


def test_migrate_of_the_export_api_refuses_it_before_recording_anything(folder: Path) -> None:
    result = CliRunner().invoke(app, ["migrate", "-c", "export.toml", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["problems"] == [REFUSAL]
    assert not (folder / ".mp2amp").exists()
