"""A third review of the identity table in the fingerprint (commits 190113b and 49c23d1).

49c23d1 lists the table again just before and after ``graph.finish()`` reads it and checks
it against the ``identity_table`` ledger meta that ``record_fingerprint`` writes. Defects
this pass found (each test failed on 49c23d1; fixed since):

- the run's fingerprint and its ``identity_table`` meta come from listings other than the
  one a resume compares: a table rewritten between check_resume's comparison and its
  record (or between the fingerprint's listing and the meta's) is recorded as the run's
  and read with no word; on a new run the same race leaves a fingerprint of a table the
  run never read, so the resume with the table it did read is refused;
- a local folder table counts every file in it (``_content``: rglob), where the identity
  stage reads every file but markers, hidden files and files in hidden or ``_`` folders:
  a ``.DS_Store`` written while the run goes stops it at the identity stage (and refuses a
  resume), though the table read is the same;
- the same count does not follow a linked folder inside the table's folder, which the
  identity stage reads (``list_tree`` follows links): its part files rewritten between a
  run and its resume are taken on silently.

Pinned as correct (plain tests): a run whose ledger has no ``identity_table`` meta (an
older mp2amp's) resumes and records it; the S3-import sink goes through the checks; two
globs of identical files under different folders are the same table; the legacy
by-location acceptance does not take on another change (privacy) with it.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import Project, amplitude, assert_exactly_once, make_config, run_until_crash
from test_fingerprint_session23_second_review import REFUSED, _renamed

import mp2amp.pipeline.fingerprint as fingerprint
import mp2amp.pipeline.migrate as migrate_module
from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.fingerprint import TABLE_META, events_fingerprint
from mp2amp.pipeline.migrate import migrate


def _mappings(project: Project) -> list[bytes]:
    rows = gzip.decompress((project.root / "identity" / "mappings.jsonl.gz").read_bytes())
    return rows.splitlines(keepends=True)


def _table_file(project: Project, tmp_path: Path) -> tuple[Path, list[bytes]]:
    lines = _mappings(project)
    path = tmp_path / "ids.jsonl"
    path.write_bytes(b"".join(lines))
    return path, lines


def _rewrite_once(path: Path, lines: list[bytes]) -> Any:
    """A callable rewriting the table on its first call only (every user renamed, the
    same sizes): a rewrite at a given point of the run, with no timing."""
    done: list[bool] = []

    def rewrite() -> None:
        if not done:
            done.append(True)
            path.write_bytes(b"".join(_renamed(line) for line in lines))
    return rewrite


# --- the listing compared is not the listing recorded ---------------------------------------


@pytest.mark.parametrize("between", ["record_fingerprint", "_table_now"])
def test_a_table_rewritten_between_the_resumes_check_and_its_record_is_not_read_silently(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        between: str) -> None:
    path, lines = _table_file(project, tmp_path)
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": str(path)})
        run_until_crash(config, monkeypatch, 2)  # batches in flight, the rest to resume
        rewrite = _rewrite_once(path, lines)
        original = getattr(fingerprint, between)

        def rewritten_then(*args: Any, **kwargs: Any) -> Any:
            rewrite()  # after check_resume compared the listing, before it is recorded
            return original(*args, **kwargs)

        monkeypatch.setattr(fingerprint, between, rewritten_then)
        try:
            result = migrate(config, resume=True)
        except (TerminalError, InputError):
            return  # stopped, the table changed: what a fix does
        pytest.fail(f"the resume read a rewritten table with no word (exit code "
                    f"{result.exit_code})")


def test_a_new_run_that_read_a_table_resumes_with_that_table(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, lines = _table_file(project, tmp_path)
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": str(path)})
        rewrite = _rewrite_once(path, lines)
        original = fingerprint._table_now

        def rewritten_then(*args: Any, **kwargs: Any) -> Any:
            rewrite()  # after the fingerprint's listing, before the meta's
            return original(*args, **kwargs)

        monkeypatch.setattr(fingerprint, "_table_now", rewritten_then)
        try:
            migrate(config)
        except (TerminalError, InputError):
            return  # stopped, the table changed while recorded: what a fix may do
        monkeypatch.undo()
        # the table is the one the run read, untouched since: the resume must go on
        assert migrate(config, resume=True).exit_code == 0


# --- a local folder table: what is counted is not what is read ------------------------------


def _table_folder(project: Project, root: Path) -> Path:
    lines = _mappings(project)
    root.mkdir()
    (root / "part-0").write_bytes(b"".join(lines[::2]))
    (root / "part-1").write_bytes(b"".join(lines[1::2]))
    return root


def test_a_hidden_file_in_a_table_folder_does_not_stop_the_run(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _table_folder(project, tmp_path / "ids")
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": str(folder)})
        order = migrate_module.load_order  # called just before graph.finish() reads the table

        def browsed_then(*args: Any, **kwargs: Any) -> Any:
            (folder / ".DS_Store").write_bytes(b"\0" * 6148)  # Finder opened the folder
            return order(*args, **kwargs)

        monkeypatch.setattr(migrate_module, "load_order", browsed_then)
        assert migrate(config).exit_code == 0
        assert_exactly_once(url, project.expected)


def test_a_table_folders_linked_part_files_rewritten_stop_the_resume(
        project: Project, tmp_path: Path) -> None:
    lines = _mappings(project)
    folder, archive = tmp_path / "ids", tmp_path / "archive"
    folder.mkdir()
    archive.mkdir()
    (folder / "part-0").write_bytes(b"".join(lines[::2]))
    (archive / "part-1").write_bytes(b"".join(lines[1::2]))
    os.symlink(archive, folder / "day2")  # an archive mounted elsewhere, linked in
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": str(folder)})
        before = events_fingerprint(config)
        assert migrate(config).exit_code == 0
        # every user of the linked part renamed, a row more: even its size changes
        (archive / "part-1").write_bytes(b"".join([*(_renamed(line) for line in lines[1::2]),
                                                   lines[0]]))
        assert events_fingerprint(config) != before
        with pytest.raises(TerminalError, match=REFUSED):
            migrate(config, resume=True)


# --- pinned: what must still resume, and what must still be refused --------------------------


def test_a_run_without_the_table_meta_resumes_and_records_it(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger of an mp2amp before 49c23d1 (no ``identity_table`` meta), killed mid-run."""
    path, _ = _table_file(project, tmp_path)
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": str(path)})
        run_until_crash(config, monkeypatch, 2)
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        recorded = ledger.get_meta(TABLE_META)
        assert recorded is not None
        ledger.drop_meta(TABLE_META, recorded)
        assert ledger.get_meta(TABLE_META) is None
        ledger.close()
        assert migrate(config, resume=True).exit_code == 0
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        assert ledger.get_meta(TABLE_META) == recorded
        ledger.close()
        assert_exactly_once(url, project.expected)


