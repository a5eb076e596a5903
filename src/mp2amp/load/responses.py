"""THE response classifier for Amplitude's ingestion APIs (Batch and HTTP V2).

``classify(status, body, ...)`` turns one response into a ``Verdict``: what the uploader
does next with each event of the request. It is pure and knows every body shape in the
reference (amplitude-api.md §1.8, §2.3): the per-index 400 lists, the silenced-device 400,
the 429 throttle maps and the daily-quota maps. Status-level decisions (retry, stop, fine)
come from ``mp2amp.errors.classify_http``; this module adds what Amplitude's bodies say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from mp2amp.errors import (
    AuthError,
    ContractError,
    Mp2AmpError,
    ServerError,
    TransientError,
    classify_http,
    redact_userinfo,
)

SERVICE = "Amplitude"

# The longest wait a server may impose through Retry-After (429, 503, 408): longer asks
# are clamped, since they come from a misconfigured proxy, not Amplitude (whose documented
# waits are 15-60 s), and would stall the run silently for hours. Backoff uses it too.
MAX_SERVER_WAIT = 900.0

Kind = Literal["accepted", "split", "sort", "reject_all", "retry", "stop"]

# 400 body fields that list event indices, and the dead-letter reason each stands for.
INDEX_LISTS: dict[str, str] = {
    "events_with_invalid_fields": "invalid_field",
    "events_with_missing_fields": "missing_field",
    "events_with_invalid_id_lengths": "invalid_id_length",
}

# Reason codes a dead-lettered or parked event can carry (stable, machine-readable).
REASONS = (
    "invalid_field", "missing_field", "invalid_id_length", "silenced_device",
    "request_rejected", "event_too_large", "daily_quota", "unserializable",
)

IdPair = tuple[str | None, str | None]  # (device_id, user_id) of one event in the request


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a request after its response.

    * ``accepted``  - every event was ingested.
    * ``split``     - 413: halve the request and send both halves.
    * ``sort``      - per event: ``dead`` ones go to the dead-letter file, ``throttled`` ones
      wait for their device/user, ``parked`` ones wait for the daily quota, the rest are
      resent at once (Amplitude ingested none of them). The devices/users named throttled
      or over their quota are held too, so that their later events wait with them.
    * ``reject_all``- a 400 that names no event (or a lone event still too large): every
      event is dead-lettered with ``reason``; the run goes on.
    * ``retry``     - send the same request again after a delay (5xx, 408, a 429 naming
      nobody). ``throttle`` says the delay is a throttle wait rather than a backoff step.
    * ``stop``      - the run cannot go on (invalid API key, wrong host, a 400 that is not
      Amplitude's JSON): raise ``error``.
    """

    kind: Kind
    status: int
    message: str = ""
    reason: str = ""
    dead: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    throttled: frozenset[int] = frozenset()
    parked: frozenset[int] = frozenset()
    throttled_devices: frozenset[str] = frozenset()
    throttled_users: frozenset[str] = frozenset()
    quota_devices: frozenset[str] = frozenset()  # exceeded_daily_quota_devices
    quota_users: frozenset[str] = frozenset()    # exceeded_daily_quota_users
    eps_threshold: int | None = None
    retry_after: float | None = None   # the server's Retry-After, clamped to MAX_SERVER_WAIT
    retry_after_asked: float | None = None  # as sent, when clamping changed it
    throttle: bool = False
    unreadable_body: bool = False  # a 400 saying the request body could not be read at all
    error: Mp2AmpError | None = None


# Amplitude's answers for a body it could not read at all. Ours is always valid JSON, so
# after a gzip request they mean the gzip was not undone on the way (``Sender.send``).
UNREADABLE_BODY = frozenset({"Invalid JSON request body", "Missing request body"})


def parse_body(body: bytes | str) -> dict[str, Any]:
    """The JSON object in a response body, or ``{}`` (proxy error pages, empty bodies)."""
    if not body:
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def effective_status(status: int, doc: Mapping[str, Any]) -> int:
    """HTTP status, unless a 2xx carries a non-2xx body ``code`` (seen behind proxies:
    RudderStack checks ``code == 429`` on 2xx answers). The body wins only then."""
    code = doc.get("code")
    if (200 <= status < 300 and isinstance(code, int) and not isinstance(code, bool)
            and 400 <= code < 600):
        return code
    return status


