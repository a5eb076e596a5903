"""Behaviour around the session-15 review's fixes that its pinned tests do not cover:
JSON (not Python) equality in property operations, the all-or-nothing store, torn lines,
/identify's ID lengths, deletions with nobody to delete, the daily quota reset."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import orjson
from amplitude_emulator_helpers import API_KEY, SECRET, Api, event

from mp2amp.emulators.amplitude.identify import apply_update
from mp2amp.emulators.amplitude.store import cut_torn_tail
from mp2amp.emulators.amplitude.validate import holds, same_json

AUTH = (API_KEY, SECRET)


def identify(api: Api, items: list[dict[str, Any]]) -> tuple[int, Any]:
    return api.form("/identify", {"api_key": API_KEY, "identification": orjson.dumps(items).decode()})


# --- JSON equality ----------------------------------------------------------------------------


def test_same_json_tells_booleans_integers_and_floats_apart() -> None:
    assert same_json({"a": [1, {"b": "x"}]}, {"a": [1, {"b": "x"}]})
    assert not same_json(1, True)
    assert not same_json(0, False)
    assert not same_json(2, 2.0)
    assert not same_json([1], [True])
    assert not same_json({"a": {"b": 1}}, {"a": {"b": True}})
    assert holds({"a": 1, "b": "x"}, {"a": 1})
    assert not holds({"a": 1}, {"a": True})
    assert not holds({"a": 1}, {"c": 1})


def test_post_insert_and_pre_insert_add_true_to_a_list_holding_1() -> None:
    props: dict[str, Any] = {"tags": [1]}
    apply_update(props, {"$postInsert": {"tags": True}})
    assert props["tags"] == [1, True] and type(props["tags"][1]) is bool
    props = {"tags": [1]}
    apply_update(props, {"$preInsert": {"tags": [True, True]}})
    assert props["tags"] == [True, 1] and type(props["tags"][0]) is bool


def test_remove_true_keeps_1() -> None:
    props: dict[str, Any] = {"tags": [1, True, 0, False]}
    apply_update(props, {"$remove": {"tags": [True, False]}})
    assert props["tags"] == [1, 0]
    assert [type(v) for v in props["tags"]] == [int, int]


def test_a_number_changing_from_2_to_2_0_is_stored_as_sent(api: Api) -> None:
    api.send([event(1, user_id="user-00001", user_properties={"n": 2, "l": [1]})])
    api.send([event(2, user_id="user-00001", user_properties={"n": 2.0, "l": [True]})])
    rows = {r["$insert_id"]: r["user_properties"] for r in api.exported_rows()}
    assert type(rows["insert-000002"]["n"]) is float
    assert type(rows["insert-000002"]["l"][0]) is bool


def test_skip_sync_event_with_an_operation_leaves_the_user_alone(api: Api) -> None:
    api.send([event(1, user_id="user-00001", user_properties={"plan": "free"})])
    api.send([event(2, user_id="user-00001", user_properties={"$add": {"n": 2}},
                    **{"$skip_user_properties_sync": True})])
    api.send([event(3, user_id="user-00001")])
    rows = {r["$insert_id"]: r["user_properties"] for r in api.exported_rows()}
    assert rows["insert-000002"] == {"n": 2}
    assert rows["insert-000003"] == {"plan": "free"}


# --- /identify IDs ------------------------------------------------------------------------------


def test_identify_lists_a_short_id_under_invalid_id_lengths(api: Api) -> None:
    status, body = identify(api, [{"user_id": "user-00001", "user_properties": {"a": 1}},
                                  {"device_id": "abcd", "user_properties": {"a": 1}}])
    assert status == 400
    assert body["events_with_invalid_id_lengths"] == {"device_id": [1]}
    assert body["error"] == "Invalid id length for user_id or device_id"
    assert "user-00001" not in api.emulator.ids.users  # all or nothing
    assert identify(api, [{"user_id": "abcde"}])[0] == 200  # five characters pass


# --- a write that fails -------------------------------------------------------------------------


class _FailingFile:
    """A file handle whose writes fail once the disk is full (after half the bytes landed)."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def write(self, data: bytes) -> None:
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self.real.flush()

    def close(self) -> None:
        self.real.close()


