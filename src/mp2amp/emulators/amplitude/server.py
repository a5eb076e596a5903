"""The emulator's aiohttp app: Amplitude's routes plus the ``/_emulator/`` control routes."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import date, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from isal import isal_zlib

from mp2amp.emulators.amplitude.config import AmplitudeConfig
from mp2amp.emulators.amplitude.export import (
    MAX_EXPORT_BYTES,
    ExportRangeError,
    parse_range,
    write_export,
)
from mp2amp.emulators.amplitude.faults import FAIL_ERRORS, Faults
from mp2amp.emulators.amplitude.forms import deletion_form, multipart_fields
from mp2amp.emulators.amplitude.identification import identify_request
from mp2amp.emulators.amplitude.ids import Identities
from mp2amp.emulators.amplitude.ingest import (
    TOO_LARGE,
    Ingestor,
    max_bytes,
)
from mp2amp.emulators.amplitude.privacy import DeletionJobs, PrivacyRequestError
from mp2amp.emulators.amplitude.segindex import EventIndex
from mp2amp.emulators.amplitude.segmentation import (
    CostLimits,
    QueryCosts,
    SegmentationQueryError,
    parse_query,
    query_cost,
    segment,
)
from mp2amp.emulators.amplitude.store import EventStore, deletion_uncounted, read_json, write_atomic
from mp2amp.emulators.amplitude.throttle import Limiter
from mp2amp.emulators.runner import AppServer, run_in_thread
from mp2amp.errors import InputError

CLIENT_MAX_SIZE = 64 * 1024 * 1024  # above the 20 MB batch limit, so we answer 413 ourselves
# The request target (path and query) the emulator reads at most; a longer one is refused
# by the emulator rather than by aiohttp's parser (a bare 400), so that /identify can give
# the documented "414 (GET URL too long; use POST)". 8190 is aiohttp's own limit.
MAX_URL_BYTES = 8190
PARSER_MAX_LINE = 1024 * 1024
IDENTIFY_MAX_BYTES = 1_000_000
EXPORT_CHUNK = 1024 * 1024
DROPPED = web.RequestKey("dropped", bool)  # set when the drop-after-ingest fault fired

log = logging.getLogger("mp2amp.emulators.amplitude")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class BadBody(ValueError):
    """The request body is unreadable (e.g. invalid gzip)."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cyclic GC while a request's ~100k acyclic JSON objects are made and freed:
    otherwise it runs a collection every 700 allocations (it was 40% of ingest time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class AmplitudeEmulator:
    """Amplitude's ingestion, export, segmentation and privacy APIs over loopback HTTP."""

    def __init__(self, config: AmplitudeConfig,
                 segmentation_limits: CostLimits | None = None) -> None:
        self.config = config  # segmentation_limits: None is the reference's budgets
        self.query_costs = QueryCosts(segmentation_limits or CostLimits(), config.now)
        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            self.store = EventStore(config.data_dir)
        except OSError as exc:
            raise InputError(f"--data {config.data_dir}: cannot use it as the emulator's data "
                             f"directory ({exc.strerror}); pick another path") from None
        state = read_json(config.data_dir / "state.json", {})
        if not isinstance(state, dict):
            raise InputError(f"{config.data_dir / 'state.json'}: expected a JSON object; the "
                             "emulator's state is damaged, start with an empty --data directory")
        self.ids = Identities.from_json(state.get("ids", {}))
        self.store.repair()  # before anything appends after a line a kill left torn
        # What happened since state.json was written (a kill skips the last save): IDs,
        # user and group properties and the counters, journaled after every request.
        journal = self.store.read_ids()
        self.ids.replay(journal)
        self.limiter = Limiter()
        self._saved_limits: dict[str, Any] = state.get("limits", {})
        self.limiter.load_json(self._saved_limits)
        self.groups: dict[str, dict[str, Any]] = state.get("groups", {})
        self.ingestor = Ingestor(config, self.store, self.ids, self.limiter, self.groups)
        stored, duplicates = int(state.get("events_stored", 0)), int(state.get("duplicates", 0))
        for kind, key, value in journal:
            if kind == "g":
                self.groups[key] = value
            elif kind == "c":  # running totals: the last one holds
                stored, duplicates = key, value
        if deletion_uncounted(journal):  # a kill part-way through a deletion's rewrite
            stored = self.store.count_events()
        self.ingestor.events_stored, self.ingestor.duplicates = stored, duplicates
        self.store.load_dedup(int(config.now() * 1000))
        self.index = EventIndex(self.store)
        self.jobs = DeletionJobs(config.data_dir / "deletions.json", config.project_id,
                                 config.deletion_delay_days, self._today)
        self.faults = Faults(config.fail_rate, config.latency_ms, config.drop_after_ingest_rate,
                             config.seed)
        self._started_quota = config.daily_quota
        self.requests: Counter[str] = Counter()
        self._last_deletion_call: float | None = None
        self._unsaved = 0
        self._saver: asyncio.Task[None] | None = None
        self._server = AppServer(self._app(), config.host, config.port)

    # --- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._server.base_url

    async def start(self) -> str:
        # ISA-L inflates gzip request bodies ~2x faster than zlib (the same format); it is
        # aiohttp's setting for the whole process, and harmless to its other users here
        aiohttp.set_zlib_backend(isal_zlib)
        await self._server.start()
        self._saver = asyncio.create_task(self._save_periodically())
        return self.base_url

    async def stop(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
            with suppress(asyncio.CancelledError):
                await self._saver
        await self._server.stop()
        try:
            self._try_save(with_limits=True, then="the emulator stops without it")
        finally:
            self.store.close()

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve from a private loop in a daemon thread; yields the base URL."""
        with run_in_thread(self.start, self.stop, name="amplitude-emulator") as url:
            yield url

    def save(self, with_limits: bool = True) -> None:
        """Write state.json. The periodic save skips the quota counters (one entry per ID,
        rewritten every time): they are kept from the last full save (stop, deletions)."""
        limits = self.limiter.to_json() if with_limits else self._saved_limits
        self._saved_limits = limits
        state = {
            "ids": self.ids.to_json(), "limits": limits, "groups": self.groups,
            "events_stored": self.ingestor.events_stored, "duplicates": self.ingestor.duplicates,
        }
        self.ingestor.flush_id_journal()
        write_atomic(self.config.data_dir / "state.json", orjson.dumps(state))
        self.store.reset_ids()
        self.ids.dirty = False
        self._unsaved = 0

    def _try_save(self, with_limits: bool, then: str) -> bool:
        """``save``, and deletions.json when jobs moved on since it was written, logging an
        OSError (disk full...) instead of raising it: nothing is lost, since ids.log is only
        reset once state.json is written, and it journals what a deletion erased."""
        saved = self._logged(lambda: self.save(with_limits=with_limits), "state.json", then,
                             "ids.log keeps every change since the last save and is replayed "
                             "on the next start")
        if self.jobs.unsaved:
            saved = self._logged(self.jobs.save, "deletions.json", then, "a restart before it "
                                 "is saved shows the jobs as they were (whom a deletion "
                                 "erased stays erased); advance them again") and saved
        return saved

    def _logged(self, save: Callable[[], None], name: str, then: str, meanwhile: str) -> bool:
        try:
            save()
        except OSError as exc:
            log.error("the Amplitude emulator could not save %s (%s): %s; %s",
                      self.config.data_dir / name, exc, then, meanwhile)
            return False
        return True

    async def _save_periodically(self) -> None:
        """Snapshot the state every few seconds; spaced out so that it stays under ~5% of the
        time however large the state grows (the ID journal covers what happens between).
        A failed save is logged and tried again next period: the task must not end."""
        pause = self.config.save_every_s
        while True:
            await asyncio.sleep(pause)
            if self._unsaved or self.ids.dirty or self.jobs.unsaved:
                started = time.perf_counter()
                then = f"it is tried again in {pause:g} s"
                if self._try_save(with_limits=False, then=then):
                    pause = max(self.config.save_every_s, 20 * (time.perf_counter() - started))
                self.store.prune_dedup(int(self.config.now() * 1000))

    def _today(self) -> date:
        return datetime.fromtimestamp(self.config.now(), self.config.zone).date()

    # --- routing ---------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=CLIENT_MAX_SIZE,
                              middlewares=[self._count, self._url_length],
                              handler_args={"max_line_size": PARSER_MAX_LINE})
        app.router.add_post("/2/httpapi", self._ingest_route("httpapi"))
        app.router.add_post("/batch", self._ingest_route("batch"))
        app.router.add_route("*", "/identify", self._identify_route(group=False))
        app.router.add_route("*", "/groupidentify", self._identify_route(group=True))
        app.router.add_get("/api/2/export", self._export)
        app.router.add_get("/api/2/events/segmentation", self._segmentation)
        app.router.add_post("/api/2/deletions/users", self._deletions_create)
        app.router.add_get("/api/2/deletions/users", self._deletions_list)
        app.router.add_delete("/api/2/deletions/users/{amplitude_id}/{day}", self._deletions_remove)
        app.router.add_post("/_emulator/faults", self._set_faults)
        app.router.add_post("/_emulator/deletions/advance", self._advance_deletions)
        app.router.add_get("/_emulator/stats", self._stats)
        app.router.add_get("/_emulator/insert_ids", self._insert_ids)
        app.router.add_route("*", "/{tail:.*}", self._invalid_path)  # last: anything else
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count Amplitude API requests by status (control endpoints are not counted)."""
        if request.path.startswith("/_emulator/"):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.requests[str(exc.status)] += 1
            raise
        self.requests["dropped" if request.get(DROPPED) else str(response.status)] += 1
        return response

    @web.middleware
    async def _url_length(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request target over ``MAX_URL_BYTES``: 414 on /identify, whose reference lists
        "414 (GET URL too long; use POST)", and 400 elsewhere (as before)."""
        if len(request.raw_path) <= MAX_URL_BYTES:
            return await handler(request)
        if request.path == "/identify":
            return json_response(414, {"code": 414, "error": "Request-URI Too Long: send the "
                                       "identification in a POST body instead"})
        return json_response(400, {"code": 400, "error": "Request-URI Too Long"})

    async def _invalid_path(self, request: web.Request) -> web.Response:
        return json_response(400, {"code": 400, "error": "Invalid request path"})

    async def _fault(self) -> web.Response | None:
        """Injected latency and 5xx, before anything is read or stored."""
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        status = self.faults.failure()
        if status is not None:
            return json_response(status, {"code": status, "error": FAIL_ERRORS[status]})
        return None

    def _drop_connection(self, request: web.Request) -> web.Response:
        """Close the socket after the events were stored: the client sees no answer."""
        request[DROPPED] = True
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=200)

    async def _read_body(self, request: web.Request, limit: int) -> bytes | None:
        """The (decompressed) body, or None when it is above ``limit`` bytes.

        A body that cannot be decompressed raises ``BadBody`` (answered 400).
        """
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return None
        except RequestPayloadError as exc:
            raise BadBody(f"the request body could not be read ({exc}); check Content-Encoding") from None
        return body if len(body) <= limit else None

    # --- ingestion ---------------------------------------------------------------------

    def _ingest_route(self, endpoint: str) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            failed = await self._fault()
            if failed is not None:
                return failed
            try:
                body = await self._read_body(request, max_bytes(endpoint))
            except BadBody as exc:
                return json_response(400, {"code": 400, "error": "Invalid JSON request body",
                                           "detail": str(exc)})
            if body is None:
                return json_response(413, TOO_LARGE)
            if not body:
                return json_response(400, {"code": 400, "error": "Missing request body"})
            with gc_paused():
                try:
                    payload = orjson.loads(body)
                except orjson.JSONDecodeError:
                    return json_response(400, {"code": 400, "error": "Invalid JSON request body"})
                try:
                    status, answer = self.ingestor.handle(payload, endpoint, body,
                                                          request.remote)
                except OSError as exc:  # the store wrote nothing (disk full): a retry may pass
                    return json_response(500, {"code": 500, "error": "Internal server error: "
                                               f"storing the events failed ({exc.strerror}); "
                                               "nothing was stored, send the request again"})
                finally:
                    del payload
            if status == 200:
                self._unsaved += 1
                if self.faults.drop_after_ingest():
                    return self._drop_connection(request)
            return json_response(status, answer)

        return handle

    def _identify_route(self, group: bool) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            failed = await self._fault()
            if failed is not None:
                return failed
            try:
                body = await self._read_body(request, IDENTIFY_MAX_BYTES)
            except BadBody as exc:
                return json_response(400, {"code": 400, "error": "missing_event",
                                           "detail": str(exc)})
            if body is None:
                if group:  # its reference lists only 200 and 400
                    return json_response(400, {"code": 400, "error": "Request too large: at "
                                               "most 1 MB per /groupidentify request"})
                return json_response(413, TOO_LARGE)
            form: dict[str, str] = dict(request.query)
            if request.method == "POST":
                if request.content_type == "multipart/form-data":
                    # the body is read already, so aiohttp's multipart reader has nothing left
                    form.update(multipart_fields(request.headers.get("Content-Type", ""), body))
                else:
                    form.update({k: str(v) for k, v in (await request.post()).items()})
            status, answer = identify_request(form, group, self.config, self.groups,
                                              self.ids, self.ingestor)
            return json_response(status, answer)

        return handle

    # --- query APIs ----------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return decoded == f"{self.config.api_key}:{self.config.secret_key}"

    @staticmethod
    def _unauthorized() -> web.Response:
        return json_response(401, {"code": 401, "error": "Invalid Api-Key or Secret-Key "
                                   "(HTTP Basic auth with api_key:secret_key)"})

    async def _export(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            first, last = parse_range(request.query.get("start"), request.query.get("end"))
        except ExportRangeError as exc:
            return json_response(400, {"code": 400, "error": str(exc)})
        # Built in a temporary file by a worker thread, then streamed: never whole in memory.
        with tempfile.TemporaryFile(dir=self.config.data_dir) as spool:
            count = await asyncio.to_thread(write_export, self.store, first, last,
                                            self.config.project_id, self.ids.canonical, spool)
            if count == 0:
                return json_response(404, {"code": 404, "error": "Raw data files were not found."})
            size = spool.tell()
            if size > MAX_EXPORT_BYTES:
                return json_response(400, {"code": 400, "error": "The file size of the exported "
                                           "data is too large. The limit size is 4GB."})
            response = web.StreamResponse(headers={
                "Content-Type": "application/zip", "Content-Length": str(size),
                "Content-Disposition": f'attachment; filename="export_{first}_{last}.zip"'})
            spool.seek(0)
            with suppress(ConnectionError):  # the client left (Ctrl-C): no aiohttp traceback
                await response.prepare(request)
                while chunk := spool.read(EXPORT_CHUNK):
                    await response.write(chunk)
                await response.write_eof()
            return response

    async def _segmentation(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            event_type, metric, start, end = parse_query(dict(request.query))
        except SegmentationQueryError as exc:
            return json_response(400, {"code": 400, "error": str(exc)})
        cost = query_cost(start, end)
        wait = self.query_costs.charge(cost)
        if wait is not None:  # reference 5.2: 429 over the cost budget
            body = {"code": 429, "error": self.query_costs.refusal(cost, wait)}
            return web.Response(status=429, body=orjson.dumps(body),
                                content_type="application/json",
                                headers={"Retry-After": str(round(wait))})
        result = await asyncio.to_thread(segment, self.index, event_type, metric, start, end,
                                         self.config.zone, self.ids.canonical)
        return json_response(200, result)

    # --- privacy -------------------------------------------------------------------------

    def _privacy_gate(self, request: web.Request) -> web.Response | None:
        """Basic auth, then the 1 request/second limit of /api/2/deletions/users."""
        if not self._authorized(request):
            return self._unauthorized()
        now = self.config.now()
        last = self._last_deletion_call
        if last is not None and now - last < 1.0 / self.config.deletion_rate_per_s:
            return json_response(429, {"code": 429, "error": "Too many requests: the deletion "
                                       "endpoint allows 1 request per second"})
        self._last_deletion_call = now
        return None

    async def _deletions_create(self, request: web.Request) -> web.Response:
        refused = self._privacy_gate(request)
        if refused is not None:
            return refused
        try:
            if request.content_type == "application/x-www-form-urlencoded":
                body: Any = deletion_form(await request.post())
            else:
                body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise PrivacyRequestError("the body must be a JSON object")
            return json_response(200, self.jobs.create(body, self.ids))
        except orjson.JSONDecodeError:
            return json_response(400, {"code": 400, "error": "the body is not valid JSON"})
        except PrivacyRequestError as exc:
            return json_response(400, {"code": 400, "error": str(exc), **exc.extra})

    async def _deletions_list(self, request: web.Request) -> web.Response:
        refused = self._privacy_gate(request)
        if refused is not None:
            return refused
        try:
            jobs = self.jobs.list(request.query.get("start_day"), request.query.get("end_day"))
        except PrivacyRequestError as exc:
            return json_response(400, {"code": 400, "error": str(exc)})
        return json_response(200, jobs)

    async def _deletions_remove(self, request: web.Request) -> web.Response:
        refused = self._privacy_gate(request)
        if refused is not None:
            return refused
        try:
            entry = self.jobs.remove(request.match_info["amplitude_id"], request.match_info["day"])
        except PrivacyRequestError as exc:
            return json_response(400, {"code": 400, "error": str(exc)})
        if entry is None:
            # the User Privacy API's status codes are 200, 400 and 401: no 404
            return json_response(400, {"code": 400, "error": "no such user in a job of that day"})
        return json_response(200, entry)

    # --- emulator control ----------------------------------------------------------------

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return json_response(400, {"code": 400, "error": "the body is not valid JSON"})
        if not isinstance(changes, dict):
            return json_response(400, {"code": 400, "error": "the body must be a JSON object"})
        problems = self.faults.update(changes)
        if problems:
            return json_response(400, {"code": 400, "error": "; ".join(problems)})
        if "eps_limit" in changes:
            self.config.eps_limit = changes["eps_limit"]
        if "daily_quota" in changes:  # null: back to the quota the emulator started with
            self.config.daily_quota = changes["daily_quota"] or self._started_quota
        return json_response(200, {**self.faults.to_json(), "eps_limit": self.config.eps_limit,
                                   "daily_quota": self.config.daily_quota})

    async def _advance_deletions(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            day = orjson.loads(raw).get("day") if raw else None
        except (orjson.JSONDecodeError, AttributeError):
            return json_response(400, {"code": 400, "error": 'the body must be {"day": "YYYY-MM-DD"} or empty'})
        # In the loop thread: it rewrites the files that ingestion appends to.
        try:
            result = self.jobs.move(self.ids, self.store, day, self._count_erased)
        except OSError as exc:
            log.error("a deletion stopped part-way (%s): advance the jobs again to finish it", exc)
            self._journal_deletion_count()
            return json_response(500, {"code": 500, "error": "Internal server error: the "
                                       f"deletion stopped part-way ({exc.strerror}); the events "
                                       "erased so far are gone (and no longer counted), the "
                                       "job is still submitted: advance again to finish it"})
        self._journal_deletion_count()
        return json_response(200, result)

    def _count_erased(self, count: int) -> None:
        self.ingestor.events_stored -= count

    def _journal_deletion_count(self) -> None:
        """The new count in ids.log after the deletion (the store journaled whom it erased),
        then state.json and deletions.json: a restart after a failed save keeps all."""
        ingestor = self.ingestor
        self.ids.journal.append(["c", ingestor.events_stored, ingestor.duplicates])
        self._unsaved += 1  # a failed save is tried again by the periodic one
        self._try_save(with_limits=True, then="the jobs moved on all the same; the save is "
                       "tried again at the next period and at stop")

    async def _stats(self, request: web.Request) -> web.Response:
        return json_response(200, {
            "events_stored": self.ingestor.events_stored,
            "duplicates_ignored": self.ingestor.duplicates,
            "requests": dict(self.requests), "faults": self.faults.to_json(),
            "users": len(self.ids.users), "devices": len(self.ids.devices),
        })

    async def _insert_ids(self, request: web.Request) -> web.Response:
        return json_response(200, await asyncio.to_thread(self.store.insert_id_counts))

