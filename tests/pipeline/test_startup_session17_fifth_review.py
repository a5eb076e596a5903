"""Session 17, fifth review of f0d9be8: a work folder where the user keeps files named like
mp2amp's staged copies. Refused as "ledger.sqlite is missing" before the fix (and, once a
run got past that, the files were deleted as a killed run's leftovers); now a new run names
the user's files and stops before it makes its work folder, leaving them as they are."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from migrate_kit import FAST, Project, amplitude, get_json, make_config

from mp2amp.errors import TerminalError
from mp2amp.pipeline.migrate import migrate


def test_a_first_run_whose_inputs_sit_in_a_folder_named_staged_names_them_and_stops(
        project: Project, tmp_path: Path) -> None:
    work = tmp_path / "w"  # the work folder is also where the user keeps the input files
    inputs = work / "staged"
    inputs.mkdir(parents=True)
    for i, src in enumerate(sorted(project.events.iterdir())):
        # Mixpanel hourly dumps named by their hour: 10 digits, all of them hex digits too
        shutil.copy(src, inputs / f"events-20240101{i:02d}.jsonl")
    before = sorted((p.name, p.read_bytes()) for p in inputs.iterdir())
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(shutil.copytree(inputs, tmp_path / "in"), work, url)
        with pytest.raises(TerminalError) as stop:
            migrate(cfg, upload_overrides=FAST)
        assert "holds files mp2amp did not write (events-2024010100.jsonl" in str(stop.value)
        assert "nothing was read or sent" in str(stop.value)
        assert sum(get_json(url + "/_emulator/stats")["requests"].values()) == 0
    assert sorted((p.name, p.read_bytes()) for p in inputs.iterdir()) == before
    assert not (work / "ledger.sqlite").exists()  # no run begun: the next one starts anew
