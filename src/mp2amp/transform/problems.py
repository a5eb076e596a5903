"""Why a record is refused before any of it is mapped (the mapping core's rare paths)."""

from __future__ import annotations

from mp2amp.errors import Rejection
from mp2amp.transform.values import MAX_STRING, ValueProblem


def long_id(field: str) -> None:
    """An ID Amplitude would refuse for its length (more than 1024 characters)."""
    raise ValueProblem(field, f"{field} is longer than {MAX_STRING} characters", "invalid_id")


def not_an_event(record: object) -> Rejection:
    """A record without an event: a profile update or something else entirely."""
    if type(record) is dict and any(k in record for k in ("$distinct_id", "$group_id")):
        return Rejection("not_an_event", "a profile update (Engage/Groups), not an event: "
                         "mp2amp migrates events only, profiles are not sent", field="event")
    kind = type(record).__name__ if type(record) is not dict else "object without 'event'"
    return Rejection("not_an_event", f"expected a Mixpanel event object, got {kind}",
                     field="event")