def classify(
    status: int,
    body: bytes | str,
    *,
    ids: Sequence[IdPair],
    retry_after: float | None = None,
    url: str = "",
    gzipped: bool = False,
) -> Verdict:
    """Classify one response to a request that carried events with these (device, user) ids.

    ``retry_after`` is the server's Retry-After in seconds; the verdict carries it clamped
    to ``MAX_SERVER_WAIT`` (and what was asked in ``retry_after_asked`` when it was cut).
    ``url`` is where the request went: messages about a wrong host name it. ``gzipped``:
    the request body was sent gzipped (``Content-Encoding: gzip``)."""
    verdict = _classify(status, body, ids, capped_wait(retry_after), url, gzipped)
    if retry_after is not None and retry_after > MAX_SERVER_WAIT:
        verdict = replace(verdict, retry_after_asked=retry_after)
    return verdict


def capped_wait(retry_after: float | None) -> float | None:
    """A server-given wait, never longer than ``MAX_SERVER_WAIT``."""
    return None if retry_after is None else min(retry_after, MAX_SERVER_WAIT)


def _classify(status: int, body: bytes | str, ids: Sequence[IdPair],
              retry_after: float | None, url: str, gzipped: bool) -> Verdict:
    doc = parse_body(body)
    status = effective_status(status, doc)
    error_text = _text(doc.get("error"))
    n = len(ids)
    if 200 <= status < 300:
        if not _is_amplitudes_2xx(doc):
            return _not_amplitudes(status, body)
        return Verdict("accepted", status)
    if status == 413:
        if n > 1:
            return Verdict("split", status, message=error_text or "Payload too large")
        return Verdict(
            "reject_all", status, reason="event_too_large",
            message=f"413 {error_text or 'Payload too large'}: this single event alone "
                    "exceeds Amplitude's request size limit",
        )
    if status == 400 and not _is_amplitudes_4xx(doc):
        return _foreign_400(body, url)
    if status == 400 and error_text.startswith("Invalid API key"):
        # The server's text after the prefix may echo the key: never repeat it.
        return Verdict("stop", status, message="Invalid API key", error=AuthError(
            f"Amplitude{_at(url)} refused the API key (400 'Invalid API key'); set "
            "AMPLITUDE_API_KEY to the target project's API key, and check that this host is "
            "its data center (amplitude.region: us or eu), then run again with --resume: "
            "nothing was lost"))
    if status == 400 and error_text.startswith("Invalid request path"):
        # Every request to this URL gets the same answer: dead-lettering each batch in turn
        # would empty the whole migration into the dead-letter file. Stop, like a 404.
        return Verdict("stop", status, message=error_text, error=ContractError(
            "Amplitude answered 400 'Invalid request path': the URL is not an ingestion "
            "endpoint; set amplitude.api_host to the host alone (e.g. "
            "https://api2.amplitude.com) and choose the endpoint with amplitude.endpoint, then "
            "run again with --resume: nothing was lost"))
    missing = _text(doc.get("missing_field")) if status == 400 else ""
    if missing:
        # A required field of the request itself (api_key, events) is missing: the request
        # is at fault, not its events, and resending the rest after dropping the listed
        # events would fail the same way, one event per round (Amplitude's Python SDK
        # also drops the whole batch). Any events_with_* list beside it is ignored.
        return Verdict("reject_all", status, reason="request_rejected",
                       message=f"400 {error_text or 'Request missing required field'} "
                               f"(missing request field {missing!r}): Amplitude rejected the "
                               "whole request, so all its events were dead-lettered; the "
                               "run goes on")
    if status in (400, 429):
        verdict = _sort(status, doc, error_text, ids, retry_after)
        if verdict is not None:
            return verdict
        if status == 429:  # a project-level throttle names nobody: the whole request waits
            return Verdict("retry", status, message=error_text, retry_after=retry_after,
                           throttle=True, eps_threshold=_int(doc.get("eps_threshold")))
        return Verdict("reject_all", status, reason="request_rejected",
                       message=f"400 {error_text or 'Bad request'}; "
                               "Amplitude named no event, so the whole request was rejected",
                       unreadable_body=error_text in UNREADABLE_BODY)
    if status == 408:
        return Verdict("retry", status, message="request timeout", retry_after=retry_after,
                       error=ServerError("Amplitude timed out (408); retrying", status=408))
    err = classify_http(status, service=SERVICE, body=_safe_snippet(error_text, doc),
                        retry_after=retry_after)
    if isinstance(err, TransientError):
        return Verdict("retry", status, message=error_text, retry_after=retry_after, error=err)
    if err is None:  # unreachable: 2xx handled above; kept total for the type checker
        return Verdict("accepted", status)
    if isinstance(err, AuthError):
        err = AuthError(f"Amplitude refused the request ({status} {error_text or 'Forbidden'}); "
                        "check the API key, the region (us/eu) and any proxy between us and "
                        "Amplitude, then run again with --resume")
    else:  # 404 and other 4xx: the host or endpoint is wrong, retrying cannot help
        err = ContractError(f"Amplitude answered {status} {error_text!r}, which its contract does "
                            "not allow for this request; check amplitude.api_host / endpoint"
                            f"{_gzip_advice(status, gzipped)}, then run again with --resume")
    return Verdict("stop", status, message=error_text, error=err)


