"""A ~/.netrc login for the Amplitude host never goes to Amplitude: the uploader's session
does not trust the environment (aiohttp would add that login as an Authorization header);
it takes only the environment's proxy, per request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from mp2amp.load import Uploader, UploadSettings


def test_a_netrc_default_login_is_not_sent_to_amplitude(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("default login someone password secret-of-the-user\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    seen: list[str | None] = []

    async def batch(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        await request.read()
        return web.json_response({"code": 200, "events_ingested": 1})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/batch", batch)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            up = Uploader(UploadSettings(api_key="k", api_host=f"http://127.0.0.1:{port}",
                                         concurrency=1, gzip=False))
            async with up:
                await up.submit({"event_type": "v", "device_id": "device-1",
                                 "insert_id": "n1", "time": 1_700_000_000_000}, ("s", 1))
                report = await up.close()
            assert report.accepted == 1
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert seen == [None]
