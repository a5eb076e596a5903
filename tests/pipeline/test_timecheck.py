"""Event times that look read in the wrong zone stop the run before anything is sent
(``[mixpanel] time_check``): staged keys against Mixpanel's ingestion stamps."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from migrate_kit import amplitude, make_config, stored_counts

from mp2amp.errors import TerminalError
from mp2amp.pipeline.migrate import EXIT_OK, migrate
from mp2amp.pipeline.timecheck import MIN_SAMPLES, TimeHint, sample, verdict

T0 = 1_704_067_200  # 2024-01-01 00:00 UTC
HOUR_MS = 3_600_000


def _buckets(delays_ms: list[int]) -> Counter[int]:
    return Counter(round(d / (15 * 60_000)) for d in delays_ms)


def test_events_ingested_seconds_after_their_time_raise_nothing() -> None:
    assert verdict(_buckets([2_000 + i for i in range(1000)])) is None


def test_a_steady_shift_of_whole_hours_is_named_with_its_zone() -> None:
    hint = verdict(_buckets([8 * HOUR_MS + 3_000] * 900 + [1_000] * 100))
    assert hint == TimeHint(offset_minutes=-480, share=0.9, sampled=1000)
    assert "8 h earlier than Mixpanel ingested them" in hint.message()
    assert "zone at UTC-8:00 is read as UTC" in hint.message()
    hint = verdict(_buckets([-(5 * HOUR_MS + 30 * 60_000)] * 500))  # India, read as UTC
    assert hint is not None and hint.offset_minutes == 330
    assert "5 h 30 min later" in hint.message() and "UTC+5:30" in hint.message()


@pytest.mark.parametrize("delays", [
    [8 * HOUR_MS] * (MIN_SAMPLES - 1),  # too few to say
    [i * 60_000 for i in range(600)],  # mobile events sent late, spread over ten hours
    [400 * 24 * HOUR_MS] * 500,  # imported a year later: no zone is that far off
    [8 * HOUR_MS] * 500 + [0] * 300,  # many events at their time: not a wrong zone
    [20 * 60_000] * 500,  # a steady 20 minutes: less than any zone's half hour
], ids=["few", "mobile-late", "imported", "many-at-zero", "twenty-minutes"])
def test_what_is_no_wrong_zone_raises_nothing(delays: list[int]) -> None:
    assert verdict(_buckets(delays)) is None


def test_the_sample_reads_the_staged_key_and_the_ingestion_stamp(tmp_path: Path) -> None:
    staged = tmp_path / "w.jsonl"
    lines = []
    for i in range(10):
        raw = orjson.dumps({"event": "e", "properties": {
            "time": T0 + i, "mp_processing_time_ms": (T0 + i) * 1000 + 8 * HOUR_MS}})
        lines.append(b'{"v":1}\t[%d,"f",%d,%s,null]\n' % (T0 + i, i + 1, raw))
    lines.append(b'{"v":1}\t[-1e18,"f",11,{"event":"e","properties":{}},null]\n')
    staged.write_bytes(b"".join(lines))
    assert sample([staged, tmp_path / "gone.jsonl"]) == (Counter({32: 10}), {32: T0})


def _shifted_day(folder: Path, n: int = 300) -> Path:
    """A day of a legacy project at UTC-8: its times are the wall clock, the ingestion
    stamps UTC, seconds later."""
    folder.mkdir()
    rows = []
    for i in range(n):
        utc = T0 + 60 * i
        rows.append(orjson.dumps({"event": "Viewed", "properties": {
            "time": utc - 8 * 3600, "distinct_id": f"user-{i % 40:04d}",
            "$insert_id": f"ins-{i:05d}", "mp_processing_time_ms": utc * 1000 + 1500}}))
    (folder / "2024-01-01.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    return folder


def test_a_legacy_project_read_as_utc_stops_before_anything_is_sent(tmp_path: Path) -> None:
    events = _shifted_day(tmp_path / "in")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{"mixpanel.timezone": "UTC"})
        with pytest.raises(TerminalError, match=r"look 8 h earlier .* UTC-8:00 is read as "
                           r"UTC.*Nothing was sent"):
            migrate(cfg)
        assert stored_counts(url) == {}
        # the times are meant so: the same run goes on with a warning, every event sent
        warned = make_config(events, tmp_path / "work", url,
                             **{"mixpanel.timezone": "UTC", "mixpanel.time_check": "warn"})
        result = migrate(warned, resume=True)
        assert result.exit_code == EXIT_OK
        assert result.as_dict()["time_check"] == {
            "looks_offset_minutes": -480, "share": 1.0, "sampled": 300,
            "looks_like_zone": "-8:00"}
        assert sum(stored_counts(url).values()) == 300


def test_the_same_day_read_in_its_zone_goes_through(tmp_path: Path) -> None:
    events = _shifted_day(tmp_path / "in")
    with amplitude(tmp_path / "amp") as url:
        cfg = make_config(events, tmp_path / "work", url, **{
            "mixpanel.timezone": "America/Los_Angeles", "mixpanel.legacy_time": True})
        result = migrate(cfg)
        assert result.exit_code == EXIT_OK and result.time_check is None
        assert sum(stored_counts(url).values()) == 300


def test_a_big_window_is_sampled_all_over_without_a_line_twice(tmp_path: Path) -> None:
    from mp2amp.pipeline.timecheck import PARTS, SMALL_FILE, _spread

    staged = tmp_path / "big.jsonl"
    line = b'{"v":1}\t[%d,"f",1,{"pad":"' + b"x" * 200 + b'"},null]\n'
    count = SMALL_FILE // len(line % 0) + 2000
    staged.write_bytes(b"".join(line % i for i in range(count)))
    got = [int(raw.split(b"[", 1)[1].split(b",", 1)[0]) for raw in _spread(staged, 400)]
    assert len(got) == len(set(got)) == 400 // PARTS * PARTS
    assert got[0] == 0 and got[-1] > count * (PARTS - 1) // PARTS  # from start to end