def _gzip_advice(status: int, gzipped: bool) -> str:
    """For a 415 (Unsupported Media Type) to a gzip body: what a proxy that cannot take
    ``Content-Encoding: gzip`` answers (RFC 9110 12.5.3), which only turning gzip off cures."""
    if status != 415 or not gzipped:
        return ""
    return (" (the request body was gzipped: a proxy that cannot take gzip bodies answers "
            "415, so set `[amplitude] gzip = false` in the config file if api_host is right)")


def _is_amplitudes_2xx(doc: Mapping[str, Any]) -> bool:
    """Whether a 2xx body is Amplitude's answer (``code``, ``events_ingested``,
    ``payload_size_bytes``, ``server_upload_time``) and not a JSON object of another
    service or portal (``{"status": "ok"}``): only Amplitude's says the events are in."""
    code = _int(doc.get("code"))
    if code is not None:
        return 200 <= code < 300
    return _int(doc.get("events_ingested")) is not None


def _not_amplitudes(status: int, body: bytes | str) -> Verdict:
    """A 2xx whose body is not Amplitude's JSON object: a proxy's or captive portal's page,
    or another service at ``api_host``. Counting it as accepted would mark every batch done
    with nothing in Amplitude; it is retried (as Amplitude's SDK does with an unreadable
    answer), and the run stops once the retries are spent."""
    message = (f"answered {status} with a body that is not Amplitude's JSON "
               f"({_snippet(body)!r}): a proxy, a captive portal or a wrong "
               "amplitude.api_host? Nothing of the request was counted as sent")
    return Verdict("retry", status, message=message,
                   error=ServerError(f"Amplitude {message}; retrying", status=status))


def _is_amplitudes_4xx(doc: Mapping[str, Any]) -> bool:
    """Whether a 400 body is Amplitude's JSON object. Every Amplitude 400 of the reference
    (amplitude-api.md §1.8, §2.3) carries ``"code": 400`` and an ``error`` text; a field only
    Amplitude sends is enough too. ``error`` alone is not: web frameworks' default 400 bodies
    (Spring ``{"status":400,"error":"Bad Request",...}``, Rails) carry one, and taking theirs
    for Amplitude's would dead-letter every batch of the run."""
    if any(key in doc for key in AMPLITUDE_4XX_KEYS):
        return True
    return _int(doc.get("code")) == 400 and isinstance(doc.get("error"), str)


# Fields only Amplitude's 400/429 bodies carry (amplitude-api.md §1.8, §2.3).
AMPLITUDE_4XX_KEYS = ("missing_field", *INDEX_LISTS, "silenced_events", "silenced_devices",
                      "throttled_events", "throttled_devices", "throttled_users",
                      "exceeded_daily_quota_devices", "exceeded_daily_quota_users")


