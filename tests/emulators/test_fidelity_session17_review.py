"""Session-17 review: the emulators against the reference contracts, and the official
clients against the emulators (review helper; each of the first three tests pinned one confirmed defect)."""

from __future__ import annotations

import base64
import gzip
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.emulators.mixpanel import MixpanelConfig, MixpanelEmulator

API_KEY = "review-api-key"
SECRET = "review-secret"
T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC


def _request(url: str, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None,
             auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@contextmanager
def amplitude(tmp_path: Path) -> Iterator[tuple[str, AmplitudeEmulator]]:
    emulator = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amplitude", api_key=API_KEY,
                                                 secret_key=SECRET, now=lambda: T0))
    with emulator.running() as url:
        yield url, emulator


# --- Amplitude: the official Python SDK's group_identify ------------------------------------

def test_official_sdk_group_identify_without_ids_lands(tmp_path: Path) -> None:
    """amplitude-analytics exempts GroupIdentifyEvent from its user_id/device_id check
    (plugin.verify_event, reference 8.1) and Amplitude's own example app calls
    ``group_identify(group_type, group_name, identify_obj=...)`` with no EventOptions: a group
    update is not a user event (the emulator's own /groupidentify needs no IDs either). The
    emulator answers it 400, so the SDK drops it and the group never gets its properties."""
    from amplitude import Amplitude, BaseEvent, Config, Identify

    outcomes: list[tuple[str, int]] = []
    lock = threading.Lock()

    def callback(event: BaseEvent, code: int, message: str | None = None) -> None:
        with lock:
            outcomes.append((event.event_type, code))

    with amplitude(tmp_path) as (url, emulator):
        client = Amplitude(API_KEY, Config(server_url=url + "/2/httpapi", callback=callback,
                                           flush_interval_millis=50))
        try:
            client.group_identify("org", "engineering", Identify().set("member", 16))
            client.flush()
            deadline = time.monotonic() + 4
            while not outcomes and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            client.shutdown()
        groups = dict(emulator.groups)
    assert outcomes == [("$groupidentify", 200)]
    assert groups == {"org\x1fengineering": {"member": 16}}


# --- Amplitude: segmentation parameters it does not model -----------------------------------

def test_segmentation_refuses_rolling_window_it_does_not_compute(tmp_path: Path) -> None:
    """Reference 5.2 lists ``rollingWindow``/``rollingAverage``/``formula`` among the
    segmentation parameters; the module (and README) promise that what the emulator does not
    answer "is refused with a 400 that says so, never answered as something else". Here one
    device on day 1 and another on day 2: a 2-day rolling window of uniques is 2 on day 2,
    the emulator answers the plain daily 1 with a 200."""
    t0 = int(T0 * 1000)
    events = [{"event_type": "Viewed", "device_id": "device-aaaa", "insert_id": "i-1", "time": t0},
              {"event_type": "Viewed", "device_id": "device-bbbb", "insert_id": "i-2",
               "time": t0 + 86_400_000}]
    with amplitude(tmp_path) as (url, _):
        status, _ = _request(url + "/batch", "POST",
                             orjson.dumps({"api_key": API_KEY, "events": events}),
                             {"Content-Type": "application/json"})
        assert status == 200
        query = urllib.parse.urlencode({
            "e": orjson.dumps({"event_type": "Viewed"}).decode(), "m": "uniques", "i": "1",
            "start": "20260101", "end": "20260102", "rollingWindow": "2"})
        status, raw = _request(f"{url}/api/2/events/segmentation?{query}", auth=(API_KEY, SECRET))
    answer = orjson.loads(raw)
    assert status == 400, answer  # refused, or else the rolling figure: never the daily one
    assert "rollingWindow" in answer["error"]


# --- Mixpanel: credentials -------------------------------------------------------------------

def _mixpanel_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "project.json").write_bytes(orjson.dumps({
        "project_id": 4242, "timezone": "UTC", "legacy_time": False, "group_keys": []}))
    (root / "events").mkdir()
    line = {"event": "Signed Up", "properties": {"time": 1_709_251_210, "distinct_id": "u1",
                                                 "$insert_id": "abc-1"}}
    (root / "events" / "2024-03-01.jsonl.gz").write_bytes(gzip.compress(orjson.dumps(line) + b"\n"))
    return root


