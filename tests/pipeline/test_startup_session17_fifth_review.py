"""Session 17, fifth review of f0d9be8: holds_run_files on a work folder where the user keeps
files named like mp2amp's staged copies. Refused as "ledger.sqlite is missing" before the
fix; now only a folder a migrate ran in (its migrate.lock) can hold an earlier run's files."""

from __future__ import annotations

import shutil
from pathlib import Path

from migrate_kit import FAST, Project, amplitude, get_json, make_config

from mp2amp.pipeline.migrate import migrate


def test_a_first_run_whose_inputs_sit_in_a_folder_named_staged_is_not_refused(
        project: Project, tmp_path: Path) -> None:
    work = tmp_path / "w"  # the work folder is also where the user keeps the input files
    inputs = work / "staged"
    inputs.mkdir(parents=True)
    for i, src in enumerate(sorted(project.events.iterdir())):
        # Mixpanel hourly dumps named by their hour: 10 digits, all of them hex digits too
        shutil.copy(src, inputs / f"events-20240101{i:02d}.jsonl")
    with amplitude(tmp_path / "amp") as url:
        # the inputs are read from a copy outside the work folder (files inside a work
        # folder are never inputs); the work folder's own staged/ keeps the user's files
        cfg = make_config(shutil.copytree(inputs, tmp_path / "in"), work, url)
        result = migrate(cfg, upload_overrides=FAST)  # a new run: nothing of mp2amp here
        assert result.exit_code == 0
        assert sum(get_json(url + "/_emulator/stats")["requests"].values()) > 0
