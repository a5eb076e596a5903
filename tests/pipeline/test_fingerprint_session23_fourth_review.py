"""A fourth review of the identity table in the fingerprint (commits 190113b, 49c23d1 and
77697ee).

77697ee makes a resume compare and record one listing of the table (``one_listing``: a
module-global ``_LISTED`` dict while the scope is open) and counts a local folder table by
the part files the identity stage reads. Defects this pass found (each test failed on
77697ee; fixed since: the scope is a context variable, per thread and task):

- ``one_listing`` keeps its state in a module global and restores, on exit, whatever the
  global held on entry: two scopes open at once in two threads (a library user running two
  migrations in threads, say) that end in the order they began leave the first one's
  listings in the global for good. Every later fingerprint in the process then gives that
  stale listing: a table rewritten since is taken on silently (finish_graph's checks compare
  the cached listing to itself), and a new run records a listing of a table it never read
  (so a later process would refuse its resume with the table it did read: inferred);
- the same overlap ends the second thread's scope when the first one exits: that thread's
  resume compares one listing and records another (the race 77697ee fixed, back).

Pinned as correct (plain tests): a folder table named with a trailing slash, as a
``file://`` URL, through a symlink or through ``..`` is the same table; Data Pipelines'
identity layout (day folders of part files, ``complete`` markers, Spark's ``_temporary``
and hidden files) is counted by its part files only; an empty folder or one holding only
markers is listed without an error, and the same way twice; a scope left by an exception or
nested in another leaves no listing behind; an untouched folder recorded in the old
all-files form resumes also with a hash salt recorded in its pre-KDF form, and a changed one
is still refused.
"""

from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from migrate_kit import TIMEZONE, Project, amplitude, make_config
from test_fingerprint_session23_second_review import REFUSED, _renamed

import mp2amp.pipeline.fingerprint as fingerprint
import mp2amp.pipeline.migrate as migrate_module
from mp2amp.config import load_config
from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.fingerprint import (
    FINGERPRINT_META,
    check_resume,
    events_fingerprint,
    one_listing,
    run_fingerprint,
)
from mp2amp.pipeline.migrate import migrate, upload_settings

WAIT = 60  # seconds a thread waits for the other before the test gives up (no assertion)


def _mappings(project: Project) -> list[bytes]:
    rows = gzip.decompress((project.root / "identity" / "mappings.jsonl.gz").read_bytes())
    return rows.splitlines(keepends=True)


def _config(project: Project, tmp_path: Path, table: str) -> Any:
    return make_config(project.events, tmp_path / "work", "http://127.0.0.1:9", **{
        "source.identity_table": table})


@pytest.fixture
def no_scope() -> None:
    """Outside any scope (``_LISTED`` is a context variable: a test leaves nothing set)."""
    assert fingerprint._LISTED.get() is None


def _in_threads(first: Any, second: Any) -> None:
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads), "the threads did not finish"


# --- one_listing: a module global shared by threads ------------------------------------------


def test_two_threads_scopes_leave_no_stale_listing_behind(
        project: Project, tmp_path: Path, no_scope: None) -> None:
    lines = _mappings(project)
    path = tmp_path / "ids.jsonl"
    path.write_bytes(b"".join(lines))
    config = _config(project, tmp_path, str(path))
    seen: list[str] = []
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:  # a resume's check_resume, say
        with one_listing():
            seen.append(events_fingerprint(config))
            a_in.set()
            b_in.wait(WAIT)
        a_out.set()

    def second() -> None:  # another migration's, begun meanwhile and ending after it
        a_in.wait(WAIT)
        with one_listing():
            b_in.set()
            a_out.wait(WAIT)

    _in_threads(first, second)
    # every user renamed, a row more: another table by any count
    path.write_bytes(b"".join([*(_renamed(line) for line in lines), lines[0]]))
    assert events_fingerprint(config) != seen[0], (
        f"a listing of before both scopes ended is still used: _LISTED={fingerprint._LISTED}")


def test_another_threads_scope_does_not_end_this_ones(
        project: Project, tmp_path: Path, no_scope: None) -> None:
    lines = _mappings(project)
    path = tmp_path / "ids.jsonl"
    path.write_bytes(b"".join(lines))
    config = _config(project, tmp_path, str(path))
    compared: list[str] = []
    recorded: list[str] = []
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:  # another migration's scope, begun first and ended meanwhile
        with one_listing():
            a_in.set()
            b_in.wait(WAIT)
        a_out.set()

    def second() -> None:  # check_resume: compares, then records, in one scope
        a_in.wait(WAIT)
        with one_listing():
            compared.append(events_fingerprint(config))
            b_in.set()
            a_out.wait(WAIT)
            path.write_bytes(b"".join(_renamed(line) for line in lines))  # rewritten between
            recorded.append(events_fingerprint(config))

    _in_threads(first, second)
    assert recorded == compared, "the scope's one listing was not one"


