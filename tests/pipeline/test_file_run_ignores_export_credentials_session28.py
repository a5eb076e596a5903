"""A run of files never uses the Mixpanel Export API, so the Mixpanel credentials in its
environment (README: "only for the Export API") must not stop it. Found by a soak
(session 28, helper-323): with MIXPANEL_SERVICE_ACCOUNT set and no ``[mixpanel]
project_id``, a files-only ``migrate`` stopped with "mixpanel.project_id is required with
a service account" (exit 2) after recording its run, so the same command again was refused
as "already holds a migration"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from migrate_kit import (
    API_KEY,
    Project,
    amplitude,
    assert_exactly_once,
    write_toml,
)

from mp2amp.config import load_config
from mp2amp.errors import ConfigError
from mp2amp.pipeline.export_settings import mixpanel_settings
from mp2amp.pipeline.migrate import EXIT_OK


@pytest.mark.parametrize("env", [{"MIXPANEL_SERVICE_ACCOUNT": "user:secret"},
                                 {"MIXPANEL_SECRET": "s", "MIXPANEL_SERVICE_ACCOUNT": "u:s"},
                                 # session 29: malformed, it was refused for files too
                                 {"MIXPANEL_SERVICE_ACCOUNT": "no-colon"}])
def test_a_run_of_files_builds_no_export_settings(tmp_path: Path, env: dict[str, str]) -> None:
    files = load_config(None, {"source.files": [str(tmp_path)]}, env=env)
    assert mixpanel_settings(files, None) is None
    overrides = {"source.from_date": "2024-01-01", "source.to_date": "2024-01-02",
                 "mixpanel.project_id": 7}
    if ":" not in env["MIXPANEL_SERVICE_ACCOUNT"]:  # the Export API's run still refuses it
        with pytest.raises(ConfigError) as refused:
            load_config(None, overrides, env=env)
        assert refused.value.problems == [
            "mixpanel.service_account: MIXPANEL_SERVICE_ACCOUNT must be 'username:secret'"]
        return
    export = load_config(None, overrides, env=env | {"MIXPANEL_SECRET": "s"})
    assert mixpanel_settings(export, None) is not None  # the Export API's, as before


@pytest.mark.parametrize("account", ["user:secret", "no-colon"])
def test_migrate_of_files_with_a_service_account_in_the_environment(
        project: Project, tmp_path: Path, account: str) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", project.events, work, url)
        env = {k: v for k, v in os.environ.items()
               if k not in ("MIXPANEL_SECRET", "PYTHONPATH")}
        env |= {"AMPLITUDE_API_KEY": API_KEY, "MIXPANEL_SERVICE_ACCOUNT": account}
        done = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg), "-q"],
                              env=env, capture_output=True, text=True, cwd=tmp_path,
                              timeout=300)
        assert (done.returncode, done.stderr) == (EXIT_OK, "")
        assert_exactly_once(url, project.expected)
