"""Reading a migrated project back out of Amplitude (Export and Dashboard REST APIs), to
compare it with Mixpanel. Used by ``demo``. Against the real APIs the same calls work, but
Amplitude serves an hour's export only about 2 hours after it received the data (the
emulator at once): compare then."""

from __future__ import annotations

import base64
import gzip
import io
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from mp2amp.errors import ConnectionLost, ContractError, classify_http, parse_retry_after

ATTEMPTS = 6  # per request: 5xx, 429, 408 and dropped connections are retried
BACKOFF = 0.5  # seconds before the second attempt, doubling (a Retry-After wins)
MAX_WAIT = 60.0
_HOUR = timedelta(hours=1)
_MAX_RANGE = timedelta(days=365) - _HOUR  # the Export API's 365 days, as start..end hours


def _get_once(url: str, api_key: str, secret_key: str,
              timeout: float) -> tuple[int, bytes, str | None]:
    token = base64.b64encode(f"{api_key}:{secret_key}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Retry-After")


def _get(url: str, api_key: str, secret_key: str, timeout: float = 120.0,
         sleep: Callable[[float], None] = time.sleep) -> tuple[int, bytes]:
    """GET with Basic auth; a 5xx, 429, 408 or a dropped connection is retried with
    backoff (the read-back comes after the whole migration: one hiccup must not end it)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            status, body, retry_after = _get_once(url, api_key, secret_key, timeout)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == ATTEMPTS:
                raise ConnectionLost(f"Amplitude read-back failed {attempt} times ({exc}); "
                                     "the migration itself is done: run the comparison "
                                     "again later") from exc
            sleep(min(MAX_WAIT, BACKOFF * 2 ** (attempt - 1)))
            continue
        if (status in (408, 429) or status >= 500) and attempt < ATTEMPTS:
            wait = parse_retry_after(retry_after)
            sleep(min(MAX_WAIT, wait if wait is not None else BACKOFF * 2 ** (attempt - 1)))
            continue
        return status, body
    raise AssertionError("unreachable")


def export_counts(base_url: str, api_key: str, secret_key: str, since: datetime,
                  until: datetime) -> tuple[Counter[str], Counter[tuple[str, str]], int]:
    """Events per type, per (type, UTC day of event_time), and the total, from the Export
    API over the upload hours ``since``..``until`` (UTC): asked at most 365 days at a
    time, and a range whose export is over the API's 4 GB is asked in halves."""
    by_type: Counter[str] = Counter()
    by_day: Counter[tuple[str, str]] = Counter()
    total = 0
    start = since
    while start <= until:
        end = min(until, start + _MAX_RANGE)
        total += _export_range(base_url, api_key, secret_key, start, end, by_type, by_day)
        start = end + _HOUR
    return by_type, by_day, total


def _export_range(base_url: str, api_key: str, secret_key: str, since: datetime,
                  until: datetime, by_type: Counter[str],
                  by_day: Counter[tuple[str, str]]) -> int:
    params = urllib.parse.urlencode({"start": since.strftime("%Y%m%dT%H"),
                                     "end": until.strftime("%Y%m%dT%H")})
    status, body = _get(f"{base_url.rstrip('/')}/api/2/export?{params}", api_key, secret_key)
    if status == 404:  # Amplitude: no data in the range
        return 0
    if status == 400 and b"too large" in body and until > since:
        hours = int((until - since) / _HOUR)
        middle = since + _HOUR * (hours // 2)
        return (_export_range(base_url, api_key, secret_key, since, middle, by_type, by_day)
                + _export_range(base_url, api_key, secret_key, middle + _HOUR, until,
                                by_type, by_day))
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
    return total


# segmentation's own event names: an event type spelled like one cannot be asked by name
SPECIAL_EVENT_TYPES = ("_all", "_active", "_new")


def segmentation_totals(base_url: str, api_key: str, secret_key: str, event_type: str,
                        start: date, end: date) -> dict[str, int]:
    """Daily totals of one event type (days in the Amplitude project's timezone). A name
    in ``SPECIAL_EVENT_TYPES`` (or ``ce:...``) is segmentation's own, not an event type."""
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
