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

from mp2amp.errors import (
    ConnectionLost,
    ContractError,
    RateLimited,
    classify_http,
    parse_retry_after,
    redact_userinfo,
)

ATTEMPTS = 6  # per request: 5xx, 429, 408 and dropped connections are retried
BACKOFF = 0.5  # seconds before the second attempt, doubling (a Retry-After wins)
MAX_WAIT = 60.0
_HOUR = timedelta(hours=1)
_MAX_RANGE = timedelta(days=365) - _HOUR  # the Export API's 365 days, as start..end hours
SEGMENTATION_DAYS = 365  # daily segmentation covers at most 365 days a query
# Segmentation's cost budget is counted per 5 minutes (reference 5.2): a 429 is waited out
# up to that; one that asks for longer (the hourly budget) is reported at once
COST_WAIT = 300.0
# The longest request target asked of segmentation: servers and proxies commonly refuse
# more than 8 KB (aiohttp, which the emulator runs on, 8190 bytes)
MAX_TARGET_BYTES = 8000
_SEGMENTATION_PATH = "/api/2/events/segmentation"
# segmentation's own event names (reference 5.2): an event type spelled like one cannot be
# asked by name (the revenue ones answer revenue, not a count)
SPECIAL_EVENT_TYPES = ("_all", "_active", "_new", "revenue_amount", "verified_revenue",
                       "unverified_revenue")

EventSink = Callable[[dict[str, Any]], None]


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
    status, body, _ = _get_waiting(url, api_key, secret_key, timeout, sleep)
    return status, body


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up when called: a test can replace it


def _get_waiting(url: str, api_key: str, secret_key: str, timeout: float = 120.0,
                 sleep: Callable[[float], None] | None = None, max_wait: float = MAX_WAIT,
                 patience: float | None = None, throttle_wait: float | None = None,
                 ) -> tuple[int, bytes, float | None]:
    """``_get``, also giving the last answer's Retry-After: each wait is at most
    ``max_wait``, a Retry-After over ``patience`` ends the retries at once, and a 429
    without one waits ``throttle_wait`` (else the backoff)."""
    if sleep is None:
        sleep = _sleep
    for attempt in range(1, ATTEMPTS + 1):
        try:
            status, body, retry_after = _get_once(url, api_key, secret_key, timeout)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == ATTEMPTS:
                raise ConnectionLost(f"Amplitude read-back failed {attempt} times "
                                     f"({redact_userinfo(str(exc))}); "
                                     "the migration itself is done: run the comparison "
                                     "again later") from exc
            sleep(min(max_wait, BACKOFF * 2 ** (attempt - 1)))
            continue
        wait = parse_retry_after(retry_after)
        retryable = status in (408, 429) or status >= 500
        if retryable and attempt < ATTEMPTS and (patience is None or wait is None
                                                 or wait <= patience):
            if wait is None:
                wait = throttle_wait if status == 429 and throttle_wait is not None else \
                    BACKOFF * 2 ** (attempt - 1)
            sleep(min(max_wait, wait))
            continue
        return status, body, wait
    raise AssertionError("unreachable")


def export_counts(base_url: str, api_key: str, secret_key: str, since: datetime,
                  until: datetime, each: EventSink | None = None,
                  ) -> tuple[Counter[str], Counter[tuple[str, str]], int]:
    """Events per type, per (type, UTC day of event_time), and the total, from the Export
    API over the upload hours ``since``..``until`` (UTC): asked at most 365 days at a
    time, and a range whose export is over the API's 4 GB is asked in halves. ``each``
    also sees every counted event (the identify events are not counted), as exported."""
    by_type: Counter[str] = Counter()
    by_day: Counter[tuple[str, str]] = Counter()
    total = 0
    start = since
    while start <= until:
        end = min(until, start + _MAX_RANGE)
        total += _export_range(base_url, api_key, secret_key, start, end, by_type, by_day,
                               each)
        start = end + _HOUR
    return by_type, by_day, total