def test_the_import_sink_reads_an_unchanged_table_and_resumes(
        project: Project, tmp_path: Path) -> None:
    folder = _table_folder(project, tmp_path / "ids")
    config = make_config(project.events, tmp_path / "work", "http://127.0.0.1:9", **{
        "source.identity_table": str(folder),
        "amplitude.output_dir": str(tmp_path / "out")})
    assert migrate(config).exit_code == 0
    assert migrate(config, resume=True).exit_code == 0
    (folder / "part-0").write_bytes(_renamed(_mappings(project)[0]))
    with pytest.raises(TerminalError, match=REFUSED):
        migrate(config, resume=True)


def test_two_globs_of_the_same_files_are_the_same_table(
        project: Project, tmp_path: Path) -> None:
    """The identity a table gives is its rows: the same files under another folder give the
    same users (as a plan file moved elsewhere is the same plan)."""
    lines = _mappings(project)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "p0.jsonl").write_bytes(b"".join(lines[::2]))
        (tmp_path / name / "p1.jsonl").write_bytes(b"".join(lines[1::2]))

    def digest(table: str) -> str:
        return events_fingerprint(make_config(project.events, tmp_path / "w", "http://x", **{
            "source.identity_table": table}))

    assert digest(str(tmp_path / "a" / "*.jsonl")) == digest(str(tmp_path / "b" / "*.jsonl"))
    (tmp_path / "b" / "p1.jsonl").write_bytes(b"".join(_renamed(x) for x in lines[1::2]))
    assert digest(str(tmp_path / "a" / "*.jsonl")) != digest(str(tmp_path / "b" / "*.jsonl"))


def test_the_legacy_table_acceptance_takes_on_no_other_change(
        project: Project, tmp_path: Path) -> None:
    from mp2amp.pipeline.fingerprint import FINGERPRINT_META, check_resume, run_fingerprint
    from mp2amp.pipeline.migrate import upload_settings

    lines = _mappings(project)
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / "p0.jsonl").write_bytes(b"".join(lines))
    table = str(tmp_path / "ids" / "*.jsonl")
    config = make_config(project.events, tmp_path / "w", "http://x", **{
        "source.identity_table": table})
    upload = upload_settings(config)
    known = run_fingerprint(config, upload)
    known["events"] = events_fingerprint(config, listed=False)  # by location (legacy)
    import orjson

    recorded = orjson.dumps(known, option=orjson.OPT_SORT_KEYS).decode()
    changed = make_config(project.events, tmp_path / "w", "http://x", **{
        "source.identity_table": table, "privacy.drop_properties": ["$city"]})
    assert events_fingerprint(changed, listed=False) != known["events"]
    ledger = Ledger(tmp_path / "legacy.sqlite")
    try:
        ledger.set_meta(FINGERPRINT_META, recorded)
        check_resume(ledger, config, upload, recorded, lambda changed: False)  # accepted
        with pytest.raises(TerminalError, match=REFUSED):
            check_resume(ledger, changed, upload, recorded, lambda changed: False)
    finally:
        ledger.close()


def test_a_folder_table_recorded_by_an_earlier_mp2amp_resumes(project: Project,
                                                              tmp_path: Path) -> None:
    """Recorded before 2026-12-01 a folder table counted every file in it, its completion
    marker too; now it counts what is read. An untouched folder resumes (and records the
    new form); a part file of another size is still refused."""
    folder = tmp_path / "ids"
    folder.mkdir()
    rows = gzip.decompress((project.root / "identity" / "mappings.jsonl.gz").read_bytes())
    (folder / "part-0").write_bytes(rows)
    (folder / "complete").write_bytes(b"")
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url,
                             **{"source.identity_table": str(folder)})
        assert migrate(config).exit_code == 0
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        stored = orjson.loads(str(ledger.get_meta("fingerprint")))
        now = stored["events"]
        stored["events"] = events_fingerprint(config, listed=False)
        assert stored["events"] != now
        ledger.set_meta("fingerprint", orjson.dumps(stored, option=orjson.OPT_SORT_KEYS).decode())
        ledger.close()
        assert migrate(config, resume=True).exit_code == 0
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        assert orjson.loads(str(ledger.get_meta("fingerprint")))["events"] == now
        ledger.close()
        (folder / "part-0").write_bytes(rows + rows[:40])
        with pytest.raises(TerminalError, match="differs from the one the run started with"):
            migrate(config, resume=True)
