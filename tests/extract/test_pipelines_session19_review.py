"""Session 19 review: Mixpanel Data Pipelines inputs (``extract/pipelines.py``,
``files.py``, ``localtree.py``) and the identity mappings table (``identity/table.py``),
driven through the real CLI (``mp2amp transform``; ``mp2amp migrate`` against the local
Amplitude emulator for the accounting).

Reference: mixpanel-api.md §6 (JSON pipelines: ``<PROJECT>/mp_master_event/Y/M/D/`` with
``event_name, time, distinct_id, device_id, user_id, insert_id, properties``; identity:
``distinct_id, resolved_distinct_id``; legacy raw pipelines ``<PROJECT>/Y/M/D/<HH|full_day>/``
with a ``complete`` marker), §4.5 (``COALESCE(resolved_distinct_id, distinct_id)``)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

T0 = 1704164645  # 2024-01-02T03:04:05Z


def write(path: Path, lines: list[Any], *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n"
                   for ln in lines).encode()
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


def row(name: str | None, t: Any, iid: str, **extra: Any) -> dict[str, Any]:
    """A JSON pipelines ``mp_master_event`` row (reference §6: warehouse columns)."""
    return {"event_name": name, "time": t, "distinct_id": "u1", "device_id": None,
            "user_id": None, "insert_id": iid, "properties": "{}", **extra}


def transform(tmp_path: Path, files: list[str], *, extra: str = "", name: str = "t",
              legacy_time: bool = False) -> tuple[int, list[dict[str, Any]], str, str]:
    """``mp2amp transform --json``: (exit code, events out, stdout, stderr)."""
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "America/Los_Angeles"\n'
                   f'legacy_time = {"true" if legacy_time else "false"}\n'
                   f'[source]\nfiles = {json.dumps(files)}\n{extra}\n'
                   f'[run]\nworkdir = "{tmp_path / (name + "-work")}"\n')
    out = tmp_path / f"{name}.out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "transform", "-c", str(cfg), "-o",
                           str(out), "--json"], capture_output=True, text=True, timeout=120)
    events = ([json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
              if out.exists() else [])
    return proc.returncode, events, proc.stdout, proc.stderr


def said(err: str, start: str) -> list[str]:
    """The lines of stderr that start so (other lines: warnings of the environment)."""
    return [ln for ln in err.splitlines() if ln.startswith(start)]


def users(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["event_type"]: e.get("user_id") for e in events}


# --- defects ---------------------------------------------------------------------------


def test_identity_table_row_whose_resolved_id_has_its_own_row_is_not_ignored(
        tmp_path: Path) -> None:
    """Simplified ID Merge: "its resolved_distinct_id is the user_id whatever it looks like"
    (README). With a->b alone the event of ``a`` goes to ``b``; adding a row b->c (a chain,
    as a re-merged cluster's stale and fresh rows give) sent it to ``a`` itself. Fixed as
    Mixpanel documents the table's use (reference §4.5: ``COALESCE(resolved_distinct_id,
    distinct_id)``, one look-up): a's event goes to b, b's own to c."""
    day = tmp_path / "bucket" / "77" / "mp_master_event" / "2024" / "01" / "02"
    write(day / "part-0", [row("A", T0, "i1", distinct_id="a"),
                           row("B", T0 + 2, "i3", distinct_id="b"),
                           row("P", T0 + 1, "i2", distinct_id="p")])
    table = tmp_path / "bucket" / "77" / "mp_identity_mappings_data"
    write(table / "part-0", [{"distinct_id": "a", "resolved_distinct_id": "b"},
                             {"distinct_id": "b", "resolved_distinct_id": "c"},
                             {"distinct_id": "p", "resolved_distinct_id": "q"}])
    code, events, _, err = transform(tmp_path, [str(day)],
                                     extra=f'identity_table = "{table}"')
    assert code == 0, err
    got = users(events)
    assert got["P"] == "q"  # the same row without a chain behind it is applied
    assert (got["A"], got["B"]) == ("b", "c"), got


def test_identity_table_mapping_one_device_to_two_users_is_not_silent(tmp_path: Path) -> None:
    """The table is authoritative, yet here it contradicts itself ($device:d1 -> u1 in one
    part file, -> u9 in the next: two re-exports of the table left in one folder, say).
    mp2amp kept whichever row its natural file order reads last and said nothing. Now the
    row read last still wins (the table has no time column), counted and named."""
    day = tmp_path / "bucket" / "77" / "mp_master_event" / "2024" / "01" / "02"
    write(day / "part-0", [row("A", T0, "i1", distinct_id="$device:d1", device_id="d1")])
    table = tmp_path / "bucket" / "77" / "mp_identity_mappings_data"
    write(table / "part-0", [{"distinct_id": "$device:d1", "resolved_distinct_id": "u1"}])
    write(table / "part-1", [{"distinct_id": "$device:d1", "resolved_distinct_id": "u9"}])
    (table / "_SUCCESS").write_bytes(b"")
    code, events, out, err = transform(tmp_path, [str(day)],
                                       extra=f'identity_table = "{table}"')
    assert code == 0, err
    assert users(events) == {"A": "u9"}  # the row read last
    identity = json.loads(out)["identity"]
    example = f"$device:d1 -> u1 ({table / 'part-0'}), then -> u9 ({table / 'part-1'}:1)"
    assert identity["table_conflicts"] == 1
    assert said(err, "the identity mapping table maps 1 ID(s) to more than one resolved "
                     f"ID (e.g. {example}): the row read last is used"), err


def test_identity_mappings_folder_named_as_events_is_refused(tmp_path: Path) -> None:
    """``files = ["77/mp_identity_*"]`` stops (exit 2) saying the folder holds identity mappings, give
    them as [source] identity_table. Naming the folder itself (an engineer listing every
    folder of the bucket) is taken: exit 0, its rows rejected one by one as 'expected a
    Mixpanel event object', and the mappings never applied (table_rows 0)."""
    project = tmp_path / "bucket" / "77"
    write(project / "mp_master_event" / "2024" / "01" / "02" / "part-0.json",
          [row("A", T0, "i1", distinct_id="$device:d1", device_id="d1")])
    table = project / "mp_identity_mappings_data"
    write(table / "part-0.json", [{"distinct_id": "$device:d1", "resolved_distinct_id": "u1"}])
    code, _, _, err = transform(
        tmp_path, [str(project / "mp_master_event"), str(project / "mp_identity_*")],
        name="glob")
    assert code == 2 and "identity_table" in err, err  # the glob: refused, and why
    code, _, out, err = transform(
        tmp_path, [str(project / "mp_master_event"), str(table)], name="named")
    assert code == 2, (f"exit {code}; summary "
                       f"{json.loads(out)['summary'] if out.strip() else None}")
    assert said(err, "error:") == [
        f"error: {table} is left out of the inputs by rule (in mp_identity_mappings_data/, "
        "which holds identity mappings, not events (give them as [source] identity_table)); "
        "remove it from [source] files, and run again"], err


