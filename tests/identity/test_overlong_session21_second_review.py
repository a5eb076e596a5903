"""Second review of efc203c (identity held IDs over 1057 characters as ID keys: first 1024
characters, "~", 32 hex) and 10a54f0 (shape memos weigh keys by characters). The keys
changed who an over-long ID is (an excluded one with a blank around it, one judged by
user_id_pattern); efc203c was reverted, and these tests now guard that any bound on such
IDs' memory keeps these outcomes (the code before efc203c gave them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from shared_kit import clean_env

# the length up to which efc203c kept an ID whole (its keys were for longer ones)
KEPT_ID = 1057

T0 = 1_700_000_000


def _ev(event: str, i: int, **props: Any) -> dict[str, Any]:
    return {"event": event, "properties": {"time": T0 + i, "$insert_id": f"i{i}", **props}}


def _transform(tmp: Path, monkeypatch: pytest.MonkeyPatch, config: str,
               records: list[dict[str, Any]], excluded: list[str] | None = None,
               table: list[dict[str, Any]] | None = None,
               ) -> tuple[list[tuple[Any, Any]], list[str]]:
    """``mp2amp transform`` of ``records``: (user_id, device_id) of each event sent (an ID
    over 40 characters shown as its length) and the rejects' reasons."""
    clean_env(monkeypatch)
    monkeypatch.chdir(tmp)
    if excluded is not None:
        (tmp / "excluded.txt").write_text("".join(f"{x}\n" for x in excluded))
        config += '[privacy]\nexclude_users = "excluded.txt"\n'
    if table is not None:
        (tmp / "table.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in table))
        config += '[source]\nidentity_table = "table.jsonl"\n'
    (tmp / "mp2amp.toml").write_text(config)
    (tmp / "in.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))
    result = CliRunner().invoke(app, ["transform", "in.jsonl", "--out", "out.jsonl", "--json"])
    assert result.exit_code == 0, result.output

    def shown(value: Any) -> Any:
        return len(value) if isinstance(value, str) and len(value) > 40 else value

    sent = [(shown(e.get("user_id")), shown(e.get("device_id")))
            for e in map(orjson.loads, (tmp / "out.jsonl").read_bytes().splitlines())]
    rejects = [orjson.loads(x)["reason"]
               for x in (tmp / "out.jsonl.rejects.jsonl").read_bytes().splitlines()]
    return sent, rejects


# --- exclude_users: blanks around an over-long ID --------------------------------------------


@pytest.mark.parametrize("id_merge", ["simplified", "original"])
@pytest.mark.parametrize("padded", ["trailing", "leading"])
def test_an_excluded_overlong_id_sent_with_a_blank_still_excludes_its_merged_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, id_merge: str, padded: str) -> None:
    blob = "b" * 2000
    sent_as = blob + " " if padded == "trailing" else " " + blob  # Mixpanel keeps it as sent
    records = [
        _ev("A", 1, distinct_id=sent_as, **{"$user_id": sent_as, "$device_id": "dev-w"}),
        _ev("A", 2, distinct_id="$device:dev-w", **{"$device_id": "dev-w"}),
    ]
    sent, rejects = _transform(tmp_path, monkeypatch,
                               f'[mixpanel]\nid_merge = "{id_merge}"\ntimezone = "UTC"\n',
                               records, excluded=[blob])
    # README: IDs match with blanks around them ignored, and a listed ID excludes every
    # event of its merged user: both events are skipped (efc203c's keys sent the device's).
    assert (sent, rejects) == ([], [])


def test_guard_an_excluded_id_of_kept_length_with_a_blank_excludes_its_merged_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = "b" * (KEPT_ID - 1)  # kept whole: the same records as above, all excluded
    records = [
        _ev("A", 1, distinct_id=blob + " ", **{"$user_id": blob + " ", "$device_id": "dev-w"}),
        _ev("A", 2, distinct_id="$device:dev-w", **{"$device_id": "dev-w"}),
    ]
    sent, rejects = _transform(tmp_path, monkeypatch,
                               '[mixpanel]\nid_merge = "simplified"\ntimezone = "UTC"\n',
                               records, excluded=[blob])
    assert (sent, rejects) == ([], [])


# --- [transform] user_id_pattern read against the key instead of the ID ----------------------

_PATTERN = '[transform]\nuser_id_pattern = "[a-z]+"\n'


def _pattern_case(long_id: str, source: str) -> dict[str, Any]:
    if source == "events":
        return {"records": [
            _ev("$identify", 1, **{"$identified_id": long_id, "$anon_id": "dev-a"}),
            _ev("$merge", 2, **{"$distinct_ids": [long_id, "bob"]}),
            _ev("A", 3, distinct_id="dev-a", **{"$device_id": "dev-a"}),
            _ev("A", 4, distinct_id="bob"),
        ], "table": None}
    return {"records": [
        _ev("A", 3, distinct_id="$device:dev-a", **{"$device_id": "dev-a"}),
        _ev("A", 4, distinct_id="bob"),
    ], "table": [
        {"distinct_id": "bob", "resolved_distinct_id": long_id},
        {"distinct_id": "$device:dev-a", "resolved_distinct_id": long_id},
        {"distinct_id": long_id, "resolved_distinct_id": long_id},
    ]}


@pytest.mark.parametrize("source", ["events", "identity_table"])
def test_user_id_pattern_judges_an_overlong_id_as_the_id_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    blob = "a" * 2000  # fully matches [a-z]+, as an ID of KEPT_ID "a"s does
    case = _pattern_case(blob, source)
    sent, rejects = _transform(
        tmp_path, monkeypatch,
        '[mixpanel]\nid_merge = "original"\ntimezone = "UTC"\n' + _PATTERN,
        case["records"], table=case["table"])
    # The cluster's user is the over-long ID (dropped as over the limit): dev-a's event
    # goes out under its device only and bob's, with no usable ID left, is rejected, as
    # for the guard's ID of KEPT_ID characters (efc203c's keys sent both as user "bob").
    assert (sent, rejects) == ([(None, "dev-a")], ["invalid_id"])


@pytest.mark.parametrize("source", ["events", "identity_table"])
def test_guard_user_id_pattern_with_an_id_of_kept_length(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    case = _pattern_case("a" * KEPT_ID, source)
    sent, rejects = _transform(
        tmp_path, monkeypatch,
        '[mixpanel]\nid_merge = "original"\ntimezone = "UTC"\n' + _PATTERN,
        case["records"], table=case["table"])
    assert (sent, rejects) == ([(None, "dev-a")], ["invalid_id"])