def _leak(config: Any) -> None:
    """Two threads' scopes, the first listing ``config``'s table, ending in the order they
    began (two migrations run in threads by a library user)."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with one_listing():
            events_fingerprint(config)
            a_in.set()
            b_in.wait(WAIT)
        a_out.set()

    def second() -> None:
        a_in.wait(WAIT)
        with one_listing():
            b_in.set()
            a_out.wait(WAIT)

    _in_threads(first, second)


def test_after_overlapping_scopes_a_table_rewritten_mid_run_still_stops_it(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        no_scope: None) -> None:
    lines = _mappings(project)
    path = tmp_path / "ids.jsonl"
    path.write_bytes(b"".join(lines))
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": str(path)})
        _leak(config)
        order = migrate_module.load_order  # called just before graph.finish() reads the table

        def rewritten_then(*args: Any, **kwargs: Any) -> Any:
            path.write_bytes(b"".join([*(_renamed(line) for line in lines), lines[0]]))
            return order(*args, **kwargs)

        monkeypatch.setattr(migrate_module, "load_order", rewritten_then)
        try:
            result = migrate(config)
        except (TerminalError, InputError):
            return  # stopped: the table changed while the run was going
        pytest.fail(f"a table rewritten mid-run was read with no word (exit code "
                    f"{result.exit_code})")


# --- one_listing: what is right ---------------------------------------------------------------


def test_a_scope_left_by_an_exception_or_nested_leaves_no_listing(
        project: Project, tmp_path: Path, no_scope: None) -> None:
    lines = _mappings(project)
    path = tmp_path / "ids.jsonl"
    path.write_bytes(b"".join(lines))
    config = _config(project, tmp_path, str(path))
    with pytest.raises(RuntimeError), one_listing():
        before = events_fingerprint(config)
        with one_listing():  # nested: the outer one's listing
            path.write_bytes(b"".join(_renamed(line) for line in lines))
            assert events_fingerprint(config) == before
        assert events_fingerprint(config) == before
        raise RuntimeError("a failure inside the scope")
    assert fingerprint._LISTED.get() is None
    assert events_fingerprint(config) != before  # listed again, outside any scope


# --- the folder form --------------------------------------------------------------------------


def _folder(project: Project, root: Path) -> Path:
    lines = _mappings(project)
    root.mkdir(parents=True)
    (root / "part-00000").write_bytes(b"".join(lines[::2]))
    (root / "part-00001").write_bytes(b"".join(lines[1::2]))
    return root


@pytest.mark.parametrize("named", ["slash", "file_url", "symlink", "dotdot"])
def test_a_folder_named_another_way_is_the_same_table(
        project: Project, tmp_path: Path, named: str) -> None:
    folder = _folder(project, tmp_path / "ids")
    os.symlink(folder, tmp_path / "link")
    (tmp_path / "other").mkdir()
    table = {"slash": f"{folder}/", "file_url": f"file://{folder}",
             "symlink": str(tmp_path / "link"), "dotdot": str(tmp_path / "other" / ".." / "ids"),
             }[named]
    assert events_fingerprint(_config(project, tmp_path, table)) == events_fingerprint(
        _config(project, tmp_path, str(folder)))


def test_data_pipelines_identity_layout_counts_its_part_files(
        project: Project, tmp_path: Path) -> None:
    lines = _mappings(project)
    table = tmp_path / "bucket" / "77" / "mp_identity_mappings_data"
    for n, day in enumerate(["2024/01/01", "2024/01/02"]):
        (table / day).mkdir(parents=True)
        (table / day / f"part-0000{n}.json.gz").write_bytes(gzip.compress(b"".join(
            lines[n::2])))
        (table / day / "complete").write_bytes(b"")
    config = _config(project, tmp_path, str(table))
    before = events_fingerprint(config)
    (table / "2024" / "01" / "02" / "_temporary" / "0").mkdir(parents=True)  # Spark writing
    (table / "2024" / "01" / "02" / "_temporary" / "0" / "part-9").write_bytes(b"{}\n")
    (table / "2024" / ".DS_Store").write_bytes(b"\0" * 64)
    (table / "_SUCCESS").write_bytes(b"")
    assert events_fingerprint(config) == before
    (table / "2024" / "01" / "03").mkdir()  # another day of mappings landed
    (table / "2024" / "01" / "03" / "part-00002.json.gz").write_bytes(gzip.compress(lines[0]))
    assert events_fingerprint(config) != before


@pytest.mark.parametrize("content", [[], ["complete", "_SUCCESS"]])
def test_an_empty_or_markers_only_folder_is_listed_the_same_twice(
        project: Project, tmp_path: Path, content: list[str]) -> None:
    folder = tmp_path / "ids"
    folder.mkdir()
    for name in content:
        (folder / name).write_bytes(b"")
    config = _config(project, tmp_path, str(folder))
    assert events_fingerprint(config) == events_fingerprint(config)


def test_an_untouched_folder_in_the_old_form_resumes_with_a_pre_kdf_salt(
        project: Project, tmp_path: Path) -> None:
    """A run of before 2026-12-01: the folder by all its files (its marker too) and the hash
    salt by its plain SHA-256 digest; resumed untouched it goes on (and records the new
    forms); a part file of another size is refused."""
    folder = _folder(project, tmp_path / "ids")
    (folder / "complete").write_bytes(b"")

    def config(**more: Any) -> Any:
        return load_config(None, {"source.files": [str(project.events)],
                                  "mixpanel.timezone": TIMEZONE,
                                  "source.identity_table": str(folder),
                                  "privacy.hash_properties": ["$city"], **more},
                           env={"AMPLITUDE_API_KEY": "k" * 32, "MP2AMP_HASH_SALT": "pepper"})

    now = config()
    upload = upload_settings(now)
    known = run_fingerprint(now, upload)
    known["events"] = events_fingerprint(now, True, listed=False)  # both legacy forms
    assert known["events"] != events_fingerprint(now)
    recorded = orjson.dumps(known, option=orjson.OPT_SORT_KEYS).decode()
    ledger = Ledger(tmp_path / "legacy.sqlite")
    try:
        ledger.set_meta(FINGERPRINT_META, recorded)
        check_resume(ledger, now, upload, recorded, lambda changed: False)
        assert orjson.loads(str(ledger.get_meta(FINGERPRINT_META)))["events"] == \
            events_fingerprint(now)
        (folder / "part-00001").write_bytes((folder / "part-00001").read_bytes() + b"\n")
        with pytest.raises(TerminalError, match=REFUSED):
            check_resume(ledger, now, upload, recorded, lambda changed: False)
    finally:
        ledger.close()
