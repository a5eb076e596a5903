"""Session 18 review: the per-window accounting, the ledger's counts and ``mp2amp status``.

Each xfail test is a defect found by the review: it asserts what should happen, and its
reason says what happens instead. Migrations run against the in-process Amplitude
emulator over a loopback socket, on small files written by each test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.status import status
from shared_kit import amplitude_emulator, files_config, page_view

KEY = "session18-accounting-key"


def identify(n: int) -> dict[str, Any]:
    """An ``$identify`` of user ``n``: an identity record, fed to the graph, never sent."""
    return {"event": "$identify", "properties": {
        "time": 1700000000 + n, "distinct_id": f"user-{n:04d}",
        "$anon_distinct_id": f"device-{n:04d}", "$identified_id": f"user-{n:04d}"}}


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return path


def _table_rows(text: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """The header cells and body rows of the rich table whose header starts with
    ``first_header`` (box-drawing characters as separators)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]
        if cells and cells[0] == first_header:
            rows = []
            for body in lines[i + 2:]:
                if not body.startswith("│"):
                    break
                rows.append([c.strip() for c in body.split("│")[1:-1]])
            return cells, rows
    raise AssertionError(f"no table with a {first_header!r} column in:\n{text}")


# --- status --windows ------------------------------------------------------------------------


def test_status_windows_rows_add_up_for_a_window_with_identity_records(
        tmp_path: Path) -> None:
    day = write_lines(tmp_path / "2024-03-01.jsonl",
                      [page_view(1), identify(2), page_view(3), page_view(1), "{broken"])
    work = tmp_path / "work"
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        result = migrate(files_config([day], work, url, api_key=KEY))
    assert result.exit_code == EXIT_OK
    assert result.totals["identity"] == 1 and result.totals["balanced"]

    out = CliRunner().invoke(app, ["status", "--workdir", str(work), "--windows"])
    assert out.exit_code == 0, out.output
    header, rows = _table_rows(out.output, "window")
    assert len(rows) == 1
    row = dict(zip(header, rows[0], strict=True))
    shown = sum(int(row[c]) for c in header
                if c not in ("window", "state", "read", "batches"))
    # the invariant line printed just above: read = sent + identity + duplicate + ...
    assert shown == int(row["read"]) == status(work).windows[0].read


# --- identity records ------------------------------------------------------------------------


def hotshard_identify(n: int) -> dict[str, Any]:
    """``identify(n)`` as Mixpanel's hot-shard rewrite leaves it (README: it still merges)."""
    props = dict(identify(n)["properties"], distinct_id="",
                 mp_original_event_name="$identify", mp_original_distinct_id=f"user-{n:04d}")
    return {"event": "$hotshard_events", "properties": props}


def test_a_hot_shard_identify_counts_as_an_identity_record(tmp_path: Path) -> None:
    day = write_lines(tmp_path / "2024-03-01.jsonl",
                      [page_view(1), identify(2), hotshard_identify(3), page_view(4)])
    work = tmp_path / "work"
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        result = migrate(files_config([day], work, url, api_key=KEY))
    assert result.exit_code == EXIT_OK
    t = result.totals
    assert (t["read"], t["sent"]) == (4, 2)
    # both $identify records fed the graph and were never sent: identity records, the
    # same kind, not a skip by a rule (the skip rules are the plan's and privacy's)
    assert (t["identity"], t["skipped"]) == (2, 0)
