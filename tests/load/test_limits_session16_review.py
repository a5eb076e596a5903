"""Session-16 review: Amplitude's size and count limits, on both sides (uploader, transform,
emulator), against reference/amplitude-api.md §1.3, §1.7, §2.2.

Each ``xfail(strict=True)`` test pins one defect (the reason says what is wrong) and asserts
the behaviour the reference asks for; the unmarked tests pin boundaries that hold.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from mp2amp.emulators.amplitude import AmplitudeConfig, AmplitudeEmulator
from mp2amp.errors import Rejection
from mp2amp.load import Uploader, UploadSettings
from mp2amp.models import Resolved
from mp2amp.transform import Transformer, TransformSettings

KEY = "limits-review-key"
SECRET = "limits-review-secret"
T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC: the emulator's clock
EVENT_MS = 1_767_268_000_000


# --- helpers ----------------------------------------------------------------------------


class Recorder:
    """A loopback Amplitude stand-in that records every request's (decompressed) body and
    answers from ``script`` (one answer per request, then 200s)."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]] | None = None) -> None:
        self.script = list(script or [])
        self.requests: list[tuple[int, list[dict[str, Any]]]] = []  # (body bytes, events)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()  # aiohttp undid the gzip
        events = orjson.loads(raw)["events"]
        self.requests.append((len(raw), events))
        if self.script:
            status, body = self.script.pop(0)
            if "throttled_events" in body and body["throttled_events"] == "all":
                body = {**body, "throttled_events": list(range(len(events)))}
            return web.Response(status=status, body=orjson.dumps(body),
                                content_type="application/json")
        return web.Response(body=orjson.dumps({
            "code": 200, "events_ingested": len(events), "payload_size_bytes": len(raw),
            "server_upload_time": 1}), content_type="application/json")


