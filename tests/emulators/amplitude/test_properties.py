"""User/group properties: the operations, /identify, /groupidentify and events carrying them."""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson
import pytest
from amplitude_emulator_helpers import API_KEY, Api, event

from mp2amp.emulators.amplitude.identify import apply_update


@pytest.mark.parametrize(("start", "update", "expected"), [
    ({}, {"$set": {"a": 1}}, {"a": 1}),
    ({"a": 1}, {"$setOnce": {"a": 2, "b": 3}}, {"a": 1, "b": 3}),
    ({"n": 2}, {"$add": {"n": 3, "m": "1.5"}}, {"n": 5, "m": 1.5}),
    ({"l": ["x"]}, {"$append": {"l": ["x", "y"]}}, {"l": ["x", "x", "y"]}),
    ({"l": "x"}, {"$prepend": {"l": "w"}}, {"l": ["w", "x"]}),
    ({"a": 1, "b": 2}, {"$unset": {"a": "-"}}, {"b": 2}),
    ({"l": ["b", "c"]}, {"$preInsert": {"l": ["a", "b"]}}, {"l": ["a", "b", "c"]}),
    ({"l": ["a"]}, {"$postInsert": {"l": ["a", "b", "b"]}}, {"l": ["a", "b"]}),
    ({"l": ["a", "b", "a"]}, {"$remove": {"l": "a"}}, {"l": ["b"]}),
    ({"a": 1}, {"$clearAll": "-"}, {}),
    ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),  # plain keys: an update of those keys
])
def test_operations(start: dict[str, Any], update: dict[str, Any], expected: dict[str, Any]) -> None:
    props = dict(start)
    apply_update(props, update)
    assert props == expected


def test_events_carry_user_properties_as_of_ingestion(api: Api) -> None:
    api.send([event(1, user_id="user-00001", user_properties={"plan": "free"}),
              event(2, user_id="user-00001"),
              event(3, user_id="user-00001", event_type="$identify",
                    user_properties={"$set": {"plan": "pro"}, "$add": {"logins": 1}}),
              event(4, user_id="user-00001"),
              event(5, user_id="user-00001", user_properties={"plan": "historic"},
                    **{"$skip_user_properties_sync": True}),
              event(6, user_id="user-00001")])
    rows = sorted(api.exported_rows(), key=lambda r: r["$insert_id"])
    assert [r["user_properties"] for r in rows] == [
        {"plan": "free"}, {"plan": "free"}, {"plan": "pro", "logins": 1},
        {"plan": "pro", "logins": 1}, {"plan": "historic"}, {"plan": "pro", "logins": 1}]


def test_identify_api_form_encoded(api: Api) -> None:
    status, body = api.form("/identify", {"api_key": API_KEY, "identification": orjson.dumps(
        [{"user_id": "user-00009", "user_properties": {"$set": {"tier": "gold"},
                                                       "$append": {"tags": "vip"}}}]).decode()})
    assert (status, body["code"]) == (200, 200)
    single = {"user_id": "user-00009", "user_properties": {"city_of_birth": "Oslo"}}
    query = urllib.parse.urlencode({"api_key": API_KEY, "identification": orjson.dumps(single)})
    assert api.request("GET", f"/identify?{query}")[0] == 200  # query parameters work too
    api.send([event(1, user_id="user-00009")])
    (row,) = api.exported_rows()
    assert row["user_properties"] == {"tier": "gold", "tags": ["vip"], "city_of_birth": "Oslo"}
    assert api.stats()["events_stored"] == 1  # identify calls are not events


def test_identify_errors(api: Api) -> None:
    status, body = api.form("/identify", {"api_key": API_KEY})
    assert (status, body["error"]) == (400, "missing_event")
    status, body = api.form("/identify", {"api_key": "nope", "identification": "{}"})
    assert body["error"].startswith("Invalid API key:")
    mixed = [{"user_id": "user-00001", "user_properties": {"$set": {"a": 1}, "b": 2}},
             {"device_id": "device-1"}, {"user_properties": {}}]
    status, body = api.form("/identify", {"api_key": API_KEY,
                                          "identification": orjson.dumps(mixed).decode()})
    assert status == 400
    assert body["events_with_invalid_fields"] == {"user_properties": [0]}
    assert body["events_with_missing_fields"] == {"user_id": [2], "device_id": [2]}
    assert body["error"] == "Request missing required field"


def test_group_identify_and_group_properties_on_events(api: Api) -> None:
    ident = {"group_type": "company_id", "group_value": "acme",
             "group_properties": {"$set": {"industry": "retail"}, "$add": {"seats": 5}}}
    status, _ = api.form("/groupidentify", {"api_key": API_KEY,
                                            "identification": orjson.dumps(ident).decode()})
    assert status == 200
    api.send([event(1, user_id="user-00001", groups={"company_id": "acme"}),
              event(2, event_type="$groupidentify", groups={"company_id": "acme"},
                    group_properties={"$set": {"industry": "grocery"}}),
              event(3, user_id="user-00001", groups={"company_id": ["acme"]})])
    rows = sorted(api.exported_rows(), key=lambda r: r["$insert_id"])
    assert rows[0]["group_properties"] == {"company_id": {"acme": {"industry": "retail", "seats": 5}}}
    assert rows[2]["group_properties"] == {"company_id": {"acme": {"industry": "grocery", "seats": 5}}}
    assert rows[0]["groups"] == {"company_id": ["acme"]}  # exports list group values
    too_many = [{"group_type": "t", "group_value": str(n)} for n in range(1025)]
    status, body = api.form("/groupidentify", {"api_key": API_KEY,
                                               "identification": orjson.dumps(too_many).decode()})
    assert (status, body["code"]) == (400, 400)  # §3.2 lists only 200 and 400
