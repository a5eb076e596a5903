"""``--dirty RATE``: the things real Mixpanel exports contain (peers-and-pitfalls.md §4).

Per generated event, with ``RATE`` (default 0.001, i.e. ~0.1 % exact duplicates, as one
team measured in a real pipeline):

================  ===========  ==========================================================
kind              probability  what happens                             counted in truth?
================  ===========  ==========================================================
duplicates        RATE         the exact same line is written twice     once
malformed_lines   RATE / 5     the line is cut in half (event lost)     no
split_lines       RATE / 5     a newline inside the record (2 lines)    yes (join them)
junk_ids          RATE / 2     ``distinct_id`` is ``undefined``/``null``/``0``/zero UUID/
                               missing, no ``$device_id``/``$user_id``  no (no usable id)
long_strings      RATE / 5     a string property of 1025-2000 chars     yes
deep_nesting      RATE / 5     an object property 10-12 levels deep     yes
type_changes      RATE / 2     a number becomes a string (or back)      yes
hotshard          RATE / 5     ``$hotshard_events``, ``distinct_id: ""``,
                               ``mp_original_event_name/distinct_id``   yes (original name)
medium_strings    RATE         a custom text property (``MEDIUM_KEYS``) of 100-1024
                               chars, one in 8 of 1025-1100 (cut to 1024)  yes
reused_insert_ids RATE / 2     the ``$insert_id`` of the session's event before it (an
                               SDK or import bug), in another second: a distinct event
                               to Mixpanel too                          yes, keyed by line
================  ===========  ==========================================================

``reused_insert_ids`` applies only where the session wrote an event with an ``$insert_id``
just before; elsewhere the event stays clean and is not counted (so its count sits below
RATE / 2). Such an event's truth key is ``@events/DAY.jsonl.gz:LINE``: its ``$insert_id``
keys the earlier event.

Person-level: ``short_ids`` - ``min(0.5, 10 * RATE)`` of identified persons get a
numeric user id under 5 characters; every event carrying such an id is counted.
Identity-bearing records (the sign-up/login events that join a device to a user, and
``$identify``/``$create_alias``/``$merge``) are never dirtied, so who is who stays
recoverable.
"""

from __future__ import annotations

from random import Random
from typing import Any

DUPLICATES, MALFORMED, SPLIT, JUNK = "duplicates", "malformed_lines", "split_lines", "junk_ids"
LONG, DEEP, TYPES, HOTSHARD, SHORT = "long_strings", "deep_nesting", "type_changes", "hotshard", "short_ids"
MEDIUM, REUSED = "medium_strings", "reused_insert_ids"
KINDS = (DUPLICATES, MALFORMED, SPLIT, JUNK, SHORT, LONG, DEEP, TYPES, HOTSHARD, MEDIUM, REUSED)
# new kinds go last: the cuts of the ones before stay where they were
SHARES = ((DUPLICATES, 1.0), (MALFORMED, 0.2), (SPLIT, 0.2), (JUNK, 0.5), (LONG, 0.2),
          (DEEP, 0.2), (TYPES, 0.5), (HOTSHARD, 0.2), (MEDIUM, 1.0), (REUSED, 0.5))
# custom (not ``$``, not mapped) text properties: their values reach Amplitude as they are
MEDIUM_KEYS = ("feedback_text", "search_query", "error_message", "notes")
MAX_TEXT = 1024  # Amplitude's (and the transform's) cut, in characters
# words of the medium strings: some non-ASCII (2- and 3-byte UTF-8), so that a cut in
# bytes instead of characters shows; none outside the BMP (JavaScript counts those twice)
_WORDS = ("the", "checkout", "page", "kept", "loading", "after", "I", "clicked", "pay",
          "café", "naïve", "Größe", "über", "日本語", "проверка", "then", "it", "crashed",
          "again", "please", "fix", "search", "results", "were", "empty", "for", "order")
JUNK_IDS: tuple[str | None, ...] = ("undefined", "null", "0", "00000000-0000-0000-0000-000000000000", None)
_TYPE_CANDIDATES = ("price", "amount", "revenue", "item_count", "step", "$app_release",
                    "$screen_width", "$browser_version", "$wifi", "$app_build_number")


