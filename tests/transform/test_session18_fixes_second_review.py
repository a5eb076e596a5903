"""Session 18, second review of the fresh fixes: JSON arrays cut short, the 1,000-level
cap on deep properties, numbers used as IDs, the quiet exit on a closed stdout, and a hot
shard's renamed $identify counted as an identity record.

Each of the first tests pinned a defect the review confirmed (fixed since: the test says
what was wrong)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mp2amp.cli import app
from mp2amp.extract.jsonarray import iter_array
from mp2amp.identity.junk import clean_id
from shared_kit import amplitude_emulator, cli_workspace, stored_by_source_id

KEY = "session18-second-review-key"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_workspace(monkeypatch, tmp_path, KEY)


@pytest.fixture
def amp_url(tmp_path: Path) -> Iterator[str]:
    with amplitude_emulator(tmp_path / "amp", KEY) as url:
        yield url


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def ev(n: int, **props: Any) -> dict[str, Any]:
    return {"event": "Page View", "properties": {
        "time": 1700000000 + n, "distinct_id": f"user-{n:04d}", "$insert_id": f"ins-{n:06d}",
        **props}}


def jsonl(*records: Any) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def transformed(tmp_path: Path, data: Path, *extra: str) -> tuple[list[dict[str, Any]],
                                                                     list[dict[str, Any]]]:
    """The events and the rejections ``mp2amp transform`` writes for ``data``."""
    out = tmp_path / "out.jsonl"
    result = invoke("transform", str(data), "-o", str(out), "--json", *extra)
    assert result.exit_code == 0, result.stderr
    rejects = tmp_path / "out.jsonl.rejects.jsonl"
    return ([json.loads(x) for x in out.read_bytes().splitlines()],
            [json.loads(x) for x in rejects.read_bytes().splitlines()])


def migrate_config(tmp_path: Path, files: list[Path], url: str, extra: str = "") -> Path:
    names = ", ".join(f'"{f}"' for f in files)
    path = tmp_path / "mp2amp.toml"
    path.write_text(f'[source]\nfiles = [{names}]\n{extra}[amplitude]\napi_host = "{url}"\n'
                    f'[run]\nworkdir = "{tmp_path / "work"}"\n', encoding="utf-8")
    return path


def read_array(text: str) -> list[tuple[int, str | None]]:
    return [(rec.line, None if rec.rejection is None else rec.rejection.reason)
            for rec in iter_array("a.json", io.BytesIO(text.encode()))]


# --- deep properties in a JSON array ------------------------------------------------------

LEVELS = 960  # under the 1,000-level cap README documents for transform and migrate alike


def deep_record(n: int, levels: int = LEVELS) -> str:
    """A record whose property ``d`` is ``levels`` levels deep (its own value is level 1)."""
    nested = "[" * levels + "]" * levels
    return (f'{{"event":"E","properties":{{"time":{1700000000 + n},"distinct_id":"user-{n}",'
            f'"$insert_id":"ins-{n:06d}","d":{nested}}}}}')


def test_a_deep_property_in_a_json_array_is_kept_as_it_is_from_json_lines(
        env: None, tmp_path: Path) -> None:
    lines = tmp_path / "day.jsonl"
    lines.write_text(deep_record(1) + "\n")
    events, rejects = transformed(tmp_path, lines)
    assert (len(events), rejects) == (1, []), rejects  # JSON lines: kept, as documented
    array = tmp_path / "day.json"
    array.write_text("[" + deep_record(1) + "]")
    events, rejects = transformed(tmp_path, array)
    assert ([r["reason"] for r in rejects], len(events)) == ([], 1)


# --- a JSON array cut short -----------------------------------------------------------------


def test_an_array_cut_just_after_an_inner_lists_end_stops_migrate(
        env: None, tmp_path: Path, amp_url: str) -> None:
    cut = tmp_path / "export.json"
    text = json.dumps([ev(1), ev(2, groups=[1, 2]), ev(3)], indent=2)
    cut.write_text(text[:text.index("]") + 1])  # cut after the list of element 2
    result = invoke("migrate", "-c", str(migrate_config(tmp_path, [cut], amp_url)), "--json")
    stored = stored_by_source_id(amp_url)
    # damaged_files = stop (the default): nothing of a file cut short is sent
    assert (result.exit_code, stored) == (2, {}), (result.exit_code, stored)
    assert [reason for _, reason in read_array(cut.read_text())][-1] == "truncated_file"


# --- numbers used as IDs --------------------------------------------------------------------


def test_integer_ids_past_2_53_are_one_user_per_number_by_one_rule(
        env: None, tmp_path: Path) -> None:
    ids = [2**60, 1152921504606847000, 2**60 + 1]
    data = tmp_path / "day.jsonl"
    data.write_text(jsonl(*(ev(n, distinct_id=i) for n, i in enumerate(ids, 1))))
    events, _ = transformed(tmp_path, data)
    users = [e["user_id"] for e in sorted(events, key=lambda e: e["time"])]
    # as Mixpanel's JavaScript shows them (one double: one user), or every digit kept
    # (three users); not two of them merged and the third apart
    assert len(set(users)) in (1, 3), users
    assert users == [clean_id(i) for i in ids]


def test_excluding_an_integer_id_past_2_53_excludes_its_merged_device_events(
        env: None, tmp_path: Path) -> None:
    (tmp_path / "excluded.txt").write_text(f"{2**60}\n")
    (tmp_path / "mp2amp.toml").write_text('[privacy]\nexclude_users = "excluded.txt"\n')
    data = tmp_path / "day.jsonl"
    data.write_text(jsonl(
        ev(1, distinct_id="$device:dev-1", **{"$device_id": "dev-1"}),
        ev(2, distinct_id=2**60, **{"$user_id": 2**60, "$device_id": "dev-1"})))
    events, _ = transformed(tmp_path, data)
    assert events == [], events  # the device merged into the excluded user: all excluded


# --- an event without $insert_id, nested deep ---------------------------------------------


def call_deeper(frames: int, work: Any) -> Any:
    return work() if frames == 0 else call_deeper(frames - 1, work)


def test_the_content_hash_insert_id_does_not_depend_on_the_stack() -> None:
    from mp2amp.transform.insert_id import insert_id_for

    changed = []
    for levels in range(300, 1000, 20):
        props = {"d": orjson.loads("[" * levels + "]" * levels), "n": 1}

        def iid(props: dict[str, Any] = props) -> str:
            return insert_id_for("E", "user-1", 1700000000000, None, props)

        if iid() != call_deeper(250, iid):
            changed.append(levels)
    assert changed == []


# --- a closed stdout ------------------------------------------------------------------------


def run_with_closed_stdout(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``mp2amp ARGS | true``: the reader of stdout is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "mp2amp", *args], stdout=write_end,
                              stderr=subprocess.PIPE, cwd=tmp_path, timeout=60, check=False)
    finally:
        os.close(write_end)


def test_a_closed_stdout_does_not_discard_the_finished_output_file(tmp_path: Path) -> None:
    data = tmp_path / "day.jsonl"
    data.write_text(jsonl(*(ev(n) for n in range(1, 4))))
    proc = run_with_closed_stdout(tmp_path, "transform", str(data), "-o", "out.jsonl", "--json")
    written = sorted(p.name for p in tmp_path.iterdir())
    assert (tmp_path / "out.jsonl").is_file(), (proc.returncode, proc.stderr, written)
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 3


# --- a hot shard's renamed $identify --------------------------------------------------------


def identify(n: int, device: str) -> dict[str, Any]:
    return {"event": "$identify", "properties": {
        "time": 1700000000 + n, "distinct_id": "user-0002", "$anon_distinct_id": device,
        "$identified_id": "user-0002"}}


def hot_shard(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as Mixpanel's hot-shard rewrite leaves it."""
    props = record["properties"]
    return {"event": "$hotshard_events", "properties": {
        **props, "distinct_id": "", "mp_original_event_name": record["event"],
        "mp_original_distinct_id": props["distinct_id"]}}


def test_an_excluded_users_hot_shard_identify_counts_as_the_plain_one_does(
        env: None, tmp_path: Path) -> None:
    (tmp_path / "excluded.txt").write_text("user-0002\n")
    (tmp_path / "mp2amp.toml").write_text('[privacy]\nexclude_users = "excluded.txt"\n')
    data = tmp_path / "day.jsonl"
    data.write_text(jsonl(identify(1, "device-1"), hot_shard(identify(2, "device-2")),
                          hot_shard(ev(3, distinct_id="user-0002")),
                          hot_shard(ev(4, distinct_id="user-0004"))))
    out = tmp_path / "out.jsonl"
    result = invoke("transform", str(data), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)["summary"]
    # the excluded user's event is skipped; the other user's hot-shard event goes out
    assert [e["user_id"] for e in map(json.loads, out.read_bytes().splitlines())] == [
        "user-0004"]
    got = (summary["identity_records"], summary["skipped"])
    assert got == (2, {"privacy.excluded_user": 1}), got
