"""What an Export API request that failed is raised as: an answer other than 200, a
connection never made (refused, timed out, refused by a proxy), and the stop of a run
that never reached Mixpanel. Apart from ``export`` (the streaming) for its size."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from mp2amp.errors import (
    AuthError,
    Mp2AmpError,
    TerminalError,
    Unreachable,
    classify_http,
    parse_retry_after,
    redact_userinfo,
)
from mp2amp.extract.api import RESUME_KEEPS, MixpanelSettings, forbidden_message
from mp2amp.proxyenv import (
    PROXY_REFUSALS,
    proxy_failure_text,
    proxy_fix,
    proxy_for,
)

if TYPE_CHECKING:
    from mp2amp.extract.export import Days

def request_timeout(settings: MixpanelSettings) -> aiohttp.ClientTimeout:
    """An export request's timeouts. ``connect`` bounds the whole connect (DNS, every
    address of the host, a proxy's CONNECT, TLS): aiohttp's ``sock_connect`` is per
    address, so a host whose N addresses all drop packets took N times it, then ended as
    a plain timeout (a request sent, then lost) instead of "cannot connect". It stays under
    a ``total`` when one is set, so a hanging connect ends as a connect timeout."""
    connect = settings.connect_timeout
    if settings.timeout is not None:
        connect = min(connect, settings.timeout / 2)
    return aiohttp.ClientTimeout(total=settings.timeout, sock_read=settings.read_timeout,
                                 connect=connect)


failure_text = proxy_failure_text  # the name the extract modules use


@dataclass(frozen=True, slots=True)
class Asked:
    """What a request asked Mixpanel for, as its stop messages say it."""

    what: str  # "Mixpanel's export"
    lost: str  # "nothing was exported"
    then: str  # what to run once fixed


EXPORT = Asked("Mixpanel's export", "nothing was exported",
               f"run the same `mp2amp migrate` command with --resume ({RESUME_KEEPS})")
ENGAGE = Asked("Mixpanel's profiles (engage)", "no more profiles were read",
               "run the profile export again")


def never_connected(exc: BaseException, span: Days,
                    settings: MixpanelSettings) -> TerminalError | Unreachable:
    """The error for a request that made no connection to Mixpanel (``NEVER_CONNECTED``):
    a proxy's refusal stops the run at once; anything else is retried as unreachable."""
    refused = proxy_refusal(exc, settings, settings.export_url, EXPORT)
    if refused is not None:
        return refused
    what = "" if isinstance(exc, aiohttp.ClientHttpProxyError) else f"{type(exc).__name__}: "
    return Unreachable(f"export of {span}: {what}{failure_text(exc)}; fetching the whole "
                       f"{span.what} again")


def proxy_refusal(exc: BaseException, settings: MixpanelSettings, url: str,
                  asked: Asked) -> TerminalError | None:
    """The stop for ``exc`` when it is a proxy's refusal for good (407, 403) of its
    CONNECT; ``None`` for any other error."""
    if not isinstance(exc, aiohttp.ClientHttpProxyError) or exc.status not in PROXY_REFUSALS:
        return None
    return proxy_refused(exc.status, exc.message, settings,
                         redact_userinfo(str(exc.request_info.real_url)), url=url, asked=asked)


def proxy_refused(status: int, reason: str, settings: MixpanelSettings,
                  seen: str | None = None, *, url: str | None = None,
                  asked: Asked = EXPORT) -> TerminalError:
    """The stop for a proxy that refused to reach Mixpanel for good (407, 403): retried, it
    would answer the same through every attempt. ``seen``: the proxy the request went to,
    when the environment does not say (a session given its own); ``url``: the request's
    (the export's unless given)."""
    url = url or settings.export_url
    host = urllib.parse.urlsplit(url).hostname or url
    proxy = proxy_for(url) or seen or "on the way"
    return TerminalError(redact_userinfo(
        f"the proxy {proxy} answered {status} {reason} when asked for {asked.what} at "
        f"{url}; {asked.lost}. {proxy_fix(status, host, proxy)}, then {asked.then}"))


def never_reached(settings: MixpanelSettings, exc: Exception, requests: int) -> str:
    """The stop of a run whose every connection failed before Mixpanel ever answered."""
    url, proxy = settings.export_url, proxy_for(settings.export_url)
    where, check = f"at {url}", "[mixpanel] api_host or region and the network"
    if proxy is not None:  # a proxy that is down refuses the same way as a wrong host
        where += f" through the proxy {proxy}"
        check = f"that proxy (HTTPS_PROXY / HTTP_PROXY; NO_PROXY goes around it), {check}"
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return redact_userinfo(
        f"cannot connect to Mixpanel {where} ({failure_text(cause)}), {requests} times and "
        f"never since this run started: check {check}, then run the same `mp2amp migrate` "
        "command with --resume (nothing was lost)")


# The run is recorded and its config fixed: a plain run again is refused (a used work
# folder), and so is --resume with another to_date or timezone.
_NOT_YET_TODAY = (
    "Mixpanel says {day} is later than today in the project's timezone, so it cannot be "
    "exported yet (the days before it are kept): run the same `mp2amp migrate` command with "
    "--resume once {day} has come in the project's timezone; or, if mixpanel.timezone was "
    "wrong (a legacy project keeps its own timezone), start a new run in a new work folder "
    "(run.workdir) with the right timezone or an earlier source.to_date")


def http_error(status: int, body: str, retry_after_header: str | None, day: Days,
               settings: MixpanelSettings) -> Mp2AmpError:
    """The error for an export answer other than 200."""
    retry_after = parse_retry_after(retry_after_header)
    low = body.lower()
    service = f"Mixpanel export of {day}"
    # Airbyte saw the rate limit reported in the body, not only as 429 (§1.7).
    if "query rate limit exceeded" in low:
        status = 429
    if status == 407:  # only a proxy sends it (one asked with GET, for an http:// host)
        return proxy_refused(status, "Proxy Authentication Required", settings)
    if status == 400 and "unable to authenticate" in low:
        return AuthError(f"Mixpanel refused the {settings.auth_kind} credentials (400 Unable "
                         "to authenticate request); check MIXPANEL_SERVICE_ACCOUNT (user:secret)"
                         " with mixpanel.project_id, or MIXPANEL_SECRET, then run the same "
                         f"`mp2amp migrate` command with --resume ({RESUME_KEEPS})")
    if status == 400 and "to_date cannot be later than today" in low:
        return TerminalError(_NOT_YET_TODAY.format(day=day.last))
    if status == 403:
        return AuthError(forbidden_message(service, body, settings.auth_kind))
    err = classify_http(status, service=service, body=body, retry_after=retry_after)
    if err is None:  # a 2xx other than 200 is not what the export contract allows
        return TerminalError(f"{service} answered {status} instead of 200: {body[:300]}")
    if isinstance(err, AuthError):
        return AuthError(f"{err} (used: {settings.auth_kind})")
    return err

