"""``[amplitude] min_id_length`` is part of the run's fingerprint (session 24).

Found by a soak: changed between a kill and ``--resume`` (1 -> 5) it was taken on
silently, as nothing compared it. The resumed run sent the rest under the new minimum:
events with IDs shorter than it, which the first run had sent, were now refused by
Amplitude and dead-lettered (1,384 of 241k in the soak), and the run ended exit 0,
balanced, with part of the short-ID users' history in Amplitude and the rest missing.
Now such a resume is refused, naming the setting; a run recorded before the key existed
still resumes (its missing key is not compared).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from migrate_kit import (
    Project,
    amplitude,
    assert_exactly_once,
    drop_fingerprint_key,
    make_config,
    run_until_crash,
)

from mp2amp.errors import TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.migrate import migrate


def test_a_resume_under_another_min_id_length_is_refused_and_the_same_one_finishes(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url, **{"run.concurrency": 1})
        run_until_crash(config, monkeypatch, 1)  # crashed after the first accepted batch
        changed = make_config(project.events, work, url, **{"run.concurrency": 1,
                                                           "amplitude.min_id_length": 5})
        with pytest.raises(TerminalError) as refused:
            migrate(changed, resume=True)
        assert "differs from the one the run started with in what decides its batches " \
               "([amplitude] min_id_length (which events Amplitude takes: events the run " \
               "sent or dead-lettered were judged by the first); was" in str(refused.value)
        assert '"min_id_length":1' in str(refused.value)
        result = migrate(config, resume=True)
        assert result.exit_code == 0
        assert_exactly_once(url, project.expected)  # nothing dead-lettered, nothing lost


def test_a_run_recorded_without_min_id_length_still_resumes(project: Project,
                                                            tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        assert migrate(config).exit_code == 0
        assert drop_fingerprint_key(work, "min_id_length") == 1
        assert migrate(config, resume=True).exit_code == 0
        assert_exactly_once(url, project.expected)


def test_files_for_s3_import_do_not_record_it(project: Project, tmp_path: Path) -> None:
    """S3 import has no min_id_length option: a changed one changes nothing there."""
    work = tmp_path / "work"
    config = make_config(project.events, work, "http://127.0.0.1:9",
                         **{"amplitude.output_dir": str(tmp_path / "out")})
    assert migrate(config).exit_code == 0
    ledger = Ledger(work / "ledger.sqlite")
    assert "min_id_length" not in orjson.loads(str(ledger.get_meta("fingerprint")))
    ledger.close()
    changed = make_config(project.events, work, "http://127.0.0.1:9",
                          **{"amplitude.output_dir": str(tmp_path / "out"),
                             "amplitude.min_id_length": 5})
    assert migrate(changed, resume=True).exit_code == 0
