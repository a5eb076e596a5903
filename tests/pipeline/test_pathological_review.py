"""Valid but extreme inputs against the "flat memory" and "never loses the rest of the data"
invariants (ARCHITECTURE.md invariant 4; README ``mp2amp transform`` / ``mp2amp migrate``):
tens of thousands of event names, very wide and varied property sets, one device with many
events, one user with a thousand devices, a 30 MB record, huge arrays, very long IDs,
thousands of tiny files, times from 1971 to 2099 and a file of identical lines. Counts must
add up exactly, rejections name file and line, and memory must not grow with the input."""

from __future__ import annotations

import io
import random
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
from migrate_kit import FAST, amplitude, make_config, stored_counts

from mp2amp.config import load_config
from mp2amp.models import Resolved
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.transform.events import Transformer
from mp2amp.transform.offline import transform_files

T = 1_700_000_000  # 2023-11-14, seconds


def _line(name: str, t: float, who: str | None, iid: str | None, **props: Any) -> bytes:
    p: dict[str, Any] = {"time": t}
    if who is not None:
        p["distinct_id"] = who
    if iid is not None:
        p["$insert_id"] = iid
    p.update(props)
    return orjson.dumps({"event": name, "properties": p})


def _write(path: Path, lines: list[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _transform(
    tmp: Path, inputs: list[Path], **overrides: Any
) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    settings = {
        "source.files": [str(p) for p in inputs],
        "run.workdir": str(tmp / "work"),
        "mixpanel.timezone": "UTC",
        **overrides,
    }
    config = load_config(None, settings, env={})
    out, rejects = io.BytesIO(), io.BytesIO()
    result = transform_files(config, [str(p) for p in inputs], out, rejects)
    result.summary.check()
    events = [orjson.loads(raw) for raw in out.getvalue().splitlines()]
    rows = [orjson.loads(raw) for raw in rejects.getvalue().splitlines()]
    return result, events, rows


# --- memory: the transformer's memos and the whole command ------------------------------


def _retained_by_transformer(records: list[dict[str, Any]]) -> tuple[int, Transformer]:
    """Bytes the Transformer still holds (its memos) after transforming ``records``."""
    config = load_config(None, {"mixpanel.timezone": "UTC"}, env={})
    ids = Resolved("user-1", "device-1")
    tracemalloc.start()
    try:
        transformer = Transformer(config.transform_settings())
        base = tracemalloc.get_traced_memory()[0]
        for record in records:
            event = transformer.event(record, ids)
            assert isinstance(event, dict), event
            del event
        retained = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return retained, transformer


def test_wide_distinct_shapes_keep_the_transformer_memos_bounded() -> None:
    rng = random.Random(7)
    optional = [f"optional property {k}" for k in range(300)]
    records = []
    for i in range(2_500):  # each record: its own subset of 250 optional properties
        props: dict[str, Any] = {
            "time": T + i,
            "distinct_id": "user-1",
            "$insert_id": f"w{i}",
            "$os": "iOS",
            "mp_lib": "swift",
            "$device_id": "device-1",
        }
        for key in rng.sample(optional, 250):
            props[key] = i
        records.append({"event": "Checkout", "properties": props})
    retained, transformer = _retained_by_transformer(records)
    # the test is what it says: a new shape per record, each taking the general path
    assert transformer.general_path == 2_500
    shapes = max(1, len(transformer._shapes))
    assert retained < 64 * 2**20, (
        f"the transformer keeps {retained / 2**20:.0f} MB of memos after {len(records)} "
        f"records ({shapes} shapes held, {retained // shapes} B each)"
    )


def test_tens_of_thousands_of_event_names_keep_the_transform_flat(tmp_path: Path) -> None:
    """20k vs 40k records, every one a new event name with its own property keys: every
    event out exactly once, and the command's peak heap the same (the memos are capped)."""

    def run(n: int) -> tuple[int, set[str]]:
        lines = [
            _line(
                f"Event number {i}",
                T + i,
                f"user-{i % 300}",
                f"iid-{i}",
                **{f"key {i} a": i, f"key {i} b": "x"},
            )
            for i in range(n)
        ]
        source = _write(tmp_path / f"in-{n}" / "events.jsonl", lines)
        config = load_config(
            None,
            {
                "source.files": [str(source)],
                "run.workdir": str(tmp_path / f"work-{n}"),
                "mixpanel.timezone": "UTC",
            },
            env={},
        )
        del lines
        out_path, rej_path = tmp_path / f"out-{n}.jsonl", tmp_path / f"rej-{n}.jsonl"
        with out_path.open("wb") as out, rej_path.open("wb") as rejects:
            tracemalloc.start()
            try:
                result = transform_files(config, [str(source)], out, rejects)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        result.summary.check()
        assert result.summary.events_out == n and not rej_path.read_bytes()
        events = [orjson.loads(raw) for raw in out_path.read_bytes().splitlines()]
        names = {e["event_type"] for e in events}
        assert len(names) == n
        iids = [e["insert_id"] for e in events]
        assert len(set(iids)) == n
        return peak, set(iids)

    small, _ = run(20_000)
    large, _ = run(40_000)
    assert large < small * 1.3 + 4 * 2**20, (
        f"peak heap {small / 2**20:.1f} MB at 20k records, {large / 2**20:.1f} MB at 40k"
    )


# --- volume per ID -----------------------------------------------------------------------


def test_one_device_with_many_events_gets_exact_sessions(tmp_path: Path) -> None:
    """20k events of one device, a session break (31 min) every 100th event, lines shuffled:
    200 sessions, each event's session_id the time of its session's first event."""
    lines = []
    t = T * 1000
    expected: dict[str, tuple[int, int]] = {}
    start = t
    for i in range(20_000):
        if i % 100 == 0:
            t += 31 * 60_000
            start = t
        else:
            t += 1_000
        lines.append(_line("Tap", t, "user-1", f"tap-{i}", **{"$device_id": "device-1"}))
        expected[f"tap-{i}"] = (t, start)
    random.Random(3).shuffle(lines)
    source = _write(tmp_path / "in" / "one-device.jsonl", lines)
    result, events, rejects = _transform(tmp_path, [source])
    assert not rejects and result.summary.events_out == 20_000
    by_time = {e["time"]: e["session_id"] for e in events}  # (times are distinct)
    assert by_time == {t_ms: start_ms for t_ms, start_ms in expected.values()}
    assert len({e["insert_id"] for e in events}) == 20_000
    assert len({start_ms for _, start_ms in expected.values()}) == 200


def test_one_user_with_a_thousand_devices_hits_the_cluster_cap_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Original ID merge: 1,200 anonymous devices identified as one user. Mixpanel's cap is
    500 IDs a cluster: 499 devices join, 701 links are refused and reported, and every
    anonymous event is still sent (the refused ones under their own ID)."""
    lines = []
    for i in range(1_200):
        lines.append(_line("Anon", T + 2 * i, f"dev-{i}", f"anon-{i}"))
        lines.append(
            _line(
                "$identify",
                T + 2 * i + 1,
                "user-1",
                f"ident-{i}",
                **{"$anon_distinct_id": f"dev-{i}", "$identified_id": "user-1"},
            )
        )
    source = _write(tmp_path / "in" / "devices.jsonl", lines)
    result, events, rejects = _transform(tmp_path, [source], **{"mixpanel.id_merge": "original"})
    assert not rejects
    assert result.summary.events_out == 1_200 and result.summary.identity_records == 1_200
    assert result.identity["cap_hits"] == 701
    assert 0 < len(result.identity["cap_examples"]) <= 20  # examples, not the whole list
    anon = [e for e in events if e["event_type"] == "Anon"]
    assert len(anon) == 1_200 and len({e["insert_id"] for e in anon}) == 1_200
    assert sum(1 for e in anon if e.get("user_id") == "user-1") == 499
    # a refused device keeps its own ID (not device-looking here: it becomes the user_id)
    assert sorted(e["user_id"] for e in anon if e["user_id"] != "user-1") == sorted(
        f"dev-{i}" for i in range(499, 1_200)
    )


# --- huge values, long IDs ------------------------------------------------------------


def test_a_30_mb_record_and_huge_arrays_are_cut_and_delivered_by_migrate(tmp_path: Path) -> None:
    big = "x" * (30 * 2**20)
    lines = [
        _line("Before", T, "user-1", "before"),
        _line("Huge", T + 1, "user-1", "huge", big=big),
        _line("Array", T + 2, "user-1", "array", arr=list(range(50_000))),
        _line("After", T + 3, "user-1", "after"),
    ]
    source = _write(tmp_path / "events" / "huge.jsonl", lines)
    del lines
    result, events, rejects = _transform(tmp_path / "t", [source])
    assert not rejects and [e["event_type"] for e in events] == ["Before", "Huge", "Array", "After"]
    assert events[1]["event_properties"]["big"] == "x" * 1024
    assert result.values["truncated"] == {"big": 1}
    assert events[2]["event_properties"]["arr"] == list(range(50_000))
    with amplitude(tmp_path / "amp") as url:
        config = make_config(source, tmp_path / "work", url, **{"mixpanel.timezone": "UTC"})
        outcome = migrate(config, upload_overrides=FAST)
        stored = stored_counts(url)
    assert outcome.exit_code == EXIT_OK, outcome.as_dict()["problems"]
    assert outcome.totals["sent"] == 4 and outcome.totals["rejected"] == 0
    assert sorted(iid for _, iid in stored) == sorted(e["insert_id"] for e in events)
    assert set(stored.values()) == {1}


def test_very_long_ids_are_rejected_by_file_and_line_and_the_rest_delivered(tmp_path: Path) -> None:
    lines = [
        _line("A", T, "u" * 5_000, "long-user"),  # line 1
        _line("A", T + 1, "user-1", "i" * 5_000),  # line 2
        _line("A", T + 2, "user-1", "long-device", **{"$device_id": "d" * 5_000}),  # 3
        _line("A", T + 3, "user-1", "ok"),  # line 4
        _line("A", T + 4, "u" * 1_024, "max-user"),  # line 5: at the limit
    ]
    source = _write(tmp_path / "in" / "ids.jsonl", lines)
    result, events, rejects = _transform(tmp_path, [source])
    # only an event left without a usable ID is rejected; line 3 goes under its user_id
    assert sorted((r["source"], r["line"], r["reason"], r["field"]) for r in rejects) == [
        (str(source), 1, "invalid_id", "user_id"),
    ]
    assert result.summary.events_out == 4
    assert all(len(e["insert_id"]) <= 1_024 for e in events)
    assert len({e["insert_id"] for e in events}) == 4
    assert sorted(len(e["user_id"]) for e in events) == [6, 6, 6, 1_024]
    assert not any("device_id" in e for e in events)
    assert result.values["other"]["device_id_over_limit"] == 1


# --- many files, times, identical lines ----------------------------------------------


def test_thousands_of_tiny_files_in_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    for i in range(1_500):
        lines = [_line("A", T + i, f"user-{i % 7}", f"tiny-{i}")]
        if i == 777:
            lines.append(b'{"event": "broken", ')  # line 2 of f00777.jsonl
        _write(folder / f"f{i:05d}.jsonl", lines)
    result, events, rejects = _transform(tmp_path, [folder])
    assert result.summary.records_read == 1_501 and len(result.summary.files) == 1_500
    assert result.summary.events_out == 1_500
    assert sorted(e["insert_id"] for e in events) == sorted({e["insert_id"] for e in events})
    assert [(Path(r["source"]).name, r["line"]) for r in rejects] == [("f00777.jsonl", 2)]


def test_times_from_1971_to_2099_are_all_delivered_exactly(tmp_path: Path) -> None:
    first, last = 31_536_000, 4_102_444_799  # 1971-01-01, 2099-12-31T23:59:59
    times = [first + i * ((last - first) // 1_999) for i in range(2_000)] + [last]
    lines = [_line("A", t, "user-1", f"t-{i}") for i, t in enumerate(times)]
    lines.reverse()
    source = _write(tmp_path / "in" / "span.jsonl", lines)
    result, events, rejects = _transform(tmp_path, [source])
    assert not rejects and result.summary.events_out == len(times)
    assert sorted(e["time"] for e in events) == sorted(t * 1000 for t in times)


def test_a_file_of_identical_lines_gives_one_event(tmp_path: Path) -> None:
    with_id = [_line("Same", T, "user-1", "same-iid")] * 5_000
    without_id = [_line("Same", T + 60, "user-2", None)] * 3_000
    source = _write(tmp_path / "in" / "same.jsonl", with_id + without_id)
    result, events, rejects = _transform(tmp_path, [source])
    assert not rejects
    assert result.summary.events_out == 2 and result.summary.duplicates == 7_998
    assert sorted(e["user_id"] for e in events) == ["user-1", "user-2"]


# --- over-long property keys -------------------------------------------------------------

LONG_KEY = "k" * 1_024


def test_over_long_property_keys_that_collide_keep_every_value(tmp_path: Path) -> None:
    lines = [
        _line("A", T, "user-1", "two-long", **{LONG_KEY + "1": 1, LONG_KEY + "2": 2}),
        _line("A", T + 1, "user-1", "long-and-exact", **{LONG_KEY: "plain", LONG_KEY + "2": 2}),
    ]
    source = _write(tmp_path / "in" / "keys.jsonl", lines)
    result, events, rejects = _transform(tmp_path, [source])
    assert result.summary.records_read == 2
    for event in events:  # whatever is sent keeps both values
        assert sorted(map(str, event["event_properties"].values())) in (
            ["1", "2"],
            ["2", "plain"],
        ), event["event_properties"]
    assert result.summary.events_out + len(rejects) == 2


def test_the_truncation_report_does_not_carry_whole_over_long_keys(tmp_path: Path) -> None:
    lines = [
        _line("A", T + i, "user-1", f"key-{i}", **{"q" * 100_000 + str(i): i}) for i in range(50)
    ]
    source = _write(tmp_path / "in" / "keys.jsonl", lines)
    result, _, rejects = _transform(tmp_path, [source])
    assert not rejects and result.summary.events_out == 50
    report = orjson.dumps(result.values)
    assert len(report) < 64 * 1_024, f"the values report is {len(report)} bytes"
