"""``--dirty``: every kind appears at its documented rate, and summary.json counts exactly
what is in the files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from generate_kit import Project, build, read_lines

from mp2amp.generate.dirt import MEDIUM_KEYS, SHARES, short_id_share

JUNK = {"undefined", "null", "0", "00000000-0000-0000-0000-000000000000"}


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build(tmp_path_factory.mktemp("dirty") / "p", users=300, days=4, seed=21, dirty=0.03)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _recount(project: Project) -> dict[str, int]:
    found = dict.fromkeys(("duplicates", "malformed_lines", "split_lines", "junk_ids", "long_strings",
                           "deep_nesting", "hotshard", "short_ids", "medium_strings",
                           "reused_insert_ids"), 0)
    seen: set[bytes] = set()
    insert_ids: set[str] = set()
    for line in read_lines(project.root):
        if line.kind == "malformed":
            found["malformed_lines"] += 1
            continue
        if line.raw in seen:
            found["duplicates"] += 1
            continue
        seen.add(line.raw)
        found["split_lines"] += line.kind == "split"
        props = line.record["properties"] if line.record else {}
        has_ids = props.get("$device_id") or props.get("$user_id")
        if not has_ids and (props.get("distinct_id") in JUNK or "distinct_id" not in props):
            found["junk_ids"] += 1
        found["long_strings"] += any(isinstance(v, str) and len(v) > 1024 for k, v in props.items()
                                     if k not in MEDIUM_KEYS)
        found["medium_strings"] += any(k in props for k in MEDIUM_KEYS)
        iid = props.get("$insert_id")
        found["reused_insert_ids"] += iid in insert_ids
        if iid:
            insert_ids.add(iid)
        found["deep_nesting"] += _depth(props.get("context")) >= 10
        found["hotshard"] += line.record is not None and line.record["event"] == "$hotshard_events"
        ids = (props.get("$user_id"), props.get("distinct_id"), props.get("mp_original_distinct_id"))
        found["short_ids"] += any(isinstance(i, str) and i.isdigit() and 0 < len(i) < 5 and i != "0"
                                  for i in ids)
    return found


def test_summary_counts_what_the_files_contain(dirty: Project) -> None:
    summary = dirty.json("truth/summary.json")["dirt"]
    recount = _recount(dirty)
    assert recount == {kind: summary[kind] for kind in recount}
    assert summary["type_changes"] > 0


def test_each_kind_appears_at_its_rate(dirty: Project) -> None:
    summary = dirty.json("truth/summary.json")
    generated = summary["events_by_kind"]["generated"]
    for kind, share in SHARES:
        p = 0.03 * share
        mean, sigma = generated * p, math.sqrt(generated * p * (1 - p))
        # sign-up/login events are never dirtied, so the observed rate sits a little low;
        # an $insert_id is reused only after an event of the session that has one
        low = 0.6 if kind == "reused_insert_ids" else 0.97
        assert mean * low - 4 * sigma - 3 <= summary["dirt"][kind] <= mean * 0.97 + 4 * sigma + 3, \
            (kind, summary["dirt"][kind], mean)


def test_short_ids_belong_to_the_expected_share_of_users(dirty: Project) -> None:
    profiles = dirty.jsonl("profiles/users.jsonl.gz")
    short = [p for p in profiles if isinstance(p["$distinct_id"], int)]
    expected = short_id_share(0.03) * len(profiles)
    assert abs(len(short) - expected) <= 4 * math.sqrt(expected) + 2


def test_clean_project_has_no_dirt(tmp_path: Path) -> None:
    project = build(tmp_path / "clean", users=80, days=2, seed=2, dirty=0.0)
    summary = project.json("truth/summary.json")
    assert set(summary["dirt"].values()) == {0}
    assert all(line.kind == "ok" for line in read_lines(project.root))
    assert summary["events_by_kind"]["unusable"] == 0


def test_medium_strings_span_100_to_1024_characters_and_a_little_past(dirty: Project) -> None:
    """Custom text between 100 and 1024 characters reaches Amplitude as it is (a cut at 100
    shows); a few just over 1024 are cut to 1024; some carry multi-byte characters."""
    sizes = [len(v) for line in read_lines(dirty.root) if line.record
             for k, v in line.record["properties"].items() if k in MEDIUM_KEYS]
    assert len(sizes) >= 100
    assert min(sizes) == 100 and all(s <= 1100 for s in sizes)
    assert 1024 in sizes and 1023 in sizes
    inside = [s for s in sizes if s <= 1024]
    assert len([s for s in inside if s < 400]) >= 10 and len([s for s in inside if s > 700]) >= 10
    assert 3 <= len([s for s in sizes if s > 1024]) <= len(sizes) // 4
    texts = [v for line in read_lines(dirty.root) if line.record
             for k, v in line.record["properties"].items() if k in MEDIUM_KEYS]
    assert any(len(t.encode()) > len(t) for t in texts)
    assert all(t == t.strip() for t in texts)


def test_a_reused_insert_id_is_a_distinct_event_keyed_by_its_line(dirty: Project) -> None:
    """A reused $insert_id sits on a later event of the same device and user in another
    second (Mixpanel keeps both: it dedups on name, distinct_id, time and $insert_id); the
    truth counts both, the later one under its file and line."""
    first: dict[str, dict[str, Any]] = {}
    rows = {row[0]: (row[1], row[2]) for row in dirty.truth_rows()}
    reused = 0
    seen: set[bytes] = set()
    for line in read_lines(dirty.root):
        if line.record is None or line.raw in seen:
            continue
        seen.add(line.raw)
        props = line.record["properties"]
        iid = props.get("$insert_id")
        if not iid:
            continue
        if iid not in first:
            first[iid] = props
            continue
        reused += 1
        earlier = first[iid]
        assert props["distinct_id"] == earlier["distinct_id"]
        assert props.get("$device_id") == earlier.get("$device_id")
        assert int(props["time"]) != int(earlier["time"])
        assert rows[f"@{line.file}:{line.line}"] == rows[iid]
    assert reused == dirty.json("truth/summary.json")["dirt"]["reused_insert_ids"] > 0
