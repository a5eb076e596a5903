"""validate_events: the pure per-event check the transform's tests also rely on."""

from __future__ import annotations

from mp2amp.emulators.amplitude import validate_events


def test_valid_events_pass() -> None:
    events = [
        {"event_type": "Signed Up", "user_id": "user-00001", "time": 1_700_000_000_000,
         "event_properties": {"plan": "pro", "tags": ["a"]}, "insert_id": "abc",
         "price": 9.5, "quantity": 2, "session_id": -1, "$skip_user_properties_sync": True},
        {"event_type": "$identify", "device_id": "device-1",
         "user_properties": {"$set": {"a": 1}, "$unset": {"b": "-"}}},
    ]
    result = validate_events(events)
    assert result.ok
    assert result.failing_indices() == set()


def test_every_failing_index_is_listed_per_field() -> None:
    events = [
        {"event_type": "ok", "user_id": "user-00001"},
        {"user_id": "user-00002"},                                # no event_type
        {"event_type": "x"},                                      # no id at all
        {"event_type": "x", "user_id": "abc"},                    # too short
        {"event_type": "x", "device_id": "abcd", "user_id": "12"},  # both too short
        {"event_type": "x", "user_id": "user-00005", "time": "2024-01-01T00:00:00Z"},
        {"event_type": "x", "user_id": "Undefined"},              # blocklisted, any case
        {"event_type": "x", "device_id": "00000000-0000-0000-0000-000000000000"},
        {"event_type": "x", "user_id": "user-00008", "time": 1.5e12},  # not an integer
        "not an event",
        {"event_type": "x", "user_id": "user-00010",
         "user_properties": {"$set": {"a": 1}, "plain": 2}},      # operations mixed with keys
        {"event_type": "", "user_id": "user-00011"},
    ]
    result = validate_events(events)
    assert result.missing_fields == {"event_type": [1, 11], "user_id": [2], "device_id": [2]}
    assert result.invalid_id_lengths == {"user_id": [3, 4], "device_id": [4]}
    assert result.invalid_fields == {"time": [5, 8], "user_id": [6], "device_id": [7],
                                     "event": [9], "user_properties": [10]}
    assert result.failing_indices() == set(range(1, 12))
    body = result.error_body()
    assert body["code"] == 400
    assert "missing_field" not in body  # that key would make SDKs drop the whole batch
    assert body["events_with_invalid_id_lengths"] == {"user_id": [3, 4], "device_id": [4]}


def test_min_id_length_option() -> None:
    events = [{"event_type": "x", "user_id": "abc"}]
    assert not validate_events(events).ok
    assert validate_events(events, min_id_length=3).ok


def test_depth_limit_of_40() -> None:
    nested: dict[str, object] = {"leaf": 1}
    for _ in range(39):
        nested = {"n": nested}
    assert validate_events([{"event_type": "x", "user_id": "user-1", "event_properties": nested}]).ok
    deeper = {"n": nested}
    result = validate_events([{"event_type": "x", "user_id": "user-1", "event_properties": deeper}])
    assert result.invalid_fields == {"event_properties": [0]}


def test_error_message_names_the_worst_group() -> None:
    only_lengths = validate_events([{"event_type": "x", "user_id": "abc"}]).error_body()
    assert only_lengths["error"] == "Invalid id length for user_id or device_id"
    invalid = validate_events([{"event_type": "x", "user_id": "user-1", "time": "x"}]).error_body()
    assert invalid["error"] == "Invalid field values on some events"


def test_counts_ids_when_asked() -> None:
    per_device: dict[str, int] = {}
    per_user: dict[str, int] = {}
    events = [{"event_type": "x", "user_id": "user-1", "device_id": "dev-01"},
              {"event_type": "x", "device_id": "dev-01"}]
    validate_events(events, 5, (per_device, per_user))
    assert per_device == {"dev-01": 2}
    assert per_user == {"user-1": 1}
