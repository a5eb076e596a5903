"""Session 20 fixes of the demo's per-event proof: sessions, top-level location and device
fields, kept default properties' names and values, list and object values, extra
properties, and a reused ``$insert_id`` the truth keys by line; each checked with the
proof's own statement of the mapping (``proof_fields``), not ``transform.mapping``."""

from __future__ import annotations

import ast
import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.pipeline import proof, proof_fields
from mp2amp.pipeline.proof import EventCheck, EventProof
from mp2amp.pipeline.proof_fields import expected_fields, sessions
from mp2amp.transform.insert_id import event_insert_id

TS = int(datetime(2026, 1, 1, 12, 30, tzinfo=UTC).timestamp())
MIN = 60


def _project(root: Path, rows: list[tuple[str, dict[str, Any], str, str]],
             keys: list[str] | None = None) -> Path:
    """A Mixpanel export of (event, properties, truth user, truth device) and the truth
    (keyed by ``$insert_id`` unless ``keys`` says otherwise)."""
    (root / "events").mkdir(parents=True)
    (root / "truth").mkdir()
    (root / "events" / "2026-01-01.jsonl").write_bytes(b"".join(
        orjson.dumps({"event": name, "properties": props}) + b"\n"
        for name, props, _, _ in rows))
    keys = keys or [props["$insert_id"] for _, props, _, _ in rows]
    with gzip.open(root / "truth" / "event_person.tsv.gz", "wt") as out:
        out.write("".join(f"{key}\t{user}\t{device}\n"
                          for key, (_, _, user, device) in zip(keys, rows, strict=True)))
    return root


def _props(iid: str, at: int = TS, **more: Any) -> dict[str, Any]:
    return {"time": at, "distinct_id": "u1", "$device_id": "d1", "$user_id": "u1",
            "$insert_id": iid, **more}


def _row(name: str, props: dict[str, Any], session: int, **fields: Any) -> dict[str, Any]:
    """An export row as Amplitude gives it (every top-level field, null when unset)."""
    row: dict[str, Any] = {
        "$insert_id": event_insert_id(name, props, props["time"] * 1000),
        "event_type": name, "user_id": "u1", "device_id": "d1",
        "event_time": datetime.fromtimestamp(props["time"], UTC)
        .strftime("%Y-%m-%d %H:%M:%S.%f"), "session_id": session,
        "event_properties": {k: v for k, v in props.items()
                             if not k.startswith("$") and k not in ("time", "distinct_id")}}
    row.update({proof_fields.EXPORT_NAMES.get(f, f): None for f in proof_fields.FIELDS})
    row.update(fields)
    return row


def _check(project: Path, rows: list[dict[str, Any]], gap_ms: int = 30 * 60_000
           ) -> EventCheck:
    check = EventProof((), gap_ms)
    check.read_project(project, None)
    for row in rows:
        check.see(row)
    return check.finish()


def test_sessions_split_after_the_gap_per_device_in_time_order() -> None:
    gap = 30 * 60_000
    got = sessions([("d:a", 0, "1"), ("d:a", 2 * gap + 1, "4"), ("d:a", gap, "2"),
                    ("d:b", gap, "b"), ("d:a", 2 * gap, "3")], gap)
    # exactly the gap joins, one ms more starts a session named by its first event
    assert got == {"1": 0, "2": 0, "3": 0, "4": 0, "b": gap}
    assert sessions([("d:a", 0, "1"), ("d:a", gap + 1, "2")], gap) == {"1": 0, "2": gap + 1}


def test_a_session_id_other_than_the_gap_rule_gives_is_wrong_session(tmp_path: Path) -> None:
    first, later, apart = _props("i1"), _props("i2", TS + 20 * MIN), _props("i3", TS + 60 * MIN)
    project = _project(tmp_path, [("A", p, "u1", "d1") for p in (first, later, apart)])
    right = [_row("A", first, TS * 1000), _row("A", later, TS * 1000),
             _row("A", apart, (TS + 60 * MIN) * 1000)]
    assert _check(project, right).ok
    constant = [_row("A", p, TS * 1000) for p in (first, later, apart)]
    check = _check(project, constant)
    assert dict(+check.problems) == {"wrong_session": 1}, check.examples
    assert check.examples[0].startswith("wrong_session: ")
    # the configured gap (20 minutes) makes the second event's session its own
    assert dict(+_check(project, right, gap_ms=19 * 60_000).problems) == {"wrong_session": 1}


WEB = {"mp_lib": "web", "$browser": "Microsoft Edge", "$browser_version": 120.5,
       "$os": "Mac OS X", "$city": "Austin", "$region": "Texas", "mp_country_code": "US"}
WEB_FIELDS = {"platform": "Web", "os_name": "Edge", "os_version": "120",
              "device_model": "Mac OS", "country": "United States", "region": "Texas",
              "city": "Austin"}
ANDROID = {"mp_lib": "android", "$os": "Android", "$os_version": "14", "$brand": "samsung",
           "$manufacturer": "samsung", "$model": "SM-A266B", "$carrier": "Vodafone",
           "$app_version_string": "5.4.1", "$app_version": "5.4.1"}
ANDROID_FIELDS = {"platform": "Android", "os_name": "android", "os_version": "14",
                  "device_brand": "samsung", "device_manufacturer": "samsung",
                  "device_model": "SM-A266B", "device_carrier": "Vodafone",
                  "version_name": "5.4.1"}


