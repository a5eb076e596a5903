"""Second-pass review of 09c2588 (the Amplitude emulator's group updates without IDs,
segmentation's refused parameters, the Mixpanel emulator's secret-only credentials).

Each xfail pins one confirmed defect; the unmarked tests guard paths the fix's own tests
did not cover (a kill replayed from ids.log, the official Mixpanel SDK's /import)."""

from __future__ import annotations

import base64
import gzip
import io
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator, read_received

API_KEY = "review-api-key"
SECRET = "review-secret"
T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC
T0_MS = int(T0 * 1000)


def _request(url: str, method: str = "GET", body: bytes | None = None,
             auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json"} if body else {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@contextmanager
def amplitude(data_dir: Path, **settings: Any) -> Iterator[tuple[str, AmplitudeEmulator]]:
    emulator = AmplitudeEmulator(AmplitudeConfig(data_dir=data_dir, api_key=API_KEY,
                                                 secret_key=SECRET, now=lambda: T0, **settings))
    with emulator.running() as url:
        yield url, emulator


def _send_raw(url: str, events_json: list[str]) -> tuple[int, bytes]:
    body = b'{"api_key":"' + API_KEY.encode() + b'","events":[' + ",".join(events_json).encode() + b"]}"
    return _request(url + "/2/httpapi", "POST", body)


def _send(url: str, events: list[dict[str, Any]]) -> tuple[int, bytes]:
    return _send_raw(url, [orjson.dumps(e).decode() for e in events])


def _exported(url: str) -> list[dict[str, Any]]:
    status, raw = _request(f"{url}/api/2/export?start=20260101T00&end=20260101T23",
                           auth=(API_KEY, SECRET))
    if status == 404:
        return []
    assert status == 200, raw
    rows: list[dict[str, Any]] = []
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for name in sorted(zf.namelist()):
            rows += [orjson.loads(line) for line in gzip.decompress(zf.read(name)).splitlines()]
    return rows


def _stats(url: str) -> dict[str, Any]:
    status, raw = _request(url + "/_emulator/stats")
    assert status == 200
    result: dict[str, Any] = orjson.loads(raw)
    return result


def _group_update(insert_id: str, groups: dict[str, Any], member: int = 1) -> dict[str, Any]:
    """What amplitude-analytics' group_identify() sends: groups, no user_id/device_id."""
    return {"event_type": "$groupidentify", "groups": groups,
            "group_properties": {"$add": {"member": member}}, "insert_id": insert_id,
            "time": T0_MS}


# --- Amplitude: /_emulator/insert_ids and the group updates' dedup key ------------------------

def test_insert_ids_check_does_not_report_distinct_group_updates_as_duplicates(
        tmp_path: Path) -> None:
    """README: ``/_emulator/insert_ids`` is "the 'exactly once' check"; group updates without
    IDs are "deduplicated by its groups plus insert_id", so the same insert_id for two
    groups is two events, each stored once (stats agree). The check says one event stored
    twice: [[null, "g-1", 2]]."""
    with amplitude(tmp_path / "amp") as (url, _):
        assert _send(url, [_group_update("g-1", {"org": "engineering"})])[0] == 200
        assert _send(url, [_group_update("g-1", {"org": "sales"})])[0] == 200
        stats = _stats(url)
        assert (stats["events_stored"], stats["duplicates_ignored"]) == (2, 0)
        status, raw = _request(url + "/_emulator/insert_ids")
    rows = orjson.loads(raw)
    assert status == 200
    assert sum(n for _, _, n in rows) == 2
    assert all(n == 1 for _, _, n in rows), rows  # nothing was stored twice


def test_group_update_naming_no_group_value_is_refused(tmp_path: Path) -> None:
    """The fix lets an event without IDs through only as a group update "that names groups"
    (README), and its own test refuses ``groups: {}`` as naming nobody and no group.
    ``{"org": []}`` names no group either: it is answered 200, stored (exported with no
    person and no group) and updates no group."""
    with amplitude(tmp_path / "amp") as (url, emulator):
        status, raw = _send(url, [_group_update("g-1", {"org": []})])
        stored = _stats(url)["events_stored"]
        groups = dict(emulator.groups)
    assert groups == {}
    assert (status, stored) == (400, 0), raw
    assert orjson.loads(raw)["events_with_missing_fields"] == {"user_id": [0], "device_id": [0]}


def test_group_update_with_empty_id_strings_exports_null_ids(tmp_path: Path) -> None:
    """README: such a group update "exports with amplitude_id, user_id and device_id null".
    Empty strings are no IDs (validation and ingestion take it as a group update), but the
    export row carries the sent ``user_id: ""``."""
    update = dict(_group_update("g-1", {"org": "engineering"}), user_id="", device_id="")
    with amplitude(tmp_path / "amp") as (url, emulator):
        assert _send(url, [update])[0] == 200
        assert emulator.groups == {"org\x1fengineering": {"member": 1}}
        rows = _exported(url)
    assert len(rows) == 1
    row = rows[0]
    assert (row["amplitude_id"], row["user_id"], row["device_id"]) == (None, None, None)


def test_deep_groups_in_a_group_update_neither_crash_nor_swallow_the_retry(
        tmp_path: Path) -> None:
    """The same event with a device_id is accepted (200): only the new no-ID path
    re-serialises ``groups``. The crash comes mid-``_store`` without the roll-back of
    the write-failure path: the Viewed event before it already holds its dedup key, so
    the client's retry of it is answered 200 and never stored (lost)."""
    deep = "[" * 300 + '"engineering"' + "]" * 300
    viewed = orjson.dumps({"event_type": "Viewed", "user_id": "user-00001",
                           "insert_id": "v-1", "time": T0_MS}).decode()
    update = ('{"event_type":"$groupidentify","groups":{"org":' + deep
              + f'}},"insert_id":"g-1","time":{T0_MS}}}')
    with amplitude(tmp_path / "amp") as (url, _):
        first, body = _send_raw(url, [viewed, update])
        answered_json = body[:1] == b"{"
        retry, _ = _send_raw(url, [viewed])  # a client retries what was not accepted
        kept = [r["event_type"] for r in _exported(url)]
    assert retry == 200
    # answered with Amplitude's JSON (200, or a 400 naming the event), and the retried
    # Viewed stored once: here (False, 0), a 500 text page and the Viewed event lost
    assert (first in (200, 400) and answered_json, kept.count("Viewed")) == (True, 1), body[:60]


# --- Amplitude: guards on paths the fix's tests did not take ----------------------------------

def test_group_updates_without_ids_survive_a_kill_replayed_from_ids_log(tmp_path: Path) -> None:
    """A kill before any state.json save (the data folder copied while running): the
    restart replays ids.log. The group's properties, the group update's dedup key and the
    counts come back; a person event's amplitude_id is still handed out once."""
    live, killed = tmp_path / "live", tmp_path / "killed"
    viewed = {"event_type": "Viewed", "user_id": "user-00001", "insert_id": "v-1",
              "time": T0_MS, "groups": {"org": "engineering"}}
    with amplitude(live, save_every_s=600) as (url, _):
        assert _send(url, [_group_update("g-1", {"org": "engineering"}, 2)])[0] == 200
        assert _send(url, [viewed, _group_update("g-2", {"org": "engineering"}, 3)])[0] == 200
        shutil.copytree(live, killed)  # what a kill -9 leaves: no state.json yet
    assert not (killed / "state.json").exists()
    with amplitude(killed) as (url, emulator):
        assert emulator.groups == {"org\x1fengineering": {"member": 5}}
        assert _send(url, [_group_update("g-1", {"org": "engineering"}, 2)])[0] == 200
        assert emulator.groups == {"org\x1fengineering": {"member": 5}}  # a duplicate
        stats = _stats(url)
        assert (stats["events_stored"], stats["duplicates_ignored"]) == (3, 1)
        second = {"event_type": "Viewed", "user_id": "user-00002", "insert_id": "v-2",
                  "time": T0_MS}
        assert _send(url, [second])[0] == 200
        rows = _exported(url)
    ids = [(r["event_type"], r["amplitude_id"]) for r in rows]
    assert ids == [("$groupidentify", None), ("Viewed", 100_000_000_001),
                   ("$groupidentify", None), ("Viewed", 100_000_000_002)]


# --- Mixpanel: the official SDK's /import with the emulator's credentials ---------------------

def _mixpanel_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "project.json").write_bytes(orjson.dumps({
        "project_id": 4242, "timezone": "UTC", "legacy_time": False, "group_keys": []}))
    (root / "events").mkdir()
    return root


