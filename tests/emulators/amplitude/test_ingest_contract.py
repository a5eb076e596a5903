"""/2/httpapi and /batch over loopback: every status and error body of the contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from amplitude_emulator_helpers import API_KEY, T0, Api, Clock, event


@pytest.mark.parametrize("endpoint", ["/2/httpapi", "/batch"])
def test_accepts_events_and_reports_them(api: Api, endpoint: str) -> None:
    payload = {"api_key": API_KEY, "events": [event(1), event(2, user_id="user-00002")]}
    status, body = api.post_json(endpoint, payload)
    assert status == 200
    assert body == {"code": 200, "events_ingested": 2,
                    "payload_size_bytes": len(orjson.dumps(payload)),
                    "server_upload_time": int(T0 * 1000)}
    assert api.stats()["events_stored"] == 2


def test_empty_events_list_is_accepted_and_stores_nothing(api: Api) -> None:
    status, body = api.send([])
    assert (status, body["events_ingested"]) == (200, 0)
    assert api.stats()["events_stored"] == 0
    assert api.export("20260101T00", "20260101T23")[0] == 404


def test_gzip_request_body(api: Api) -> None:
    status, body = api.post_json("/batch", {"api_key": API_KEY, "events": [event(1)]},
                                 gzip_body=True)
    assert (status, body["events_ingested"]) == (200, 1)


def test_undecodable_gzip_is_a_400(api: Api) -> None:
    status, raw = api.request("POST", "/batch", b"plainly not gzip",
                              {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    body = orjson.loads(raw)
    assert (status, body["code"], body["error"]) == (400, 400, "Invalid JSON request body")
    assert "Content-Encoding" in body["detail"]


def test_request_level_errors(api: Api) -> None:
    status, raw = api.request("POST", "/batch", b"{not json", {"Content-Type": "application/json"})
    assert (status, orjson.loads(raw)) == (400, {"code": 400, "error": "Invalid JSON request body"})
    status, raw = api.request("POST", "/batch", b"", {"Content-Type": "application/json"})
    assert (status, orjson.loads(raw)["error"]) == (400, "Missing request body")
    status, body = api.post_json("/batch", {"events": [event(1)]})
    assert (status, body["missing_field"]) == (400, "api_key")
    assert body["code"] == 400
    status, body = api.post_json("/batch", {"api_key": API_KEY})
    assert (status, body["missing_field"]) == (400, "events")
    status, body = api.post_json("/2/httpapi", {"api_key": "wrong-key", "events": [event(1)]})
    assert status == 400
    assert body["error"].startswith("Invalid API key:")
    assert api.stats()["events_stored"] == 0


def test_payload_too_large(api: Api) -> None:
    too_many = [event(n) for n in range(2001)]
    for endpoint in ("/2/httpapi", "/batch"):
        status, body = api.send(too_many, endpoint)
        assert (status, body) == (413, {"code": 413, "error": "Payload too large"})
    big = [event(1, event_properties={"blob": "x" * 1_100_000})]
    status, body = api.send(big, "/2/httpapi")
    assert (status, body["code"]) == (413, 413)
    status, body = api.send(big, "/batch")  # 20 MB there
    assert status == 200
    status, _ = api.post_json("/2/httpapi", {"api_key": API_KEY, "events": big}, gzip_body=True)
    assert status == 413  # the limit applies to the decompressed body


def test_http_v2_takes_exactly_one_decimal_megabyte(api: Api) -> None:
    # "request size exceeds 1MB" -> 413: 1,000,000 bytes pass (the uploader's default
    # /2/httpapi cap is that number), one byte more does not
    def payload(size: int) -> dict[str, Any]:
        doc = {"api_key": API_KEY, "events": [event(1, event_properties={"blob": ""})]}
        pad = size - len(orjson.dumps(doc))
        doc["events"][0]["event_properties"]["blob"] = "x" * pad
        assert len(orjson.dumps(doc)) == size
        return doc
    assert api.post_json("/2/httpapi", payload(1_000_001))[0] == 413
    assert api.post_json("/2/httpapi", payload(1_000_000))[0] == 200


def test_invalid_events_are_all_listed_and_nothing_is_ingested(api: Api) -> None:
    events = [event(0), event(1, event_type=None), event(2, device_id="abc"),
              event(3, time="yesterday"), event(4, device_id="null"), event(5)]
    status, body = api.send(events)
    assert status == 400
    assert body["code"] == 400
    assert body["events_with_missing_fields"] == {"event_type": [1]}
    assert body["events_with_invalid_id_lengths"] == {"device_id": [2, 4]}
    assert body["events_with_invalid_fields"] == {"time": [3]}
    assert api.stats()["events_stored"] == 0


def test_blocklisted_ids_and_min_id_length_option(api: Api) -> None:
    status, body = api.send([event(0, device_id="Anonymous"), event(1, user_id="undefined")])
    assert status == 400
    assert body["events_with_invalid_fields"] == {"device_id": [0], "user_id": [1]}
    status, _ = api.send([event(0, device_id="ab1")], options={"min_id_length": 3})
    assert status == 200
    status, body = api.send([event(0)], options={"min_id_length": "three"})
    assert status == 400


def test_all_zero_ids_are_refused_as_device_ids_only(api: Api) -> None:
    """The reference's all-zero rule is the iOS Limit Ad Tracking IDFA: device IDs. A user
    ID of zeros passes unless it is on the blocklist ("0", the all-zero UUID)."""
    status, body = api.send([event(0, device_id="00000000-0000-0000"),
                             event(1, user_id="00000", device_id=None),
                             event(2, user_id="0", device_id=None)],
                            options={"min_id_length": 1})
    assert status == 400
    assert body["events_with_invalid_fields"] == {"device_id": [0], "user_id": [2]}
    status, _ = api.send([event(1, user_id="00000", device_id=None)])
    assert status == 200


def test_httpapi_throttles_a_device_above_30_eps(api: Api, clock: Clock) -> None:
    hot = [event(n, device_id="hot-device") for n in range(901)]
    mixed = [event(9999, device_id="calm-device"), *hot]
    status, body = api.send(mixed, "/2/httpapi")
    assert status == 429
    assert body["code"] == 429
    assert body["error"] == "Too many requests for some devices and users"
    assert body["eps_threshold"] == 30
    assert body["throttled_devices"] == {"hot-device": 30}
    assert body["throttled_users"] == {}
    assert body["throttled_events"] == list(range(1, 902))
    assert body["exceeded_daily_quota_devices"] == {}
    assert api.stats()["events_stored"] == 0
    status, _ = api.send(hot[:900], "/2/httpapi")  # exactly 30 eps over 30 s is allowed
    assert status == 200
    status, body = api.send([event(5000, device_id="hot-device")], "/2/httpapi")
    assert status == 429
    clock.advance(61)  # the 30-second average has decayed
    status, _ = api.send([event(5000, device_id="hot-device")], "/2/httpapi")
    assert status == 200


def test_batch_allows_1000_eps_and_eps_limit_overrides(start_emulator: Callable[..., Api]) -> None:
    api = start_emulator()
    status, _ = api.send([event(n, device_id="busy-device") for n in range(2000)], "/batch")
    assert status == 200
    limited = start_emulator(eps_limit=10, data_dir=api.emulator.config.data_dir.parent / "b")
    status, body = limited.send([event(n, user_id="user-hot-1") for n in range(301)], "/batch")
    assert status == 429
    assert body["eps_threshold"] == 10
    assert body["throttled_users"] == {"user-hot-1": 10}


def test_daily_quota_per_id(start_emulator: Callable[..., Api], clock: Clock) -> None:
    api = start_emulator(daily_quota=100)
    assert api.send([event(n, device_id="spammy-device") for n in range(60)])[0] == 200
    clock.advance(3600)
    status, body = api.send([event(100 + n, device_id="spammy-device") for n in range(60)]
                            + [event(500, user_id="other-user")])
    assert status == 429
    assert body["exceeded_daily_quota_devices"] == {"spammy-device": 120}
    assert body["exceeded_daily_quota_users"] == {}
    assert body["throttled_events"] == list(range(60))
    clock.advance(23 * 3600)  # the first hour has left the rolling 24 h
    status, _ = api.send([event(100 + n, device_id="spammy-device") for n in range(60)])
    assert status == 200


def test_insert_id_dedup_within_seven_days(api: Api, clock: Clock) -> None:
    first = event(1, device_id="device-a", insert_id="same-insert")
    assert api.send([first])[1]["events_ingested"] == 1
    again = api.send([first, dict(first)])  # also a duplicate inside one request
    assert again == (200, {"code": 200, "events_ingested": 2, "payload_size_bytes":
                           again[1]["payload_size_bytes"], "server_upload_time": int(T0 * 1000)})
    other_device = event(1, device_id="device-b", insert_id="same-insert")
    by_user = event(1, device_id=None, user_id="user-00001", insert_id="same-insert")
    api.send([other_device, by_user, dict(by_user)])
    assert api.stats()["events_stored"] == 3
    assert api.stats()["duplicates_ignored"] == 3
    clock.advance(7 * 86400 - 1)
    api.send([first])
    assert api.stats()["events_stored"] == 3
    clock.advance(2)  # 7 days after the first receipt: the key is forgotten
    api.send([first])
    assert api.stats()["events_stored"] == 4
    status, ids = api.get_json("/_emulator/insert_ids", auth=None)
    assert status == 200
    assert sorted(map(tuple, ids)) == [("device-a", "same-insert", 2),
                                       ("device-b", "same-insert", 1),
                                       ("user-00001", "same-insert", 1)]


def test_status_and_code_always_agree_and_stats_count_them(api: Api) -> None:
    api.send([event(1)])
    api.send([event(2, device_id="x")])
    api.send([event(n) for n in range(2001)])
    status, raw = api.request("POST", "/2/nothing-here", b"{}")
    assert (status, orjson.loads(raw)) == (400, {"code": 400, "error": "Invalid request path"})
    status, raw = api.request("GET", "/batch")
    assert (status, orjson.loads(raw)["code"]) == (400, 400)
    requests = api.stats()["requests"]
    assert requests == {"200": 1, "400": 3, "413": 1}  # the stats calls are not counted
