"""Session-15 adversarial review of the Amplitude emulator (reference/amplitude-api.md, README
``mp2amp emulate amplitude``). Each ``xfail(strict=True)`` test pins one defect: the test
asserts the faithful behaviour, the reason says what is wrong today.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from amplitude_emulator_helpers import API_KEY, SECRET, T0, Api, event

AUTH = (API_KEY, SECRET)
MS = int(T0 * 1000)


def identify(api: Api, items: list[dict[str, Any]]) -> tuple[int, Any]:
    return api.form("/identify", {"api_key": API_KEY, "identification": orjson.dumps(items).decode()})


def export_status(api: Api) -> int:
    status, _ = api.request("GET", "/api/2/export?start=20260101T00&end=20260131T23", auth=AUTH)
    return status


# --- user properties --------------------------------------------------------------------


def test_a_property_changing_from_1_to_true_is_stored_as_true(api: Api) -> None:
    api.send([event(1, user_id="user-00001", user_properties={"flag": 1, "paid": 0})])
    api.send([event(2, user_id="user-00001", user_properties={"flag": True, "paid": False})])
    api.send([event(3, user_id="user-00001")])
    rows = {r["$insert_id"]: r["user_properties"] for r in api.exported_rows()}
    assert rows["insert-000002"] == {"flag": True, "paid": False}
    assert rows["insert-000003"] == {"flag": True, "paid": False}
    # and the types really are booleans (== alone would not tell 1 from True)
    assert type(rows["insert-000003"]["flag"]) is bool
    assert type(rows["insert-000003"]["paid"]) is bool


def test_remove_from_a_missing_list_does_not_create_it(api: Api) -> None:
    status, _ = identify(api, [{"user_id": "user-00001",
                                "user_properties": {"$set": {"plan": "pro"}}}])
    assert status == 200
    status, _ = identify(api, [{"user_id": "user-00001",
                                "user_properties": {"$remove": {"tags": "beta"}}}])
    assert status == 200
    api.send([event(1, user_id="user-00001")])
    (row,) = api.exported_rows()
    assert row["user_properties"] == {"plan": "pro"}


def test_skip_sync_event_with_an_operation_exports_the_properties_not_the_operator(
    api: Api,
) -> None:
    api.send([event(1, user_id="user-00001", user_properties={"$set": {"plan": "pro"}},
                    **{"$skip_user_properties_sync": True})])
    (row,) = api.exported_rows()
    assert row["user_properties"] == {"plan": "pro"}


# --- /identify ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["user_id", "device_id"])
def test_identify_refuses_ids_shorter_than_five_characters(api: Api, field: str) -> None:
    status, _ = api.send([event(1, **{field: "abc"})])
    assert status == 400  # what ingestion says of the same ID
    status, body = identify(api, [{field: "abc", "user_properties": {"plan": "pro"}}])
    assert (status, body["code"]) == (400, 400)
    assert "abc" not in api.emulator.ids.users
    assert "abc" not in api.emulator.ids.devices


# --- User Privacy API -----------------------------------------------------------------------


def test_ignore_invalid_ids_answers_200_even_when_no_id_is_known(api: Api) -> None:
    api.send([event(1, user_id="user-00001")])
    body = orjson.dumps({"user_ids": ["gone-user-1"], "ignore_invalid_ids": True})
    status, raw = api.request("POST", "/api/2/deletions/users", body,
                              {"Content-Type": "application/json"}, auth=AUTH)
    assert status == 200, raw
    answer = orjson.loads(raw)
    jobs = answer if isinstance(answer, list) else [answer]
    assert any(job.get("invalid_ids") == ["gone-user-1"] for job in jobs)


# --- control endpoint -----------------------------------------------------------------------


def test_daily_quota_null_restores_the_default(api: Api) -> None:
    status, body = api.post_json("/_emulator/faults", {"daily_quota": 3})
    assert (status, body["daily_quota"]) == (200, 3)
    status, body = api.post_json("/_emulator/faults", {"daily_quota": None})
    assert status == 200
    assert body["daily_quota"] == 500_000
    status, _ = api.send([event(n, device_id="device-hot1") for n in range(5)])
    assert status == 200


# --- storage after a failed write -------------------------------------------------------------


def test_a_line_torn_by_a_kill_does_not_break_the_export_after_restart(
    start_emulator: Callable[..., Api],
) -> None:
    first = start_emulator(save_every_s=3600)
    assert first.send([event(1)])[0] == 200
    data = first.emulator.config.data_dir
    (hour,) = sorted((data / "events").glob("*.jsonl"))
    with open(hour, "ab") as fh:  # the next request's line, cut short by kill -9
        fh.write(b'{"t":%d,"p":"0123456789abcdef01234567","r":null,"a":[100000000009],'
                 b'"u":[null],"g":{},"body":{"api_key":"k","events":[{"event_type":"Vie' % MS)
    second = start_emulator(data_dir=data)
    assert second.send([event(3)])[0] == 200
    assert export_status(second) == 200
    assert sorted(r["$insert_id"] for r in second.exported_rows()) == [
        "insert-000001", "insert-000003"]
    status, seg = second.segmentation("Viewed", "totals", "20260101", "20260101")
    assert (status, seg["data"]["series"]) == (200, [[2]])


class _DiskFull:
    """The events file handle once the disk is full: part of the line lands, then ENOSPC."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def writelines(self, pieces: Any) -> None:
        data = b"".join(pieces)
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        self.real.close()


def test_a_request_whose_write_failed_is_stored_when_retried(api: Api) -> None:
    assert api.send([event(1)])[0] == 200
    store = api.emulator.store
    real = store._events_fh
    store._events_fh = _DiskFull(real)
    try:
        status, _ = api.request("POST", "/batch",
                                orjson.dumps({"api_key": API_KEY, "events": [event(2)]}),
                                {"Content-Type": "application/json"})
    finally:
        store._events_fh = real  # space was freed
    assert status >= 500  # the client knows it failed and sends it again
    status, body = api.send([event(2)])
    assert (status, body["events_ingested"]) == (200, 1)
    stats = api.stats()
    assert stats["duplicates_ignored"] == 0
    assert stats["events_stored"] == 2
