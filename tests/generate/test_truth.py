"""The truth files agree with the data: recounted from the day files, and re-derived with
the attribution rule stated in mp2amp.generate.truth (implemented here independently)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from generate_kit import Line, Project, read_lines

IDENTITY = {"$identify", "$create_alias", "$merge"}
JUNK = {"undefined", "null", "0", "00000000-0000-0000-0000-000000000000"}


def _usable(props: dict[str, Any]) -> bool:
    if props.get("$user_id") or props.get("$device_id"):
        return True
    did = props.get("mp_original_distinct_id") or props.get("distinct_id")
    return bool(did) and did not in JUNK


def _events(project: Project) -> list[tuple[str, Line]]:
    """(truth key, line) of each distinct event record, duplicates and identity records dropped."""
    out: list[tuple[str, Line]] = []
    seen: set[Any] = set()
    for line in read_lines(project.root):
        if line.record is None or line.record["event"] in IDENTITY:
            continue
        props = line.record["properties"]
        iid = props.get("$insert_id")
        # Mixpanel's dedup key; an $insert_id an earlier distinct event has: keyed by line
        marker: bytes | tuple[Any, ...] = (line.record["event"], props.get("distinct_id"),
                                           int(props["time"]), iid) if iid else line.raw
        if marker in seen:
            continue
        seen.add(marker)
        out.append((iid if iid and iid not in seen else f"@{line.file}:{line.line}", line))
        if iid:
            seen.add(iid)
    return out


def _name(record: dict[str, Any]) -> str:
    if record["event"] == "$hotshard_events":
        return str(record["properties"]["mp_original_event_name"])
    return str(record["event"])


def test_daily_counts_recount_from_the_files(simplified: Project) -> None:
    counts: dict[str, dict[str, int]] = {}
    for _, line in _events(simplified):
        props = line.record["properties"] if line.record else {}
        if not _usable(props):
            continue
        day = datetime.fromtimestamp(int(props["time"]), tz=UTC).strftime("%Y-%m-%d")
        per = counts.setdefault(_name(line.record or {}), {})
        per[day] = per.get(day, 0) + 1
    assert counts == simplified.json("truth/daily_counts.json")
    # a Pacific-time project's three local days touch four UTC days
    days = {d for per in counts.values() for d in per}
    assert days == {"2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"}


def test_event_person_has_one_row_per_event(simplified: Project) -> None:
    rows = simplified.truth_rows()
    keys = [key for key, _ in _events(simplified)]
    assert sorted(row[0] for row in rows) == sorted(keys)
    summary = simplified.json("truth/summary.json")["events_by_kind"]
    assert len(rows) == summary["counted"] + summary["unusable"]
    assert summary["generated"] == summary["counted"] + summary["unusable"] + summary["malformed_lost"]


def _simplified_expected(events: list[tuple[str, Line]]) -> dict[str, tuple[str, str]]:
    first: dict[str, tuple[float, str]] = {}
    for _, line in events:
        props = line.record["properties"] if line.record else {}
        dev, uid = props.get("$device_id"), props.get("$user_id")
        if dev and uid and (dev not in first or props["time"] < first[dev][0]):
            first[dev] = (props["time"], uid)
    expected: dict[str, tuple[str, str]] = {}
    for key, line in events:
        props = line.record["properties"] if line.record else {}
        if not _usable(props):
            expected[key] = ("", "")
            continue
        did = props.get("distinct_id") or props.get("mp_original_distinct_id", "")
        dev = props.get("$device_id") or (did[8:] if did.startswith("$device:") else "")
        if props.get("$user_id"):
            expected[key] = (props["$user_id"], dev)
        elif dev:
            expected[key] = (first.get(dev, (0, ""))[1], dev)
        else:
            expected[key] = (did, "")
    return expected


def test_simplified_attribution_follows_the_documented_rule(simplified: Project) -> None:
    expected = _simplified_expected(_events(simplified))
    rows = {row[0]: (row[1], row[2]) for row in simplified.truth_rows()}
    assert rows == expected
    # the rule is exercised: retroactive anonymous events and never-identified devices
    users = [rows[key][0] for key, line in _events(simplified)
             if line.record and str(line.record["properties"].get("distinct_id", "")).startswith("$device:")]
    assert any(users) and not all(users)


def test_original_attribution_follows_identity_events(original: Project) -> None:
    owner: dict[str, str] = {}
    alias: dict[str, str] = {}
    identity = [line.record for line in read_lines(original.root)
                if line.record and line.record["event"] in IDENTITY]
    assert {r["event"] for r in identity} == IDENTITY
    for record in sorted(identity, key=lambda r: r["properties"]["time"]):
        props = record["properties"]
        if record["event"] == "$identify":
            anon = props.get("$anon_distinct_id") or props["$anon_id"]
            owner.setdefault(anon, props.get("$identified_id") or props["distinct_id"])
        elif record["event"] == "$create_alias":
            alias[props["alias"]] = props["distinct_id"]
        else:
            alias[props["$distinct_ids"][1]] = props["$distinct_ids"][0]
    expected: dict[str, tuple[str, str]] = {}
    for key, line in _events(original):
        props = line.record["properties"] if line.record else {}
        did = props.get("distinct_id") or props.get("mp_original_distinct_id", "")
        dev = props.get("$device_id", "")
        if not _usable(props):
            expected[key] = ("", "")
        elif props.get("$user_id"):
            expected[key] = (props["$user_id"], dev)
        elif dev:
            expected[key] = (owner.get(dev, ""), dev)
        else:
            expected[key] = (alias.get(did, did), "")
    assert {row[0]: (row[1], row[2]) for row in original.truth_rows()} == expected
    used = {line.record["properties"].get("distinct_id") for _, line in _events(original) if line.record}
    assert used & set(alias), "server events should use aliases and merged ids"


def test_shared_devices_keep_anonymous_events_with_the_first_user(tmp_path: Any) -> None:
    from generate_kit import build

    project = build(tmp_path / "shared", users=400, days=6, seed=3, dirty=0.0, industries=("streaming",))
    users_per_device: dict[str, set[str]] = {}
    for _, line in _events(project):
        props = line.record["properties"] if line.record else {}
        if props.get("$device_id") and props.get("$user_id"):
            users_per_device.setdefault(props["$device_id"], set()).add(props["$user_id"])
    shared = {d for d, users in users_per_device.items() if len(users) > 1}
    assert shared, "the plan should contain shared devices"
    expected = _simplified_expected(_events(project))
    rows = {row[0]: (row[1], row[2]) for row in project.truth_rows()}
    assert rows == expected
    after_logout = [k for k, line in _events(project) if line.record
                    and line.record["properties"].get("$device_id") in shared
                    and "$user_id" not in line.record["properties"]]
    assert after_logout and all(rows[k][0] for k in after_logout)


def test_metrics_are_consistent(simplified: Project) -> None:
    metrics = simplified.json("truth/metrics.json")
    assert {f["industry"] for f in metrics["funnels"]} == {"ecommerce", "b2b", "fintech", "streaming"}
    for funnel in metrics["funnels"]:
        people = funnel["people"]
        assert people[0] > 0 and all(a >= b for a, b in pairwise(people))
    cohorts = metrics["retention"]["cohorts"]
    assert sum(c["size"] for c in cohorts.values()) == metrics["people"]
    rows = {row[0]: row[1] or row[2] for row in simplified.truth_rows()}
    assert metrics["people"] == len({w for w in rows.values() if w})
    timeline: dict[str, list[tuple[float, str]]] = {}
    for key, line in _events(simplified):
        if rows[key] and line.record:
            timeline.setdefault(rows[key], []).append((line.record["properties"]["time"], _name(line.record)))
    for funnel in metrics["funnels"]:
        reached = [0] * len(funnel["steps"])
        for events in timeline.values():
            step = 0
            for _, name in sorted(events):
                if step < len(funnel["steps"]) and name == funnel["steps"][step]:
                    reached[step] += 1
                    step += 1
        assert reached == funnel["people"], funnel["name"]
