"""``GET /api/2.0/export``: Raw Event Export, streamed from the day files.

The day files (``events/YYYY-MM-DD.jsonl.gz``, one per project-timezone day) are read
line by line in a worker thread and sent in chunks, so memory stays flat whatever the
window. Lines are passed through byte for byte unless the answer must differ from the
file (``time_in_ms``, or a fractional or millisecond ``time`` that export gives as whole
seconds).
When the emulator's timezone differs from the project's, events are re-bucketed by
their ``time``; otherwise the file of day D is exactly what ``from_date=to_date=D``
returns (contracts §1), malformed lines included.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import re
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from mp2amp.emulators.mixpanel.auth import AuthFailure, authenticate
from mp2amp.emulators.mixpanel.faults import TERMINATED_EARLY_LINE, FaultPlan, split_line
from mp2amp.emulators.mixpanel.ratelimit import Refusal
from mp2amp.emulators.mixpanel.state import STATE_KEY, EmulatorState, query_error
from mp2amp.emulators.mixpanel.where import Datetime, WhereError, compile_where

MAX_LIMIT = 100_000
EARLIEST = date(2011, 7, 10)  # raw export starts here; also bounds the days a request scans
GZIP_THRESHOLD = 1400  # "If set to gzip and the response body is > 1400 bytes"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# a line without a fractional "time" anywhere needs no parsing when nothing filters it
# a "time" the answer must change: fractional (rounded down to seconds), or in ms (12+
# digits) while the query asked for seconds; anything else is passed on byte for byte
_TIME_TO_CHANGE = re.compile(rb'"time"\s*:\s*-?(?:\d+[.eE]|\d{12,})')
# a stored "time" above this is already in milliseconds (records as real exports and docs
# show them, e.g. 1618716477000); the same rule as the ingestion endpoints'
MS_TIME_ABOVE = 100_000_000_000
_UTC = ZoneInfo("UTC")


def is_ms_time(value: float) -> bool:
    return abs(value) > MS_TIME_ABOVE


class DayFileError(Exception):
    """A day file cannot be read (corrupt gzip, I/O error): the export cannot go on."""

    def __init__(self, path: Path, line: int, cause: BaseException) -> None:
        super().__init__(f"{path.parent.name}/{path.name} is unreadable after line {line}: {cause}")


class _Drop:
    """Marker in the chunk stream: cut the connection here."""


DROP = _Drop()
Chunk = bytes | _Drop


@dataclass(frozen=True)
class ExportQuery:
    from_date: date
    to_date: date
    events: frozenset[str] | None
    where: Callable[[Callable[[str], Any]], bool] | None
    limit: int | None
    time_in_ms: bool


def _flag(value: str | None) -> bool | None:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    return None


def parse_query(params: Any, serve_tz: ZoneInfo, today: date) -> ExportQuery | str:
    """Validate the export parameters; a string is the 400 message."""
    dates: dict[str, date] = {}
    for name in ("from_date", "to_date"):
        raw = params.get(name)
        if raw is None or raw == "":
            return f"{name} is a required parameter"
        if not _DATE.match(raw):
            return f"{name} must be a date in yyyy-mm-dd format, got {raw!r}"
        try:
            dates[name] = date.fromisoformat(raw)
        except ValueError:
            return f"{name} is not a valid date: {raw!r}"
    if dates["from_date"] < EARLIEST:
        return f"from_date cannot be earlier than {EARLIEST.isoformat()}"
    if dates["to_date"] > today:
        return "to_date cannot be later than today"
    if dates["from_date"] > dates["to_date"]:
        return "from_date cannot be later than to_date"
    events: frozenset[str] | None = None
    if params.get("event") not in (None, ""):
        try:
            parsed = orjson.loads(params["event"])
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(e, str) for e in parsed):
            return 'event must be a JSON array of event names, e.g. ["Signed up","Purchase"]'
        events = frozenset(parsed) if parsed else None
    where = None
    if params.get("where") not in (None, ""):
        try:
            # the expression's own date strings in the serving zone; the events' date
            # properties are UTC (reference 5.5), as engage reads the profiles'
            where = compile_where(params["where"], serve_tz, _UTC)
        except WhereError as exc:
            return f"invalid where expression: {exc}"
    limit: int | None = None
    if params.get("limit") not in (None, ""):
        try:
            limit = int(params["limit"])
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            return f"limit must be an integer between 1 and {MAX_LIMIT}, got {params['limit']!r}"
    time_in_ms = _flag(params.get("time_in_ms"))
    if time_in_ms is None:
        return f"time_in_ms must be true or false, got {params.get('time_in_ms')!r}"
    return ExportQuery(dates["from_date"], dates["to_date"], events, where, limit, time_in_ms)


def day_file(events_dir: Path, day: date) -> Path | None:
    for suffix in (".jsonl.gz", ".jsonl", ".json.gz", ".json"):
        path = events_dir / f"{day.isoformat()}{suffix}"
        if path.exists():
            return path
    return None


def _open(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


class ExportReader:
    """Yields the export's lines for one query, reading one day file at a time."""

    def __init__(
        self, query: ExportQuery, events_dir: Path, data_tz: ZoneInfo, serve_tz: ZoneInfo, legacy: bool
    ) -> None:
        self.q = query
        self.events_dir = events_dir
        self.data_tz = data_tz
        self.legacy = legacy
        self.rebucket = data_tz.key != serve_tz.key
        self.verbatim = not (self.rebucket or query.time_in_ms or query.events is not None or query.where is not None)
        self.start = datetime.combine(query.from_date, dtime(0), serve_tz).timestamp()
        self.end = datetime.combine(query.to_date + timedelta(days=1), dtime(0), serve_tz).timestamp()

    def days(self) -> list[date]:
        first, last = self.q.from_date, self.q.to_date
        if self.rebucket:  # the project-timezone days that overlap the window
            first = datetime.fromtimestamp(self.start, self.data_tz).date()
            last = datetime.fromtimestamp(self.end - 1, self.data_tz).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def utc_seconds(self, value: Any) -> float | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        if is_ms_time(value):
            value = value / 1000
        if not self.legacy:
            return float(value)
        # legacy projects store project-local wall-clock time as if it were UTC
        try:
            wall = datetime.fromtimestamp(value, UTC).replace(tzinfo=self.data_tz)
        except (OverflowError, OSError, ValueError):
            return None
        return wall.timestamp()

    def lines(self) -> Iterator[bytes]:
        q = self.q
        emitted = 0
        for day in self.days():
            path = day_file(self.events_dir, day)
            if path is None:
                continue
            day_inside = q.from_date <= day <= q.to_date
            number = 0
            try:
                with _open(path) as fh:
                    for number, raw in enumerate(fh, 1):  # noqa: B007 - read in the except
                        out = self._line(raw, day_inside)
                        if out is None:
                            continue
                        yield out
                        emitted += 1
                        if q.limit is not None and emitted >= q.limit:
                            return
            except (OSError, EOFError, zlib.error) as exc:
                raise DayFileError(path, number, exc) from exc

    def _line(self, raw: bytes, day_inside: bool) -> bytes | None:
        q = self.q
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            return None
        if self.verbatim and _TIME_TO_CHANGE.search(line) is None:
            return line + b"\n"
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict):
            # a broken line cannot match a filter; unfiltered, it is passed on as is
            if q.events is not None or q.where is not None or not day_inside:
                return None
            return line + b"\n"
        props = rec.get("properties")
        if not isinstance(props, dict):
            props = {}
        t = props.get("time")
        if self.rebucket:
            utc = self.utc_seconds(t)
            inside = day_inside if utc is None else self.start <= utc < self.end
            if not inside:
                return None
        if q.events is not None and rec.get("event") not in q.events:
            return None
        if q.where is not None and not q.where(self._lookup(props)):
            return None
        if isinstance(t, int | float) and not isinstance(t, bool):
            # with time_in_ms, seconds become ms and a time stored in ms stays as it is;
            # without it, every time is whole seconds ("second precision")
            if q.time_in_ms:
                new_t = int(t) if is_ms_time(t) else round(t * 1000)
            else:
                new_t = int(t // 1000) if is_ms_time(t) else int(t)
            if new_t != t or isinstance(t, float):
                props["time"] = new_t
                return orjson.dumps(rec) + b"\n"
        return line + b"\n"

    def _lookup(self, props: dict[str, Any]) -> Callable[[str], Any]:
        def get(key: str) -> Any:
            if key == "$time":
                utc = self.utc_seconds(props.get("time"))
                return None if utc is None else Datetime(utc)
            return props.get(key)

        return get


def with_fault(lines: Iterator[bytes], plan: FaultPlan | None, rng: random.Random) -> Iterator[Chunk]:
    """Apply ``plan`` to the line stream (clamped to its length so the fault always happens)."""
    if plan is None:
        yield from lines
        return
    if plan.kind != "split" and plan.after_lines == 0:
        yield TERMINATED_EARLY_LINE if plan.kind == "terminated_early" else DROP
        return
    target = max(1, plan.after_lines)
    sent = 0
    pending = next(lines, None)
    while pending is not None:
        following = next(lines, None)
        last = following is None
        if plan.kind == "split" and (sent + 1 == target or (last and sent + 1 < target)):
            pending = split_line(pending, rng)
        yield pending
        sent += 1
        if plan.kind != "split" and (sent == target or last):
            break
        pending = following
    if plan.kind == "terminated_early":
        yield TERMINATED_EARLY_LINE
    elif plan.kind == "drop":
        if following is not None:  # a real connection breaks anywhere, mid-record too
            yield following[: len(following) // 2]
        yield DROP


def chunked(items: Iterator[Chunk], size: int) -> Generator[Chunk, None, None]:
    buf: list[bytes] = []
    held = 0
    for item in items:
        if isinstance(item, _Drop):
            if buf:
                yield b"".join(buf)
            yield item
            return
        buf.append(item)
        held += len(item)
        if held >= size:
            yield b"".join(buf)
            buf, held = [], 0
    if buf:
        yield b"".join(buf)


async def handle_export(request: web.Request) -> web.StreamResponse:
    state: EmulatorState = request.app[STATE_KEY]
    cfg = state.config
    state.stats["export_requests"] += 1
    who = authenticate(
        cfg, state.project_id, request.headers.get("Authorization"), request.query.get("project_id")
    )
    if isinstance(who, AuthFailure):
        return query_error(request, who.status, who.message)
    serve_tz = ZoneInfo(state.timezone)
    today = datetime.fromtimestamp(cfg.clock(), serve_tz).date()
    query = parse_query(request.query, serve_tz, today)
    if isinstance(query, str):
        return query_error(request, 400, query)
    slot = state.export_limiter.try_acquire()
    if isinstance(slot, Refusal):
        state.stats["export_429"] += 1
        return query_error(
            request,
            429,
            f"Query rate limit exceeded: this project allows {slot.reason}",
            **{"Retry-After": str(slot.retry_after)},
        )
    try:
        plan = state.faults.next_plan()
        if plan is not None:
            state.faults.injected[plan.kind] += 1
        reader = ExportReader(
            query, cfg.data_dir / "events", state.project.tz, serve_tz, state.project.legacy_time
        )
        rng = random.Random(f"{state.faults.seed}:{state.stats['export_requests']}")
        gen = chunked(with_fault(reader.lines(), plan, rng), cfg.chunk_bytes)
        return await _stream(request, state, gen)
    finally:
        slot.release()


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header lets gzip through (RFC 9110 12.5.3): listed as
    ``gzip`` (or ``*`` without a ``gzip`` entry) with a quality above zero."""
    star = None
    for part in header.lower().split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0  # a quality that does not parse is no consent
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q > 0
    return bool(star)


async def _stream(request: web.Request, state: EmulatorState, gen: Generator[Chunk, None, None]) -> web.StreamResponse:
    loop = asyncio.get_running_loop()

    def pull() -> Chunk | None:
        return next(gen, None)

    # Gzip only "if ... the response body is > 1400 bytes" (reference 1.3): read ahead
    # until the body is known to be longer than that, or known to end within it, whatever
    # the chunk size. A connection cut after some bytes counts as a longer body.
    pending: list[Chunk] = []
    held = 0
    ended = False
    try:
        while held <= GZIP_THRESHOLD:
            chunk = await loop.run_in_executor(None, pull)
            if chunk is None:
                ended = True
                break
            pending.append(chunk)
            if isinstance(chunk, _Drop):
                break
            held += len(chunk)
    except DayFileError as exc:
        state.stats["export_file_errors"] += 1
        return query_error(request, 500, str(exc))
    except WhereError as exc:  # the expression, not the server: a client error
        return query_error(request, 400, f"invalid where expression: {exc}")
    small = held <= GZIP_THRESHOLD and (ended or held == 0)
    use_gzip = accepts_gzip(request.headers.get("Accept-Encoding", "")) and not small
    resp = web.StreamResponse(status=200)
    resp.content_type = "text/plain"
    resp.charset = "utf-8"
    if use_gzip:
        resp.headers["Content-Encoding"] = "gzip"
    resp.enable_chunked_encoding()
    gz = zlib.compressobj(6, zlib.DEFLATED, 31) if use_gzip else None
    try:
        await resp.prepare(request)  # in the try: a client gone already ends it quietly
        while True:
            chunk = pending.pop(0) if pending else await loop.run_in_executor(None, pull)
            if chunk is None:
                break
            if isinstance(chunk, _Drop):
                if gz is not None:
                    await resp.write(gz.flush(zlib.Z_SYNC_FLUSH))
                state.stats["export_dropped"] += 1
                if request.transport is not None:
                    request.transport.close()
                return resp
            state.stats["export_bytes"] += len(chunk)
            await resp.write(gz.compress(chunk) + gz.flush(zlib.Z_SYNC_FLUSH) if gz else chunk)
            if state.config.chunk_delay:
                await asyncio.sleep(state.config.chunk_delay)
        if gz is not None:
            await resp.write(gz.flush())
        await resp.write_eof()
    except ConnectionError:  # the client left (a stopped migration): no aiohttp traceback
        state.stats["export_client_gone"] += 1
    except DayFileError:
        # headers are sent: cut the body short, as a failing server would
        state.stats["export_file_errors"] += 1
        if request.transport is not None:
            request.transport.close()
    except WhereError:  # headers are sent: a 400 is too late, cut the body short instead
        if request.transport is not None:
            request.transport.close()
    finally:
        gen.close()
    return resp
