"""Mixpanel Raw Export API client (reference mixpanel-api.md §1), one day per window.

A window is one day with ``from_date == to_date``, or (``[source] export_window_days``)
a few days ``from_date..to_date`` whose next window starts the day after its last (both
dates are inclusive, so windows that shared a day would read it twice). Each window is streamed to a
``.part`` file in the work folder while its lines are parsed and counted; only when the
stream ended cleanly is the file renamed and handed over. A ``terminated early`` line,
a dropped connection or a timeout throws the part file away and the whole window is
fetched again, so a window is never half-counted. Memory stays flat: records live on
disk, not in lists.

Completed windows survive a crash: ``fetch_windows`` reuses a window whose data file and
``.meta.json`` sidecar agree, so a resumed run does not spend its 60 queries an hour on
days it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import NoReturn

import aiohttp
import orjson

from mp2amp.errors import (
    ConnectionLost,
    RateLimited,
    ServerError,
    StreamInterrupted,
    TerminalError,
    TransientError,
    Unreachable,
    redact_userinfo,
)
from mp2amp.extract.api import MixpanelSettings
from mp2amp.extract.export_errors import (
    http_error,
    never_connected,
    never_reached,
    request_timeout,
)
from mp2amp.extract.lines import (
    LineParser,
    is_terminated_early,
    parse_lines,
    split_lines,
)
from mp2amp.extract.ratelimit import RateLimiter, RetryBudget, Start
from mp2amp.models import SourceRecord
from mp2amp.pipeline.diskspace import FULL_ERRNOS, UNWRITABLE_ERRNOS
from mp2amp.proxyenv import NEVER_CONNECTED, proxy_for

log = logging.getLogger("mp2amp.extract")

READ_CHUNK = 1 << 20
UNREACHABLE_ATTEMPTS = 5  # refused connections before any answer that stop the run
# Between those attempts: a short wait (README: "5 connection attempts, ~5 s"), not the
# backoff, which is for a server that has answered and may be busy.
UNREACHABLE_DELAY, UNREACHABLE_JITTER = 1.0, 0.2

# Output cap per decompression step, so one small gzip chunk cannot inflate without bound.
GUNZIP_STEP = 1 << 20
QUERY_LOG = "query-starts.log"  # when this work folder's export queries started (ratelimit)


@dataclass(frozen=True, slots=True, order=True)
class Days:
    """The inclusive days of one export window: ``first == last`` for a one-day window."""

    first: date
    last: date

    @property
    def single(self) -> bool:
        return self.first == self.last

    @property
    def what(self) -> str:
        return "day" if self.single else "window"

    def __str__(self) -> str:
        return self.first.isoformat() if self.single else f"{self.first}..{self.last}"


def as_days(day: date | Days, last: date | None = None) -> Days:
    return day if isinstance(day, Days) else Days(day, last or day)


def windows_of(from_date: date, to_date: date, days_per_window: int = 1) -> list[Days]:
    """The range's windows of ``days_per_window`` days each (the last may be shorter)."""
    days = days_between(from_date, to_date)
    return [Days(days[i], days[min(i + days_per_window, len(days)) - 1])
            for i in range(0, len(days), max(1, days_per_window))]


@dataclass(frozen=True, slots=True)
class WindowFile:
    """A completely fetched export window on disk (Raw Export JSON lines, uncompressed).

    ``record_count`` is the number of SourceRecords ``iter_window_records`` yields for it,
    ``rejected_count`` how many of those are rejections (malformed lines), ``bytes`` the
    file size, ``attempts`` the requests it took (0 when reused from an earlier run).
    """

    day: date
    path: Path
    record_count: int
    rejected_count: int
    bytes: int
    attempts: int
    last: date | None = None  # the window's last day, when it has several

    @property
    def days(self) -> Days:
        return as_days(self.day, self.last)

    @property
    def source(self) -> str:
        return window_source(self.day, self.last)

    def discard(self) -> None:
        """Delete the window's files once they are no longer needed (after loading)."""
        for p in (self.path, meta_path(self.path)):
            p.unlink(missing_ok=True)


