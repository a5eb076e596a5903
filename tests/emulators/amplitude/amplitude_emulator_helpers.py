"""Helpers of the Amplitude emulator tests: a movable clock, a tiny stdlib HTTP client, events."""

from __future__ import annotations

import base64
import gzip
import io
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Any

import orjson

from mp2amp.emulators.amplitude import AmplitudeEmulator

API_KEY = "test-api-key"
SECRET = "test-secret"
T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC


class Clock:
    """The emulator's ``now``: tests move it instead of sleeping."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Api:
    """Just enough HTTP for the contract tests (stdlib only, so nothing hides the wire)."""

    def __init__(self, base_url: str, emulator: AmplitudeEmulator) -> None:
        self.base_url = base_url
        self.emulator = emulator

    def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None, auth: tuple[str, str] | None = None,
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base_url + path, data=body, method=method,
                                     headers=headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                return res.status, res.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def post_json(self, path: str, payload: Any, gzip_body: bool = False) -> tuple[int, Any]:
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json"}
        if gzip_body:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        status, raw = self.request("POST", path, body, headers)
        return status, orjson.loads(raw)

    def send(self, events: list[dict[str, Any]], endpoint: str = "/batch",
             **extra: Any) -> tuple[int, Any]:
        return self.post_json(endpoint, {"api_key": API_KEY, "events": events, **extra})

    def form(self, path: str, fields: dict[str, str]) -> tuple[int, Any]:
        body = urllib.parse.urlencode(fields).encode()
        status, raw = self.request("POST", path, body,
                                   {"Content-Type": "application/x-www-form-urlencoded"})
        return status, orjson.loads(raw)

    def get_json(self, path: str, auth: tuple[str, str] | None = (API_KEY, SECRET)) -> tuple[int, Any]:
        status, raw = self.request("GET", path, auth=auth)
        return status, orjson.loads(raw)

    def export(self, start: str, end: str) -> tuple[int, dict[str, list[dict[str, Any]]]]:
        query = urllib.parse.urlencode({"start": start, "end": end})
        status, raw = self.request("GET", f"/api/2/export?{query}", auth=(API_KEY, SECRET))
        if status != 200:
            return status, {}
        archive = zipfile.ZipFile(io.BytesIO(raw))
        return status, {
            name: [orjson.loads(line) for line in gzip.decompress(archive.read(name)).splitlines()]
            for name in archive.namelist()
        }

    def exported_rows(self, start: str = "20260101T00", end: str = "20260131T23") -> list[dict[str, Any]]:
        status, files = self.export(start, end)
        return [row for rows in files.values() for row in rows] if status == 200 else []

    def segmentation(self, event_type: str, metric: str, start: str, end: str) -> tuple[int, Any]:
        query = urllib.parse.urlencode({"e": orjson.dumps({"event_type": event_type}).decode(),
                                        "m": metric, "i": "1", "start": start, "end": end})
        return self.get_json(f"/api/2/events/segmentation?{query}")

    def stats(self) -> dict[str, Any]:
        return self.get_json("/_emulator/stats", auth=None)[1]  # type: ignore[no-any-return]


def event(n: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_type": "Viewed", "device_id": f"device-{n:04d}",
                            "insert_id": f"insert-{n:06d}", "time": int(T0 * 1000) + n}
    base.update(fields)
    return base


