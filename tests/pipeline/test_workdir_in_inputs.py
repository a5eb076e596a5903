"""An input folder that holds a work folder (``files = ["."]`` with the default
``.mp2amp``): the run's own staged windows and dead letters, or an earlier run's, are not
taken in as events (a resume listed the dead-letter file as a new input; an earlier run's
staged files would have been read as thousands of malformed records)."""

from __future__ import annotations

import shutil
from pathlib import Path

from migrate_kit import Project, amplitude, assert_exactly_once, make_config

from mp2amp.pipeline.migrate import migrate


def test_work_folders_inside_the_input_folder_are_not_inputs(project: Project,
                                                             tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    shutil.copytree(project.events, folder)
    with amplitude(tmp_path / "amp") as url:
        first = make_config(folder, folder / ".mp2amp", url)
        assert migrate(first).exit_code == 0
        (folder / ".mp2amp" / "dead-letters.jsonl").write_text('{"event": "x"}\n')
        again = migrate(first, resume=True)
        assert again.exit_code == 0 and again.not_in_run == []
        assert again.totals["windows"] == len(list(project.events.iterdir()))
    # a second, separate run over the same folder, its work folder beside the first's
    with amplitude(tmp_path / "amp2") as url:
        second = migrate(make_config(folder, folder / "run2", url))
        assert second.exit_code == 0
        assert second.totals["windows"] == len(list(project.events.iterdir()))
        assert second.totals["rejected"] == sum(project.rejects.values())
        assert_exactly_once(url, project.expected)