def test_pipeline_properties_text_with_lone_surrogate_is_read_as_an_export_line_is(
        tmp_path: Path) -> None:
    """README: JSON text only Python's parser reads (a lone surrogate: an emoji cut in half)
    is read, and an ID holding one is sent with U+FFFD. A Data Pipelines row gives its
    properties as JSON text; ``to_export_shape`` parses that with orjson alone, so the
    whole event becomes a ``bad_pipeline_row`` rejection."""
    props = '{"$user_id":"anna\\ud83d","plan":"pro"}'
    write(tmp_path / "p" / "77" / "mp_master_event" / "2024" / "01" / "02" / "part-0",
          [row("A", T0, "i1", properties=props)])
    write(tmp_path / "e" / "2024-01-02.jsonl",
          ['{"event":"A","properties":{"time":' + str(T0) + ',"distinct_id":"u1",'
           '"$insert_id":"i1","$user_id":"anna\\ud83d","plan":"pro"}}'])
    code, exported, _, err = transform(tmp_path, [str(tmp_path / "e")], name="export")
    assert code == 0, err
    assert [(e["user_id"], e["event_properties"]) for e in exported] == [
        ("anna\ufffd", {"plan": "pro"})]
    code, piped, out, err = transform(tmp_path, [str(tmp_path / "p")], name="pipe")
    assert code == 0, err
    assert json.loads(out)["summary"]["rejected"] == {}, json.loads(out)["summary"]
    assert piped == exported


