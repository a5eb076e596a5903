"""The one exception tree of mp2amp.

Three kinds, because each asks the caller for a different next step:

* ``TransientError``  - the same request may succeed later: retry with backoff.
* ``TerminalError``   - the run cannot go on (bad config, bad credentials, a broken
  contract): stop, tell the user what to fix, exit non-zero.
* ``RejectedRecord``  - one record is unusable: dead-letter it with a reason and go on.

Every message says what happens next, so a CLI can print ``str(exc)`` as it is.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any


class Mp2AmpError(Exception):
    """Base of every error mp2amp raises on purpose."""

    exit_code: int = 1


# --- transient: retry -------------------------------------------------------------


class TransientError(Mp2AmpError):
    """A failure that may go away: the caller retries with jittered backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(TransientError):
    """5xx from an API: retried."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class ConnectionLost(TransientError):
    """Timeout, refused or dropped connection: the outcome is unknown, so retried."""


class Unreachable(ConnectionLost):
    """No connection could be made at all (refused, no route): retried, but a server never
    reached in a run is a wrong host or port, said after a few attempts."""


class RateLimited(TransientError):
    """429 or an equivalent throttle: wait (``retry_after`` when the server said) and retry."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        throttled_ids: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.throttled_ids = throttled_ids or {}


class StreamInterrupted(TransientError):
    """An export stream ended early ("terminated early", dropped): the window is refetched."""


# --- terminal: stop the run -------------------------------------------------------


class TerminalError(Mp2AmpError):
    """The run cannot continue; the message says what to fix."""

    exit_code = 2


class ConfigError(TerminalError):
    """The configuration is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration{where} ({len(self.problems)} problem(s)); "
                         f"fix them and run again:\n{lines}")


class AuthError(TerminalError):
    """Credentials were refused (invalid API key, bad secret): the run stops."""


class InputError(TerminalError):
    """An input file cannot be read at all (missing, unreadable): the run stops."""


class ContractError(TerminalError):
    """An API answered in a way its contract does not allow; nothing is retried blindly."""


class InvariantViolation(TerminalError):
    """Counts do not add up (read != sent + rejected + skipped + duplicate)."""


# --- rejected: one record is dead-lettered -----------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one record was not sent. A value, not an exception, so the hot path stays cheap.

    ``reason`` is a stable machine code (e.g. ``missing_id``, ``malformed_json``);
    ``message`` is for people and names the field at fault.
    """

    reason: str
    message: str
    field: str | None = None
    source: str | None = None
    line: int | None = None
    record: Any = dc_field(default=None, compare=False)

    def located(self, source: str | None, line: int | None) -> Rejection:
        return Rejection(self.reason, self.message, self.field, source, line, self.record)

    def describe(self) -> str:
        where = ""
        if self.source is not None:
            where = f"{self.source}:{self.line}: " if self.line is not None else f"{self.source}: "
        fld = f" (field {self.field})" if self.field else ""
        return f"{where}{self.reason}{fld}: {self.message}; the record goes to the rejects file"


class RejectedRecord(Mp2AmpError):
    """Raised where a record-level failure must unwind; carries a ``Rejection``."""

    exit_code = 0

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.describe())
        self.rejection = rejection


# --- HTTP classification: the one place that turns a status into an error kind ------


def classify_http(
    status: int,
    *,
    service: str,
    body: str = "",
    retry_after: float | None = None,
) -> Mp2AmpError | None:
    """Map an HTTP status to an error kind; ``None`` means success (2xx).

    Service-specific bodies (Amplitude's 400 index lists, 429 throttled IDs) are read
    by the caller on top of this; what this decides is *retry, stop or fine*.
    """
    if 200 <= status < 300:
        return None
    snippet = body[:300]
    if status == 429:
        return RateLimited(
            f"{service} throttled the request (429); waiting and retrying",
            retry_after=retry_after,
        )
    if status >= 500 or status == 408:  # 408: a proxy's timeout; the request may be repeated
        return ServerError(
            f"{service} answered {status}; retrying with backoff: {snippet}",
            status=status,
            retry_after=retry_after,
        )
    if status in (401, 403):
        return AuthError(
            f"{service} refused the credentials ({status}): {snippet}; "
            "check the key/secret in the environment, then run the same command again "
            "(`mp2amp migrate` with --resume: its run is recorded, nothing was lost)"
        )
    return ContractError(f"{service} rejected the request ({status}): {snippet}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds, or an HTTP date (RFC 9110
    10.2.3, what proxies and load balancers send) counted from ``now`` (the wall clock
    unless given); ``None`` if absent, odd or not finite ("inf" would wait forever)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT
            when = when.replace(tzinfo=datetime.UTC)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# ``scheme://userinfo@``: credentials written into a URL (api_host = "https://u:p@proxy")
# greedy to the last "@" before the host: a login may be an e-mail address, and a password
# may hold an unencoded "@", "#" or "?" (the client splits at the last "@" too)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s'\"]*@")
# ``user:password@host`` with no scheme (HTTP_PROXY=ops:pw@proxy:3128, as curl takes it),
# at the start of a word: "user@host" alone (no colon) holds no password.
_BARE_USERINFO = re.compile(r"(?<![^\s'\"(<\[=,])[^\s/@?#'\"<>()\[\]=,:]+:[^\s/'\"]*@(?=\S)")


def redact_userinfo(text: str) -> str:
    """``text`` with the credentials of every URL in it shown as ``***``: messages name
    api_host and proxies, and a user:password written into one must not reach logs and
    terminals."""
    return _BARE_USERINFO.sub("***@", _URL_USERINFO.sub(r"\1***@", text))
