"""Files that a resumed run's globs match but the run did not start with are named.

A run keeps the windows it started with (its identity graph and batches are theirs); a day
file dropped into the folder before ``--resume`` used to be skipped without a word, and the
run said it was complete.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
from migrate_kit import API_KEY, Project, amplitude, get_json, write_toml


def _resume(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                           "--resume", "--quiet", *extra],
                          env=dict(os.environ, AMPLITUDE_API_KEY=API_KEY),
                          capture_output=True, text=True, timeout=120)


def test_a_file_added_before_resume_is_named_not_taken_in(project: Project,
                                                         tmp_path: Path) -> None:
    days = sorted(project.events.iterdir())
    folder = tmp_path / "in"
    folder.mkdir()
    for day in days[:2]:
        shutil.copy(day, folder / day.name)
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        cfg = write_toml(tmp_path / "mp2amp.toml", folder / "*.jsonl.gz", work, url)
        first = subprocess.run([sys.executable, "-m", "mp2amp", "migrate", "-c", str(cfg),
                                "--json"], env=dict(os.environ, AMPLITUDE_API_KEY=API_KEY),
                               capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr[-2000:]
        assert orjson.loads(first.stdout)["inputs_not_in_run"] == []
        stored = get_json(url + "/_emulator/stats")["events_stored"]
        added = folder / days[2].name
        shutil.copy(days[2], added)

        text = _resume(cfg)
        assert text.returncode == 0, text.stderr[-2000:]
        assert text.stderr == (
            f"warning: 1 input file(s) match the sources but are not part of this run, which "
            f"started without them: {added}; migrate them in a new run with its own work "
            "folder\n")
        as_json = _resume(cfg, "--json")
        assert as_json.returncode == 0
        assert orjson.loads(as_json.stdout)["inputs_not_in_run"] == [str(added)]
        assert get_json(url + "/_emulator/stats")["events_stored"] == stored  # not sent