def short_id_share(rate: float) -> float:
    return min(0.5, 10 * rate)


class Dirt:
    """Chooses at most one kind of dirt per event from a single uniform draw."""

    __slots__ = ("_cuts", "counts", "total")

    def __init__(self, rate: float) -> None:
        cum = 0.0
        self._cuts: list[tuple[float, str]] = []
        for kind, share in SHARES:
            cum += rate * share
            self._cuts.append((cum, kind))
        self.total = cum
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)

    def pick(self, u: float) -> str:
        """The kind for a draw ``u`` already known to be below ``self.total``."""
        for cut, kind in self._cuts:
            if u < cut:
                return kind
        return self._cuts[-1][1]


def junk_ids(props: dict[str, Any], serial: int) -> None:
    value = JUNK_IDS[serial % len(JUNK_IDS)]
    if value is None:
        props.pop("distinct_id", None)
    else:
        props["distinct_id"] = value
    props.pop("$device_id", None)
    props.pop("$user_id", None)


def hotshard(name: str, props: dict[str, Any]) -> str:
    props["mp_original_event_name"] = name
    props["mp_original_distinct_id"] = props.get("distinct_id", "")
    props["distinct_id"] = ""
    return "$hotshard_events"


def long_string(props: dict[str, Any], rng: Random) -> None:
    size = 1025 + int(rng.random() * 975)
    if "$current_url" in props:
        base = props["$current_url"] or "https://www.example.com/"
        props["$current_url"] = (base + "?ref=" + "x1y2z3" * 400)[:size]
    else:
        props["error_stack"] = ("at Module.run (app.js:1:1)\n" * 80)[:size]


def medium_string(props: dict[str, Any], rng: Random) -> None:
    """A text of 100-1024 characters (both ends included now and then), one in 8 of
    1025-1100 (the transform cuts those to 1024), under one of ``MEDIUM_KEYS``."""
    u = rng.random()
    if u < 0.125:
        size = MAX_TEXT + 1 + int(rng.random() * 76)
    elif u < 0.3:  # the edges, where a cut one off shows
        size = (100, 101, MAX_TEXT - 1, MAX_TEXT)[int(rng.random() * 4)]
    else:
        size = 100 + int(rng.random() * (MAX_TEXT - 99))
    words: list[str] = []
    length = -1
    while length < size:
        word = _WORDS[int(rng.random() * len(_WORDS))]
        words.append(word)
        length += len(word) + 1
    text = " ".join(words)[:size]
    if text[-1] == " ":  # a value that does not end in a space, whatever is done with those
        text = text[:-1] + "x"
    props[MEDIUM_KEYS[int(rng.random() * len(MEDIUM_KEYS))]] = text


def deep_nesting(props: dict[str, Any], rng: Random) -> None:
    depth = 10 + int(rng.random() * 3)
    value: Any = {"value": 1}
    for level in range(depth, 0, -1):
        value = {f"level{level}": value}
    props["context"] = value


def type_change(props: dict[str, Any]) -> None:
    for key in _TYPE_CANDIDATES:
        if key in props:
            value = props[key]
            if isinstance(value, bool):
                props[key] = "true" if value else "false"
            elif isinstance(value, int | float):
                props[key] = str(value)
            elif isinstance(value, str) and value.isdigit():
                props[key] = int(value)
            else:
                continue
            return
    props["mp_processing_time_ms"] = str(props.get("mp_processing_time_ms", 0))


def _ascii_cut(line: bytes) -> int:
    """A byte position near the middle that is not inside a multi-byte UTF-8 character."""
    cut = len(line) // 2
    while cut < len(line) - 2 and line[cut] >= 0x80:
        cut += 1
    return cut


def malformed(line: bytes) -> bytes:
    return line[: _ascii_cut(line)] + b"\n"


def split(line: bytes) -> bytes:
    cut = _ascii_cut(line)
    return line[:cut] + b"\n" + line[cut:]
