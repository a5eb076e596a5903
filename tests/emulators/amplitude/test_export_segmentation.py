"""Export API (zip of gzipped NDJSON per upload hour), segmentation, and amplitude_id merging."""

from __future__ import annotations

from collections.abc import Callable

from amplitude_emulator_helpers import API_KEY, SECRET, T0, Api, Clock, event

MS = int(T0 * 1000)


def test_export_files_per_upload_hour_with_amplitude_names(api: Api, clock: Clock) -> None:
    api.send([event(1, user_id="user-00001", ip="$remote", carrier="Telia", app_version="1.2",
                    price=2.5, quantity=2, productId="sku-1",
                    event_properties={"long": "y" * 2000})])
    clock.advance(3600)
    api.send([event(2, time=MS - 86_400_000)])  # historical event: grouped by upload hour
    status, files = api.export("20260101T12", "20260101T13")
    assert status == 200
    assert sorted(files) == ["187520/187520_2026-01-01_12#1.json.gz",
                             "187520/187520_2026-01-01_13#1.json.gz"]
    (first,) = files["187520/187520_2026-01-01_12#1.json.gz"]
    assert first["$insert_id"] == "insert-000001"
    assert first["event_time"] == "2026-01-01 12:00:00.001000"
    assert first["server_upload_time"] == "2026-01-01 12:00:00.000000"
    assert first["ip_address"] == "127.0.0.1"
    assert first["device_carrier"] == "Telia"
    assert first["version_name"] == "1.2"
    assert first["event_properties"]["long"] == "y" * 1024  # strings are cut at 1024
    assert first["event_properties"]["$revenue"] == 5.0
    assert first["event_properties"]["$productId"] == "sku-1"
    assert isinstance(first["amplitude_id"], int)
    assert first["app"] == 187520
    assert len(first["uuid"]) == 36
    (second,) = files["187520/187520_2026-01-01_13#1.json.gz"]
    assert second["event_time"] == "2025-12-31 12:00:00.000000"
    assert second["server_upload_time"] == "2026-01-01 13:00:00.000000"
    assert api.export("20260101T13", "20260101T13")[1].keys() == {
        "187520/187520_2026-01-01_13#1.json.gz"}


def test_export_keeps_at_most_5_group_types_and_10_values(api: Api) -> None:
    groups = {"a": ["1", "2", "3", "4"], "b": "x", "c": ["5", "6", "7", "8", "9"],
              "d": "late", "e": "e1", "f": "f1"}
    api.send([event(1, groups=groups)])
    (row,) = api.exported_rows()
    assert row["groups"] == {"a": ["1", "2", "3", "4"], "b": ["x"], "c": ["5", "6", "7", "8", "9"]}
    api.send([event(2, groups={t: t for t in "abcdefg"})])
    (row,) = [r for r in api.exported_rows() if r["$insert_id"] == "insert-000002"]
    assert list(row["groups"]) == ["a", "b", "c", "d", "e"]


def test_export_errors(api: Api) -> None:
    assert api.export("20260101T00", "20260101T23")[0] == 404  # nothing stored yet
    api.send([event(1)])
    assert api.export("20260101T13", "20260101T14")[0] == 404
    assert api.export("2026-01-01", "20260101T14")[0] == 400
    assert api.export("20240101T00", "20260101T14")[0] == 400  # more than 365 days
    status, _ = api.request("GET", "/api/2/export?start=20260101T00&end=20260101T23",
                            auth=(API_KEY, "wrong-secret"))
    assert status == 401


def test_user_only_events_get_a_hashed_device_id(api: Api) -> None:
    api.send([event(1, device_id=None, user_id="user-00001")])
    (row,) = api.exported_rows()
    assert row["device_id"] and row["device_id"] != "user-00001"


def test_anonymous_device_joins_the_user(api: Api) -> None:
    api.send([event(1, device_id="device-anon1"), event(2, device_id="device-anon1")])
    api.send([event(3, device_id="device-anon1", user_id="user-00007")])
    api.send([event(4, device_id="device-other", user_id="user-00007")])  # second device
    api.send([event(5, device_id="device-anon2"), event(6, device_id="device-anon2",
                                                         user_id="user-00007")])
    rows = api.exported_rows()
    assert len({r["amplitude_id"] for r in rows}) == 1
    _, body = api.segmentation("Viewed", "uniques", "20260101", "20260101")
    assert body["data"]["series"] == [[1]]