def test_part_files_of_an_events_tree_that_are_not_read_are_named(tmp_path: Path) -> None:
    """An ``mp_master_event`` tree holds nothing but events, and the JSON pipelines' file
    naming is not documented (pipelines.py says so). Extensionless part files were read
    there, but a part file whose name has a dot and an extension mp2amp did not list was
    dropped silently. Now every file in the tree is read (gzip told by content) but markers
    and hidden ones; outside such a tree the listed suffixes still rule."""
    day = tmp_path / "bucket" / "77" / "mp_master_event" / "2024" / "01" / "02"
    write(day / "part-00000-abc.json", [row("A", T0, "i1")])
    write(day / "part-00001-abc.c000", [row("B", T0 + 1, "i2")])
    write(day / "part-00002.json.gzip", [row("C", T0 + 2, "i3")], gz=True)
    write(day / "part-00003.txt", [row("D", T0 + 3, "i4")])
    (day / ".part-00003.txt.crc").write_bytes(b"\x00crc")  # Spark's checksums: hidden
    (day / "_SUCCESS").write_bytes(b"")
    write(tmp_path / "bucket" / "notes.txt", ["not an event"])  # outside the tree
    code, events, out, err = transform(tmp_path, [str(tmp_path / "bucket")])
    assert code == 0, err
    summary = json.loads(out)["summary"]
    assert (summary["records_read"], summary["rejected"]) == (4, {}), summary
    assert sorted(e["event_type"] for e in events) == ["A", "B", "C", "D"]


@pytest.mark.parametrize(("magic", "what"), [(b"PAR1", "a Parquet file"),
                                             (b"Obj\x01", "an Avro file")])
def test_part_file_of_an_events_tree_in_another_format_stops_the_run(
        tmp_path: Path, magic: bytes, what: str) -> None:
    """Read whatever its name, a part file in a columnar format would have been thousands
    of malformed_json rejections: it stops the run, named, before anything is read."""
    day = tmp_path / "bucket" / "77" / "mp_master_event" / "2024" / "01" / "02"
    write(day / "part-00000.json", [row("A", T0, "i1")])
    bad = day / "part-00001-abc.c000"
    bad.write_bytes(magic + b"\x00\x15" * 20)
    code, events, _, err = transform(tmp_path, [str(tmp_path / "bucket")])
    assert (code, events) == (2, []), err
    assert said(err, "error:") == [
        f"error: {bad} is {what}, not JSON lines or a JSON array (plain or gzip): export the "
        "events as JSON lines (mp2amp reads Data Pipelines in the JSON format, and Raw Export "
        "JSON), or leave it out of the inputs, and run again"], err


# --- guards of what works (checked) ----------------------------------------------------


