"""Third-pass review of 77a884e (extract/localtree.py list_tree, extract/globparts.py) and
e6fecbc (S3 sink: is_output_file, merge stops, check_output_folder_async).

Tests marked ``xfail(strict=True, reason=...)`` show a defect: they pass once it is fixed
(and then the mark must go)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from migrate_kit import FAST, amplitude, make_config, stored_counts

from mp2amp.errors import Mp2AmpError
from mp2amp.extract import localtree
from mp2amp.extract.files import expand_paths
from mp2amp.pipeline import windows as windows_module
from mp2amp.pipeline.migrate import EXIT_OK, migrate

T = 1_700_000_000


def line(i: int) -> str:
    return json.dumps({"event": "E", "properties": {"time": T + i, "distinct_id": f"u{i}",
                                                    "$insert_id": f"iid-{i}"}},
                      separators=(",", ":"))


def names(paths: list[Path | str], root: Path) -> list[str]:
    return [os.path.relpath(f.url, root) for f in expand_paths([str(p) for p in paths])]


def _old_walk_names(root: str) -> list[str]:
    """The listing the code before 77a884e made (os.walk, links followed, each real folder
    once), for trees without links the reference for window ids of earlier work folders."""
    rels, visited = [], set()
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        rels += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return rels


# --- a link to a FILE inside an input folder ----------------------------------------------


def test_file_link_to_a_day_in_the_folder_keeps_the_days_name(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "days").mkdir(parents=True)
    (src / "days" / "2024-01-05.jsonl").write_text(line(5) + "\n")
    os.symlink("days/2024-01-05.jsonl", src / "current.jsonl")  # repointed every day
    # README: "a link to one of them adds nothing and its files keep their folder's names
    # (window ids do not depend on listing order nor on where a link points today)"
    assert names([src], src) == ["days/2024-01-05.jsonl"]


def test_resume_after_a_file_link_is_repointed_migrates_every_day(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in"
    (src / "days").mkdir(parents=True)
    (src / "days" / "2024-01-05.jsonl").write_text(line(5) + "\n")
    (src / "days" / "2024-01-06.jsonl").write_text(line(6) + "\n")
    os.symlink("days/2024-01-05.jsonl", src / "current.jsonl")
    staged = windows_module.stage

    def disk_full(records: Any, dest: Path, *args: Any, **kw: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))

    monkeypatch.setattr(windows_module, "stage", disk_full)
    with amplitude(tmp_path / "amp") as url:
        config = make_config(src, tmp_path / "work", url, **{"mixpanel.timezone": "UTC"})
        with pytest.raises(Mp2AmpError):
            migrate(config, upload_overrides=FAST)  # stopped while staging: all pending
        monkeypatch.setattr(windows_module, "stage", staged)
        os.remove(src / "current.jsonl")  # the daily job moves the pointer on
        os.symlink("days/2024-01-06.jsonl", src / "current.jsonl")
        result = migrate(config, resume=True, upload_overrides=FAST)
        who = sorted({who for who, _ in stored_counts(url)})
    assert result.exit_code == EXIT_OK
    assert who == ["u5", "u6"], (who, result.not_in_run)


# --- folders the walk never enters ------------------------------------------------------


def test_dangling_profiles_link_does_not_stop_an_events_run(tmp_path: Path) -> None:
    src = tmp_path / "pipeline"
    day = src / "mp_master_event" / "2024" / "01" / "05"
    day.mkdir(parents=True)
    (day / "a.json").write_text(line(0) + "\n")
    # profiles on a share not mounted on the migration host: never read for events
    os.symlink(tmp_path / "mnt" / "people", src / "mp_people_data")
    assert names([src], src) == ["mp_master_event/2024/01/05/a.json"]


# --- globs: '_' pattern parts at their own place ----------------------------------------


def test_underscore_part_between_two_recursive_parts_names_its_folder(tmp_path: Path) -> None:
    deep = tmp_path / "in" / "eu" / "_backfill" / "2024" / "01"
    deep.mkdir(parents=True)
    (deep / "a.json").write_text(line(0) + "\n")
    got = names([f"{tmp_path}/in/**/_backfill/**/*.json"], tmp_path)
    assert got == ["in/eu/_backfill/2024/01/a.json"]


# --- hot path: a legacy pipeline tree's listing ------------------------------------------


def test_legacy_tree_listing_resolves_each_folder_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in"
    folders = 0
    for day in range(1, 4):
        for hour in range(4):
            slice_dir = src / "123" / "2024" / "01" / f"{day:02d}" / f"{hour:02d}"
            slice_dir.mkdir(parents=True)
            folders += 1
            (slice_dir / "complete").write_text("")
            for part in range(25):
                (slice_dir / f"p{part}.json").write_text(line(part) + "\n")
    calls = 0
    real = os.path.realpath

    def counting(path: Any, *args: Any, **kw: Any) -> str:
        nonlocal calls
        calls += 1
        return real(path, *args, **kw)

    monkeypatch.setattr(os.path, "realpath", counting)
    found = expand_paths([str(src)])
    assert len(found) == 12 * 25
    # expand_paths' dedupe resolves each file once (as before 77a884e); the layout needs
    # one look-up per folder (plus a few), not one more per file
    assert calls <= len(found) + 4 * (folders + 5), f"{calls} realpath calls, {folders} folders"


# --- regression guards ------------------------------------------------------------------


def test_linkless_tree_lists_what_the_old_walk_listed(tmp_path: Path) -> None:
    """Window ids of a work folder made before 77a884e stay the same for a tree without
    links (hidden, '_', profile folders, markers, extensionless parts, odd case)."""
    src = tmp_path / "in"
    layout = ["a/p.json", "a/_t/q.json", "a/.h/r.json", "mp_master_event/2024/part-0",
              "mp_people_data/x.json", "b/B.JSONL", "b/_SUCCESS", "b/complete",
              "x y/é.ndjson", "b/c/d/e/f/g/h/z.json.gz", "schema/s.json", "n.txt"]
    for rel in layout:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(line(0) + "\n")
    from mp2amp.extract.pipelines import select_event_files, select_table_files

    old = _old_walk_names(str(src))
    for every_file in (False, True):
        new = localtree.list_tree(str(src), every_file)
        pick = select_table_files if every_file else (
            lambda rels: select_event_files(rels, str(src)))
        assert pick(new) == pick(old)


def test_deep_tree_is_listed_without_recursion(tmp_path: Path) -> None:
    deep = tmp_path / "in"
    for _ in range(400):  # deeper than the recursion limit set below
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "x.json").write_text(line(0) + "\n")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(150)
    try:
        got = localtree.list_tree(str(tmp_path / "in"))
    finally:
        sys.setrecursionlimit(limit)
    assert got == ["/".join(["d"] * 400) + "/x.json"]


# --- the fixes' other sides ---------------------------------------------------------------


def test_file_link_to_a_file_nothing_else_lists_keeps_its_name(tmp_path: Path) -> None:
    src, elsewhere = tmp_path / "in", tmp_path / "archive"
    src.mkdir()
    elsewhere.mkdir()
    (elsewhere / "2024-01-05.jsonl").write_text(line(5) + "\n")
    (src / "a.jsonl").write_text(line(0) + "\n")
    os.symlink(elsewhere / "2024-01-05.jsonl", src / "old.jsonl")
    assert names([src], src) == ["a.jsonl", "old.jsonl"]


def test_file_link_into_a_linked_folder_keeps_the_folders_name(tmp_path: Path) -> None:
    src, archive = tmp_path / "in", tmp_path / "mnt" / "archive"
    src.mkdir()
    archive.mkdir(parents=True)
    (archive / "2024-01-05.jsonl").write_text(line(5) + "\n")
    os.symlink(archive, src / "archive")
    os.symlink(archive / "2024-01-05.jsonl", src / "current.jsonl")
    assert names([src], src) == ["archive/2024-01-05.jsonl"]


def test_dangling_links_named_like_other_tables_still_stop_a_table_run(tmp_path: Path) -> None:
    src = tmp_path / "ids"
    src.mkdir()
    (src / "part-0").write_text('{"distinct_id": "d", "resolved_distinct_id": "u"}\n')
    os.symlink(tmp_path / "gone", src / "schema")
    with pytest.raises(Mp2AmpError) as err:
        expand_paths([str(src)], every_file=True)  # a table's folder: every file counts
    assert "schema" in str(err.value)


def test_link_to_a_folder_below_profiles_is_not_read_for_events(tmp_path: Path) -> None:
    src, people = tmp_path / "in", tmp_path / "77" / "mp_people_data" / "2024"
    src.mkdir()
    people.mkdir(parents=True)
    (people / "p.json").write_text('{"$distinct_id": "d0"}\n')
    (src / "a.jsonl").write_text(line(0) + "\n")
    os.symlink(people, src / "2024")
    assert names([src], src) == ["a.jsonl"]


def test_input_folder_inside_a_folder_named_schema_reads_its_linked_folders(
        tmp_path: Path) -> None:
    home = tmp_path / "schema" / "migration"  # where the input folder lies is the user's
    (home / "in").mkdir(parents=True)
    (home / "archive" / "2023").mkdir(parents=True)
    (home / "archive" / "2023" / "a.jsonl").write_text(line(0) + "\n")
    os.symlink(home / "archive" / "2023", home / "in" / "2023")
    assert names([home / "in"], home / "in") == ["2023/a.jsonl"]


def test_middle_part_names_only_the_names_it_matches(tmp_path: Path) -> None:
    for rel in ("in/eu/_backfill/01/a.json", "in/_tmp/_backfill/01/b.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(line(0) + "\n")
    got = names([f"{tmp_path}/in/**/_backfill/**/*.json"], tmp_path)
    assert got == ["in/eu/_backfill/01/a.json"]  # '_tmp' is no '_backfill'


def test_remote_glob_hidden_middle_part_names_its_folder() -> None:
    import fsspec

    from mp2amp.extract.remote_glob import remote_glob

    fs = fsspec.filesystem("memory", skip_instance_cache=True)
    for key in ("b/in/eu/.staged/01/a.json", "b/in/eu/.other/01/b.json"):
        fs.pipe(key, b"{}\n")
    try:
        assert sorted(remote_glob(fs, "memory://b/in/**/.staged/**/*.json")) == [
            "/b/in/eu/.staged/01/a.json"]
    finally:
        fs.rm("b", recursive=True)
