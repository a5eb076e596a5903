"""A second review of the listed identity table in the fingerprint (commit 190113b).

The fix counts an ``s3://`` or ``gs://`` identity table by its listing (names, sizes, ETags
or generations) and a local glob by its files' contents. Pinned here: the listing is the
same on every call for an unchanged table whatever the URL's form, on S3 and on GCS; a
change is seen by a resume in the same process (no fsspec listing cache in the way);
``migrate(storage_options=...)`` lists with the options the identity stage reads with; a
listing that fails at a resume says so and leaves the run resumable; a local glob sees
files added, removed and rewritten, ``**`` included.

Defects it found, fixed since (each test failed on 190113b):
- a ``file://`` identity table still counts by its location only (a rewrite is missed);
- a project folder moved whole is refused when its identity table is a relative glob (the
  glob's files count by their absolute paths), while a file or folder table resumes;
- a ``gs://`` table put back byte for byte never resumes (its objects' generations are new
  on every write), where an S3 one does (the ETag is the content's MD5);
- a table rewritten after the resume's listing, before the identity stage reads it, is
  taken on silently (now listed again before and after the read);
- a run of an mp2amp that kept absolute paths and recorded its table by location is refused
  by check_resume's fallback comparison.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import pytest
import test_fingerprint_session23_review as first_review
from migrate_kit import Project, amplitude, assert_exactly_once, make_config
from test_fingerprint_session23_review import BUCKET, _client

from mp2amp.config import load_config
from mp2amp.errors import InputError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.pipeline.fingerprint import events_fingerprint
from mp2amp.pipeline.migrate import migrate

GS_BUCKET = "mp-identity-23b"
REFUSED = "differs from the one the run started with in what decides its batches"
table = first_review.table  # the fixture: the mappings in two parts under s3://BUCKET/ids/


def _mappings(project: Project) -> list[bytes]:
    rows = gzip.decompress((project.root / "identity" / "mappings.jsonl.gz").read_bytes())
    return rows.splitlines(keepends=True)


def _renamed(line: bytes) -> bytes:
    """The same row with another user (the same length: only the content tells)."""
    import orjson

    row = orjson.loads(line)
    return orjson.dumps({**row, "resolved_distinct_id": row["resolved_distinct_id"][::-1]}) \
        + b"\n"


@pytest.fixture
def gs_table(project: Project, gcs_server: dict[str, Any]) -> Any:
    """The project's mappings in two part files under gs://GS_BUCKET/ids/ (written through
    Google's own client); returns the bucket."""
    from google.api_core.exceptions import Conflict
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="mp2amp-test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_server["endpoint_url"]})
    try:
        bucket = client.create_bucket(GS_BUCKET)
    except Conflict:  # the emulator is the session's
        bucket = client.bucket(GS_BUCKET)
        for blob in list(client.list_blobs(GS_BUCKET)):
            blob.delete()
    lines = _mappings(project)
    bucket.blob("ids/part-0").upload_from_string(b"".join(lines[::2]))
    bucket.blob("ids/part-1").upload_from_string(b"".join(lines[1::2]))
    return bucket


# --- the listing is stable, and sees a change --------------------------------------------


def test_an_unchanged_s3_table_lists_the_same_whatever_the_urls_form(
        project: Project, table: list[bytes], s3_server: dict[str, Any],
        tmp_path: Path) -> None:
    def digest(url: str) -> str:
        return events_fingerprint(make_config(project.events, tmp_path / "w", "http://x", **{
            "source.identity_table": url, "source.storage_options": s3_server}))

    folder = digest(f"s3://{BUCKET}/ids/")
    assert digest(f"s3://{BUCKET}/ids/") == folder  # every call
    assert digest(f"s3://{BUCKET}/ids") == folder  # no trailing slash: the same objects
    assert digest(f"s3://{BUCKET}/ids/part-*") == folder  # a glob of them
    single = digest(f"s3://{BUCKET}/ids/part-0")
    assert digest(f"s3://{BUCKET}/ids/part-0") == single
    # the same bytes written again: the same ETag (their MD5), nothing to refuse
    _client(s3_server).put_object(Bucket=BUCKET, Key="ids/part-0", Body=b"".join(table[::2]))
    assert digest(f"s3://{BUCKET}/ids/") == folder
    # another part file, then another byte: seen in the same process (no listing cache)
    _client(s3_server).put_object(Bucket=BUCKET, Key="ids/part-2", Body=table[0])
    assert digest(f"s3://{BUCKET}/ids/") != folder
    _client(s3_server).delete_object(Bucket=BUCKET, Key="ids/part-2")
    assert digest(f"s3://{BUCKET}/ids/") == folder
    _client(s3_server).put_object(Bucket=BUCKET, Key="ids/part-0",
                                  Body=b"".join([_renamed(table[0]), *table[2::2]]))
    assert digest(f"s3://{BUCKET}/ids/part-0") != single