@pytest.mark.parametrize(("service_account", "api_secret", "sdk_sa_passes", "sdk_secret_passes"), [
    (None, "the-real-secret", False, True),
    ("me:right", None, True, False),
    ("me:right", "the-real-secret", True, True),
])
def test_official_mixpanel_sdk_import_passes_only_with_configured_credentials(
        tmp_path: Path, service_account: str | None, api_secret: str | None,
        sdk_sa_passes: bool, sdk_secret_passes: bool) -> None:
    """mixpanel 5.x ``import_data`` sends a service account as Basic auth plus
    ``?project_id=`` (ServiceAccountCredentials), or the legacy ``HTTPBasicAuth(api_secret,
    "")`` with ``api_key`` in the form: each lands exactly when that credential is configured."""
    from mixpanel import Consumer, Mixpanel, MixpanelException, ServiceAccountCredentials

    data = _mixpanel_project(tmp_path / "project")
    emulator = MixpanelEmulator(MixpanelConfig(
        data_dir=data, service_account=service_account, api_secret=api_secret,
        clock=lambda: 1_710_000_000.0, export_per_second=None, export_per_hour=None))
    outcomes: dict[str, bool] = {}
    with emulator.running() as url:
        sa = Consumer(import_url=url + "/import", request_timeout=5, retry_limit=0,
                      credentials=ServiceAccountCredentials("me", "right", "4242"))
        legacy = Consumer(import_url=url + "/import", request_timeout=5, retry_limit=0)
        for name, consumer, extra in (("sa", sa, {}),
                                      ("secret", legacy, {"api_secret": "the-real-secret"})):
            try:
                Mixpanel("project-token", consumer=consumer).import_data(
                    None, f"user-{name}", "Signed Up", 1_709_251_210, **extra)
                outcomes[name] = True
            except MixpanelException as exc:
                assert "Invalid credentials" in str(exc)
                outcomes[name] = False
    assert outcomes == {"sa": sdk_sa_passes, "secret": sdk_secret_passes}
    received = read_received(data, "import")
    assert len(received) == sdk_sa_passes + sdk_secret_passes


