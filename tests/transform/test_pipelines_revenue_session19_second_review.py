"""Session 19, second review of two fresh fixes, driven through the real CLI:

* 6941bed, Data Pipelines inputs: the identity mappings table read one hop, its
  conflicting mappings counted (``identity.table_conflicts``) and warned with the files of
  both rows, in memory and spilled to SQLite (``identity/table.py``).
* 99bdcdc, the ``values`` report (revenue_not_a_number, truncations): README says these
  counts "cover only events that are sent".

Each ``xfail(strict=True)`` test pins a defect the review confirmed by running it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from shared_kit import amplitude_emulator, cli_workspace, stored_by_source_id

KEY = "session19-second-review-key"
T0 = 1704164645  # 2024-01-02T03:04:05Z
FILLER = 3000  # table rows that make a memory_budget of 1000 spill the table to SQLite


def write(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n"
                            for ln in lines))
    return path


def row(name: str, t: int, iid: str, distinct_id: str, **props: Any) -> dict[str, Any]:
    """A JSON pipelines ``mp_master_event`` row (reference §6: warehouse columns)."""
    return {"event_name": name, "time": t, "distinct_id": distinct_id, "device_id": None,
            "user_id": None, "insert_id": iid, "properties": json.dumps(props)}


def mapping(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"distinct_id": a, "resolved_distinct_id": b} for a, b in pairs]


def filler() -> list[dict[str, str]]:
    return mapping([(f"filler-{j}", f"filler-user-{j}") for j in range(FILLER)])


def transform(folder: Path, files: list[str], extra: str = ""
              ) -> tuple[int, dict[str, Any], dict[str, Any], str]:
    """``mp2amp transform --json`` in a subprocess: (exit code, event_type -> user_id,
    the --json result, stderr)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "mp2amp.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = {json.dumps(files)}\n'
                   f'{extra}\n[run]\nworkdir = "{folder / "work"}"\nmemory_budget = 1000\n')
    out = folder / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "mp2amp", "transform", "-c", str(cfg), "-o",
                           str(out), "--json"], capture_output=True, text=True, timeout=120)
    events = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    result = json.loads(proc.stdout) if proc.returncode == 0 else {}
    return (proc.returncode, {e["event_type"]: e.get("user_id") for e in events}, result,
            proc.stderr)


@pytest.fixture
def amp_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    cli_workspace(monkeypatch, tmp_path, KEY)
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield url


# --- identity mappings table ------------------------------------------------------------


def test_identity_table_conflict_after_an_empty_part_file_is_counted_not_a_crash(
        tmp_path: Path) -> None:
    """Spark writes an empty part file for an empty partition, and a folder holding two
    exports of the table (README's own example of a conflict) has many. The warning's file
    list (``files``, appended only when a row's file index equals its length) misses a file
    that gave no row, so every later index is past its end: the conflict's example text
    raises IndexError and ``mp2amp transform`` (and ``migrate``) dies with a traceback,
    exit 1, instead of using the row read last and counting the conflict. In memory the
    old row's file after the gap is looked up; spilled, the new row's file too."""
    day = tmp_path / "bucket" / "77" / "mp_master_event" / "2024" / "01" / "02"
    write(day / "part-0", [row("A", T0, "insert-000001", "a")])
    cases = {  # table parts, in natural order
        "in memory": [[], mapping([("a", "b")]), mapping([("a", "c")])],
        "spilled": [filler() + mapping([("a", "b")]), [], mapping([("a", "c")])],
    }
    got = {}
    for case, parts in cases.items():
        table = tmp_path / case / "mp_identity_mappings_data"
        for n, lines in enumerate(parts):
            write(table / f"part-{n}", lines)
        code, users, result, err = transform(tmp_path / case, [str(day)],
                                             f'identity_table = "{table}"')
        got[case] = (code, users, result.get("identity", {}).get("table_conflicts"),
                     err.strip().splitlines()[-1:] if code else [])
    assert got == {"in memory": (0, {"A": "c"}, 1, []), "spilled": (0, {"A": "c"}, 1, [])}


def test_identity_table_same_mapping_twice_is_no_conflict_and_read_one_hop(
        tmp_path: Path) -> None:
    """Guard: the same mapping in two part files (two identical exports) is not a
    conflict; a self-mapping row then another target is one; a->b, b->c sends a's events
    to b and b's to c; in memory and spilled alike."""
    day = tmp_path / "bucket" / "77" / "mp_master_event" / "2024" / "01" / "02"
    write(day / "part-0", [row("A", T0, "insert-000001", "a"),
                           row("B", T0 + 1, "insert-000002", "b"),
                           row("X", T0 + 2, "insert-000003", "x")])
    first = mapping([("a", "b"), ("b", "c"), ("x", "x")])
    second = mapping([("a", "b"), ("b", "c"), ("x", "x2")])
    got = {}
    for case, head in (("in memory", []), ("spilled", filler())):
        table = tmp_path / case / "mp_identity_mappings_data"
        write(table / "part-0", head + first)
        write(table / "part-1", second)
        code, users, result, err = transform(tmp_path / case, [str(day)],
                                             f'identity_table = "{table}"')
        assert code == 0, err
        got[case] = (users, result["identity"]["table_conflicts"],
                     result["identity"]["spilled"])
    assert got == {"in memory": ({"A": "b", "B": "c", "X": "x2"}, 1, False),
                   "spilled": ({"A": "b", "B": "c", "X": "x2"}, 1, True)}


# --- the values report: only events that are sent ----------------------------------------


def test_a_duplicate_events_value_counts_are_not_reported(tmp_path: Path,
                                                          amp_url: str) -> None:
    """README: the values counts (revenue_not_a_number, truncations, flattenings) "cover
    only events that are sent". The same event twice (a re-sent batch in Mixpanel's
    export, the same $insert_id) goes out once: ``duplicates`` 1, one event in Amplitude.
    Yet both copies' counts are reported, in ``transform`` and in ``migrate``: 2
    revenue_not_a_number for one event sent without its "$19.99" price, 2 cuts of ``bio``
    for one event cut. The transformer books the counts when it returns the event; the
    Deduper (``transform_stream`` / migrate's settling) decides afterwards it is a
    duplicate."""
    props = {"time": T0, "distinct_id": "u1", "$insert_id": "insert-000001",
             "price": "$19.99", "bio": "x" * 1500}
    data = write(tmp_path / "events" / "day.jsonl", [{"event": "Buy", "properties": props}] * 2)
    revenue = '[transform.revenue]\nprice = "price"\n'
    code, users, result, err = transform(tmp_path / "t", [str(data)], revenue)
    assert (code, users, result["summary"]["duplicates"]) == (0, {"Buy": "u1"}, 1), err
    cfg = tmp_path / "migrate.toml"
    cfg.write_text(f'[mixpanel]\ntimezone = "UTC"\n[source]\nfiles = ["{data}"]\n{revenue}'
                   f'[amplitude]\napi_host = "{amp_url}"\n'
                   f'[run]\nworkdir = "{tmp_path / "mwork"}"\n')
    migrated = CliRunner().invoke(app, ["migrate", "-c", str(cfg), "--json"])
    assert (migrated.exit_code, stored_by_source_id(amp_url)) == (0, {"insert-000001": 1})
    one = {"flattened": {}, "other": {"revenue_not_a_number": 1}, "truncated": {"bio": 1}}
    assert {"transform": result["values"], "migrate": json.loads(migrated.stdout)["values"]} \
        == {"transform": one, "migrate": one}