def test_unconfigured_service_account_is_refused_when_a_secret_is_configured(tmp_path: Path) -> None:
    """README: credentials default to $MIXPANEL_SERVICE_ACCOUNT / $MIXPANEL_SECRET, "with none
    configured, any Basic credentials of the right shape are accepted", wrong ones get 400
    ``Unable to authenticate request``; the CLI banner says "accepting configured credentials"
    as soon as one is set. With only ``MIXPANEL_SECRET`` set, a wrong API secret is refused
    (400), but a made-up service account is served the project's events (200): a migration
    tested with a mistyped MIXPANEL_SERVICE_ACCOUNT passes here and fails on Mixpanel. The
    other way round (only a service account configured) a made-up secret is refused."""
    data = _mixpanel_project(tmp_path / "project")
    emulator = MixpanelEmulator(MixpanelConfig(data_dir=data, api_secret="the-real-secret",
                                               clock=lambda: 1_710_000_000.0,
                                               export_per_second=None, export_per_hour=None))
    query = "from_date=2024-03-01&to_date=2024-03-01"
    with emulator.running() as url:
        wrong_secret, _ = _request(f"{url}/api/2.0/export?{query}", auth=("wrong-secret", ""))
        made_up_sa, body = _request(f"{url}/api/2.0/export?{query}&project_id=4242",
                                    auth=("nobody", "guess"))
    assert wrong_secret == 400
    assert made_up_sa == 400, body
    assert b"Unable to authenticate request" in body



# --- the fixes' other sides ------------------------------------------------------------------

def _send(url: str, events: list[dict[str, object]]) -> tuple[int, dict[str, object]]:
    status, raw = _request(url + "/2/httpapi", "POST",
                           orjson.dumps({"api_key": API_KEY, "events": events}),
                           {"Content-Type": "application/json"})
    return status, orjson.loads(raw)


def _exported(url: str) -> list[dict[str, object]]:
    import io
    import zipfile
    status, raw = _request(f"{url}/api/2/export?start=20260101T00&end=20260101T23",
                           auth=(API_KEY, SECRET))
    assert status == 200, raw
    rows: list[dict[str, object]] = []
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        for name in sorted(zf.namelist()):
            rows += [orjson.loads(line) for line in gzip.decompress(zf.read(name)).splitlines()]
    return rows


def _group_update(insert_id: str, member: int) -> dict[str, object]:
    return {"event_type": "$groupidentify", "groups": {"org": "engineering"},
            "group_properties": {"$add": {"member": member}}, "insert_id": insert_id,
            "time": int(T0 * 1000)}


def test_group_update_without_ids_exports_deduplicates_and_survives_a_restart(
        tmp_path: Path) -> None:
    """A $groupidentify naming only groups lands once per insert_id (a retried $add does
    not add twice), is exported with no person, is no unique in segmentation, does not
    stop a deletion, and its group properties survive a restart."""
    seen_event = {"event_type": "Viewed", "user_id": "user-00001", "insert_id": "v-1",
                  "time": int(T0 * 1000), "groups": {"org": "engineering"}}
    with amplitude(tmp_path) as (url, emulator):
        assert _send(url, [_group_update("g-1", 2)])[0] == 200
        assert _send(url, [_group_update("g-1", 2)])[0] == 200  # the SDK's retry
        other = dict(_group_update("g-1", 5), groups={"org": "sales"})  # same insert_id
        assert _send(url, [other, seen_event])[0] == 200
        assert emulator.groups == {"org\x1fengineering": {"member": 2},
                                   "org\x1fsales": {"member": 5}}
        rows = _exported(url)
        update = next(r for r in rows if r["event_type"] == "$groupidentify")
        assert (update["amplitude_id"], update["user_id"], update["device_id"]) == (None, None, None)
        assert update["user_properties"] == {} and update["data"] == {}
        assert update["groups"] == {"org": ["engineering"]}
        assert update["group_properties"] == {"$add": {"member": 2}}
        viewed = next(r for r in rows if r["event_type"] == "Viewed")
        assert viewed["group_properties"] == {"org": {"engineering": {"member": 2}}}
        assert viewed["amplitude_id"] is not None
        query = urllib.parse.urlencode({"e": orjson.dumps({"event_type": "$groupidentify"}).decode(),
                                        "m": "uniques", "start": "20260101", "end": "20260101"})
        status, raw = _request(f"{url}/api/2/events/segmentation?{query}", auth=(API_KEY, SECRET))
        assert status == 200 and orjson.loads(raw)["data"]["series"] == [[0]]
        status, raw = _request(url + "/api/2/deletions/users", "POST",
                               orjson.dumps({"user_ids": ["user-00001"]}),
                               {"Content-Type": "application/json"}, auth=(API_KEY, SECRET))
        assert status == 200, raw
        for _ in range(2):  # submitted, then done
            assert _request(url + "/_emulator/deletions/advance", "POST", b"")[0] == 200
        assert [r["event_type"] for r in _exported(url)] == ["$groupidentify", "$groupidentify"]
    with amplitude(tmp_path) as (url, emulator):
        assert emulator.groups["org\x1fengineering"] == {"member": 2}
        assert _send(url, [_group_update("g-1", 2)])[0] == 200  # still a duplicate
        assert emulator.groups["org\x1fengineering"] == {"member": 2}
        assert len(_exported(url)) == 2


