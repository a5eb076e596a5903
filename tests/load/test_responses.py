"""The classifier on every status and body shape of reference/amplitude-api.md §1.8, §2.3."""

from __future__ import annotations

import orjson
import pytest

from mp2amp.errors import AuthError, ContractError, ServerError
from mp2amp.load.responses import MAX_SERVER_WAIT, classify

IDS = [(f"dev-{i}", f"user-{i}") for i in range(8)]


def body(doc: dict) -> bytes:
    return orjson.dumps(doc)


def test_200_is_accepted():
    v = classify(200, body({"code": 200, "events_ingested": 50, "payload_size_bytes": 50,
                            "server_upload_time": 1396381378123}), ids=IDS)
    assert v.kind == "accepted"


def test_2xx_with_a_429_body_code_is_a_throttle():
    v = classify(200, body({"code": 429, "error": "Too many requests for some devices and users",
                            "throttled_events": [1]}), ids=IDS)
    assert v.kind == "sort" and v.throttled == {1}


def test_413_splits_a_request_and_rejects_a_lone_event():
    assert classify(413, body({"code": 413, "error": "Payload too large"}), ids=IDS).kind == "split"
    v = classify(413, body({"code": 413, "error": "Payload too large"}), ids=IDS[:1])
    assert v.kind == "reject_all" and v.reason == "event_too_large"


def test_400_invalid_and_missing_fields_list_exactly_those_events():
    v = classify(400, body({"code": 400, "error": "Request missing required field",
                            "events_with_missing_fields": {"event_type": [3]},
                            "events_with_invalid_fields": {"time": [3, 4, 7]}}), ids=IDS)
    assert v.kind == "sort"
    assert set(v.dead) == {3, 4, 7}
    assert v.dead[3][0] == "invalid_field"  # first list wins; one event, one dead letter
    assert v.dead[4][0] == "invalid_field" and "'time'" in v.dead[4][1]
    assert not v.throttled and not v.parked


def test_400_invalid_id_lengths_observed_shape():
    v = classify(400, body({"code": 400, "events_with_invalid_id_lengths": {"user_id": [1],
                                                                           "device_id": [0]},
                            "error": "Invalid id length for user_id or device_id"}), ids=IDS)
    assert {i: r for i, (r, _) in v.dead.items()} == {0: "invalid_id_length",
                                                       1: "invalid_id_length"}


def test_400_silenced_devices_drops_silenced_and_holds_throttled():
    doc = {"code": 400, "eps_threshold": 100, "error": "Events silenced for device_id",
           "exceeded_daily_quota_devices": {},
           "silenced_devices": ["silenced_device_id_1", "silenced_device_id_2"],
           "silenced_events": [5, 6],
           "throttled_devices": {"throttled_device_id_1": 0, "throttled_device_id_2": 100},
           "throttled_events": [3, 4]}
    v = classify(400, body(doc), ids=IDS)
    assert v.kind == "sort"
    assert {i: r for i, (r, _) in v.dead.items()} == {5: "silenced_device", 6: "silenced_device"}
    assert v.throttled == {3, 4} and v.eps_threshold == 100
    assert v.throttled_devices == {"throttled_device_id_1", "throttled_device_id_2"}