def test_an_unchanged_gs_table_lists_the_same_and_a_rewrite_is_seen(
        project: Project, gs_table: Any, gcs_server: dict[str, Any], tmp_path: Path) -> None:
    def digest(url: str) -> str:
        return events_fingerprint(make_config(project.events, tmp_path / "w", "http://x", **{
            "source.identity_table": url, "source.storage_options": gcs_server}))

    folder = digest(f"gs://{GS_BUCKET}/ids/")
    for url in (f"gs://{GS_BUCKET}/ids/", f"gs://{GS_BUCKET}/ids",
                f"gs://{GS_BUCKET}/ids/part-*"):
        assert digest(url) == folder  # the emulator's generations are stable
    assert digest(f"gcs://{GS_BUCKET}/ids/") == folder  # gcs:// lists as gs://
    lines = _mappings(project)
    gs_table.blob("ids/part-0").upload_from_string(
        b"".join([_renamed(lines[0]), *lines[2::2]]))
    assert digest(f"gs://{GS_BUCKET}/ids/") != folder


def test_a_gs_table_put_back_byte_for_byte_resumes_as_an_s3_one_does(
        project: Project, gs_table: Any, gcs_server: dict[str, Any], tmp_path: Path) -> None:
    lines = _mappings(project)
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": f"gs://{GS_BUCKET}/ids/",
            "source.storage_options": gcs_server})
        assert migrate(config).exit_code == 0
        assert migrate(config, resume=True).exit_code == 0  # untouched: it resumes
        gs_table.blob("ids/part-0").upload_from_string(
            b"".join([_renamed(lines[0]), *lines[2::2]]))
        with pytest.raises(TerminalError, match=REFUSED):
            migrate(config, resume=True)
        gs_table.blob("ids/part-0").upload_from_string(b"".join(lines[::2]))  # put back
        assert migrate(config, resume=True).exit_code == 0
        assert_exactly_once(url, project.expected)


# --- storage options, listing failures ------------------------------------------------------


def test_options_passed_to_migrate_list_the_table_a_rewrite_is_refused(
        project: Project, table: list[bytes], s3_server: dict[str, Any],
        tmp_path: Path) -> None:
    """``migrate(storage_options=...)``, none in the config (tests/pipeline/test_sources.py's
    way): the fingerprint lists with them, as the identity stage reads with them."""
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": f"s3://{BUCKET}/ids/"})
        assert config.source.storage_options is None or not config.source.storage_options
        assert migrate(config, storage_options=s3_server).exit_code == 0
        _client(s3_server).put_object(Bucket=BUCKET, Key="ids/part-0",
                                      Body=b"".join([_renamed(table[0]), *table[2::2]]))
        with pytest.raises(TerminalError, match=REFUSED):
            migrate(config, resume=True, storage_options=s3_server)


