"""Insert_id scheme 4 (session 28) and runs started under scheme 3.

Scheme 4 keeps Mixpanel's ingestion stamps in the content hash of an event without
``$insert_id`` (two stored taps of one second stay two). A run started under scheme 3 (by
an earlier release) goes on making scheme-3 ids when this mp2amp resumes it: the batches
that were in flight when it stopped are sent again under the ids they first carried, so
Amplitude drops the copies. A run records its scheme in the ledger's fingerprint and keeps
it there across resumes; a new run makes scheme-4 ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import (
    Key,
    Project,
    amplitude,
    assert_exactly_once,
    make_config,
    run_until_crash,
)

from mp2amp.ledger import Ledger
from mp2amp.pipeline import fingerprint
from mp2amp.pipeline.migrate import migrate


def _recorded_scheme(work: Path) -> Any:
    ledger = Ledger(work / "ledger.sqlite")
    try:
        return orjson.loads(str(ledger.get_meta("fingerprint")))["insert_ids"]
    finally:
        ledger.close()


def _as_earlier_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an mp2amp of scheme 3 records for a new run (and so makes its ids under)."""
    monkeypatch.setattr(fingerprint, "INSERT_ID_SCHEME", 3)


def test_scheme_3_and_4_differ_only_in_the_content_hashes(
        project: Project, scheme_3_expected: frozenset[Key]) -> None:
    """The project holds events without ``$insert_id`` (old iOS SDKs): their ids differ."""
    assert len(scheme_3_expected) == len(project.expected)
    changed = scheme_3_expected - project.expected
    assert changed and all(iid.startswith("mp-") for _, iid in changed)
    assert all(iid.startswith("mp-") for _, iid in project.expected - scheme_3_expected)


def test_a_new_run_records_scheme_4(project: Project, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        assert migrate(make_config(project.events, work, url)).exit_code == 0
        assert_exactly_once(url, project.expected)
    assert _recorded_scheme(work) == 4


def test_a_scheme_3_run_resumed_by_this_mp2amp_keeps_its_ids(
        project: Project, scheme_3_expected: frozenset[Key], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after its 2nd accepted batch (the 2nd is sent again on resume): every event
    once, under the scheme-3 ids, and the ledger still says 3."""
    work = tmp_path / "work"
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, work, url)
        _as_earlier_release(monkeypatch)
        run_until_crash(config, monkeypatch, 2)  # undoes the patch: this mp2amp resumes
        assert _recorded_scheme(work) == 3
        assert migrate(config, resume=True).exit_code == 0
        assert_exactly_once(url, scheme_3_expected)
    assert _recorded_scheme(work) == 3



def test_a_scheme_3_import_file_run_resumed_by_this_mp2amp_writes_its_ids(
        project: Project, scheme_3_expected: frozenset[Key], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3-import sink: a scheme-3 run stopped after 2 files went out; the resumed
    attempt's files hold every event once, under its scheme-3 ids."""
    import functools

    from test_import_files import Crash, CrashingSink, config, keys, written

    import mp2amp.pipeline.migrate as migrate_module
    from mp2amp.load.s3sink import S3ImportSink

    small = {"target_file_bytes": 100_000, "min_file_bytes": 5_000}
    cfg = config(project.events, tmp_path / "work", tmp_path / "out")
    _as_earlier_release(monkeypatch)
    monkeypatch.setattr(migrate_module, "S3ImportSink", functools.partial(CrashingSink, **small))
    with pytest.raises(Crash):
        migrate(cfg)
    monkeypatch.undo()
    assert _recorded_scheme(tmp_path / "work") == 3
    monkeypatch.setattr(migrate_module, "S3ImportSink", functools.partial(S3ImportSink, **small))
    assert migrate(cfg, resume=True).exit_code == 0
    found = keys(written(tmp_path / "out")[0])
    assert len(found) == len(set(found)) and set(found) == scheme_3_expected
    assert _recorded_scheme(tmp_path / "work") == 3
