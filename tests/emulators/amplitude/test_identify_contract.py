"""/identify and /groupidentify against the reference (amplitude-api.md §3.1, §3.2)."""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson
import pytest
from amplitude_emulator_helpers import API_KEY, Api, event


def multipart(fields: dict[str, str], boundary: str = "mp2amp-test-boundary") -> tuple[bytes, str]:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             for name, value in fields.items()]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_identify_takes_multipart_form_data(api: Api) -> None:
    # §3.1: "Body: application/x-www-form-urlencoded (or form-data)"
    identification = orjson.dumps([{"user_id": "user-00007",
                                    "user_properties": {"$set": {"tier": "gold"}}}]).decode()
    body, content_type = multipart({"api_key": API_KEY, "identification": identification})
    status, raw = api.request("POST", "/identify", body, {"Content-Type": content_type})
    assert (status, orjson.loads(raw)["code"]) == (200, 200)
    api.send([event(1, user_id="user-00007")])
    (row,) = api.exported_rows()
    assert row["user_properties"] == {"tier": "gold"}


def test_multipart_form_data_without_identification_is_missing_event(api: Api) -> None:
    body, content_type = multipart({"api_key": API_KEY})
    status, raw = api.request("POST", "/identify", body, {"Content-Type": content_type})
    assert (status, orjson.loads(raw)["error"]) == (400, "missing_event")


def test_identify_get_with_a_too_long_url_is_414(api: Api) -> None:
    # §3.1 status codes: "414 (GET URL too long; use POST)"
    identification = orjson.dumps({"user_id": "user-00008",
                                   "user_properties": {"bio": "x" * 9000}}).decode()
    fields = {"api_key": API_KEY, "identification": identification}
    status, raw = api.request("GET", "/identify?" + urllib.parse.urlencode(fields))
    assert status == 414
    assert orjson.loads(raw)["code"] == 414
    status, body = api.form("/identify", fields)  # the same identification as a POST body
    assert (status, body["code"]) == (200, 200)


def group_identify(api: Api, items: list[dict[str, Any]]) -> tuple[int, Any]:
    return api.form("/groupidentify", {"api_key": API_KEY,
                                       "identification": orjson.dumps(items).decode()})


def test_group_identify_limits_answer_400_not_413(api: Api) -> None:
    # §3.2: "maximum number of group identifies per request is 1024", "maximum number of
    # group properties per request is 1024", "maximum byte size/per request is 1 mb";
    # "Status codes: 200 and 400"
    status, body = group_identify(api, [{"group_type": "t", "group_value": f"v{n}"}
                                        for n in range(1025)])
    assert (status, body["code"]) == (400, 400)
    status, body = group_identify(api, [{"group_type": "t", "group_value": "big", "group_properties":
                                         {"$set": {f"p{n}": n for n in range(1025)}}}])
    assert (status, body["code"]) == (400, 400)
    status, body = group_identify(api, [{"group_type": "t", "group_value": f"v{n}",
                                         "group_properties": {f"p{k}": k for k in range(300)}}
                                        for n in range(4)])  # 1200 across the request
    assert (status, body["code"]) == (400, 400)
    status, body = group_identify(api, [{"group_type": "t", "group_value": "huge",
                                         "group_properties": {"blob": "x" * 1_100_000}}])
    assert (status, body["code"]) == (400, 400)
    assert api.emulator.groups == {}  # nothing applied
    status, body = group_identify(api, [{"group_type": "t", "group_value": f"v{n}",
                                         "group_properties": {"$set": {f"p{k}": k for k in range(256)}}}
                                        for n in range(4)])  # exactly 1024 properties
    assert (status, body["code"]) == (200, 200)


@pytest.mark.parametrize("identification", ["42", '"user-00001"', "null",
                                            '[{"user_id": "user-00001"}, "user-00002"]'])
def test_malformed_identification_is_missing_event(api: Api, identification: str) -> None:
    # §3.1: "400 (a missing_event message means the identification parameter is missing
    # or malformed)"
    status, body = api.form("/identify", {"api_key": API_KEY, "identification": identification})
    assert (status, body["code"], body["error"]) == (400, 400, "missing_event")
    assert api.emulator.ids.user_props == {}