def test_a_failed_dedup_write_stores_nothing_and_applies_no_property(api: Api) -> None:
    assert api.send([event(1, user_id="user-00001", user_properties={"$add": {"n": 1}})])[0] == 200
    store = api.emulator.store
    real = store._dedup_fh
    store._dedup_fh = _FailingFile(real)  # the events line is written, then the dedup line fails
    retried = [event(2, user_id="user-00001", user_properties={"$add": {"n": 1}})]
    try:
        status, raw = api.request("POST", "/batch",
                                  orjson.dumps({"api_key": API_KEY, "events": retried}),
                                  {"Content-Type": "application/json"})
    finally:
        store._dedup_fh = real
    assert status == 500
    assert orjson.loads(raw)["code"] == 500  # JSON, as every answer of the emulator
    assert api.send(retried)[0] == 200
    rows = {r["$insert_id"]: r["user_properties"] for r in api.exported_rows()}
    assert sorted(rows) == ["insert-000001", "insert-000002"]
    assert rows["insert-000002"] == {"n": 2}  # the failed attempt's $add was taken back
    assert api.stats()["events_stored"] == 2
    dedup_lines = [line for path in (store.root / "dedup").glob("*.jsonl")
                   for line in path.read_bytes().splitlines()]
    assert all(orjson.loads(line) for line in dedup_lines)  # no torn line left behind


# --- torn lines ---------------------------------------------------------------------------------


def test_cut_torn_tail_keeps_whole_lines(tmp_path: Any) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"[1]\n[2]\n" + b"x" * 200)
    cut_torn_tail(path, chunk=16)  # the torn line is longer than one chunk
    assert path.read_bytes() == b"[1]\n[2]\n"
    path.write_bytes(b"y" * 50)
    cut_torn_tail(path, chunk=16)
    assert path.read_bytes() == b""
    path.write_bytes(b"[1]\n")
    cut_torn_tail(path)
    assert path.read_bytes() == b"[1]\n"


def test_a_torn_id_journal_line_is_cut_on_start(start_emulator: Callable[..., Api]) -> None:
    first = start_emulator(save_every_s=3600)
    assert first.send([event(1, user_id="user-00001")])[0] == 200
    data = first.emulator.config.data_dir
    with open(data / "ids.log", "ab") as fh:
        fh.write(b'[["u","user-9')  # a kill during the journal write
    second = start_emulator(data_dir=data, save_every_s=3600)
    assert second.send([event(2, user_id="user-00002")])[0] == 200
    third = start_emulator(data_dir=data, save_every_s=3600)  # replays the journal
    assert {"user-00001", "user-00002"} <= third.emulator.ids.users.keys()


def test_readers_skip_a_line_that_is_not_json(api: Api) -> None:
    assert api.send([event(1)])[0] == 200
    (hour,) = sorted((api.emulator.store.events_dir).glob("*.jsonl"))
    with open(hour, "ab") as fh:
        fh.write(b"not json\n")
    assert api.send([event(2)])[0] == 200
    assert sorted(r["$insert_id"] for r in api.exported_rows()) == ["insert-000001",
                                                                    "insert-000002"]
    status, seg = api.segmentation("Viewed", "totals", "20260101", "20260101")
    assert (status, seg["data"]["series"]) == (200, [[2]])


# --- deletions and quota -----------------------------------------------------------------------


def test_ignored_unknown_ids_add_no_job(api: Api) -> None:
    body = orjson.dumps({"user_ids": ["gone-user-1"], "ignore_invalid_ids": "true"})
    status, raw = api.request("POST", "/api/2/deletions/users", body,
                              {"Content-Type": "application/json"}, auth=AUTH)
    assert status == 200
    assert orjson.loads(raw) == [{"amplitude_ids": [], "user_ids": [],
                                  "invalid_ids": ["gone-user-1"]}]
    assert api.emulator.jobs.jobs == []


def test_daily_quota_null_restores_the_quota_the_emulator_started_with(
    start_emulator: Callable[..., Api],
) -> None:
    api = start_emulator(daily_quota=1000)
    assert api.post_json("/_emulator/faults", {"daily_quota": 3})[1]["daily_quota"] == 3
    assert api.post_json("/_emulator/faults", {"daily_quota": None})[1]["daily_quota"] == 1000