def test_segmentation_totals_uniques_in_project_timezone(
    start_emulator: Callable[..., Api],
) -> None:
    api = start_emulator(timezone="America/Los_Angeles")
    # 2026-01-01 12:00 UTC is 04:00 in Los Angeles; 2026-01-02 03:00 UTC is still Jan 1 there.
    api.send([event(1, device_id="device-aaa1"), event(2, device_id="device-aaa1"),
              event(3, device_id="device-bbb2", time=MS + 15 * 3_600_000),
              event(4, device_id="device-bbb2", time=MS + 13 * 3_600_000, event_type="Bought"),
              event(5, device_id="device-ccc3", time=MS + 24 * 3_600_000),
              event(6, device_id="device-ccc3", event_type="$identify",
                    user_properties={"$set": {"a": 1}})])
    status, body = api.segmentation("Viewed", "totals", "20251231", "20260102")
    assert status == 200
    assert body == {"data": {"series": [[0, 3, 1]], "seriesLabels": [0],
                             "seriesCollapsed": [[{"setId": "", "value": 4}]],
                             "xValues": ["2025-12-31", "2026-01-01", "2026-01-02"]}}
    _, body = api.segmentation("Viewed", "uniques", "20260101", "20260102")
    assert body["data"]["series"] == [[2, 1]]
    assert body["data"]["seriesCollapsed"] == [[{"setId": "", "value": 3}]]
    _, body = api.segmentation("_all", "totals", "20260101", "20260102")
    assert body["data"]["series"] == [[4, 1]]  # $identify is not an event here
    _, body = api.segmentation("_active", "uniques", "20260101", "20260101")
    assert body["data"]["series"] == [[2]]


def test_segmentation_follows_dst_and_new_events(start_emulator: Callable[..., Api]) -> None:
    api = start_emulator(timezone="America/Los_Angeles")
    pdt_midnight = 1_773_041_400_000  # 2026-03-09 07:30 UTC = 00:30 PDT (23:30 if still PST)
    api.send([event(1, time=pdt_midnight), event(2, time=pdt_midnight - 3_600_000)])
    _, body = api.segmentation("Viewed", "totals", "20260308", "20260309")
    assert body["data"]["series"] == [[1, 1]]
    api.send([event(3, time=pdt_midnight)])  # the index picks up what arrives later
    _, body = api.segmentation("Viewed", "totals", "20260308", "20260309")
    assert body["data"]["series"] == [[1, 2]]


def test_segmentation_errors(api: Api) -> None:
    assert api.segmentation("Viewed", "average", "20260101", "20260102")[0] == 400
    assert api.segmentation("Viewed", "totals", "2026-01-01", "20260102")[0] == 400
    status, body = api.get_json("/api/2/events/segmentation?start=20260101&end=20260101")
    assert status == 400
    assert "e is required" in body["error"]
    status, _ = api.get_json("/api/2/events/segmentation?e=%7B%7D", auth=(API_KEY, "x"))
    assert status == 401
    assert SECRET != "x"


def test_group_properties_of_an_ordinary_event_are_ignored(api: Api) -> None:
    # §1.3: group_properties is "Only used when event_type is $groupidentify; otherwise ignored."
    api.send([event(1, group_properties={"$set": {"industry": "retail"}}),
              event(2, group_properties={"plan": "pro"}, groups={"company_id": "acme"}),
              event(3, event_type="$groupidentify", groups={"company_id": "acme"},
                    group_properties={"$set": {"industry": "grocery"}}),
              event(4, groups={"company_id": "acme"}, group_properties={"plan": "pro"})])
    rows = sorted(api.exported_rows(), key=lambda r: r["$insert_id"])
    assert [r["group_properties"] for r in rows] == [
        {}, {}, {"$set": {"industry": "grocery"}},
        {"company_id": {"acme": {"industry": "grocery"}}}]
    assert api.emulator.groups == {"company_id\x1facme": {"industry": "grocery"}}