def _export_range(base_url: str, api_key: str, secret_key: str, since: datetime,
                  until: datetime, by_type: Counter[str],
                  by_day: Counter[tuple[str, str]], each: EventSink | None = None) -> int:
    params = urllib.parse.urlencode({"start": since.strftime("%Y%m%dT%H"),
                                     "end": until.strftime("%Y%m%dT%H")})
    status, body = _get(f"{base_url.rstrip('/')}/api/2/export?{params}", api_key, secret_key)
    if status == 404:  # Amplitude: no data in the range
        return 0
    if status == 400 and b"too large" in body and until > since:
        hours = int((until - since) / _HOUR)
        middle = since + _HOUR * (hours // 2)
        return (_export_range(base_url, api_key, secret_key, since, middle, by_type, by_day,
                              each)
                + _export_range(base_url, api_key, secret_key, middle + _HOUR, until,
                                by_type, by_day, each))
    error = classify_http(status, service="Amplitude Export API", body=body[:300].decode(
        "utf-8", "replace"))
    if error is not None:
        raise error
    return count_export(body, by_type, by_day, each)


def count_export(body: bytes, by_type: Counter[str], by_day: Counter[tuple[str, str]],
                 each: EventSink | None = None) -> int:
    """The events of an Export API zip counted into ``by_type`` and ``by_day``; returns
    how many (identify events left out)."""
    total = 0
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for name in archive.namelist():
            # line by line: a file holds up to 250,000 rows, ~0.6 GB unpacked, which the
            # demo held whole and split (its peak: ~1 GB)
            with archive.open(name) as member, gzip.GzipFile(fileobj=member) as rows:
                for line in rows:
                    if line.strip():
                        total += _count(orjson.loads(line), by_type, by_day, each)
    return total


def _count(ev: Any, by_type: Counter[str], by_day: Counter[tuple[str, str]],
           each: EventSink | None) -> int:
    """One exported event counted (1), or an identify event left out (0)."""
    etype = ev.get("event_type")
    if etype in ("$identify", "$groupidentify"):
        return 0
    by_type[etype] += 1
    by_day[(etype, str(ev.get("event_time", ""))[:10])] += 1
    if each is not None:
        each(ev)
    return 1


def _segmentation_target(event_type: str, start: date, end: date) -> str:
    """The request target (path and query) of one daily-totals segmentation query."""
    params = urllib.parse.urlencode({
        "e": orjson.dumps({"event_type": event_type}).decode(), "m": "totals", "i": "1",
        "start": start.strftime("%Y%m%d"), "end": end.strftime("%Y%m%d")})
    return f"{_SEGMENTATION_PATH}?{params}"


def fits_in_url(event_type: str) -> bool:
    """Whether a segmentation query for this name fits in a URL (a 1024-character
    non-ASCII name is ~9 KB percent-encoded, and is refused)."""
    some_day = date(2000, 1, 1)  # every day is 8 characters
    return len(_segmentation_target(event_type, some_day, some_day)) <= MAX_TARGET_BYTES


def askable_by_name(event_type: str) -> bool:
    """Whether segmentation counts this event type when asked by name: not one of its own
    names (``SPECIAL_EVENT_TYPES``, ``ce:...``, which count something else) and
    ``fits_in_url``."""
    if event_type in SPECIAL_EVENT_TYPES or event_type.startswith("ce:"):
        return False
    return fits_in_url(event_type)


def segmentation_totals(base_url: str, api_key: str, secret_key: str, event_type: str,
                        start: date, end: date) -> dict[str, int]:
    """Daily totals of one event type (days in the Amplitude project's timezone), asked
    at most 365 days at a time. A name in ``SPECIAL_EVENT_TYPES`` (or ``ce:...``) is
    segmentation's own, not an event type (see ``askable_by_name``)."""
    if not fits_in_url(event_type):
        raise ContractError(f"the event type {event_type[:40]!r}... is too long to ask "
                            "segmentation by name (its URL would be over "
                            f"{MAX_TARGET_BYTES:,} bytes); take its counts from the Export API")
    totals: dict[str, int] = {}
    first = start
    while first <= end:
        last = min(end, first + timedelta(days=SEGMENTATION_DAYS - 1))
        totals.update(_segmentation_range(base_url, api_key, secret_key, event_type, first,
                                          last))
        first = last + timedelta(days=1)
    return totals


def _segmentation_range(base_url: str, api_key: str, secret_key: str, event_type: str,
                        start: date, end: date) -> dict[str, int]:
    url = base_url.rstrip("/") + _segmentation_target(event_type, start, end)
    # without a Retry-After, the retries spread over one window
    status, body, wait = _get_waiting(url, api_key, secret_key, max_wait=COST_WAIT,
                                      patience=COST_WAIT,
                                      throttle_wait=COST_WAIT / (ATTEMPTS - 1))
    if status == 429:  # the retries are spent, or the hourly budget is: not worth a wait
        after = f" in about {wait / 60:.0f} minutes" if wait is not None else " later"
        raise RateLimited(
            "Amplitude's Dashboard REST API refused the segmentation query over its cost "
            f"budget (429, {ATTEMPTS} attempts); the migration itself is done: run the "
            f"comparison again{after}", retry_after=wait)
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


def segmentation_revenue(base_url: str, api_key: str, secret_key: str, start: date,
                         end: date) -> tuple[dict[str, float] | None, str]:
    """Daily ``revenue_amount`` (segmentation's revenue series, days in the Amplitude
    project's timezone) and, when it is not answered (a 400: the emulator refuses revenue
    series), ``(None, why)``: the revenue is then compared through the export alone."""
    totals: dict[str, float] = {}
    first = start
    while first <= end:
        last = min(end, first + timedelta(days=SEGMENTATION_DAYS - 1))
        url = base_url.rstrip("/") + _segmentation_target("revenue_amount", first, last)
        status, body, _ = _get_waiting(url, api_key, secret_key, max_wait=COST_WAIT,
                                       patience=COST_WAIT,
                                       throttle_wait=COST_WAIT / (ATTEMPTS - 1))
        if status == 400:
            try:
                said = str(orjson.loads(body).get("error") or "")
            except (orjson.JSONDecodeError, AttributeError):
                said = body[:200].decode("utf-8", "replace")
            return None, f"revenue_amount refused, 400{': ' + said if said else ''}"
        error = classify_http(status, service="Amplitude Dashboard API",
                              body=body[:300].decode("utf-8", "replace"))
        if error is not None:
            raise error
        data = orjson.loads(body).get("data")
        if not isinstance(data, dict) or not data.get("series"):
            raise ContractError(f"segmentation answer without data.series: {body[:200]!r}")
        totals.update({str(d): float(v) for d, v in zip(data.get("xValues", []),
                                                        data["series"][0], strict=False)})
        first = last + timedelta(days=1)
    return totals, ""


def upload_hours(started: datetime, finished: datetime) -> tuple[datetime, datetime]:
    """The Export API's hour range covering uploads between two instants (UTC)."""
    since = started.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    until = finished.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return since, max(since, until)
