"""Adversarial review of the Amplitude emulator against reference/amplitude-api.md.

Each ``xfail(strict=True)`` test pins a defect found in review (its reason says what is
wrong, what should happen and where); the plain tests pin edge cases the other files leave
open (all-or-nothing refusals keep no throttle budget and no dedup keys, range limits).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from amplitude_emulator_helpers import API_KEY, SECRET, T0, Api, Clock, event

MS = int(T0 * 1000)
WILD = Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures" / "wild"


def export_raw(api: Api, start: str = "20260101T00", end: str = "20260131T23") -> tuple[int, bytes]:
    query = urllib.parse.urlencode({"start": start, "end": end})
    return api.request("GET", f"/api/2/export?{query}", auth=(API_KEY, SECRET))


def segmentation_raw(api: Api, event_type: str, start: str, end: str) -> tuple[int, bytes]:
    query = urllib.parse.urlencode(
        {
            "e": orjson.dumps({"event_type": event_type}).decode(),
            "m": "totals",
            "i": "1",
            "start": start,
            "end": end,
        }
    )
    return api.request("GET", f"/api/2/events/segmentation?{query}", auth=(API_KEY, SECRET))


def identify(api: Api, items: list[dict[str, Any]]) -> tuple[int, Any]:
    return api.form(
        "/identify", {"api_key": API_KEY, "identification": orjson.dumps(items).decode()}
    )


# --- defects ------------------------------------------------------------------------------


def test_microsecond_time_does_not_break_the_export_of_its_hour(api: Api) -> None:
    status, _ = api.send([event(1, time=MS * 1000)])  # microseconds since epoch
    api.send([event(2)])
    status_export, raw = export_raw(api)
    assert status_export == 200, raw[:120]
    rows = api.exported_rows()
    wanted = {"insert-000002"} | ({"insert-000001"} if status == 200 else set())
    assert {r["$insert_id"] for r in rows} == wanted


def test_time_beyond_a_long_does_not_break_segmentation(api: Api) -> None:
    api.send([event(1, time=2**63)])
    api.send([event(2, event_type="Bought")])
    status, raw = segmentation_raw(api, "Bought", "20260101", "20260101")
    assert status == 200, raw[:120]
    assert orjson.loads(raw)["data"]["series"] == [[1]]


def test_carriage_return_whitespace_in_a_body_keeps_the_hour_readable(api: Api) -> None:
    body = orjson.dumps({"api_key": API_KEY, "events": [event(1), event(2)]})
    status, raw = api.request(
        "POST", "/batch", body.replace(b",", b",\r"), {"Content-Type": "application/json"}
    )
    assert (status, orjson.loads(raw)["events_ingested"]) == (200, 2)
    status, raw = export_raw(api)
    assert status == 200, raw[:120]
    assert sorted(r["$insert_id"] for r in api.exported_rows()) == [
        "insert-000001",
        "insert-000002",
    ]


def test_user_properties_survive_a_kill_between_snapshots(
    start_emulator: Callable[..., Api],
) -> None:
    first = start_emulator(save_every_s=3600)
    first.send([event(1, user_id="user-00001")])
    first.emulator.save()
    first.send([event(2, user_id="user-00001", user_properties={"plan": "pro"})])
    second = start_emulator(data_dir=first.emulator.config.data_dir)  # as after kill -9
    second.send([event(3, user_id="user-00001")])
    rows = {r["$insert_id"]: r for r in second.exported_rows()}
    assert rows["insert-000002"]["user_properties"] == {"plan": "pro"}
    assert rows["insert-000003"]["user_properties"] == {"plan": "pro"}


def test_events_stored_counter_survives_a_kill_between_snapshots(
    start_emulator: Callable[..., Api],
) -> None:
    first = start_emulator(save_every_s=3600)
    first.send([event(1)])
    first.emulator.save()
    first.send([event(2), event(3), event(3)])
    assert first.stats()["events_stored"] == 3
    second = start_emulator(data_dir=first.emulator.config.data_dir)  # as after kill -9
    assert len(second.exported_rows()) == 3
    stats = second.stats()
    assert (stats["events_stored"], stats["duplicates_ignored"]) == (3, 1)


@pytest.mark.parametrize("user_id", ["null", "Undefined"])
def test_identify_refuses_ids_that_ingestion_refuses(api: Api, user_id: str) -> None:
    status, body = identify(api, [{"user_id": user_id, "user_properties": {"plan": "pro"}}])
    assert (status, body["code"]) == (400, 400)
    assert user_id not in api.emulator.ids.users


def test_identify_missing_ids_are_not_blamed_on_user_properties(api: Api) -> None:
    status, body = identify(api, [{"user_properties": {"plan": "pro"}}])
    assert status == 400
    assert "user_properties" not in body.get("events_with_invalid_fields", {})
    assert body.get("events_with_missing_fields") == {"user_id": [0], "device_id": [0]}


def test_price_without_quantity_exports_revenue(api: Api) -> None:
    api.send([event(1, price=9.99, productId="sku-1")])
    (row,) = api.exported_rows()
    assert row["event_properties"]["$price"] == 9.99
    assert row["event_properties"].get("$revenue") == pytest.approx(9.99)


def test_export_cuts_long_top_level_strings_at_1024(api: Api) -> None:
    api.send([event(1, event_type="E" * 1500, city="c" * 1500)])
    (row,) = api.exported_rows()
    assert len(row["event_type"]) == 1024
    assert len(row["city"]) == 1024


# --- edge cases that hold -----------------------------------------------------------------


def test_a_refused_429_request_spends_no_budget_of_the_ids_that_were_fine(api: Api) -> None:
    """All or nothing: the calm device's 900 events of the refused request are taken back,
    so it may still send its full 30 eps x 30 s right after."""
    calm = [event(n, device_id="calm-device") for n in range(900)]
    hot = [event(5000 + n, device_id="hot-device") for n in range(901)]
    status, body = api.send(calm + hot, "/2/httpapi")
    assert status == 429
    assert body["throttled_devices"] == {"hot-device": 30}
    assert body["throttled_events"] == list(range(900, 1801))
    status, body = api.send(calm, "/2/httpapi")
    assert (status, body["events_ingested"]) == (200, 900)
    assert api.stats()["events_stored"] == 900


def test_refused_requests_leave_no_dedup_keys(api: Api, clock: Clock) -> None:
    """A 400 or 429 ingests nothing: resending the valid events later stores them (they
    must not be taken for duplicates of a request that was refused)."""
    good = event(1, device_id="device-keep1", insert_id="keep-1")
    status, _ = api.send([good, event(2, device_id="abc")])  # 400: the short ID
    assert status == 400
    limited = [event(10 + n, device_id="device-keep1", insert_id=f"k{n}") for n in range(900)]
    status, _ = api.send([good, *limited], "/2/httpapi")  # 429: 901 events for one device
    assert status == 429
    assert api.send([good])[1]["events_ingested"] == 1
    stats = api.stats()
    assert (stats["events_stored"], stats["duplicates_ignored"]) == (1, 0)


def test_validation_400_comes_before_throttling_and_spends_nothing(api: Api) -> None:
    hot = [event(n, device_id="hot-device") for n in range(901)]
    status, body = api.send([*hot, event(9999, event_type=None)], "/2/httpapi")
    assert (status, body["events_with_missing_fields"]) == (400, {"event_type": [901]})
    assert api.send(hot[:900], "/2/httpapi")[0] == 200  # the refused 901 were not counted


def test_export_range_of_365_days_is_the_limit(api: Api) -> None:
    api.send([event(1)])
    assert export_raw(api, "20250101T12", "20260101T12")[0] == 200  # exactly 365 days
    status, raw = export_raw(api, "20250101T11", "20260101T12")
    assert (status, orjson.loads(raw)["code"]) == (400, 400)
    status, raw = export_raw(api, "20260101T13", "20260101T12")  # reversed
    assert (status, orjson.loads(raw)["code"]) == (400, 400)


def test_segmentation_covers_at_most_365_days(api: Api) -> None:
    api.send([event(1)])
    status, raw = segmentation_raw(api, "Viewed", "20250102", "20260101")  # 365 days
    assert status == 200
    data = orjson.loads(raw)["data"]
    assert len(data["xValues"]) == 365
    assert data["series"][0][-1] == 1
    status, raw = segmentation_raw(api, "Viewed", "20250101", "20260101")  # 366 days
    assert (status, orjson.loads(raw)["code"]) == (400, 400)


def test_export_of_a_user_only_event_hashes_the_user_id_and_dedups_by_user(api: Api) -> None:
    """§1.3: a missing device_id 'is set to a hashed version of the user_id'; §1.6: such
    events dedup on the user (the same insert_id from another user is not a duplicate)."""
    api.send(
        [
            event(1, device_id=None, user_id="user-00001", insert_id="same"),
            event(2, device_id=None, user_id="user-00002", insert_id="same"),
            event(3, device_id=None, user_id="user-00001", insert_id="same"),
        ]
    )
    rows = api.exported_rows()
    assert sorted(r["user_id"] for r in rows) == ["user-00001", "user-00002"]
    assert len({r["device_id"] for r in rows}) == 2
    assert all(len(r["device_id"]) == 32 for r in rows)
