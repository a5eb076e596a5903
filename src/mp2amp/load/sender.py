"""One task per lane: take the next request from the lane, send it, act on the verdict.

Only this module talks HTTP. Each response goes through ``responses.classify`` and the
verdict decides every event's fate: accepted, dead-lettered, held (throttle / quota),
resent at once, or the whole request retried after a backoff.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, overload

import aiohttp
import orjson
from isal import isal_zlib
from yarl import URL

from mp2amp.errors import ConnectionLost, TerminalError, parse_retry_after, redact_userinfo
from mp2amp.load.batcher import ENVELOPE_BYTES
from mp2amp.load.observer import Submitted, parked_key
from mp2amp.load.packed import OpenBody
from mp2amp.load.responses import IdPair, Verdict, classify
from mp2amp.load.settings import CONNECT_FAILED, LoadReport
from mp2amp.proxyenv import NEVER_CONNECTED, PROXY_REFUSALS, proxy_failure_text, proxy_fix

if TYPE_CHECKING:
    from mp2amp.load.uploader import Lane, Uploader

log = logging.getLogger("mp2amp.load")

HEADERS = {"Content-Type": "application/json", "Accept": "*/*"}
# A server-given wait longer than this is logged: without a line the run looks hung.
LONG_WAIT = 60.0
GZIP_HEADERS = {**HEADERS, "Content-Encoding": "gzip"}


class IdPairs(Sequence[IdPair]):
    """The (device, user) of each event of a request, read off the items when asked: only
    a response that is not a 200 needs them."""

    def __init__(self, items: Sequence[Submitted]) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> IdPair: ...
    @overload
    def __getitem__(self, index: slice) -> list[IdPair]: ...
    def __getitem__(self, index: int | slice) -> IdPair | list[IdPair]:
        if isinstance(index, slice):
            return [(i.device, i.user) for i in self._items[index]]
        item = self._items[index]
        return item.device, item.user

    def __iter__(self) -> Iterator[IdPair]:
        return ((i.device, i.user) for i in self._items)


class RetriesExhausted(TerminalError):
    """One request failed ``max_retries`` times in a row: stop; ``--resume`` continues later."""


# Attempts to connect at all, while Amplitude never answered in this run, before the run
# stops: a wrong api_host or port is refused at once, and the 20 backed-off retries a
# flaky Amplitude gets took ~11 minutes to say so. A blip at the start still gets ~6 s.
UNREACHABLE_ATTEMPTS = 5

# Seconds a connect may take in all (DNS, every address of the host, a proxy's CONNECT, TLS)
# before the attempt counts as "cannot connect": a firewall dropping packets never refuses,
# and under the request's whole timeout alone such a connect looked like a request sent then
# lost (retried for ~45 minutes).
CONNECT_TIMEOUT = 10.0

class ProxyRefused(RetriesExhausted):
    """The proxy refused to connect to Amplitude: nothing was sent, so, as for an
    Amplitude never reached, a resume may still correct the API key."""


def session_timeout(total: float) -> aiohttp.ClientTimeout:
    """The uploader session's timeouts: ``total`` per request, and a connect timeout under
    it, so that a hanging connect ends as a connect timeout (nothing sent), not as the
    request's timeout (which would fire first were the two equal). ``connect`` bounds the
    whole connect: aiohttp's ``sock_connect`` is per address, so a name with N addresses
    that all drop packets would take N times it. (It also bounds waiting for a pooled
    connection, which never happens here: the pool has one connection per lane.)"""
    return aiohttp.ClientTimeout(total=total, connect=min(CONNECT_TIMEOUT, total / 2))


def never_sent(exc: BaseException) -> bool:
    """Whether a failed request never reached a server (``proxyenv.NEVER_CONNECTED``):
    safe to resend, and it says nothing was reached."""
    return isinstance(exc, NEVER_CONNECTED)


def proxy_refusal(exc: BaseException, url: str, proxy: str | None) -> ProxyRefused | None:
    """The error that stops the run when the proxy refused the CONNECT for good (407, 403):
    retried, it would answer the same for ~15 minutes of backoff."""
    if not isinstance(exc, aiohttp.ClientHttpProxyError) or exc.status not in PROXY_REFUSALS:
        return None
    return proxy_refused(exc.status, exc.message, url, proxy)


def proxy_refused(status: int, reason: str, url: str, proxy: str | None) -> ProxyRefused:
    """The stop for a proxy's 407 or 403, to a CONNECT (an https:// host) or as the answer
    to the POST itself (an http:// host): nothing reached Amplitude."""
    fix = proxy_fix(status, URL(url).host or url, proxy)
    return ProxyRefused(redact_userinfo(
        f"the proxy {proxy or 'on the way'} answered {status} {reason} when asked for "
        f"Amplitude at {url}; nothing was sent. {fix}, "
        "then run the same `mp2amp migrate` command with --resume (nothing was lost)"))


# Seconds over which Amplitude averages a device's or user's events per second: "To reach
# an EPDS limit of 1000, a device must send 30,000 events in a 30-second period".
RATE_WINDOW = 30


class Sender:
    def __init__(self, up: Uploader) -> None:
        self.up = up
        self.answered = False  # Amplitude answered a request of this run (any status)
        s = up.settings
        self._head = b'{"api_key":' + orjson.dumps(s.api_key) + b',"events":['
        options = b"" if s.min_id_length is None else \
            b',"options":{"min_id_length":' + str(s.min_id_length).encode() + b"}"
        self._tail = b"]" + options + b"}"
        self._max_events = s.max_events
        self._max_bytes = up.settings.limits.max_bytes
        # Set when Amplitude (or something on the way) could not read a gzip body but read
        # the same body uncompressed: the run's requests go uncompressed from then on.
        self.plain = not s.gzip

    async def run_lane(self, lane: Lane) -> None:
        up = self.up
        try:
            while up.failure is None:
                items = self.take(lane)
                if not items:
                    lane.wake.clear()
                    await lane.wake.wait()
                    continue
                await self.send(lane, items)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an observer or a bug: stop the run, do not hang it
            up.fail(exc)

    def take(self, lane: Lane) -> list[Submitted]:
        """The next request of this lane: events in order, held devices/users diverted,
        within the lane's (adaptive) caps, and from one batch so requests match batches."""
        up = self.up
        queue = lane.queue
        items: list[Submitted] = []
        size = ENVELOPE_BYTES
        batch_id = ""
        diverted = 0
        holds = up.holds
        parked = up.parked_keys
        cap_events, cap_bytes = lane.cap_events, lane.cap_bytes
        while queue:
            item = queue[0]
            packed = item.packed
            if packed is not None:
                if items:
                    break  # another batch (a packed batch is always whole)
                n = len(packed)
                if not len(holds) and not parked and n <= cap_events \
                        and packed.raw_size <= cap_bytes and item.slot == 0 \
                        and len(queue) >= n and queue[n - 1].packed is packed:
                    return [queue.popleft() for _ in range(n)]  # the usual case: as compressed
                # sent in parts or diverted: the events' own bytes again
                packed.unpack(itertools.islice(queue, n))  # the batch is at the front
            if len(holds) and holds.divert(item):  # len() first: no holds is the usual case
                queue.popleft()
                diverted += 1
                continue
            # behind its device's parked events, or its user's when Amplitude named that
            # user over the quota (it refuses that user's events from any device)
            if parked and (parked_key(item) in parked
                           or (item.user is not None and item.user in up.parked_users)):
                queue.popleft()
                up.dequeued(1)
                up.park_unsent(item)
                continue
            if items and (len(items) >= cap_events or item.batch_id != batch_id
                          or size + len(item.data) + 1 > cap_bytes):
                break
            queue.popleft()
            items.append(item)
            batch_id = item.batch_id
            size += len(item.data) + 1
        if diverted:
            up.dequeued(diverted)
        return items

    def open_body(self) -> OpenBody:
        """A new batch's body, compressed as its events arrive (see packed.py)."""
        return OpenBody(self._head, self.up.settings.gzip_level)

    @property
    def tail(self) -> bytes:
        return self._tail

    def body(self, items: Sequence[Submitted]) -> tuple[bytes, int]:
        packed = items[0].packed if items else None
        if packed is not None and len(items) == len(packed) and items[-1].packed is packed:
            return packed.body, packed.raw_size
        if self.up.settings.gzip:  # an unpacked batch (or part): compressed the same way
            # ISA-L gzip: ~5x zlib level 1 at a better ratio (levels 0-3; 1 is its default)
            body = self.open_body()
            for item in items:
                body.add(item.data)
            done = body.close(self._tail)
            return done.body, done.raw_size
        events = b",".join([i.data for i in items])
        return b"".join((self._head, events, self._tail)), \
            len(self._head) + len(events) + len(self._tail)

    async def send(self, lane: Lane, items: list[Submitted]) -> None:
        """Send one request until its verdict is final for this round."""
        up = self.up
        s = up.settings
        body, raw_size = self.body(items)
        headers = GZIP_HEADERS if s.gzip else HEADERS
        if s.gzip and self.plain:
            body, headers = isal_zlib.decompress(body, 31), HEADERS
        ids = IdPairs(items)
        attempt = 0
        while True:
            up.announce(items)
            up.report.requests += 1
            try:
                post = up.session.post  # the proxy only when there is one: test fakes
                request = (post(s.url, data=body, headers=headers) if up.proxy is None
                           else post(s.url, data=body, headers=headers, proxy=up.proxy))
                async with request as resp:
                    text = await resp.read()
                    status = resp.status
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                stop = self._connection_failed(exc, attempt)
                if stop is not None:
                    up.fail(stop)
                    return
                verdict = Verdict("retry", 0, message=type(exc).__name__, error=ConnectionLost(
                    f"connection to Amplitude failed ({type(exc).__name__}); the request is "
                    "resent with the same insert_ids"))
            else:
                if status == 407 and up.proxy is not None:  # the proxy's, not Amplitude's
                    up.report.requests_by_status[CONNECT_FAILED] += 1
                    up.fail(proxy_refused(status, resp.reason or "Proxy Authentication "
                                          "Required", s.url, up.proxy))
                    return
                self.answered = True
                up.report.requests_by_status[str(status)] += 1
                verdict = classify(status, text, ids=ids, retry_after=retry_after,
                                   url=s.url, gzipped=headers is GZIP_HEADERS)
            if verdict.unreadable_body and headers is GZIP_HEADERS:
                # the same events uncompressed: only a body it cannot read at all is retried
                body, headers = isal_zlib.decompress(body, 31), HEADERS
                up.report.gzip_refused += 1
                log.warning("Amplitude could not read a gzip request body (HTTP %d %s): "
                            "sending it again uncompressed", verdict.status, verdict.message)
                continue
            if headers is HEADERS and s.gzip and not self.plain \
                    and verdict.kind in ("accepted", "sort", "split"):
                self.plain = True  # read uncompressed, not compressed: no gzip from now on
                log.warning("Amplitude read the request uncompressed after refusing it "
                            "gzipped: the rest of this run's requests are sent uncompressed "
                            "(a proxy on the way that drops Content-Encoding?)")
            if verdict.kind != "retry":
                packed = items[0].packed
                if verdict.kind != "accepted" and packed is not None:
                    packed.unpack(items)  # its events are sorted one by one now
                self.apply(lane, items, verdict, raw_size)
                return
            if verdict.throttle:  # Amplitude is up and says "later": not a failure
                up.report.throttles += 1
                delay = self._project_wait(verdict, len(items))
            else:
                attempt += 1
                if attempt > s.max_retries:
                    last = f"HTTP {verdict.status} {verdict.message}" if verdict.status \
                        else verdict.message
                    up.fail(RetriesExhausted(
                        f"Amplitude request failed {attempt} times in a row (last: {last}); "
                        "stopping. Nothing was lost: run again with --resume when Amplitude "
                        "answers"))
                    return
                up.report.retries += 1
                delay = up.backoff.delay(attempt, verdict.retry_after)
                _log_long_wait(verdict, delay, f"the request ({len(items)} events) is "
                               f"retried after it (attempt {attempt} of {s.max_retries})",
                               up.report)
            await asyncio.sleep(delay)
            if up.failure is not None:
                return

    def _connection_failed(self, exc: BaseException, attempt: int) -> TerminalError | None:
        """Count a request that got no answer from Amplitude; the error that stops the run
        when retrying cannot help (a proxy refusing it, or an Amplitude never reached)."""
        up = self.up
        unsent = never_sent(exc)
        up.report.requests_by_status[CONNECT_FAILED if unsent else "connection_error"] += 1
        refused = proxy_refusal(exc, up.settings.url, up.proxy)
        if refused is not None:
            return refused
        if unsent and not self.answered and attempt + 1 >= UNREACHABLE_ATTEMPTS:
            return RetriesExhausted(redact_userinfo(
                f"cannot connect to Amplitude at {up.settings.url} ({proxy_failure_text(exc)}), "
                f"{attempt + 1} times and never since this run started: check [amplitude] "
                "api_host or region and the network (and the proxy, if one is set), then run "
                "the same `mp2amp migrate` command with --resume (nothing was lost)"))
        return None

    def _project_wait(self, v: Verdict, n: int) -> float:
        """The wait after a 429 naming no device or user: a per-project limit, for which
        Amplitude says to wait 60 s (not a device's 15-30 s pause); a longer Retry-After wins."""
        up = self.up
        delay = max(up.settings.project_throttle_wait, v.retry_after or 0.0)
        what = f"the whole request ({n} events; Amplitude named no device) is resent after it"
        if not _log_long_wait(v, delay, what, up.report):
            log.info("Amplitude answered HTTP %d naming no device (a project-wide limit): "
                     "waiting %s s; %s", v.status, _secs(delay), what)
        return delay

    def apply(self, lane: Lane, items: list[Submitted], v: Verdict, raw_size: int) -> None:
        up = self.up
        if v.kind == "accepted":
            up.dequeued(len(items))
            up.accepted(items)
            self._grow(lane)
        elif v.kind == "split":
            up.report.splits += 1
            half = len(items) // 2
            lane.cap_events = max(1, min(lane.cap_events, half))
            lane.cap_bytes = max(ENVELOPE_BYTES + 2, min(lane.cap_bytes, raw_size // 2))
            up.requeue_front(items, from_hold=False)
        elif v.kind == "reject_all":
            up.dequeued(len(items))
            for item in items:
                up.dead(item, v.reason, v.message)
        elif v.kind == "stop":
            up.fail(v.error or RuntimeError(v.message))
        else:
            self._sort(lane, items, v)

    def _sort(self, lane: Lane, items: list[Submitted], v: Verdict) -> None:
        """Per-event verdict: dead, throttled, parked, or resent at once (Amplitude ingested
        none of the request)."""
        up = self.up
        s = up.settings
        loop = asyncio.get_running_loop()
        throttled: list[Submitted] = []
        parked: list[Submitted] = []
        rest: list[Submitted] = []
        for i, item in enumerate(items):
            if i in v.dead:
                up.dequeued(1)
                reason, message = v.dead[i]
                up.dead(item, reason, message)
            elif i in v.parked:
                up.dequeued(1)
                if item.park_attempts >= s.park_retries:
                    up.parked(item)
                else:
                    item.park_attempts += 1
                    parked.append(item)
            elif i in v.throttled:
                up.dequeued(1)
                throttled.append(item)
            else:
                rest.append(item)
        if parked or v.quota_devices or v.quota_users:
            # first: a throttled event of a device or user over its quota waits with it,
            # and so do their later events (Amplitude refuses every batch holding them)
            hold = up.holds.hold("daily_quota", loop.time() + s.park_delay, parked,
                                 devices=v.quota_devices, users=v.quota_users)
            up.quota_users.update(v.quota_users)
            up.schedule_release(hold)
        if throttled:
            up.report.throttles += 1
            self._shrink_for_rate(lane, throttled, v, v.eps_threshold or s.device_eps)
            wait = max(s.throttle_seconds, v.retry_after or 0.0)  # classify capped it
            _log_long_wait(v, wait, f"{len(throttled)} events of "
                           f"{len(v.throttled_devices) + len(v.throttled_users)} throttled "
                           "devices/users are held until then; other devices keep flowing",
                           up.report)
            hold = up.holds.hold("throttle", loop.time() + wait, throttled,
                                 devices=v.throttled_devices, users=v.throttled_users)
            up.schedule_release(hold)
        if rest:
            up.requeue_front(rest, from_hold=False)

    @staticmethod
    def _shrink_for_rate(lane: Lane, throttled: list[Submitted], v: Verdict, eps: int) -> None:
        """Amplitude averages a device's (or user's) eps over RATE_WINDOW seconds, so one
        request may carry ``eps * RATE_WINDOW`` events of it. A device or user with more in
        one request would be throttled forever: halve how many events a request of this lane
        carries (per device or user, at most that), creeping back after successes. One
        throttled with fewer is over its rate over time, which smaller requests do not change
        (they would only make every later request of the lane smaller)."""
        most = _most_events_of_one_id(throttled, v.throttled_devices, v.throttled_users)
        if most > eps * RATE_WINDOW:
            lane.cap_events = max(1, min(lane.cap_events, most // 2))

    def _grow(self, lane: Lane) -> None:
        """After a success, creep back toward the configured caps (a 413 may have been
        a one-off), an eighth at a time."""
        if lane.cap_events < self._max_events:
            lane.cap_events = min(self._max_events, lane.cap_events + lane.cap_events // 8 + 1)
        if lane.cap_bytes < self._max_bytes:
            lane.cap_bytes = min(self._max_bytes, lane.cap_bytes + lane.cap_bytes // 8 + 1)


def _most_events_of_one_id(throttled: list[Submitted], devices: frozenset[str],
                           users: frozenset[str]) -> int:
    """The most throttled events of one device or one user, each counted as the 429 named
    it: a user spread over several devices is over its budget with none of them over theirs.
    An event listed by index only counts for its device (its user when it has none)."""
    per_device: dict[str, int] = {}
    per_user: dict[str, int] = {}
    for item in throttled:
        device, user = item.device, item.user
        named = False
        if device is not None and device in devices:
            per_device[device] = per_device.get(device, 0) + 1
            named = True
        if user is not None and user in users:
            per_user[user] = per_user.get(user, 0) + 1
            named = True
        if not named:
            if device is not None:
                per_device[device] = per_device.get(device, 0) + 1
            else:
                per_user[user or ""] = per_user.get(user or "", 0) + 1
    return max(max(per_device.values(), default=0), max(per_user.values(), default=0))


def _log_long_wait(v: Verdict, wait: float, what: str, report: LoadReport) -> bool:
    """One warning line when a server-given wait is long: how long, why, what waits; the
    run's report counts them (and the Retry-After values that were capped). True if logged."""
    if v.retry_after is None or (wait <= LONG_WAIT and v.retry_after_asked is None):
        return False
    report.long_waits += 1
    report.longest_wait = max(report.longest_wait, wait)
    if v.retry_after_asked is not None:
        report.retry_after_capped += 1
    asked = v.retry_after_asked if v.retry_after_asked is not None else v.retry_after
    clamp = f", capped at {_secs(v.retry_after)} s" if v.retry_after_asked is not None else ""
    log.warning("Amplitude answered HTTP %d with Retry-After: %s s%s: waiting %s s; %s",
                v.status, _secs(asked), clamp, _secs(wait), what)
    return True


def _secs(seconds: float) -> str:
    return f"{round(seconds, 1):g}"