def window_source(day: date | Days, last: date | None = None) -> str:
    return f"export:{as_days(day, last)}"


def days_between(from_date: date, to_date: date) -> list[date]:
    """Every day of an inclusive range, the way ``from_date``/``to_date`` are meant."""
    if to_date < from_date:
        raise ValueError(f"to_date {to_date} is before from_date {from_date}")
    return [from_date + timedelta(days=i) for i in range((to_date - from_date).days + 1)]


def window_path(workdir: Path, day: date | Days, last: date | None = None) -> Path:
    return Path(workdir) / "export" / f"{as_days(day, last)}.jsonl"


def meta_path(path: Path) -> Path:
    return path.with_suffix(".meta.json")


def iter_window_records(window: WindowFile) -> Iterator[SourceRecord]:
    """The records of a fetched window, ``source`` = ``export:YYYY-MM-DD``."""
    with open(window.path, "rb") as fh:
        chunks = iter(lambda: fh.read(READ_CHUNK), b"")
        yield from parse_lines(window.source, split_lines(chunks))


def query_key(settings: MixpanelSettings) -> dict[str, object]:
    """What, besides the day, decides a window's content (a changed filter means refetch)."""
    return {"events": sorted(settings.events), "where": settings.where,
            "time_in_ms": settings.time_in_ms, "project_id": settings.project_id}


def completed_window(workdir: Path, day: date | Days,
                     settings: MixpanelSettings | None = None) -> WindowFile | None:
    """A window fetched by an earlier run, if its file is complete (and, given
    ``settings``, was fetched with the same query)."""
    span = as_days(day)
    path = window_path(workdir, span)
    try:
        meta = json.loads(meta_path(path).read_text())
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if meta.get("bytes") != size or meta.get("day") != span.first.isoformat() \
            or (meta.get("last") or meta.get("day")) != span.last.isoformat():
        return None
    if settings is not None and meta.get("query") != query_key(settings):
        return None
    return WindowFile(span.first, path, int(meta["record_count"]), int(meta["rejected_count"]),
                      size, 0, None if span.single else span.last)


async def fetch_windows(
    settings: MixpanelSettings,
    days: Iterable[date | Days],
    workdir: Path,
    *,
    concurrency: int = 4,
    session: aiohttp.ClientSession | None = None,
    limiter: RateLimiter | None = None,
    reuse_completed: bool = True,
) -> AsyncIterator[WindowFile]:
    """Fetch each window (a day, or ``Days``) once, several in flight, and yield each as it
    completes. Windows come out in completion order (each carries its ``day`` and ``days``). Leaving the loop
    early? Wrap in ``contextlib.aclosing`` so in-flight windows are cancelled at once
    (their part files are removed). A terminal error
    (credentials, a rejected request) or a window that kept failing past
    ``settings.max_attempts`` stops the iteration with that error; windows already
    yielded stay on disk and are reused next time.
    """
    todo = sorted({as_days(d) for d in days})
    limiter = limiter or RateLimiter(per_hour=settings.per_hour, per_second=settings.per_second,
                                     max_concurrent=settings.max_concurrent,
                                     journal=workdir / QUERY_LOG)
    width = max(1, min(concurrency, settings.max_concurrent))
    own_session = session is None
    if session is None:
        session = new_session()
    running: set[asyncio.Task[WindowFile]] = set()
    try:
        queue = list(reversed(todo))
        while queue or running:
            while queue and len(running) < width:
                day = queue.pop()
                done_before = (completed_window(workdir, day, settings) if reuse_completed
                               else None)
                if done_before is not None:
                    yield done_before
                    continue
                running.add(asyncio.create_task(
                    fetch_window(session, settings, day, workdir, limiter=limiter),
                    name=f"export {day}"))
            if not running:
                continue
            finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            # Retrieve every finished task's outcome (an unretrieved exception would be
            # logged at garbage collection); hand over the good windows, then fail.
            error: BaseException | None = None
            ready = []
            for task in sorted(finished, key=lambda t: t.get_name()):
                exc = task.exception()
                if exc is None:
                    ready.append(task.result())
                elif error is None:
                    error = exc
            for window in ready:
                yield window
            if error is not None:
                raise error
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if own_session:
            await session.close()


