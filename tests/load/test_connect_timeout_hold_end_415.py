"""Session-18 fixes beside the pinned tests: a connect timeout counts as "never sent", a
hold that a later 429 reaches ends with that 429's wait, and a 415 to a gzip body says
to turn gzip off."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from mp2amp.errors import Mp2AmpError
from mp2amp.load import Uploader, UploadSettings
from mp2amp.load.holds import HoldRegistry
from mp2amp.load.observer import Submitted
from mp2amp.load.responses import classify
from mp2amp.load.sender import CONNECT_TIMEOUT, never_sent, session_timeout
from shared_kit import serve_routes

KEY = "session18-fix-key"


def _item(n: int, device: str | None, user: str | None) -> Submitted:
    return Submitted(b'{"insert_id":"%d"}' % n, ("s", n), "b", device, user, 0, 0, n)


# --- connect timeouts ----------------------------------------------------------------------


def test_the_connect_timeout_is_under_the_request_timeout() -> None:
    # equal, the request's timeout (started first) would fire first: "sent, then lost"
    # ``connect`` bounds the whole connect (every address of the host), not ``sock_connect``,
    # which aiohttp applies per address
    assert session_timeout(120.0).connect == CONNECT_TIMEOUT
    assert session_timeout(120.0).total == 120.0
    small = session_timeout(0.4)
    assert small.connect is not None and small.total is not None
    assert small.connect < small.total


def test_a_connect_timeout_is_never_sent_and_a_read_timeout_is_sent() -> None:
    assert never_sent(aiohttp.ConnectionTimeoutError("Connection timeout to host x"))
    assert not never_sent(aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
    assert not never_sent(TimeoutError())  # the request's whole timeout: it may have arrived


# --- holds ---------------------------------------------------------------------------------


def test_a_429_naming_a_held_user_moves_that_holds_end_to_its_longer_wait() -> None:
    reg = HoldRegistry()
    older = reg.hold("throttle", 10.0, [_item(1, "D", "U")], users=["U"])
    # another lane's 429 names U again, asking for longer; its own event is of device E
    # with no user named: it gets its own hold, and U's hold waits as long
    newer = reg.hold("throttle", 25.0, [_item(2, "E", None)], users=["U"])
    assert older.until == 25.0 and newer.until == 25.0
    assert reg.find(_item(3, "F", "U")) is older
    # a shorter wait never ends a hold sooner
    reg.hold("throttle", 12.0, [_item(4, "D", None)])
    assert older.until == 25.0


def test_a_throttle_joining_a_quota_hold_leaves_the_quota_end_alone() -> None:
    reg = HoldRegistry()
    quota = reg.hold("daily_quota", 3600.0, [_item(1, "D", None)])
    reg.hold("throttle", 15.0, [_item(2, "D", None)], devices=["D"])
    assert quota.until == 3600.0 and [i.seq for i in quota.items] == [1, 2]


def test_a_hold_whose_end_moved_is_released_at_its_new_end() -> None:
    async def main() -> tuple[float, float, list[int]]:
        up = Uploader(UploadSettings(api_key=KEY, api_host="http://127.0.0.1:9"))
        loop = asyncio.get_running_loop()
        start = loop.time()
        hold = up.holds.hold("throttle", start + 0.05, [_item(1, "D", None)])
        up.schedule_release(hold)
        up.holds.hold("throttle", start + 0.3, [], devices=["D"])  # a later, longer 429
        await asyncio.sleep(0.15)
        early = len(hold.items)
        await asyncio.sleep(0.3)
        queued = [i.seq for i in up.lane(0).queue]
        await up.abort()
        return early, len(hold.items), queued

    early, late, queued = asyncio.run(main())
    assert early == 1 and late == 0 and queued == [1]


# --- 415 to a gzip body --------------------------------------------------------------------


def test_a_415_to_a_gzip_body_says_to_turn_gzip_off() -> None:
    gz = classify(415, b"Unsupported Media Type", ids=[("d", None)], url="https://x",
                  gzipped=True)
    assert gz.kind == "stop" and "[amplitude] gzip = false" in str(gz.error)
    assert "api_host" in str(gz.error)
    plain = classify(415, b"Unsupported Media Type", ids=[("d", None)], url="https://x")
    assert plain.kind == "stop" and "gzip" not in str(plain.error)
    other = classify(404, b"", ids=[("d", None)], url="https://x", gzipped=True)
    assert "gzip" not in str(other.error)


async def _run_415(gzip: bool) -> tuple[Mp2AmpError | None, list[str | None]]:
    encodings: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        encodings.append(request.headers.get("Content-Encoding"))
        await request.read()
        if encodings[-1] == "gzip":
            return web.Response(status=415, text="Unsupported Media Type")
        return web.json_response({"code": 200, "events_ingested": 1, "payload_size_bytes": 1,
                                  "server_upload_time": 1})

    err: Mp2AmpError | None = None
    async with serve_routes({("POST", "/batch"): handler}) as url:
        try:
            async with Uploader(UploadSettings(api_key=KEY, api_host=url, concurrency=1,
                                               gzip=gzip)) as up:
                event: dict[str, Any] = {"event_type": "v", "device_id": "device-1",
                                         "insert_id": "e1", "time": 1_700_000_000_000}
                await up.submit(event, ("src.jsonl", 1))
                await up.close()
        except Mp2AmpError as exc:
            err = exc
    return err, encodings


def test_a_proxy_refusing_gzip_with_415_stops_the_run_naming_the_gzip_setting() -> None:
    err, encodings = asyncio.run(_run_415(gzip=True))
    assert encodings == ["gzip"]
    assert err is not None and "[amplitude] gzip = false" in str(err)
    assert "--resume" in str(err)
    err, encodings = asyncio.run(_run_415(gzip=False))  # what the advice leads to
    assert err is None and encodings == [None]