# --- the fixes' own behaviour, beyond the pinned tests ----------------------------------------

def test_insert_ids_row_of_a_group_update_names_its_groups(tmp_path: Path) -> None:
    """The check's key is the dedup key: a retried update is one row counted once, and
    its ``who`` is the groups as sorted JSON (a person's event keeps its device_id)."""
    update = _group_update("g-1", {"org": "engineering", "area": ["emea"]})
    with amplitude(tmp_path / "amp") as (url, _):
        assert _send(url, [update, {"event_type": "Viewed", "device_id": "device-1",
                                    "insert_id": "g-1", "time": T0_MS}])[0] == 200
        assert _send(url, [update])[0] == 200  # the retry: a duplicate
        status, raw = _request(url + "/_emulator/insert_ids")
    assert status == 200
    assert sorted(orjson.loads(raw)) == [["device-1", "g-1", 1],
                                         ['{"area":["emea"],"org":"engineering"}', "g-1", 1]]


@pytest.mark.parametrize("groups", [
    {"org": None}, {"org": ""}, {"org": [None, ""]}, {"org": True}, {"org": {"a": "b"}},
    {"org": [["nested"]]},
])
def test_group_update_without_ids_naming_no_group_is_refused(
        tmp_path: Path, groups: dict[str, Any]) -> None:
    with amplitude(tmp_path / "amp") as (url, emulator):
        status, raw = _send(url, [_group_update("g-1", groups)])
        assert emulator.groups == {}
    assert status == 400, raw
    assert orjson.loads(raw)["events_with_missing_fields"] == {"user_id": [0], "device_id": [0]}


@pytest.mark.parametrize("value", [7, 2.5, ["sales", None, ""]])
def test_group_update_naming_a_number_or_a_list_with_a_name_lands(
        tmp_path: Path, value: Any) -> None:
    with amplitude(tmp_path / "amp") as (url, emulator):
        status, raw = _send(url, [_group_update("g-1", {"org": value})])
        assert status == 200, raw
        named = value[:1] if isinstance(value, list) else [value]
        assert emulator.groups == {f"org\x1f{name}": {"member": 1} for name in named}


def test_null_group_values_create_no_group_named_none(tmp_path: Path) -> None:
    """A ``$groupidentify`` of a person names groups too: null (and other values that are
    no name) are skipped, not turned into a group called "None"."""
    update = dict(_group_update("g-1", {"org": None, "team": [None, "core"], "flag": True}),
                  user_id="user-00001")
    with amplitude(tmp_path / "amp") as (url, emulator):
        assert _send(url, [update])[0] == 200
        assert emulator.groups == {"team\x1fcore": {"member": 1}}