def new_session() -> aiohttp.ClientSession:
    """The Export API and Engage session. Export requests gunzip for themselves (see
    _Gunzip); the session default stays on. Not trust_env: it reads ~/.netrc too, whose
    login for the host made aiohttp refuse our Authorization header (or, for an https://
    proxy, it dropped the proxy): each request gets ``proxy_for`` its URL instead."""
    return aiohttp.ClientSession(auto_decompress=True, trust_env=False,
                                 timeout=aiohttp.ClientTimeout(total=None))


def request_headers(settings: MixpanelSettings, accept: str) -> dict[str, str]:
    """The headers of a Mixpanel request: its credentials as an Authorization header
    (aiohttp 3.14 deprecates ``auth=``)."""
    return {"Accept": accept, "Authorization": settings.auth_header()}


async def fetch_window(
    session: aiohttp.ClientSession,
    settings: MixpanelSettings,
    day: date | Days,
    workdir: Path,
    *,
    limiter: RateLimiter,
) -> WindowFile:
    """Fetch one window completely, retrying transient failures from scratch.

    A 429 is not a failure: the server asked us to wait, and several windows racing for
    one freed slot would otherwise use up ``max_attempts`` and stop a run that only had
    to wait. Throttles have their own, larger cap (``max_rate_limited``).
    """
    span = as_days(day)
    budget = RetryBudget(f"export of {span}", settings.max_attempts, settings.max_rate_limited,
                         settings.backoff_base, settings.backoff_cap,
                         then="run the same mp2amp migrate command with --resume")
    requests = 0
    while True:
        requests += 1
        try:
            return await _fetch_once(session, settings, span, workdir, limiter, requests)
        except TransientError as exc:
            if isinstance(exc, Unreachable) and not limiter.answered \
                    and requests >= UNREACHABLE_ATTEMPTS:
                # a wrong api_host or port: backing off through max_attempts took minutes
                raise TerminalError(never_reached(settings, exc, requests)) from None
            delay = budget.delay(exc)
            if isinstance(exc, Unreachable) and not limiter.answered:
                delay = min(delay, refused_wait())
            log.warning("%s; request %d in %.1f s", _about(span, exc), requests + 1, delay)
            if isinstance(exc, RateLimited):
                limiter.pause(delay)  # everyone waits, not just this window
                # on the clock the pause is measured on, so this window is not held twice
                await limiter.sleep(delay)
            else:
                await asyncio.sleep(delay)


def refused_wait() -> float:
    """Jittered: windows refused together do not all knock again at the same instant."""
    return UNREACHABLE_DELAY * random.uniform(1 - UNREACHABLE_JITTER, 1 + UNREACHABLE_JITTER)


def _about(span: Days, exc: Exception) -> str:
    """The error's message, naming the window once (most messages name it already)."""
    said = str(exc)
    return said if str(span) in said else f"export of {span}: {said}"


def _params(settings: MixpanelSettings, span: Days) -> dict[str, str]:
    params = {**settings.auth_params(), "from_date": span.first.isoformat(),
              "to_date": span.last.isoformat()}
    if settings.events:
        params["event"] = json.dumps(list(settings.events))
    if settings.where:
        params["where"] = settings.where
    if settings.time_in_ms:
        params["time_in_ms"] = "true"
    return params