@pytest.mark.parametrize("doc", [
    {"code": 400, "error": "Invalid JSON request body"},
    {"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
    {"code": 400, "error": "Missing request body"},
    {"code": 400, "error": "Invalid event JSON"},
    {"code": 400, "error": "Invalid field values on some events",
     "events_with_invalid_fields": {"time": [99]}},   # out of range: names nobody
])
def test_400_naming_no_event_is_terminal_for_the_request(doc):
    v = classify(400, body(doc), ids=IDS)
    assert v.kind == "reject_all" and v.reason == "request_rejected"
    assert doc["error"] in v.message
    if "missing_field" in doc:
        assert "api_key" in v.message


def test_400_missing_a_request_field_rejects_the_whole_request_despite_an_index_list():
    # the documented example body: the request lacks api_key; the event list beside it
    # does not make the other events sendable (they would fail the same way)
    doc = {"code": 400, "error": "Request missing required field", "missing_field": "api_key",
           "events_with_missing_fields": {"event_type": [3]}}
    v = classify(400, body(doc), ids=IDS)
    assert v.kind == "reject_all" and v.reason == "request_rejected" and not v.dead
    assert "'api_key'" in v.message and "whole request" in v.message


@pytest.mark.parametrize("status, doc", [
    (429, {"code": 429, "error": "Too many requests for some devices and users",
           "throttled_devices": {"dev-1": 4000}, "throttled_events": [1]}),
    (429, {"code": 429, "error": "Too many requests"}),
    (503, {"code": 503, "error": "Service unavailable"}),
    (408, {"code": 408, "error": "Request timeout"}),
])
def test_a_server_wait_longer_than_the_cap_is_capped_for_every_status(status, doc):
    v = classify(status, body(doc), ids=IDS, retry_after=86400.0)
    assert v.kind in ("sort", "retry")
    assert v.retry_after == MAX_SERVER_WAIT and v.retry_after_asked == 86400.0
    short = classify(status, body(doc), ids=IDS, retry_after=MAX_SERVER_WAIT - 1)
    assert short.retry_after == MAX_SERVER_WAIT - 1 and short.retry_after_asked is None


def test_invalid_api_key_stops_without_echoing_the_key():
    v = classify(400, body({"code": 400, "error": "Invalid API key: s3cr3t-key"}), ids=IDS)
    assert v.kind == "stop" and isinstance(v.error, AuthError)
    assert "s3cr3t" not in str(v.error) and "AMPLITUDE_API_KEY" in str(v.error)


def test_429_http_v2_throttles_by_index_device_and_user():
    doc = {"code": 429, "error": "Too many requests for some devices and users",
           "eps_threshold": 30, "throttled_devices": {"dev-5": 31},
           "throttled_users": {"user-6": 32}, "throttled_events": [3, 4, 7]}
    v = classify(429, body(doc), ids=IDS, retry_after=2.0)
    assert v.kind == "sort" and v.throttled == {3, 4, 5, 6, 7} and not v.dead
    assert v.throttled_users == {"user-6"} and v.retry_after == 2.0


def test_429_batch_daily_quota_parks_those_ids():
    doc = {"code": 429, "error": "Too many requests for some devices and users",
           "eps_threshold": 1000, "throttled_devices": {"dev-1": 4000},
           "throttled_users": {"user-2": 4000},
           "exceeded_daily_quota_users": {"user-3": 500200},
           "exceeded_daily_quota_devices": {"dev-4": 500900}, "throttled_events": [1, 2, 3, 4]}
    v = classify(429, body(doc), ids=IDS)
    assert v.parked == {3, 4} and v.throttled == {1, 2}
    assert not v.dead
    # the ids over their quota are named so that their later events are held with them
    assert v.quota_users == {"user-3"} and v.quota_devices == {"dev-4"}


def test_429_naming_nobody_retries_the_whole_request_as_a_throttle():
    v = classify(429, body({"code": 429, "error": "Too many requests"}), ids=IDS,
                 retry_after=60)
    assert v.kind == "retry" and v.throttle and v.retry_after == 60


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_retries(status):
    v = classify(status, body({"code": status, "error": "Service unavailable"}), ids=IDS,
                 retry_after=3.0)
    assert v.kind == "retry" and not v.throttle and isinstance(v.error, ServerError)
    assert v.retry_after == 3.0


def test_5xx_with_an_html_page_still_retries():
    assert classify(502, b"<html>Bad gateway</html>", ids=IDS).kind == "retry"


def test_408_retries():
    assert classify(408, b"", ids=IDS).kind == "retry"


def test_403_waf_stops_with_auth_error():
    v = classify(403, body({"code": 403, "error": "Forbidden"}), ids=IDS)
    assert v.kind == "stop" and isinstance(v.error, AuthError) and "region" in str(v.error)


def test_400_invalid_request_path_stops_the_run():
    # a wrong api_host path: every batch would get it, so none is dead-lettered
    v = classify(400, body({"code": 400, "error": "Invalid request path"}), ids=IDS)
    assert v.kind == "stop" and isinstance(v.error, ContractError) and not v.dead
    assert "amplitude.api_host" in str(v.error) and "--resume" in str(v.error)


def test_404_wrong_host_stops_with_contract_error():
    v = classify(404, b"not found", ids=IDS)
    assert v.kind == "stop" and isinstance(v.error, ContractError)
    assert "api_host" in str(v.error)