async def _upload(recorder: Recorder, events: list[dict[str, Any]], **kw: Any) -> Any:
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/batch", recorder.handle)
    app.router.add_post("/2/httpapi", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings = UploadSettings(**{"api_key": KEY, "api_host": f"http://127.0.0.1:{port}",
                                 "concurrency": 1, "backoff_base": 0.005,
                                 "backoff_cap": 0.05, "throttle_wait": 0.01, **kw})
    try:
        async with Uploader(settings) as up:
            for i, e in enumerate(events):
                await up.submit(e, ("src.jsonl", i + 1), batch_key="w")
            return await up.close()
    finally:
        await runner.cleanup()


def _ev(i: int, device: str = "device-hot", **kw: Any) -> dict[str, Any]:
    return {"event_type": "view", "device_id": device, "time": EVENT_MS + i,
            "insert_id": f"ins-{i:06d}", **kw}


@contextmanager
def _emulator(tmp_path: Path) -> Iterator[str]:
    emu = AmplitudeEmulator(AmplitudeConfig(data_dir=tmp_path / "amp", api_key=KEY,
                                            secret_key=SECRET, now=lambda: T0))
    with emu.running() as url:
        yield url


def _post(url: str, path: str, payload: Any) -> tuple[int, Any]:
    req = urllib.request.Request(url + path, data=orjson.dumps(payload), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, orjson.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def _export(url: str) -> list[dict[str, Any]]:
    token = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    req = urllib.request.Request(url + "/api/2/export?start=20260101T00&end=20260101T23",
                                 headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=30) as res:
        archive = zipfile.ZipFile(io.BytesIO(res.read()))
    rows: list[dict[str, Any]] = []
    for name in archive.namelist():
        rows += [orjson.loads(line) for line in gzip.decompress(archive.read(name)).splitlines()]
    return rows


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# --- defects ----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint, eps, n", [("batch", 1000, 4000), ("httpapi", 30, 600)])
def test_a_rate_throttle_does_not_shrink_requests_the_device_may_send(endpoint, eps, n):
    # A device throttled for its rate over time (the 429 names it with the endpoint's
    # documented eps_threshold): after the pause its events may go in full-size requests
    # again. 2000 events of one device in one /batch request, or 600 in one /2/httpapi
    # request, are far under the 30-s budget (30,000 and 900); the emulator takes them too.
    throttle = {"code": 429, "error": "Too many requests for some devices and users",
                "eps_threshold": eps, "throttled_devices": {"device-hot": eps + 5},
                "throttled_users": {}, "throttled_events": "all"}
    recorder = Recorder([(429, throttle)])
    report = asyncio.run(_upload(recorder, [_ev(i) for i in range(n)], endpoint=endpoint))
    assert report.accepted == n
    sizes = [len(events) for _, events in recorder.requests]
    first = sizes[0]
    # the throttled request is resent as it was, and the next batch goes whole too
    assert sizes == [first] + [first] * (n // first), sizes


def test_emulator_export_cuts_strings_nested_in_property_values(tmp_path):
    event = _ev(1, event_properties={"tags": ["y" * 2000, "ok"], "obj": {"s": "z" * 1500},
                                     "flat": "x" * 1500},
                user_properties={"interests": ["q" * 1500]})
    with _emulator(tmp_path) as url:
        assert _post(url, "/batch", {"api_key": KEY, "events": [event]})[0] == 200
        row, = _export(url)
    assert len(row["event_properties"]["flat"]) == 1024  # the top level is cut already
    longest = max(len(s) for s in _strings([row["event_properties"], row["user_properties"]]))
    assert longest == 1024, f"an exported nested string holds {longest} characters"


def test_emulator_export_cuts_long_group_names(tmp_path):
    event = _ev(1, groups={"company": "c" * 2000, "teams": ["t" * 1500, "b"]})
    with _emulator(tmp_path) as url:
        assert _post(url, "/batch", {"api_key": KEY, "events": [event]})[0] == 200
        row, = _export(url)
    assert row["groups"]["company"] == ["c" * 1024]
    assert row["groups"]["teams"] == ["t" * 1024, "b"]


def test_emulator_export_has_no_group_properties_of_untracked_groups(tmp_path):
    # "Up to 5 unique group types and 10 total group values per event. Any groups past
    # that threshold aren't tracked."
    identifies = [{"event_type": "$groupidentify", "device_id": "device-admin",
                   "time": EVENT_MS + k, "groups": {f"type{k}": "acme"},
                   "group_properties": {"$set": {"plan": f"p{k}"}}} for k in range(7)]
    event = _ev(100, groups={f"type{k}": "acme" for k in range(7)})
    with _emulator(tmp_path) as url:
        assert _post(url, "/batch", {"api_key": KEY, "events": identifies})[0] == 200
        assert _post(url, "/batch", {"api_key": KEY, "events": [event]})[0] == 200
        row, = [r for r in _export(url) if r["event_type"] == "view"]
    assert list(row["groups"]) == [f"type{k}" for k in range(5)]
    assert set(row["group_properties"]) <= set(row["groups"]), row["group_properties"]


def test_an_overlong_device_id_does_not_lose_an_event_that_has_a_user_id():
    t = Transformer(TransformSettings())
    record = {"event": "Signed Up", "properties": {"time": 1_700_000_000,
                                                   "distinct_id": "user-12345"}}
    out = t.event(record, Resolved("user-12345", "d" * 1500))
    assert not isinstance(out, Rejection), out
    assert isinstance(out, dict) and out["user_id"] == "user-12345"
    assert len(out.get("device_id") or "") <= 1024


# --- boundaries that hold ---------------------------------------------------------------


@pytest.mark.parametrize("gzip_on", [True, False])
@pytest.mark.parametrize("max_bytes", [1024, 1537, 4096])
def test_every_request_body_fits_a_small_byte_cap_envelope_included(max_bytes, gzip_on):
    # measured on the decompressed body, api_key, options and brackets included; sizes
    # drawn to land batches right at the cap
    events = [_ev(i, device=f"device-{i % 7:03d}",
                  event_properties={"p": "x" * ((i * 37) % (max_bytes // 3))})
              for i in range(240)]
    recorder = Recorder()
    report = asyncio.run(_upload(recorder, events, max_bytes=max_bytes, gzip=gzip_on,
                                 endpoint="batch"))
    assert report.accepted == 240 and report.splits == 0
    assert max(size for size, _ in recorder.requests) <= max_bytes
    sent = [e["insert_id"] for _, evs in recorder.requests for e in evs]
    assert sorted(sent) == sorted(e["insert_id"] for e in events) and len(set(sent)) == 240


def test_exactly_2000_events_go_in_one_http_v2_request_the_emulator_takes(tmp_path):
    # 2000 is the documented per-request maximum of both endpoints; 2000 distinct devices
    # keep each under HTTP V2's 30 eps
    events = [_ev(i, device=f"device-{i:05d}") for i in range(2000)]
    with _emulator(tmp_path) as url:
        status, body = _post(url, "/2/httpapi", {"api_key": KEY, "events": events})
        assert (status, body["events_ingested"]) == (200, 2000)
        status, body = _post(url, "/2/httpapi", {"api_key": KEY, "events": [
            *events, _ev(2000, device="device-02000")]})
        assert (status, body) == (413, {"code": 413, "error": "Payload too large"})
    recorder = Recorder()
    report = asyncio.run(_upload(recorder, events, endpoint="httpapi"))
    assert report.accepted == 2000
    assert [len(evs) for _, evs in recorder.requests] == [2000]


# --- edges of the fixes above -----------------------------------------------------------


@pytest.mark.parametrize("n, after", [(900, 900), (901, 450)])
def test_a_device_over_its_30_second_budget_in_one_request_still_halves_the_lane(n, after):
    # HTTP V2: 30 eps averaged over 30 s is 900 events; one request holding more of one
    # device would be throttled forever, so the lane's requests halve; at 900 they do not
    throttle = {"code": 429, "error": "Too many requests for some devices and users",
                "eps_threshold": 30, "throttled_devices": {"device-hot": 35},
                "throttled_users": {}, "throttled_events": "all"}
    recorder = Recorder([(429, throttle)])
    report = asyncio.run(_upload(recorder, [_ev(i) for i in range(n)], endpoint="httpapi"))
    assert report.accepted == n
    sizes = [len(events) for _, events in recorder.requests]
    assert sizes[0] == n and sizes[1] == after, sizes


def test_emulator_export_has_no_group_properties_past_the_10_value_budget(tmp_path):
    # the 11th and 12th group values are not tracked: neither are their properties; a
    # tracked group's long property strings (nested too) are cut like any other
    identify = {"event_type": "$groupidentify", "device_id": "device-admin",
                "time": EVENT_MS, "groups": {"org": [f"o{k}" for k in range(12)]},
                "group_properties": {"$set": {"plan": "p", "notes": ["n" * 1500]}}}
    event = _ev(100, groups={"org": [f"o{k}" for k in range(12)]})
    with _emulator(tmp_path) as url:
        assert _post(url, "/batch", {"api_key": KEY, "events": [identify]})[0] == 200
        assert _post(url, "/batch", {"api_key": KEY, "events": [event]})[0] == 200
        rows = {r["event_type"]: r for r in _export(url)}
    tracked = [f"o{k}" for k in range(10)]
    assert rows["view"]["groups"] == {"org": tracked}
    assert list(rows["view"]["group_properties"]["org"]) == tracked
    assert rows["view"]["group_properties"]["org"]["o0"] == {"plan": "p", "notes": ["n" * 1024]}
    assert rows["$groupidentify"]["group_properties"]["$set"]["notes"] == ["n" * 1024]
