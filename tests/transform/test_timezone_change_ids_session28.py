"""Insert_id scheme 4 around a legacy project's timezone change: an export row and the
Data Pipelines row of one event get one id at every time of the days around the change
(an export row near a change hashes the local time its UTC time reads as, the one the
pipeline row hashes); a run started under scheme 3 keeps hashing the stored local time.

The session-24 soak found two ids for 268 of 32,785 such events, all within a day of the
change (tests/transform/test_timezone_change_copies_session24.py runs two through the CLI).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.models import UTC_TIME_MARK, Resolved
from mp2amp.transform.events import Transformer
from mp2amp.transform.insert_id import event_insert_id
from mp2amp.transform.settings import TransformSettings
from mp2amp.transform.timeconv import LocalTimeConverter

CHANGES = (("2024-11-06", "Europe/Berlin"),)
CHANGE_MS = int(datetime(2024, 11, 6, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000
IDS = Resolved(user_id="user-12345", device_id="dev-12345")
ZONE_OFFSETS_H = (-8, -7, 1, 2)  # the readings Mixpanel may have stored: LA or Berlin


def _settings(scheme: int = 4) -> TransformSettings:
    return TransformSettings(timezone="America/Los_Angeles", legacy_time=True,
                             timezone_changes=CHANGES, insert_id_scheme=scheme)


def _props(utc_ms: int, with_id: bool) -> dict[str, Any]:
    props: dict[str, Any] = {"distinct_id": "user-12345", "$device_id": "dev-12345",
                             "mp_processing_time_ms": utc_ms + 5000,
                             "$mp_api_timestamp_ms": utc_ms + 4941, "plan": "pro"}
    if with_id:
        props["$insert_id"] = "abcdef0123456789"
    return props


def _sent(transformer: Transformer, record: dict[str, Any]) -> dict[str, Any]:
    out = transformer.event(record, IDS)
    assert isinstance(out, dict), out
    return out


def _copies(utc_ms: int, with_id: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pipeline row (UTC) and each export row (a stored local reading) that reads back
    to ``utc_ms``: the copies Mixpanel may hold of one event."""
    props = _props(utc_ms, with_id)
    pipeline = {"event": "Clicked", "properties": {**props, "time": utc_ms}, UTC_TIME_MARK: True}
    local = LocalTimeConverter("America/Los_Angeles", CHANGES)
    exports = []
    for hours in ZONE_OFFSETS_H:
        stored = utc_ms + hours * 3_600_000
        if local.to_utc_ms(stored, props["mp_processing_time_ms"]) == utc_ms:
            exports.append({"event": "Clicked", "properties": {**props, "time": stored // 1000}})
    return pipeline, exports


@pytest.mark.parametrize("with_id", [True, False], ids=["insert_id", "content_hash"])
def test_every_copy_gets_one_id_across_the_days_around_the_change(with_id: bool) -> None:
    """Every 10 minutes from two days before the change to two days after, through both
    paths of the transformer (a fresh one, and one that has seen the shape)."""
    warm = Transformer(_settings())
    checked = 0
    for utc_ms in range(CHANGE_MS - 2 * DAY_MS, CHANGE_MS + 2 * DAY_MS, 600_000):
        pipeline, exports = _copies(utc_ms, with_id)
        assert exports, utc_ms
        ids = set()
        for record in (pipeline, *exports):
            for transformer in (Transformer(_settings()), warm):
                out = _sent(transformer, record)
                assert out["time"] == utc_ms
                ids.add(out["insert_id"])
            checked += 1
        assert len(ids) == 1, (utc_ms, ids)
    assert checked > 576 * 2


@settings(max_examples=300, deadline=None)
@given(st.integers(CHANGE_MS - 2 * DAY_MS, CHANGE_MS + 2 * DAY_MS - 1),
       st.integers(0, 3 * DAY_MS))
def test_any_time_and_late_ingestion_gives_one_id(utc_ms: int, late: int) -> None:
    """Whole-second times (exports give seconds), ingested up to 3 days later (a late
    upload is stored in the zone in force when it was ingested)."""
    utc_ms -= utc_ms % 1000
    pipeline, exports = _copies(utc_ms, True)
    for record in (pipeline, *exports):
        record["properties"]["mp_processing_time_ms"] += late
        record["properties"].pop("$mp_api_timestamp_ms")
    local = LocalTimeConverter("America/Los_Angeles", CHANGES)
    exports = [e for e in exports if local.to_utc_ms(
        e["properties"]["time"] * 1000, e["properties"]["mp_processing_time_ms"]) == utc_ms]
    ids = {_sent(Transformer(_settings()), r)["insert_id"] for r in (pipeline, *exports)}
    assert len(ids) == 1, (utc_ms, late, ids)


def test_a_scheme_3_run_keeps_hashing_the_stored_local_time() -> None:
    """The ids a run an earlier release started sent: the stored reading's, as they were
    (two ids for the two readings), on both paths."""
    utc_ms = int(datetime(2024, 11, 5, 23, 30, tzinfo=UTC).timestamp() * 1000)
    _, exports = _copies(utc_ms, True)
    assert len(exports) == 2  # Berlin's 00:30 and Los Angeles's 15:30 both read back to it
    warm = Transformer(_settings(3))
    for record in exports:
        stored_ms = record["properties"]["time"] * 1000
        old = event_insert_id("Clicked", record["properties"], stored_ms, 3)
        assert _sent(Transformer(_settings(3)), record)["insert_id"] == old
        assert _sent(warm, record)["insert_id"] == old
    assert len({_sent(warm, r)["insert_id"] for r in exports}) == 2
    assert len({_sent(Transformer(_settings()), r)["insert_id"] for r in exports}) == 1


def test_far_from_a_change_the_stored_local_time_is_hashed() -> None:
    """Outside the days around a change nothing moves: scheme 3 and 4 give one id."""
    utc_ms = CHANGE_MS - 30 * DAY_MS
    _, exports = _copies(utc_ms, True)
    for record in exports:
        assert _sent(Transformer(_settings()), record)["insert_id"] == \
            _sent(Transformer(_settings(3)), record)["insert_id"]