async def _fetch_once(
    session: aiohttp.ClientSession,
    settings: MixpanelSettings,
    span: Days,
    workdir: Path,
    limiter: RateLimiter,
    attempt: int,
) -> WindowFile:
    final = window_path(workdir, span)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _raise_disk_error(final.parent, exc)
    part = final.with_suffix(".jsonl.part")
    headers = {**request_headers(settings, "text/plain"), "Accept-Encoding": "gzip"}
    timeout = request_timeout(settings)
    done = False
    start: Start | None = None
    try:
        proxy = proxy_for(settings.export_url)  # HTTPS_PROXY / NO_PROXY: a corporate proxy
        async with limiter.slot() as start, session.get(
                settings.export_url, params=_params(settings, span), headers=headers,
                proxy=proxy, timeout=timeout, auto_decompress=False) as resp:
            limiter.answered = True
            if resp.status != 200:
                body = (await resp.read())[:4000].decode("utf-8", "replace")
                error = http_error(resp.status, body, resp.headers.get("Retry-After"), span,
                                   settings)
                if isinstance(error, RateLimited):  # refused, not run: no query of the hour
                    limiter.refund(start)
                raise error
            if resp.content_type in _NOT_AN_EXPORT:
                raise _page_not_export(span, (await resp.read())[:4000], settings)
            counted = await _stream_to_file(resp, part, span)
        done = True
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        raise StreamInterrupted(f"the export stream of {span} broke off ({_shown(exc)}); "
                                f"fetching the whole {span.what} again") from exc
    except NEVER_CONNECTED as exc:  # refused, no route, connect timed out, a proxy's no
        if start is not None:  # never reached Mixpanel: no query of the hour either
            limiter.refund(start)
        raise never_connected(exc, span, settings) from exc
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        raise ConnectionLost(f"export of {span}: {type(exc).__name__}: {_shown(exc)}; "
                             f"fetching the whole {span.what} again") from exc
    finally:
        if not done:  # failed, or cancelled: never leave half a window behind
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)
    records, rejected = counted
    size = part.stat().st_size
    os.replace(part, final)
    window = WindowFile(span.first, final, records, rejected, size, attempt,
                        None if span.single else span.last)
    meta = {k: (str(v) if isinstance(v, date | Path) else v) for k, v in asdict(window).items()}
    meta["query"] = query_key(settings)
    tmp = meta_path(final).with_suffix(".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, meta_path(final))
    return window


class _Gunzip:
    """Incremental gunzip that knows whether the stream was complete.

    aiohttp's own decompression accepts a gzip body that stops short (it checks only
    deflate), so a body cut without HTTP framing to show it would pass as a whole day.
    """

    def __init__(self, day: date | Days) -> None:
        self.day = as_days(day)
        self._d = zlib.decompressobj(wbits=31)
        self._fed = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._fed = self._fed or bool(data)
        try:
            while data:
                if self._d.eof:  # another gzip member follows (concatenated gzip)
                    self._d = zlib.decompressobj(wbits=31)
                out = self._d.decompress(data, GUNZIP_STEP)
                if out:
                    yield out
                data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
        except zlib.error as exc:
            raise StreamInterrupted(f"the gzip body of the export of {self.day} is corrupt "
                                    f"({exc}); fetching the whole {self.day.what} again") from exc

    def finish(self, framed: bool) -> bytes:
        """The last output; raises if the stream stopped short. An empty body is whole
        when the HTTP framing says it ended there."""
        if not self._d.eof and (self._fed or not framed):
            raise StreamInterrupted(f"the gzip body of the export of {self.day} stopped short "
                                    f"of its end; fetching the whole {self.day.what} again")
        return self._d.flush()


def _framed(resp: aiohttp.ClientResponse) -> bool:
    """Whether aiohttp can tell a cut body from a whole one (length or chunked framing)."""
    return ("Content-Length" in resp.headers
            or "chunked" in resp.headers.get("Transfer-Encoding", "").lower())


async def _stream_to_file(resp: aiohttp.ClientResponse, part: Path,
                          day: date | Days) -> tuple[int, int]:
    """Write the body to ``part`` while counting records the way the file will be read."""
    span = as_days(day)
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        gunzip: _Gunzip | None = _Gunzip(span)
    elif encoding in ("", "identity"):
        gunzip = None
    else:
        raise TerminalError(f"Mixpanel export of {span} came with Content-Encoding "
                            f"{encoding!r}, but only gzip was asked for")
    parser = LineParser(window_source(span))
    records = rejected = lineno = 0

    loads, decode_error = orjson.loads, orjson.JSONDecodeError

    def take(line: bytes) -> None:
        nonlocal records, rejected, lineno
        lineno += 1
        if parser.idle:  # fast path: a whole object alone on its line
            try:
                if type(loads(line)) is dict:
                    records += 1
                    return
            except decode_error:
                pass
        if is_terminated_early(line):
            raise StreamInterrupted(f"Mixpanel ended the export of {span} with 'terminated "
                                    f"early' after {records} records; fetching the whole "
                                    f"{span.what} again")
        for rec in parser.feed(lineno, line):
            records += 1
            rejected += rec.record is None

    try:
        out = open(part, "wb")  # noqa: SIM115 - closed below, write errors are translated
    except OSError as exc:
        _raise_disk_error(part, exc)
    pending: list[bytes] = []  # an unfinished line's pieces, joined once (see split_lines)
    # The last line with content and the blank ones after it, taken once the next line
    # comes: where an unframed body ends, its last line must be checked before it is fed.
    held: list[bytes] = []

    def hold(line: bytes) -> None:
        if line.strip():
            for earlier in held:
                take(earlier)
            held.clear()
        held.append(line)

    def write(chunk: bytes) -> None:
        try:
            out.write(chunk)
        except OSError as exc:
            _raise_disk_error(part, exc)
        if b"\n" not in chunk:
            if chunk:
                pending.append(chunk)
            return
        if pending:
            pending.append(chunk)
            chunk = b"".join(pending)
            pending.clear()
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            pending.append(rest)
        for line in lines:
            hold(line)

    with out:
        async for raw in resp.content.iter_any():
            for chunk in ((raw,) if gunzip is None else gunzip.feed(raw)):
                write(chunk)
        if gunzip is not None:
            write(gunzip.finish(_framed(resp)))
        tail = b"".join(pending)
        if tail:
            hold(tail)
        last = held[0] if held and held[0].strip() else b""
        if gunzip is None and last and not _framed(resp) and not is_terminated_early(last) \
                and not parser.completes(last):
            # No framing, and the last line is no whole record (nor the end of a split
            # one), with or without a newline after it: the connection closed mid-record.
            raise StreamInterrupted(f"the export stream of {span} ended in the middle of a "
                                    f"record after {records} records; fetching the whole "
                                    f"{span.what} again")
        for line in held:
            take(line)
        for rec in parser.finish():
            records += 1
            rejected += rec.record is None
    return records, rejected


def _raise_disk_error(part: Path, exc: OSError) -> NoReturn:
    """A write of the window that failed. A full disk or an unwritable work folder goes on
    as it is (naming the file) to migrate's handler (``pipeline/diskspace.py``), which says
    to free space and ``--resume``; a plain "run again" would be refused as a used folder."""
    if exc.errno in FULL_ERRNOS or exc.errno in UNWRITABLE_ERRNOS:
        if exc.filename is None:  # a write() names no file
            exc.filename = str(part)
        raise exc
    raise TerminalError(f"cannot write the export window {part}: {exc}; fix the work "
                        "folder's disk, then run the same `mp2amp migrate` command with "
                        "--resume (completed windows are kept)") from exc


# The export answers text/plain JSONL (reference 1.4). A web page with a 200 is a proxy's,
# a captive portal's or another site's at api_host: its lines are not a day of events.
_NOT_AN_EXPORT = frozenset({"text/html", "application/xhtml+xml"})


def _shown(exc: BaseException) -> str:
    """An aiohttp error's text for a message: some (InvalidURL, a redirect's error) hold the
    URL, with any user:password written into api_host."""
    return redact_userinfo(str(exc))


def _page_not_export(span: Days, body: bytes, settings: MixpanelSettings) -> ServerError:
    snippet = " ".join(body.decode("utf-8", "replace").split())[:120] or "(empty)"
    return ServerError(f"Mixpanel export of {span} answered 200 with a web page, not events "
                       f"({snippet!r}): a proxy, a captive portal or a wrong mixpanel.api_host "
                       f"({redact_userinfo(settings.export_url)})? Nothing of it was kept; "
                       f"fetching the whole {span.what} again", status=200)