def _foreign_400(body: bytes | str, url: str) -> Verdict:
    """A 400 whose body is not Amplitude's JSON: a web server or proxy at ``api_host``
    (nginx's "plain HTTP request was sent to HTTPS port"). It would answer every request
    the same, so dead-lettering each batch would empty the migration: stop, like a 404."""
    where = redact_userinfo(url) if url else "amplitude.api_host"
    message = (f"{where} answered 400 with a body that is not Amplitude's JSON "
               f"({_snippet(body)!r}): a proxy or web server, not Amplitude's API, answers "
               "there (http:// to an https port?)")
    return Verdict("stop", 400, message=message, error=ContractError(
        f"{message}; nothing was dead-lettered. Check amplitude.api_host (or region), then "
        "run again with --resume: nothing was lost"))


def _at(url: str) -> str:
    return f" at {redact_userinfo(url)}" if url else ""


def _snippet(body: bytes | str) -> str:
    """The start of a foreign body, on one line, for an error message."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return " ".join(text.split())[:120] or "(empty)"


def _sort(status: int, doc: Mapping[str, Any], error_text: str, ids: Sequence[IdPair],
          retry_after: float | None) -> Verdict | None:
    """Per-event dispositions from a 400/429 body; ``None`` when the body names nobody."""
    n = len(ids)
    dead: dict[int, tuple[str, str]] = {}
    for key, reason in INDEX_LISTS.items():
        lists = doc.get(key)
        if not isinstance(lists, Mapping):
            continue
        for fld, indices in lists.items():
            for i in _indices(indices, n):
                if i not in dead:
                    dead[i] = (reason, f"{status} {error_text or 'Invalid event'}: "
                                       f"field {fld!r} ({key})")
    for i in _silenced(doc, ids):
        dead.setdefault(i, ("silenced_device", f"{status} {error_text or 'Events silenced'}: "
                                               "Amplitude silenced this event's device"))
    t_devices = _keys(doc.get("throttled_devices"))
    t_users = _keys(doc.get("throttled_users"))
    q_devices = _keys(doc.get("exceeded_daily_quota_devices"))
    q_users = _keys(doc.get("exceeded_daily_quota_users"))
    listed = set(_indices(doc.get("throttled_events"), n))
    parked: set[int] = set()
    throttled: set[int] = set()
    for i, (device, user) in enumerate(ids):
        if i in dead:
            continue
        if (device is not None and device in q_devices) or (user is not None and user in q_users):
            parked.add(i)
        elif (i in listed or (device is not None and device in t_devices)
              or (user is not None and user in t_users)):
            throttled.add(i)
    if not dead and not throttled and not parked:
        return None
    return Verdict(
        "sort", status, message=error_text, dead=dead,
        throttled=frozenset(throttled), parked=frozenset(parked),
        throttled_devices=t_devices, throttled_users=t_users,
        quota_devices=q_devices, quota_users=q_users,
        eps_threshold=_int(doc.get("eps_threshold")), retry_after=retry_after,
    )


def _silenced(doc: Mapping[str, Any], ids: Sequence[IdPair]) -> list[int]:
    """Indices of the silenced events: listed in ``silenced_events``, or of a device named
    in ``silenced_devices`` (a body may name the device and list no index)."""
    listed = set(_indices(doc.get("silenced_events"), len(ids)))
    devices = _keys(doc.get("silenced_devices"))
    if devices:
        listed.update(i for i, (device, _) in enumerate(ids) if device in devices)
    return sorted(listed)


def _indices(value: Any, n: int) -> list[int]:
    """Valid event indices from a body list; out-of-range or non-int entries are ignored."""
    if not isinstance(value, list):
        return []
    return [i for i in value if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n]


def _keys(value: Any) -> frozenset[str]:
    if isinstance(value, Mapping):
        return frozenset(str(k) for k in value)
    if isinstance(value, list):
        return frozenset(str(k) for k in value)
    return frozenset()


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _safe_snippet(error_text: str, doc: Mapping[str, Any]) -> str:
    """What of the body goes into an error message: the ``error`` text only, never the body
    (which could echo the request)."""
    return error_text if doc else ""