def test_groups_deeper_than_40_levels_are_an_invalid_field(tmp_path: Path) -> None:
    """"Object depth may not exceed 40 layers", for every event: 40 levels pass."""
    def nested(depth: int) -> Any:
        value: Any = "engineering"
        for _ in range(depth - 1):  # the groups object itself is the first level
            value = [value]
        return value

    fine = {"event_type": "Viewed", "device_id": "device-1", "insert_id": "v-1",
            "time": T0_MS, "groups": {"org": nested(40)}}
    deep = dict(fine, insert_id="v-2", groups={"org": nested(41)})
    with amplitude(tmp_path / "amp") as (url, _):
        status, raw = _send(url, [fine, deep, _group_update("g-1", {"org": nested(41)})])
        assert status == 400
        assert orjson.loads(raw)["events_with_invalid_fields"] == {"groups": [1, 2]}
        assert _send(url, [fine])[0] == 200


def test_any_failure_while_storing_is_taken_back_and_answered_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only a failed write (OSError): whatever breaks while a request is stored takes
    back its dedup keys and property updates and is answered 500 in Amplitude's JSON, so
    the client's retry is stored once and the group's $add applied once."""
    events = [{"event_type": "Viewed", "user_id": "user-00001", "insert_id": "v-1",
               "time": T0_MS, "user_properties": {"plan": "pro"}},
              _group_update("g-1", {"org": "engineering"}, 2)]
    with amplitude(tmp_path / "amp") as (url, emulator):
        def broken(*args: Any) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(emulator.store, "append", broken)
        status, raw = _send(url, events)
        monkeypatch.undo()
        assert status == 500
        body = orjson.loads(raw)
        assert body["code"] == 500 and "nothing was stored" in body["error"], body
        assert emulator.groups == {}
        assert _send(url, events)[0] == 200
        assert emulator.groups == {"org\x1fengineering": {"member": 2}}
        stats = _stats(url)
        rows = _exported(url)
    assert (stats["events_stored"], stats["duplicates_ignored"]) == (2, 0)
    assert [r["event_type"] for r in rows] == ["Viewed", "$groupidentify"]
    assert rows[0]["user_properties"] == {"plan": "pro"}


def test_a_device_event_sent_with_user_id_empty_exports_null_user_id(tmp_path: Path) -> None:
    """"" is no user_id everywhere (validation, IDs): the export says null, not ""."""
    event = {"event_type": "Viewed", "user_id": "", "device_id": "device-1",
             "insert_id": "v-1", "time": T0_MS}
    with amplitude(tmp_path / "amp") as (url, _):
        assert _send(url, [event])[0] == 200
        rows = _exported(url)
    assert (rows[0]["user_id"], rows[0]["device_id"]) == (None, "device-1")


def _segmentation(url: str, **extra: str) -> tuple[int, Any]:
    import urllib.parse
    query = {"e": orjson.dumps({"event_type": "Viewed"}).decode(), "m": "totals",
             "start": "20260101", "end": "20260101", **extra}
    status, raw = _request(f"{url}/api/2/events/segmentation?{urllib.parse.urlencode(query)}",
                           auth=(API_KEY, SECRET))
    return status, orjson.loads(raw)


def test_segmentation_limit_without_a_group_by_changes_nothing(tmp_path: Path) -> None:
    """Reference 5.2: ``limit`` is "Group-by values; default 100, maximum 1000"."""
    with amplitude(tmp_path / "amp") as (url, _):
        assert _send(url, [{"event_type": "Viewed", "user_id": "user-00001",
                            "insert_id": "v-1", "time": T0_MS}])[0] == 200
        plain = _segmentation(url)
        assert plain[0] == 200
        assert _segmentation(url, limit="10") == plain
        assert _segmentation(url, limit="1000") == plain
        for bad in ("0", "1001", "ten", "²"):
            status, body = _segmentation(url, limit=bad)
            assert status == 400 and "limit" in body["error"], body
        status, body = _segmentation(url, limit="10", g="country")
        assert status == 400 and "group-by" in body["error"], body


def test_mixpanel_banner_names_the_token_import_accepts() -> None:
    from mp2amp.cli.emulate_mixpanel import _accepted_credentials

    assert _accepted_credentials(None, "s", "t") == (
        "only the configured API secret (no service account), and the project token on /import")
    assert _accepted_credentials("u:s", None, "t").endswith("and the project token on /import")
    assert _accepted_credentials(None, "s") == "only the configured API secret (no service account)"
    assert _accepted_credentials(None, None, "t") == "any Basic credentials"