@pytest.mark.parametrize(("defaults", "fields", "changed", "kind"), [
    (WEB, WEB_FIELDS, {"city": "Paris", "country": "France"}, "wrong_location"),
    (WEB, WEB_FIELDS, {"os_name": None}, "wrong_device_fields"),
    (ANDROID, ANDROID_FIELDS, {"device_carrier": None, "version_name": None},
     "wrong_device_fields"),
    (ANDROID, ANDROID_FIELDS, {"country": "United States"}, "wrong_location"),
])
def test_top_level_fields_are_compared(tmp_path: Path, defaults: dict[str, Any],
                                       fields: dict[str, Any], changed: dict[str, Any],
                                       kind: str) -> None:
    props = _props("i1", **defaults)
    project = _project(tmp_path / "a", [("A", props, "u1", "d1")])
    kept = {"mp_lib": defaults["mp_lib"], **({"browser": "Microsoft Edge",
            "browser_version": 120.5, "os": "Mac OS X"} if defaults is WEB else {})}
    row = _row("A", props, TS * 1000, **fields)
    row["event_properties"] = kept
    assert _check(project, [row]).ok, _check(project, [row]).examples
    check = _check(project, [{**row, **changed}])
    assert dict(+check.problems) == {kind: 1}, check.examples


def test_expected_fields_follow_the_documented_mapping() -> None:
    ios = dict(zip(proof_fields.FIELDS, expected_fields(
        {"mp_lib": "swift", "$os": "iPadOS", "$model": "x86_64", "$app_release": "5.1",
         "mp_country_code": "ZZ", "$city": " "}), strict=True))
    assert ios["platform"] == "iOS" and ios["os_name"] == "ipados"
    assert ios["device_model"] == "Simulator" and ios["app_version"] == "5.1"
    assert ios["country"] is proof_fields.SKIP  # a code the proof's table lacks
    assert ios["city"] is None and ios["dma"] is None
    server = expected_fields({"mp_lib": "python", "$os": "Linux"})
    assert set(server) == {None}


def test_kept_default_properties_are_compared_by_their_documented_name(
        tmp_path: Path) -> None:
    props = {**_props("i1", current_page_title="Pricing"), "$initial_referrer": "$direct"}
    project = _project(tmp_path, [("A", props, "u1", "d1")])
    right = _row("A", props, TS * 1000)
    right["event_properties"] = {"[Amplitude] Page Title": "Pricing",
                                 "initial_referrer": "EMPTY"}
    assert _check(project, [right]).ok
    wrong = {**right, "event_properties": {"[Amplitude] Page Title": "Home",
                                           "initial_referrer": "EMPTY"}}
    assert dict(+_check(project, [wrong]).problems) == {"wrong_properties": 1}
    renamed = {**right, "event_properties": {"Page Title": "Pricing",
                                             "initial_referrer": "EMPTY"}}
    assert dict(+_check(project, [renamed]).problems) == {"properties_lost": 1,
                                                           "extra_properties": 1}


@pytest.mark.parametrize(("value", "got", "ok"), [
    ([{"sku": "a", "n": 1}, {"sku": "b"}], [{"n": 1.0, "sku": "a"}, {"sku": "b"}], True),
    ([1, 2], [1], False),
    ({"k": {"deep": [1, None]}}, {}, False),
    ({"k": "v"}, '{"k":"v"}', False),
])
def test_list_and_object_values_are_compared(tmp_path: Path, value: Any, got: Any,
                                             ok: bool) -> None:
    props = _props("i1", items=value)
    project = _project(tmp_path, [("A", props, "u1", "d1")])
    row = _row("A", props, TS * 1000)
    row["event_properties"] = {"items": got}
    check = _check(project, [row])
    assert dict(+check.problems) == ({} if ok else {"wrong_properties": 1}), check.examples


def test_properties_the_record_does_not_make_are_extra(tmp_path: Path) -> None:
    # a custom "carrier" takes the readable name: $carrier keeps its Mixpanel name
    props = {**_props("i1", carrier="x", mp_lib="web"), "$carrier": "Jio"}
    project = _project(tmp_path, [("A", props, "u1", "d1")])
    row = _row("A", props, TS * 1000, platform="Web")
    row["event_properties"] = {"carrier": "x", "$carrier": "Jio", "mp_lib": "web"}
    assert _check(project, [row]).ok, _check(project, [row]).examples
    row["event_properties"] = {**row["event_properties"], "distinct_id": "u1",
                               "mp_processing_time_ms": 0}
    check = _check(project, [row])
    assert dict(+check.problems) == {"extra_properties": 1}
    assert "'distinct_id', 'mp_processing_time_ms'" in check.examples[0]


def test_a_reused_insert_id_is_looked_up_by_its_line(tmp_path: Path) -> None:
    """The truth keys the second, distinct event with an earlier one's $insert_id by its
    file and line: both are expected."""
    first, second = _props("same"), _props("same", TS + 5)
    project = _project(tmp_path, [("A", first, "u1", "d1"), ("A", second, "u1", "d1")],
                       keys=["same", "@events/2026-01-01.jsonl:2"])
    check = _check(project, [_row("A", first, TS * 1000), _row("A", second, TS * 1000)])
    assert check.ok and check.expected == 2, check.examples


def test_the_proof_states_the_mapping_itself() -> None:
    """Neither module imports the mapping it checks."""
    for module in (proof, proof_fields):
        tree = ast.parse(Path(str(module.__file__)).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m and m.startswith("mp2amp.transform.mapping") for m in imported)
        assert "RULES" not in Path(str(module.__file__)).read_text()