def test_pipeline_tree_with_legacy_slices_accounts_for_every_row(tmp_path: Path) -> None:
    """Time as ISO text, epoch ms, number text; properties as text and as an object; a gz
    part next to plain ones, _SUCCESS and hidden files; a legacy full_day slice next to
    hourly slices of the same day (each event twice: counted once as a duplicate); a
    broken properties text rejected. Every row read ends in exactly one outcome."""
    tree = tmp_path / "bucket" / "77" / "mp_master_event" / "2024" / "01" / "02"
    write(tree / "part-0", [row("A", "2024-01-02T03:04:05.123Z", "i1"),
                            row("B", T0 * 1000 + 7, "i2", properties={"x": 1}),
                            row("C", str(T0 + 2), "i3", properties='{"x": 2}'),
                            row("D", T0 + 3, "i4", properties="{broken")])
    write(tree / "part-1.gz", [row("E", "2024-01-02 03:04:09.5 UTC", "i5")], gz=True)
    (tree / "_SUCCESS").write_bytes(b"")
    (tree / ".part-1.gz.crc").write_bytes(b"\x00crc")

    def legacy(name: str, t: int, iid: str) -> dict[str, Any]:
        return {"event": name, "properties": {"time": t, "distinct_id": "u2",
                                              "$insert_id": iid}}
    day = tmp_path / "bucket" / "raw" / "77" / "2024" / "01" / "02"
    write(day / "full_day" / "77-export.json.gz",
          [legacy("L1", T0 + 10, "l1"), legacy("L2", T0 + 3610, "l2")], gz=True)
    write(day / "03" / "77-export.json.gz", [legacy("L1", T0 + 10, "l1")], gz=True)
    write(day / "04" / "77-export.json.gz", [legacy("L2", T0 + 3610, "l2")], gz=True)
    for slice_ in ("full_day", "03", "04"):
        (day / slice_ / "complete").write_bytes(b"")
    code, events, out, err = transform(tmp_path, [str(tmp_path / "bucket")],
                                       legacy_time=True)
    assert code == 0, err
    summary = json.loads(out)["summary"]
    assert summary["records_read"] == 9
    assert (summary["events_out"], summary["duplicates"], summary["rejected"]) == (
        6, 2, {"bad_pipeline_row": 1}), summary
    assert summary["balanced"] is True
    times = {e["event_type"]: e["time"] for e in events}
    assert times == {"A": T0 * 1000 + 123, "B": T0 * 1000 + 7, "C": (T0 + 2) * 1000,
                     "E": (T0 + 4) * 1000 + 500, "L1": (T0 + 10) * 1000,
                     "L2": (T0 + 3610) * 1000}  # all UTC, none shifted by legacy_time


