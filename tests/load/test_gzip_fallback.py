"""A gzip body Amplitude cannot read (a proxy on the way that drops ``Content-Encoding``):
the request is sent again uncompressed, and once that is read the run stops compressing.
Before, every batch was dead-lettered whole ("Invalid JSON request body" names no event)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from mp2amp.load import DeadLetterFile, Uploader, UploadSettings
from mp2amp.load.deadletter import read_dead_letters
from shared_kit import serve_routes

KEY = "test-key-gzip"
UNREADABLE = {"code": 400, "error": "Invalid JSON request body"}


def _events(n: int) -> list[dict[str, Any]]:
    return [{"event_type": "view", "device_id": f"device-{i:03d}", "insert_id": f"gz-{i:04d}",
             "time": 1_700_000_000_000 + i} for i in range(n)]


async def _run(tmp_path: Path, observer: Any, reads_gzip: bool, reads_plain: bool,
               too_large: int = 0, **settings: Any) -> tuple[Any, list[tuple[str | None, int]], list[dict[str, Any]]]:
    seen: list[tuple[str | None, int]] = []  # (Content-Encoding, events) per request

    async def handler(request: web.Request) -> web.Response:
        encoding = request.headers.get("Content-Encoding")
        doc = orjson.loads(await request.read())  # aiohttp un-gzips the body
        seen.append((encoding, len(doc["events"])))
        if not (reads_gzip if encoding == "gzip" else reads_plain):
            return web.json_response(UNREADABLE, status=400)
        if too_large and len(doc["events"]) >= too_large:
            return web.json_response({"code": 413, "error": "Payload too large"}, status=413)
        return web.json_response({"code": 200, "events_ingested": len(doc["events"]),
                                  "payload_size_bytes": 1, "server_upload_time": 1})

    dlq = DeadLetterFile(tmp_path / "dead.jsonl", secrets=[KEY])
    async with serve_routes({("POST", "/batch"): handler}) as url:
        base: dict[str, Any] = dict(api_key=KEY, api_host=url, concurrency=1, max_events=2,
                                    backoff_base=0.005, backoff_cap=0.05, max_retries=2)
        async with Uploader(UploadSettings(**{**base, **settings}), observer=observer,
                            dead_letters=dlq) as up:
            for i, e in enumerate(_events(6)):
                await up.submit(e, ("src.jsonl", i + 1), batch_key="w")
            report = await up.close()
    dlq.close()
    return report, seen, read_dead_letters(tmp_path / "dead.jsonl")


def test_a_gzip_body_that_cannot_be_read_is_sent_again_uncompressed_and_gzip_stops(
        tmp_path: Path, observer: Any) -> None:
    report, seen, dead = asyncio.run(_run(tmp_path, observer, reads_gzip=False,
                                          reads_plain=True))
    assert seen == [("gzip", 2), (None, 2), (None, 2), (None, 2)]
    assert report.accepted == 6 and not dead
    assert report.gzip_refused == 1 and report.to_dict()["gzip_refused"] == 1


def test_a_body_unreadable_either_way_is_dead_lettered_and_gzip_stays_on(
        tmp_path: Path, observer: Any) -> None:
    report, seen, dead = asyncio.run(_run(tmp_path, observer, reads_gzip=False,
                                          reads_plain=False))
    assert seen == [("gzip", 2), (None, 2)] * 3
    assert report.accepted == 0 and report.gzip_refused == 3
    assert [(r["line"], r["reason"]) for r in dead] == [(i, "request_rejected")
                                                        for i in range(1, 7)]


def test_with_gzip_off_nothing_is_compressed_and_an_unreadable_body_is_not_resent(
        tmp_path: Path, observer: Any) -> None:
    report, seen, dead = asyncio.run(_run(tmp_path, observer, reads_gzip=True,
                                          reads_plain=False, gzip=False))
    assert seen == [(None, 2)] * 3
    assert report.gzip_refused == 0 and len(dead) == 6


def test_a_readable_gzip_body_is_never_resent(tmp_path: Path, observer: Any) -> None:
    report, seen, dead = asyncio.run(_run(tmp_path, observer, reads_gzip=True,
                                          reads_plain=False))
    assert seen == [("gzip", 2)] * 3 and report.accepted == 6 and not dead


def test_an_uncompressed_resend_answered_413_keeps_gzip_off_for_its_halves(
        tmp_path: Path, observer: Any) -> None:
    report, seen, dead = asyncio.run(_run(tmp_path, observer, reads_gzip=False,
                                          reads_plain=True, too_large=2))
    assert seen[:4] == [("gzip", 2), (None, 2), (None, 1), (None, 1)]
    assert all(encoding is None for encoding, _ in seen[1:])
    assert report.accepted == 6 and report.gzip_refused == 1 and not dead
