"""Mixpanel Engage API pager: user (or group) profiles, streamed page by page (§2).

``POST /api/query/engage`` with a form body. Page 0 returns ``session_id`` and ``total``;
later pages repeat the same query with that ``session_id`` and ``page = page + 1``. The
pager stops on a short or empty page, or once ``total`` profiles were seen (Airbyte's
rule; the docs' rule is the short page: both are honoured). Only one page is in memory.

Each profile comes out as a ``SourceRecord`` (source ``engage`` or
``engage:<data_group_id>``, line = running 1-based index), so profile problems are
counted and dead-lettered like event problems. Transient failures retry the same page
with the same session; an expired session stops the run with a clear message rather
than restarting from page 0, which would hand over profiles twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from mp2amp.errors import (
    AuthError,
    ConnectionLost,
    ContractError,
    Mp2AmpError,
    RateLimited,
    Rejection,
    TransientError,
    Unreachable,
    classify_http,
    parse_retry_after,
)
from mp2amp.extract.api import MixpanelSettings, forbidden_message
from mp2amp.extract.export import new_session, request_headers
from mp2amp.extract.export_errors import (
    ENGAGE,
    failure_text,
    proxy_refusal,
    proxy_refused,
    request_timeout,
)
from mp2amp.extract.ratelimit import RateLimiter, RetryBudget
from mp2amp.models import SourceRecord
from mp2amp.proxyenv import NEVER_CONNECTED, proxy_for

log = logging.getLogger("mp2amp.extract")


class EngagePager:
    """``async for rec in EngagePager(settings).records(): ...``

    After iteration: ``total`` (from page 0), ``pages`` fetched, ``count`` of profiles.
    """

    def __init__(
        self,
        settings: MixpanelSettings,
        *,
        where: str | None = None,
        output_properties: Sequence[str] | None = None,
        data_group_id: str | None = None,
        session: aiohttp.ClientSession | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.where = where
        self.output_properties = output_properties
        self.data_group_id = data_group_id
        self._session = session
        # The Query API publishes no per-second limit: only the hourly one applies.
        self.limiter = limiter or RateLimiter(per_hour=settings.query_per_hour,
                                              per_second=settings.query_per_hour,
                                              max_concurrent=settings.query_concurrent)
        self.source = f"engage:{data_group_id}" if data_group_id else "engage"
        self.total: int | None = None
        self.pages = 0
        self.count = 0
        self.session_id: str | None = None

    def _form(self, page: int) -> dict[str, str]:
        form: dict[str, str] = {}
        if self.where:
            form["where"] = self.where
        if self.output_properties is not None:
            form["output_properties"] = json.dumps(list(self.output_properties))
        if self.data_group_id:
            form["data_group_id"] = self.data_group_id
        if page > 0:
            if not self.session_id:  # page 0 again would repeat its profiles as the next page
                raise ContractError(
                    f"Mixpanel engage answered page 0 without a session_id, which later pages "
                    f"need (page {page} of {self.total} profiles, {self.count} read); nothing "
                    "was written: check mixpanel.api_host points at Mixpanel's query API")
            form["session_id"] = self.session_id
            form["page"] = str(page)
        return form

    async def records(self) -> AsyncIterator[SourceRecord]:
        session = self._session or new_session()  # the environment's proxy: per request
        try:
            page = 0
            while True:
                body = await self._fetch_page(session, page)
                results = body["results"]
                self.pages += 1
                for profile in results:
                    self.count += 1
                    yield self._record(profile)
                page_size = int(body.get("page_size") or len(results) or 1)
                if len(results) < page_size or not results:
                    break
                if self.total is not None and self.count >= self.total:
                    break
                page += 1
        finally:
            if self._session is None:
                await session.close()

    def _record(self, profile: Any) -> SourceRecord:
        if isinstance(profile, dict):
            return SourceRecord(self.source, self.count, profile, None)
        rej = Rejection("not_an_object",
                        f"{self.source} profile {self.count} is not a JSON object: "
                        f"{str(profile)[:80]!r}",
                        source=self.source, line=self.count, record=profile)
        return SourceRecord(self.source, self.count, None, rej)

    async def _fetch_page(self, session: aiohttp.ClientSession, page: int) -> dict[str, Any]:
        """One page, retrying transient failures. A 429 is the server saying "later", not a
        failure (the Query API's 60 an hour are shared with every other client of the
        project): throttles have their own, larger cap (``max_rate_limited``), as the
        export's windows do."""
        budget = RetryBudget(f"engage page {page}", self.settings.max_attempts,
                             self.settings.max_rate_limited, self.settings.backoff_base,
                             self.settings.backoff_cap)
        while True:
            try:
                return await self._request(session, page)
            except TransientError as exc:
                delay = budget.delay(exc)
                if isinstance(exc, RateLimited):
                    self.limiter.pause(delay)
                said = str(exc)  # most messages name the page already: name it once
                if f"engage page {page}" not in said:
                    said = f"engage page {page}: {said}"
                log.warning("%s; retrying in %.1f s", said, delay)
                await asyncio.sleep(delay)

    async def _request(self, session: aiohttp.ClientSession, page: int) -> dict[str, Any]:
        url = self.settings.engage_url
        try:
            async with self.limiter.slot() as start, session.post(
                url, params=self.settings.auth_params(), data=self._form(page),
                headers=request_headers(self.settings, "application/json"),
                proxy=proxy_for(url), timeout=request_timeout(self.settings),
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    error = self._error(resp.status, raw.decode("utf-8", "replace"),
                                        resp.headers.get("Retry-After"), page)
                    if isinstance(error, RateLimited):  # refused: not one of the hour's 60
                        self.limiter.refund(start)
                    raise error
        except Mp2AmpError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise self._failed(exc, page) from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ContractError(f"Mixpanel engage page {page} is not JSON: "
                                f"{raw[:200]!r}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            raise ContractError(f"Mixpanel engage page {page} has no 'results' list: "
                                f"{str(body)[:200]}")
        if page == 0:
            self.session_id = body.get("session_id") or None
            total = body.get("total")
            self.total = total if isinstance(total, int) else None
        return body

    def _failed(self, exc: BaseException, page: int) -> Mp2AmpError:
        """A request that got no answer: a proxy refusing it for good stops at once (no
        retry changes its answer); anything else is retried."""
        refused = proxy_refusal(exc, self.settings, self.settings.engage_url, ENGAGE)
        if refused is not None:
            return refused
        what = "" if isinstance(exc, aiohttp.ClientHttpProxyError) else f"{type(exc).__name__}: "
        kind = Unreachable if isinstance(exc, NEVER_CONNECTED) else ConnectionLost
        return kind(f"engage page {page}: {what}{failure_text(exc)}")

    def _error(self, status: int, body: str, retry_after: str | None, page: int) -> Mp2AmpError:
        low = body.lower()
        if status == 407:  # only a proxy sends it (one asked for an http:// host)
            return proxy_refused(status, "Proxy Authentication Required", self.settings,
                                 url=self.settings.engage_url, asked=ENGAGE)
        # Airbyte saw the rate limit reported in the body, not only as 429 (§1.7): as export
        if "query rate limit exceeded" in low:
            status = 429
        if status == 400 and "unable to authenticate" in low:
            return AuthError(f"Mixpanel refused the {self.settings.auth_kind} credentials for "
                             "engage; check MIXPANEL_SERVICE_ACCOUNT with mixpanel.project_id, "
                             "or MIXPANEL_SECRET, and run again")
        if status == 400 and "session" in low and ("expired" in low or "unknown" in low):
            return ContractError(f"Mixpanel forgot the engage session at page {page} after "
                                 f"{self.count} profiles ({body[:200]}); run the profile "
                                 "export again from the start")
        if status == 403:
            return AuthError(forbidden_message(f"Mixpanel engage page {page}", body,
                                               self.settings.auth_kind, then="run again"))
        err = classify_http(status, service=f"Mixpanel engage page {page}", body=body,
                            retry_after=parse_retry_after(retry_after))
        return err if err is not None else ContractError(
            f"Mixpanel engage page {page} answered {status} instead of 200")