# --- the fixes, below the CLI ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["simplified", "original"])
def test_identity_table_chain_and_conflicts_are_read_alike_in_memory_and_spilled(
        tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    """A memory budget of 1 ID spills the table to SQLite (``report.spilled``): the same
    answers (a->b, b->c: a to b, b to c; the later part file's row for x) and the same
    conflict count and examples, in the order the rows were read."""
    from mp2amp.identity import IdentityGraph

    table = tmp_path / "map"
    write(table / "part-1", [{"distinct_id": "a", "resolved_distinct_id": "b"},
                             {"distinct_id": "b", "resolved_distinct_id": "c"},
                             {"distinct_id": "x", "resolved_distinct_id": "u1"},
                             {"distinct_id": "$device:d1", "resolved_distinct_id": "u1"},
                             {"distinct_id": "y", "resolved_distinct_id": "u3"}])
    write(table / "part-10", [{"distinct_id": "x", "resolved_distinct_id": "u1"},  # the same
                              {"distinct_id": "$device:d1", "resolved_distinct_id": "u2"}])
    write(table / "part-2", [{"distinct_id": "x", "resolved_distinct_id": "u9"},
                             {"distinct_id": "y", "resolved_distinct_id": "u4"}])
    answers = []
    for budget in (2_000_000, 1):
        graph = IdentityGraph(mode, tmp_path / f"w{budget}", table=table,
                              memory_budget_ids=budget)
        try:
            caplog.clear()
            report = graph.finish()
            assert report.spilled is (budget == 1)
            answers.append((
                {i: graph.resolve({"distinct_id": i}).user_id for i in "abcxy"},
                graph.resolve({"distinct_id": "$device:d1"}).user_id,
                report.table_conflicts, [r.getMessage() for r in caplog.records]))
        finally:
            graph.close()
    ids, device, count, warnings = answers[0]
    # natural name order: part-1, part-2, part-10: x -> u1, then u9, then u1 again
    assert ids == {"a": "b", "b": "c", "c": "c", "x": "u1", "y": "u4"}
    assert (device, count) == ("u2", 3)
    examples = [f"x -> u1 ({table / 'part-1'}), then -> u9 ({table / 'part-2'}:1)",
                f"y -> u3 ({table / 'part-1'}), then -> u4 ({table / 'part-2'}:2)",
                f"$device:d1 -> u1 ({table / 'part-1'}), then -> u2 ({table / 'part-10'}:2)"]
    assert warnings == [
        f"the identity mapping table maps 3 ID(s) to more than one resolved ID (e.g. "
        f"{'; '.join(examples)}): the row read last is used (part files in natural name "
        "order, lines in order). Two exports of the table in one folder? Remove the older "
        "one and run again"]
    assert answers[1] == answers[0]


def test_other_tables_named_as_events_are_refused_wherever_named(tmp_path: Path) -> None:
    """A folder, a file in one, or a glob below one; as a table (``every_file``) it reads;
    a ``schema`` folder above the one named is where the user keeps the inputs."""
    from mp2amp.errors import InputError
    from mp2amp.extract.files import expand_paths

    project = tmp_path / "bucket" / "77"
    people = write(project / "mp_people_data" / "part-0.json", [{"distinct_id": "d"}])
    ids = write(project / "mp_identity_mappings_data" / "2024" / "part-0",
                [{"distinct_id": "d", "resolved_distinct_id": "u"}])
    names = write(project / "schema" / "events.json", [{"A": "a"}])
    for named, why in [(people.parent, "profiles, not events"),
                       (people, "profiles, not events"),
                       (ids.parent, "identity mappings"),
                       (f"{ids.parent.parent}/*/part-*", "identity mappings"),
                       (names.parent, "name maps, not events"),
                       (names, "name maps, not events")]:
        with pytest.raises(InputError) as err:
            expand_paths([str(named)])
        assert str(err.value).startswith(f"{named} is left out of the inputs by rule (in "), err
        assert why in str(err.value)
    assert [f.url for f in expand_paths([str(ids.parent)], every_file=True)] == [str(ids)]
    home = write(tmp_path / "schema" / "work" / "in" / "a.jsonl", [{"event": "A"}])
    assert [f.url for f in expand_paths([str(home.parent)])] == [str(home)]


def test_other_tables_named_as_events_are_refused_in_a_bucket() -> None:
    """The remote path (``s3://``, ``gs://``; fsspec's memory backend takes the same)."""
    import fsspec

    from mp2amp.errors import InputError
    from mp2amp.extract.files import expand_paths

    fs = fsspec.filesystem("memory")
    fs.pipe("/s19/77/mp_master_event/2024/01/02/part-0", json.dumps(row("A", T0, "i")).encode())
    fs.pipe("/s19/77/mp_identity_mappings_data/part-0",
            b'{"distinct_id": "d", "resolved_distinct_id": "u"}\n')
    for named in ("memory:///s19/77/mp_identity_mappings_data",
                  "memory:///s19/77/mp_identity_mappings_data/part-0",
                  "memory:///s19/77/mp_identity_mappings_data/*"):
        with pytest.raises(InputError, match=r"^memory:///s19/77/mp_identity_mappings_data\S* "
                           r"is left out of the inputs by rule \(in mp_identity_mappings_data/"):
            expand_paths([named])
    got = expand_paths(["memory:///s19/77/mp_identity_mappings_data"], every_file=True)
    assert [f.url for f in got] == ["memory:///s19/77/mp_identity_mappings_data/part-0"]
    # an events tree's part files of any name, remote too
    fs.pipe("/s19/77/mp_master_event/2024/01/02/part-1.c000", b"{}\n")
    fs.pipe("/s19/77/mp_master_event/2024/01/02/.part-1.c000.crc", b"\x00")
    got = expand_paths(["memory:///s19/77"])
    assert [f.url.rsplit("/", 1)[1] for f in got] == ["part-0", "part-1.c000"]
