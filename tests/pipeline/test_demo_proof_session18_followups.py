"""Follow-ups to the session 18 review of ``mp2amp demo`` and its proof: what the fixes
check beyond the pinned tests (values, devices, groups, event types; how a stopped demo
goes on; a generation cut short)."""

from __future__ import annotations

import gzip
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import mp2amp.pipeline.demo as demo
from mp2amp.errors import ConnectionLost, InputError
from mp2amp.pipeline.proof import EventCheck, EventProof
from mp2amp.transform.insert_id import event_insert_id

TS = int(datetime(2026, 1, 1, 12, 30, tzinfo=UTC).timestamp())


def _project(root: Path, rows: list[tuple[str, dict[str, Any], str, str]]) -> Path:
    """A Mixpanel export of (event, properties, truth user, truth device) records and the
    truth's ``event_person`` (keyed by ``$insert_id``)."""
    (root / "events").mkdir(parents=True)
    (root / "truth").mkdir()
    (root / "events" / "2026-01-01.jsonl").write_bytes(b"".join(
        orjson.dumps({"event": name, "properties": props}) + b"\n"
        for name, props, _, _ in rows))
    with gzip.open(root / "truth" / "event_person.tsv.gz", "wt") as out:
        out.write("".join(f"{props['$insert_id']}\t{user}\t{device}\n"
                          for _, props, user, device in rows))
    return root


def _exported(name: str, props: dict[str, Any], user: str | None, device: str | None,
              **fields: Any) -> dict[str, Any]:
    """The export row a correct migration leaves (``fields`` replace or add fields)."""
    kept = {k: v for k, v in props.items()
            if not k.startswith("$") and k not in ("time", "distinct_id")}
    return {"$insert_id": event_insert_id(name, props, props["time"] * 1000),
            "event_type": name, "user_id": user, "device_id": device,
            "event_time": datetime.fromtimestamp(props["time"], UTC)
            .strftime("%Y-%m-%d %H:%M:%S.%f"),
            "event_properties": kept, **fields}


def _check(project: Path, exported: list[dict[str, Any]],
           group_keys: tuple[str, ...] = ()) -> EventCheck:
    proof = EventProof(group_keys)
    proof.read_project(project, None)
    for event in exported:
        proof.see(event)
    return proof.finish()


def _props(**custom: Any) -> dict[str, Any]:
    return {"time": TS, "distinct_id": "u1", "$device_id": "d1", "$user_id": "u1",
            "$insert_id": "aaaaaaaaaaaaaaaa", **custom}


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "got", "problems"), [
    ({"plan": "pro"}, {"plan": "free"}, {"wrong_properties": 1}),
    ({"on": True}, {"on": 1}, {"wrong_properties": 1}),  # a boolean is not a number
    ({"n": 1}, {"n": "1"}, {"wrong_properties": 1}),  # nor text
    ({"n": 12}, {"n": 12.0}, {}),  # JSON has one kind of number
    ({"note": "x" * 1500}, {"note": "x" * 1024}, {}),  # cut by the transform: its first 1024
    ({"note": "x" * 1500}, {"note": "x" * 100}, {"wrong_properties": 1}),  # cut shorter
    ({"tags": ["a", "b"]}, {"tags": "[\"a\"]"}, {"wrong_properties": 1}),  # containers too
    ({"plan": "pro", "n": 1}, {"plan": None}, {"properties_lost": 1}),  # said once
])
def test_custom_values_are_compared(tmp_path: Path, sent: dict[str, Any], got: dict[str, Any],
                                    problems: dict[str, int]) -> None:
    props = _props(**sent)
    event = _exported("Purchase", props, "u1", "d1")
    event["event_properties"] = {k: v for k, v in {**sent, **got}.items() if v is not None}
    check = _check(_project(tmp_path, [("Purchase", props, "u1", "d1")]), [event])
    assert dict(+check.problems) == problems, check.examples
    if "wrong_properties" in problems:
        assert "Amplitude has" in check.examples[0]


# --- devices -------------------------------------------------------------------------------


def test_an_identified_event_on_another_device_is_seen_and_a_server_one_is_not_compared(
        tmp_path: Path) -> None:
    on_device = _props()
    server = dict(_props(), **{"$insert_id": "bbbbbbbbbbbbbbbb", "time": TS + 1})
    del server["$device_id"]
    project = _project(tmp_path, [("A", on_device, "u1", "d1"), ("B", server, "u1", "")])
    check = _check(project, [_exported("A", on_device, "u1", "d2"),
                             _exported("B", server, "u1", "whatever-the-sdk-made")])
    assert dict(+check.problems) == {"wrong_device": 1}
    assert "device_id 'd2', expected 'd1'" in check.examples[0]