@pytest.mark.parametrize("event", [
    {"event_type": "$groupidentify", "group_properties": {"$set": {"a": 1}}},  # no groups
    {"event_type": "$groupidentify", "groups": {}, "group_properties": {"$set": {"a": 1}}},
    {"event_type": "Viewed", "groups": {"org": "engineering"}},  # a user event needs a person
])
def test_events_naming_nobody_and_no_group_are_still_refused(
        tmp_path: Path, event: dict[str, object]) -> None:
    with amplitude(tmp_path) as (url, emulator):
        status, body = _send(url, [event])
        assert status == 400, body
        assert body["events_with_missing_fields"] == {"user_id": [0], "device_id": [0]}
        assert emulator.groups == {}


@pytest.mark.parametrize(("name", "value"), [
    ("rollingAverage", "7"), ("formula", "UNIQUES(A)"), ("limit", "5000"), ("g2", "country"),
    ("n", "active"), ("rollingWindow", ""),
])
def test_segmentation_refuses_every_parameter_it_does_not_model(
        tmp_path: Path, name: str, value: str) -> None:
    query = {"e": orjson.dumps({"event_type": "Viewed"}).decode(), "m": "totals",
             "start": "20260101", "end": "20260101"}
    with amplitude(tmp_path) as (url, _):
        status, raw = _request(f"{url}/api/2/events/segmentation?"
                               f"{urllib.parse.urlencode({**query, name: value})}",
                               auth=(API_KEY, SECRET))
        assert status == 400, raw
        assert name in orjson.loads(raw)["error"]
        status, raw = _request(f"{url}/api/2/events/segmentation?"
                               f"{urllib.parse.urlencode({**query, 'n': 'any'})}",
                               auth=(API_KEY, SECRET))
        assert status == 200, raw  # n=any is what it counts


@pytest.mark.parametrize(("service_account", "api_secret", "caller", "status"), [
    (None, None, ("anyone", "anything"), 200),  # nothing configured: any shape passes
    ("me:right", None, ("me", "right"), 200),
    ("me:right", None, ("me", "wrong"), 400),
    ("me:right", "the-real-secret", ("nobody", "guess"), 400),
    (None, "the-real-secret", ("nobody", "guess"), 400),
])
def test_service_accounts_pass_only_as_configured(
        tmp_path: Path, service_account: str | None, api_secret: str | None,
        caller: tuple[str, str], status: int) -> None:
    data = _mixpanel_project(tmp_path / "project")
    emulator = MixpanelEmulator(MixpanelConfig(
        data_dir=data, service_account=service_account, api_secret=api_secret,
        clock=lambda: 1_710_000_000.0, export_per_second=None, export_per_hour=None))
    with emulator.running() as url:
        got, body = _request(f"{url}/api/2.0/export?from_date=2024-03-01&to_date=2024-03-01"
                             "&project_id=4242", auth=caller)
    assert got == status, body


def test_mixpanel_banner_says_which_credentials_pass() -> None:
    from mp2amp.cli.emulate_mixpanel import _accepted_credentials

    assert _accepted_credentials(None, None) == "any Basic credentials"
    assert "API secret (no service account)" in _accepted_credentials(None, "s")
    assert "service account (no API secret)" in _accepted_credentials("u:s", None)
    assert _accepted_credentials("u:s", "s") == "only the configured service account and API secret"
