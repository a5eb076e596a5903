"""The Amplitude uploader: a stream of events in, Amplitude's contract honoured, a report out.

    async with Uploader(settings, observer=ledger, dead_letters=dlq) as up:
        for ev in events:
            await up.submit(ev.event, (ev.source, ev.line), batch_key="2024-01-01")
        await up.flush("2024-01-01")      # window done: close its batches
        report = await up.close()          # flush everything, wait until every event settled

Events are spread over ``concurrency`` lanes by device (user when no device). A lane has at
most one request in flight and sends in submission order, so a device's events arrive in
order and two batches of one device are never in flight together. Batches are formed per
(batch_key, lane) by the pure batcher; their ids ``"{batch_key}/{lane}/{seq}"`` are therefore
reproducible: the same events, submitted in the same order with the same settings, give the
same batch ids (see docs/contracts.md §6 for how the ledger uses this on resume).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import zlib
from collections import deque
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from mp2amp.load.backoff import Backoff, RandomSource
from mp2amp.load.batcher import Batcher
from mp2amp.load.deadletter import DeadLetterFile
from mp2amp.load.holds import Hold, HoldRegistry
from mp2amp.load.observer import (
    LoadObserver,
    NullObserver,
    Origin,
    Submitted,
    parked_key,
    takes_batch_id,
)
from mp2amp.load.packed import OpenBody, attach
from mp2amp.load.sender import RetriesExhausted, Sender, session_timeout
from mp2amp.load.settings import LoadReport, UploadSettings
from mp2amp.proxyenv import proxy_for

log = logging.getLogger("mp2amp.load")


@dataclass(slots=True)
class BatchState:
    batch_id: str
    total: int
    remaining: int
    announced: bool = False       # the observer (ledger) knows the batch
    went_out: bool = False        # a request carried some of it (report.sent counts it)
    accepted: list[Submitted] = field(default_factory=list)


@dataclass(slots=True)
class Lane:
    index: int
    queue: deque[Submitted] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    cap_events: int = 0           # adaptive request caps, lowered by 413s
    cap_bytes: int = 0

# Devices whose lane is remembered (a crc32 each time otherwise): the recently active
# ones; a run's millions of devices would hold ~150 bytes each for nothing.
LANE_CACHE = 16_384
_EMPTY = b""
# asyncio runs a timer up to its clock's resolution early: a hold's timer that fires this
# close to the hold's end ends it, rather than waiting again for a few microseconds
TIMER_SLACK = 0.001
# A quota hold this much longer still keeps its batches' accepted events that long: past
# half the pending cap of them, the quota's events are parked instead (a throttle's pause
# is 30 s; the quota's ``park_delay`` an hour by default).
LONG_HOLD_S = 30.0


def _merge_front(queue: deque[Submitted], group: list[Submitted]) -> None:
    """Merge ``group`` (in ``seq`` order) into ``queue`` (in ``seq`` order), keeping that
    order; only the queue's events older than the group's newest are touched."""
    last = group[-1].seq
    older: list[Submitted] = []
    while queue and queue[0].seq < last:
        older.append(queue.popleft())
    if older:
        group = list(heapq.merge(group, older, key=_seq))
    queue.extendleft(reversed(group))


def _seq(item: Submitted) -> int:
    return item.seq


def lane_of(key: str, lanes: int) -> int:
    """Stable across processes and runs (``hash()`` is salted per process)."""
    return zlib.crc32(key.encode()) % lanes


class Uploader:
    def __init__(
        self,
        settings: UploadSettings,
        *,
        observer: LoadObserver | None = None,
        dead_letters: DeadLetterFile | None = None,
        settled_batches: Container[str] = frozenset(),
        rng: RandomSource | None = None,
    ) -> None:
        self.settings = settings
        self.observer: LoadObserver = observer or NullObserver()
        self._dead_names_batch = takes_batch_id(self.observer)
        self.dead_letters = dead_letters
        self.settled_batches = settled_batches
        self.report = LoadReport()
        self.holds = HoldRegistry()
        # Devices (or, without one, users) with events parked for good in this run: their
        # later events are parked behind them, never sent before them (a device's events
        # reach Amplitude in time order; a resume sends the parked ones first).
        self.parked_keys: set[tuple[str, str]] = set()
        self.quota_users: set[str] = set()  # users Amplitude named over the daily quota
        self.parked_users: set[str] = set()  # of those, the ones whose events are parked
        backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        if rng is not None:
            backoff.rng = rng
        self.backoff = backoff
        self._limits = settings.limits
        self._lanes = [Lane(i, cap_events=settings.max_events, cap_bytes=self._limits.max_bytes)
                       for i in range(settings.concurrency)]
        self._open: dict[tuple[str, int], Batcher[Submitted]] = {}
        # the batch key of each lane's open batch: a lane holds one at a time, so a device's
        # events leave in submission order even when a caller interleaves batch keys
        self._lane_open: dict[int, str] = {}
        # the open batches' compressed bodies, by the same slot (None: gzip is off)
        self._bodies: dict[tuple[str, int], OpenBody] | None = {} if settings.gzip else None
        self._lane_cache: dict[str, int] = {}
        self._n_lanes = len(self._lanes)
        self._pending_cap = settings.pending_cap
        self._seq: dict[tuple[str, int], int] = {}
        self._batches_per_key: dict[str, int] = {}
        self._batches: dict[str, BatchState] = {}
        self._unsettled = 0       # submitted, not yet accepted / dead-lettered / parked / skipped
        self._queued = 0          # in lane queues or in flight (what backpressure counts)
        # accepted events kept until their batch is done (the ledger's outcome is per
        # batch): a held event keeps its batch open. A throttle's hold ends within
        # seconds; the daily quota's lasts ``park_delay``, and a hot device with an event
        # in every batch of its lane kept thousands of accepted batches in memory: once
        # these fill half the pending cap under a long quota hold (``LONG_HOLD_S``), the
        # quota's events are parked (their batches settle), as when the held events
        # themselves fill it.
        self._pinned = 0
        self._room = asyncio.Event()
        self._progress = asyncio.Event()
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._quota_holds: dict[int, Hold] = {}  # the daily quota's, until they end
        self._failure: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._started = 0.0
        self._closed = False
        self.sender = Sender(self)
        self.proxy: str | None = None  # the environment's, set by start()

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.concurrency, ttl_dns_cache=300),
            timeout=session_timeout(self.settings.timeout),
            # not trust_env: it also reads ~/.netrc and would send its login for the host
            # as an Authorization header; the environment's proxy is passed per request
            trust_env=False,
        )
        self.proxy = proxy_for(self.settings.url)  # HTTPS_PROXY / NO_PROXY: a corporate proxy
        self._started = time.monotonic()
        self._tasks = [asyncio.create_task(self.sender.run_lane(lane), name=f"lane-{lane.index}")
                       for lane in self._lanes]

    async def __aenter__(self) -> Uploader:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None and not self._closed:
            await self.close()
        else:
            await self.abort()

    async def abort(self) -> None:
        """Stop at once without flushing (the ledger keeps unsettled batches in flight)."""
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.dead_letters is not None:
            self.dead_letters.flush()

    async def close(self) -> LoadReport:
        """Flush every open batch, wait until every event is settled, return the report.

        Parked (daily-quota) events get one last try now instead of waiting out
        ``park_delay``; those still over quota are reported through ``on_parked``."""
        if self._closed:  # a second close: the same outcome as the first
            self._raise_failure()
            return self.report
        await self.start()
        try:
            for key in list(dict.fromkeys(k for k, _ in self._open)):  # first opened first
                self._flush_key(key)
            while self._unsettled > 0:
                self._raise_failure()
                if self._only_parked_left():
                    self._release_parked_now()
                self._progress.clear()
                await self._progress.wait()
            self._raise_failure()
        except BaseException:
            await self.abort()
            raise
        self.report.elapsed = time.monotonic() - self._started
        await self.abort()
        return self.report

    # --- the caller's side -----------------------------------------------------------

    async def submit(self, event: dict[str, Any], origin: Origin, batch_key: str = "run") -> None:
        """Queue one Amplitude event; waits (backpressure) while too many are in flight."""
        try:
            # orjson leaves an 8 KB allocation behind each result, whatever its length;
            # a right-sized copy makes a queued event cost its size, not 8 KB
            data = memoryview(orjson.dumps(event)).tobytes()
        except TypeError as exc:  # a transform bug; the event is kept, not lost
            if self._closed:
                raise RuntimeError("submit() after close(): this uploader has finished") from None
            self.report.submitted += 1
            self._unsettled += 1
            self._dead_unbatched(event, origin, f"event is not JSON-serializable: {exc}")
            return
        device = event.get("device_id")
        user = event.get("user_id")
        await self.submit_encoded(data, device if device and isinstance(device, str) else None,
                                  user if user and isinstance(user, str) else None,
                                  origin, batch_key)

    async def submit_encoded(self, data: bytes, device: str | None, user: str | None,
                             origin: Origin, batch_key: str = "run") -> None:
        """``submit`` of an event already serialized (``data`` is exactly what
        ``orjson.dumps(event)`` gives; ``device``/``user`` its non-empty string ids)."""
        # The hot path of the whole load stage: kept flat on purpose (no helper calls).
        if self._closed:
            raise RuntimeError("submit() after close(): this uploader has finished")
        if self._session is None:
            await self.start()
        if self._failure is not None:
            raise self._failure
        # held events (a throttled device's, the daily quota's) count too: a held device's
        # later events would otherwise pile up in its hold, unbounded
        while self._queued + self.holds.held_events >= self._pending_cap:
            self._room.clear()
            self._relieve_quota_pressure()
            if self._queued + self.holds.held_events < self._pending_cap:
                break
            await self._room.wait()
            self._raise_failure()
        self.report.submitted += 1
        self._unsettled += 1
        key = device or user or ""
        lane = self._lane_cache.get(key)
        if lane is None:
            if len(self._lane_cache) > LANE_CACHE:  # bounded: memory stays flat
                self._lane_cache.clear()
            lane = self._lane_cache[key] = lane_of(key, self._n_lanes)
        slot = (batch_key, lane)
        batcher = self._open.get(slot)
        if batcher is None:
            earlier = self._lane_open.get(lane)
            if earlier is not None:  # another key's batch is open here: it leaves first
                self._flush_slot((earlier, lane))
            self._lane_open[lane] = batch_key
            batcher = self._open[slot] = Batcher(self._limits)
        bodies = self._bodies
        if bodies is None:  # no gzip: an event keeps its bytes until its batch is sent
            item = Submitted(data, origin, "", device, user, lane, 0, self.report.submitted)
            closed = batcher.add(item, len(data))
            if closed is not None:
                self._close_batch(batch_key, lane, closed)
        else:  # its bytes go into the batch's compressed body at once (packed.py)
            item = Submitted(_EMPTY, origin, "", device, user, lane, 0, self.report.submitted)
            closed = batcher.add(item, len(data))
            body = bodies.get(slot)
            if closed is not None and closed[-1] is not item:
                # full by bytes: the batch closes without this event, which opens the next
                del bodies[slot]
                self._close_batch(batch_key, lane, closed, body)
                body = None
            if body is None:
                body = bodies[slot] = self.sender.open_body()
            body.add(data)
            if closed is not None and closed[-1] is item:  # full by count, with this event
                del bodies[slot]
                self._close_batch(batch_key, lane, closed, body)
        if not self.report.submitted & 127:
            # Let the lanes run: a producer that never yields would fill the whole queue
            # before the first request leaves, and responses would wait unread meanwhile.
            await asyncio.sleep(0)

    async def flush(self, batch_key: str) -> int:
        """Close the open batches of ``batch_key``; returns how many batches it has in all
        (the ledger marks the window loaded once that many batches were accepted)."""
        self._raise_failure()
        self._flush_key(batch_key)
        return self._batches_per_key.get(batch_key, 0)

    # --- batches ---------------------------------------------------------------------

    def _flush_key(self, batch_key: str) -> None:
        for slot in [s for s in self._open if s[0] == batch_key]:
            self._flush_slot(slot)

    def _flush_slot(self, slot: tuple[str, int]) -> None:
        closed = self._open.pop(slot).flush()
        if self._lane_open.get(slot[1]) == slot[0]:
            del self._lane_open[slot[1]]
        body = self._bodies.pop(slot, None) if self._bodies is not None else None
        if closed is not None:
            self._close_batch(slot[0], slot[1], closed, body)

    def _close_batch(self, batch_key: str, lane: int, items: list[Submitted],
                     body: OpenBody | None = None) -> None:
        seq = self._seq.get((batch_key, lane), 0)
        self._seq[(batch_key, lane)] = seq + 1
        self._batches_per_key[batch_key] = self._batches_per_key.get(batch_key, 0) + 1
        batch_id = f"{batch_key}/{lane}/{seq}"
        if batch_id in self.settled_batches:
            self.report.batches_skipped += 1
            self.report.skipped += len(items)
            self._unsettled -= len(items)
            self._progress.set()
            return
        self.report.batches += 1
        self._batches[batch_id] = BatchState(batch_id, len(items), len(items))
        for item in items:
            item.batch_id = batch_id
        if body is not None:
            attach(items, body.close(self.sender.tail))
        elif self._bodies is not None:  # would send empty events: never let that out
            raise RuntimeError(f"batch {batch_id} closed without its compressed body")
        ln = self._lanes[lane]
        ln.queue.extend(items)
        self._queued += len(items)
        ln.wake.set()

    def announce(self, items: Sequence[Submitted]) -> None:
        """``on_batch_sent`` for batches about to leave for the first time."""
        for item in items:
            state = self._batches[item.batch_id]
            if not state.went_out:
                state.went_out = True
                self.report.sent += state.total
                if not state.announced:
                    state.announced = True
                    self.observer.on_batch_sent(state.batch_id, state.total)

    def park_unsent(self, item: Submitted) -> None:
        """Park an event no request carried (its device has events parked for good): its
        batch is recorded first, as the ledger needs it to settle, but not counted sent."""
        state = self._batches[item.batch_id]
        if not state.announced:
            state.announced = True
            self.observer.on_batch_sent(state.batch_id, state.total)
        self.parked(item)

    # --- settling: every event ends here exactly once ----------------------------------

    def accepted(self, items: Sequence[Submitted]) -> None:
        """A 200 for these events; a request's events mostly share one batch (fast path)."""
        self.report.accepted += len(items)
        batch_id = items[0].batch_id if items else ""
        if all(i.batch_id == batch_id for i in items):
            state = self._batches[batch_id]
            state.accepted.extend(items)
            self._pinned += len(items)
            self._unsettled -= len(items)
            self._progress.set()
            state.remaining -= len(items)
            if state.remaining == 0:
                self._batch_done(state)
            elif self._quota_holds and 2 * self._pinned >= self._pending_cap:
                self._relieve_quota_pressure()
            return
        for item in items:
            self._batches[item.batch_id].accepted.append(item)
            self._pinned += 1
            self._settle(item)
        if self._quota_holds and 2 * self._pinned >= self._pending_cap:
            self._relieve_quota_pressure()

    def dead(self, item: Submitted, reason: str, message: str) -> None:
        self._dead(item, reason, message)

    def _dead(self, item: Submitted, reason: str, message: str) -> None:
        self.report.dead_lettered[reason] += 1
        event = item.event
        if self.dead_letters is not None:
            self.dead_letters.write(event, item.origin, reason, message)
        self._report_dead(event, item.origin, reason, message, item.batch_id)
        self._settle(item)

    def _dead_unbatched(self, event: dict[str, Any], origin: Origin, message: str) -> None:
        """An event that never made it into a batch (it cannot be serialized)."""
        self.report.dead_lettered["unserializable"] += 1
        if self.dead_letters is not None:
            self.dead_letters.write(event, origin, "unserializable", message)
        self._report_dead(event, origin, "unserializable", message, None)
        self._unsettled -= 1
        self._progress.set()

    def _report_dead(self, event: dict[str, Any], origin: Origin, reason: str, message: str,
                     batch_id: str | None) -> None:
        if self._dead_names_batch:
            self.observer.on_dead_letter(event, origin, reason, message, batch_id=batch_id)
        else:  # an observer written before dead letters named their batch
            self.observer.on_dead_letter(event, origin, reason, message)

    def parked(self, item: Submitted) -> None:
        self.parked_keys.add(parked_key(item))
        self.report.parked += 1
        self.observer.on_parked(item.event, item.origin, "daily_quota", item.batch_id)
        self._settle(item)

    def _settle(self, item: Submitted) -> None:
        self._unsettled -= 1
        self._progress.set()
        state = self._batches[item.batch_id]
        state.remaining -= 1
        if state.remaining == 0:
            self._batch_done(state)

    def _batch_done(self, state: BatchState) -> None:
        del self._batches[state.batch_id]
        if self.dead_letters is not None:
            self.dead_letters.flush()  # before the ledger says "settled"
        self.observer.on_batch_accepted(state.batch_id, state.accepted)
        self._pinned -= len(state.accepted)

    # --- lanes, queue accounting, holds ------------------------------------------------

    def lane(self, index: int) -> Lane:
        return self._lanes[index]

    def dequeued(self, n: int) -> None:
        """``n`` events left the lane queues/flight for good or for a hold."""
        self._queued -= n
        self._room_changed()

    def _room_changed(self) -> None:
        """Wake a waiting submit() once the events in memory (queued, in flight, held)
        are under the cap; park the quota's events first if they are what fills it."""
        if self._queued + self.holds.held_events >= self._pending_cap:
            self._relieve_quota_pressure()
        if self._queued + self.holds.held_events < self._pending_cap:
            self._room.set()

    def _relieve_quota_pressure(self) -> None:
        """Park for good the events waiting for the daily quota when they fill half the
        pending cap while submit() would wait: held an hour (``park_delay``), they would
        stall the whole run. The ledger keeps them and ``--resume`` sends them, as for
        events still over the quota at the end of a run."""
        if not self._quota_holds:
            return
        quota = list(self._quota_holds.values())
        waiting = sum(len(h.items) for h in quota)
        # the accepted events of the batches the long holds keep open count too: one held
        # event per batch pins a whole batch (see ``_pinned``)
        now = asyncio.get_running_loop().time()
        batches = {item.batch_id for h in quota if h.until - now > LONG_HOLD_S
                   for item in h.items}
        pinned = sum(len(self._batches[b].accepted) for b in batches if b in self._batches)
        if not waiting or 2 * (waiting + pinned) < self._pending_cap:
            return
        log.warning("%d events waiting for Amplitude's daily quota (with %d accepted events "
                    "their batches keep) fill half of the pending events cap (%d): parked "
                    "now instead of held %s s in memory; run `mp2amp migrate --resume` "
                    "later to send them", waiting, pinned, self._pending_cap,
                    f"{self.settings.park_delay:g}")
        for hold in quota:
            del self._quota_holds[id(hold)]
            handle = self._timers.pop(id(hold), None)
            if handle is not None:
                handle.cancel()
            # their devices' (users') later events are parked behind them, in order; a
            # user Amplitude named over the quota, from any device (all would be refused)
            self.parked_keys.update(hold.keys)
            self.parked_users.update(key for kind, key in hold.keys
                                     if kind == "u" and key in self.quota_users)
            for item in self.holds.release(hold):
                self.park_unsent(item)
        self._progress.set()

    def requeue_front(self, items: Sequence[Submitted], *, from_hold: bool) -> None:
        """Put events back into their lanes, in submission order (``seq``).

        A lane's queue is always in ``seq`` order: these events mostly go to its front,
        but one ending a hold can be newer than an event of its device that a request put
        back meanwhile (a 413 half), and must then go after it. Events coming back from a
        request are still counted as queued; events coming out of a hold are counted again."""
        by_lane: dict[int, list[Submitted]] = {}
        for item in items:
            by_lane.setdefault(item.lane, []).append(item)
        for index, group in by_lane.items():
            ln = self._lanes[index]
            _merge_front(ln.queue, group)
            ln.wake.set()
        if from_hold:
            self._queued += len(items)

    def schedule_release(self, hold: Hold) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, hold.until - loop.time())
        self._timers[id(hold)] = loop.call_later(delay, self._release, hold)
        self._progress.set()
        if hold.reason == "daily_quota":
            self._quota_holds[id(hold)] = hold
            self._room_changed()

    def _release(self, hold: Hold) -> None:
        """A hold's timer: end it, unless a later answer moved its end further (a longer
        Retry-After for a device or user it holds): then wait for that."""
        if hold.until - asyncio.get_running_loop().time() > TIMER_SLACK:
            self.schedule_release(hold)
            return
        self._end_hold(hold)

    def _end_hold(self, hold: Hold) -> None:
        self._timers.pop(id(hold), None)
        self._quota_holds.pop(id(hold), None)
        items = self.holds.release(hold)
        if items:
            self.requeue_front(items, from_hold=True)
        self._progress.set()

    def _only_parked_left(self) -> bool:
        if self._queued > 0 or any(ln.queue for ln in self._lanes):
            return False
        held = self.holds.holds()
        return bool(held) and all(h.reason == "daily_quota" for h in held) \
            and self.holds.held_events == self._unsettled

    def _release_parked_now(self) -> None:
        """At close: one last try for parked events instead of waiting out ``park_delay``;
        those still over quota are then reported parked (a resume sends them)."""
        for hold in self.holds.holds(lambda h: h.reason == "daily_quota"):
            for item in hold.items:
                item.park_attempts = max(item.park_attempts, self.settings.park_retries)
            handle = self._timers.pop(id(hold), None)
            if handle is not None:
                handle.cancel()
            self._end_hold(hold)

    # --- failure -----------------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """Stop the run: the first error wins; submit() and close() raise it."""
        if self._failure is None:
            self._failure = error
        self._progress.set()
        self._room.set()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("uploader not started")
        return self._session

    @property
    def failure(self) -> BaseException | None:
        return self._failure


__all__ = ["RetriesExhausted", "Uploader"]
