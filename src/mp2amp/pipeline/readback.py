"""Reading a migrated project back out of Amplitude (Export and Dashboard REST APIs), to
compare it with Mixpanel. Used by ``demo``; works the same against the real APIs."""

from __future__ import annotations

import base64
import gzip
import io
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import orjson

from mp2amp.errors import ContractError, classify_http


def _get(url: str, api_key: str, secret_key: str, timeout: float = 120.0) -> tuple[int, bytes]:
    token = base64.b64encode(f"{api_key}:{secret_key}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def export_counts(base_url: str, api_key: str, secret_key: str, since: datetime,
                  until: datetime) -> tuple[Counter[str], Counter[tuple[str, str]], int]:
    """Events per type, per (type, UTC day of event_time), and the total, from the Export
    API over the upload hours ``since``..``until`` (UTC)."""
    params = urllib.parse.urlencode({"start": since.strftime("%Y%m%dT%H"),
                                     "end": until.strftime("%Y%m%dT%H")})
    status, body = _get(f"{base_url.rstrip('/')}/api/2/export?{params}", api_key, secret_key)
    by_type: Counter[str] = Counter()
    by_day: Counter[tuple[str, str]] = Counter()
    if status == 404:  # Amplitude: no data in the range
        return by_type, by_day, 0
    error = classify_http(status, service="Amplitude Export API", body=body[:300].decode(
        "utf-8", "replace"))
    if error is not None:
        raise error
    total = 0
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for name in archive.namelist():
            raw = gzip.decompress(archive.read(name))
            for line in raw.splitlines():
                if not line.strip():
                    continue
                ev = orjson.loads(line)
                etype = ev.get("event_type")
                if etype in ("$identify", "$groupidentify"):
                    continue
                by_type[etype] += 1
                by_day[(etype, str(ev.get("event_time", ""))[:10])] += 1
                total += 1
    return by_type, by_day, total


def segmentation_totals(base_url: str, api_key: str, secret_key: str, event_type: str,
                        start: date, end: date) -> dict[str, int]:
    """Daily totals of one event type (days in the Amplitude project's timezone)."""
    params = urllib.parse.urlencode({
        "e": orjson.dumps({"event_type": event_type}).decode(), "m": "totals", "i": "1",
        "start": start.strftime("%Y%m%d"), "end": end.strftime("%Y%m%d")})
    status, body = _get(f"{base_url.rstrip('/')}/api/2/events/segmentation?{params}",
                        api_key, secret_key)
    error = classify_http(status, service="Amplitude Dashboard API",
                          body=body[:300].decode("utf-8", "replace"))
    if error is not None:
        raise error
    doc: dict[str, Any] = orjson.loads(body)
    data = doc.get("data")
    if not isinstance(data, dict) or not data.get("series"):
        raise ContractError(f"segmentation answer without data.series: {body[:200]!r}")
    days = data.get("xValues", [])
    series = data["series"][0]
    return {str(d): int(v) for d, v in zip(days, series, strict=False)}


def upload_hours(started: datetime, finished: datetime) -> tuple[datetime, datetime]:
    """The Export API's hour range covering uploads between two instants (UTC)."""
    since = started.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    until = finished.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return since, max(since, until)