def test_a_listing_that_fails_at_a_resume_says_so_and_the_run_resumes_after(
        project: Project, table: list[bytes], s3_server: dict[str, Any],
        tmp_path: Path) -> None:
    dead = {**s3_server, "endpoint_url": "http://127.0.0.1:9",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    with amplitude(tmp_path / "amp") as url:
        def config(options: dict[str, Any]) -> Any:
            return make_config(project.events, tmp_path / "work", url, **{
                "source.identity_table": f"s3://{BUCKET}/ids/",
                "source.storage_options": options})

        # a new run whose listing fails: nothing recorded, the same command starts it after
        with pytest.raises(InputError, match=r"identity_table\) cannot be listed"):
            migrate(config(dead))
        assert migrate(config(s3_server)).exit_code == 0
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        recorded = ledger.get_meta("fingerprint")
        ledger.close()
        with pytest.raises(InputError, match=r"identity_table\) cannot be listed") as failed:
            migrate(config(dead), resume=True)
        assert REFUSED not in str(failed.value)
        ledger = Ledger(tmp_path / "work" / "ledger.sqlite")
        assert ledger.get_meta("fingerprint") == recorded  # nothing recorded anew
        ledger.close()
        assert migrate(config(s3_server), resume=True).exit_code == 0
        assert_exactly_once(url, project.expected)


# --- local tables ---------------------------------------------------------------------------


def test_a_local_glob_sees_files_added_removed_and_rewritten_under_a_double_star(
        project: Project, tmp_path: Path) -> None:
    root = tmp_path / "ids"
    (root / "day1").mkdir(parents=True)
    (root / "day1" / "a.jsonl").write_text('{"distinct_id":"d1","resolved_distinct_id":"u1"}\n')

    def digest(pattern: str) -> str:
        return events_fingerprint(make_config(project.events, tmp_path / "w", "http://x", **{
            "source.identity_table": str(root / pattern)}))

    deep, folders = digest("**/*.jsonl"), digest("day*")  # a glob matching a folder
    assert (digest("**/*.jsonl"), digest("day*")) == (deep, folders)
    (root / "day2").mkdir()
    (root / "day2" / "b.jsonl").write_text('{"distinct_id":"d2","resolved_distinct_id":"u2"}\n')
    assert digest("**/*.jsonl") != deep and digest("day*") != folders
    (root / "day2" / "b.jsonl").unlink()
    (root / "day2").rmdir()
    assert (digest("**/*.jsonl"), digest("day*")) == (deep, folders)
    (root / "day1" / "a.jsonl").write_text('{"distinct_id":"d1","resolved_distinct_id":"u9"}\n')
    assert digest("**/*.jsonl") != deep


def test_a_file_url_identity_table_rewritten_stops_the_resume(
        project: Project, tmp_path: Path) -> None:
    lines = _mappings(project)
    path = tmp_path / "ids.jsonl"
    path.write_bytes(b"".join(lines))
    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": f"file://{path}"})
        assert migrate(config).exit_code == 0  # the identity stage reads it
        path.write_bytes(b"".join([_renamed(lines[0]), *lines[1:]]))
        with pytest.raises(TerminalError, match=REFUSED):
            migrate(config, resume=True)


@pytest.mark.parametrize("named", [
    "ids/table.jsonl",
    "ids",
    "ids/*.jsonl",
])
def test_a_project_folder_moved_whole_keeps_its_identity_tables_fingerprint(
        tmp_path: Path, named: str) -> None:
    """``events`` is what check_resume compares; nothing rewrites it as it does
    ``[source] files`` (``_same_places``), so a different digest is a refused resume."""
    old, new = tmp_path / "disk1" / "proj", tmp_path / "disk2" / "proj"
    (old / "ids").mkdir(parents=True)
    (old / "ids" / "table.jsonl").write_text('{"distinct_id":"d1","resolved_distinct_id":"u1"}\n')
    (old / "mp2amp.toml").write_text(f'[source]\nfiles = ["events"]\nidentity_table = '
                                     f'"{named}"\n')
    before = events_fingerprint(load_config(old / "mp2amp.toml", env={}))
    new.parent.mkdir()
    shutil.move(str(old), str(new))
    assert events_fingerprint(load_config(new / "mp2amp.toml", env={})) == before


# --- between the listing and the read -------------------------------------------------------


def test_a_table_rewritten_after_the_resumes_listing_is_not_taken_on_silently(
        project: Project, table: list[bytes], s3_server: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from migrate_kit import run_until_crash

    import mp2amp.pipeline.migrate as migrate_module

    with amplitude(tmp_path / "amp") as url:
        config = make_config(project.events, tmp_path / "work", url, **{
            "source.identity_table": f"s3://{BUCKET}/ids/", "source.storage_options": s3_server})
        run_until_crash(config, monkeypatch, 2)  # batches in flight, the rest to resume
        order = migrate_module.load_order  # called just before graph.finish() reads the table
        rewritten: list[bool] = []

        def rewrite_then_read(*args: Any, **kwargs: Any) -> Any:
            if not rewritten:  # after the resume's check, before its read (no timing)
                rewritten.append(True)
                _client(s3_server).put_object(
                    Bucket=BUCKET, Key="ids/part-0",
                    Body=b"".join([_renamed(line) for line in table[::2]]))
            return order(*args, **kwargs)

        monkeypatch.setattr(migrate_module, "load_order", rewrite_then_read)
        try:
            result = migrate(config, resume=True)
        except (TerminalError, InputError):
            return  # stopped, saying the table changed: what a fix may do
        assert rewritten
        assert result.exit_code != 0, "the resume read a table other than the one it listed"


# --- the legacy forms together ---------------------------------------------------------------


def test_a_run_with_absolute_locations_and_a_table_by_location_resumes(tmp_path: Path) -> None:
    """An mp2amp of before the config-folder form and before the listing: locations absolute,
    the glob table by its location; an input staged then deleted (so its location is matched
    by the fallback, not ``_same_places``)."""
    from mp2amp.pipeline.fingerprint import FINGERPRINT_META, check_resume, run_fingerprint
    from mp2amp.pipeline.migrate import upload_settings

    proj = tmp_path / "proj"
    (proj / "ids").mkdir(parents=True)
    (proj / "ids" / "a.jsonl").write_text('{"distinct_id":"d1","resolved_distinct_id":"u1"}\n')
    (proj / "events").mkdir()
    (proj / "events" / "day1.jsonl").write_text("")
    (proj / "mp2amp.toml").write_text('[source]\nfiles = ["events/day1.jsonl"]\n'
                                      'identity_table = "ids/*.jsonl"\n')
    config = load_config(proj / "mp2amp.toml", env={"AMPLITUDE_API_KEY": "k" * 32})
    upload = upload_settings(config)
    known = run_fingerprint(config, upload)  # absolute locations
    known["events"] = events_fingerprint(config, listed=False)  # the table by its location
    shutil.rmtree(proj / "events")  # staged, then removed by the user
    # the control: the same run with its table's listing recorded resumes (the fallback)
    for name, events in (("control", events_fingerprint(config)), ("legacy", known["events"])):
        ledger = Ledger(tmp_path / f"{name}.sqlite")
        try:
            recorded = orjson_dumps({**known, "events": events})
            ledger.set_meta(FINGERPRINT_META, recorded)
            check_resume(ledger, config, upload, recorded, lambda changed: False)
        finally:
            ledger.close()


def orjson_dumps(value: Any) -> str:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