# --- groups --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "groups", "ok"), [
    (" acme ", {"company_id": ["acme"]}, True),
    (42, {"company_id": ["42"]}, True),
    (42.0, {"company_id": ["42"]}, True),
    ("acme", {}, False),  # group analytics lost
    ("acme", {"company_id": ["other"]}, False),
    ("   ", {}, True),  # no group name: no group
    (True, {"company_id": ["True"]}, False),  # a boolean names no group
    (["a", "b"], {"company_id": ["a", "b"]}, True),  # a list of names: each of them
    (["a", "b"], {}, False),
    (["a", "b"], {"company_id": ["b", "a"]}, False),
    ([" a ", "a", "", None, 7, 7.0, True], {"company_id": ["a", "7"]}, True),  # usable, once
    ([], {}, True),
    ([f"c{i}" for i in range(12)], {"company_id": [f"c{i}" for i in range(10)]}, True),
    ([f"c{i}" for i in range(12)], {"company_id": [f"c{i}" for i in range(12)]}, False),
])
def test_groups_are_compared(tmp_path: Path, value: Any, groups: dict[str, Any],
                             ok: bool) -> None:
    props = _props(company_id=value)
    project = _project(tmp_path, [("A", props, "u1", "d1")])
    check = _check(project, [_exported("A", props, "u1", "d1", groups=groups)],
                   ("company_id",))
    assert check.ok is ok, check.as_dict()
    assert ok or dict(+check.problems) == {"wrong_groups": 1}


def test_ten_group_names_an_event_are_tracked_in_key_order(tmp_path: Path) -> None:
    """Amplitude tracks 10 group values an event: the second key gets what is left."""
    props = _props(company_id=[f"c{i}" for i in range(8)], team=["t1", "t2", "t3"])
    project = _project(tmp_path, [("A", props, "u1", "d1")])
    tracked = {"company_id": [f"c{i}" for i in range(8)], "team": ["t1", "t2"]}
    keys = ("company_id", "team")
    assert _check(project, [_exported("A", props, "u1", "d1", groups=tracked)], keys).ok
    over = {**tracked, "team": ["t1", "t2", "t3"]}
    check = _check(project, [_exported("A", props, "u1", "d1", groups=over)], keys)
    assert dict(+check.problems) == {"wrong_groups": 1}, check.as_dict()


def test_groups_are_not_compared_without_group_keys(tmp_path: Path) -> None:
    props = _props(company_id="acme")
    project = _project(tmp_path, [("A", props, "u1", "d1")])
    assert _check(project, [_exported("A", props, "u1", "d1")]).ok


# --- event types ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "stored", "ok"), [
    ("Kauf ✓", "Kauf ✓", True),
    ("Kauf ✓", "Kauf", False),  # was never compared: a non-ASCII name
    ("x" * 1500, "x" * 1024, True),  # Amplitude's (and the transform's) cut
    ("x" * 1500, "x" * 1023, False),
])
def test_event_types_are_compared_for_any_name(tmp_path: Path, name: str, stored: str,
                                               ok: bool) -> None:
    props = _props()
    project = _project(tmp_path, [(name, props, "u1", "d1")])
    event = _exported(name, props, "u1", "d1", event_type=stored)
    check = _check(project, [event])
    assert check.ok is ok, check.as_dict()
    assert ok or dict(+check.problems) == {"wrong_type": 1}


# --- how a stopped demo goes on ------------------------------------------------------------


def test_migrate_hints_become_the_demos(tmp_path: Path) -> None:
    said = demo._demo_message("Amplitude answered 503 6 times; run again with --resume: "
                              "nothing was lost", tmp_path, False, demo.KEPT)
    assert said == (f"Amplitude answered 503 6 times; run `mp2amp demo --workdir {tmp_path}` "
                    "again, with the same options, to resume: nothing was lost")


def test_an_error_the_demo_adds_nothing_to_keeps_its_kind(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise InputError("the demo folder holds a project made with other options")

    monkeypatch.setattr(demo, "_run_demo", refused)
    with pytest.raises(InputError, match="other options"):
        demo.run_demo(1_000, tmp_path / "d")


def test_a_temporary_demo_stopped_before_its_project_is_removed_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mp2amp.cli import app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def lost(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionLost("generation lost its disk")

    monkeypatch.setattr(demo, "generate_project", lost)
    result = CliRunner().invoke(app, ["demo", "--events", "1000", "--quiet"])
    said = " ".join((result.output + (result.stderr or "")).split())
    assert result.exit_code == 1 and "was removed" in said, said
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_demo_stopped_after_its_project_is_kept_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real = demo.migrate

    def stopped(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionLost("Mixpanel Export API: connection lost; run the same "
                             "`mp2amp migrate` command with --resume")

    monkeypatch.setattr(demo, "migrate", stopped)
    with pytest.raises(demo.DemoStopped) as stop:
        demo.run_demo(1_000, None, fail_rate=0.0, drop_rate=0.0)
    [kept] = list(tmp_path.iterdir())
    assert f"run `mp2amp demo --workdir {kept}` again" in str(stop.value)
    assert "is kept" in str(stop.value) and "mp2amp migrate" not in str(stop.value)
    monkeypatch.setattr(demo, "migrate", real)
    assert demo.run_demo(1_000, kept, fail_rate=0.0, drop_rate=0.0).ok


def test_a_project_cut_short_in_place_is_generated_again(tmp_path: Path) -> None:
    """A demo folder an older mp2amp left mid-generation (no project.json)."""
    cut = tmp_path / "d" / "mixpanel-project" / "events"
    cut.mkdir(parents=True)
    (cut / "2024-03-01.jsonl").write_bytes(b'{"event": "cut')
    result = demo.run_demo(1_000, tmp_path / "d", fail_rate=0.0, drop_rate=0.0)
    assert result.ok and not (tmp_path / "d" / "mixpanel-project.partial").exists()
