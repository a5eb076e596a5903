"""``[transform] user_id_pattern``: matched with RE2, in time linear in the ID's length.

Why not Python's ``re``: it backtracks, so a pattern such as ``^(a+)+$`` takes time
exponential in the length of an ID such as ``aaaa…a!``; one such ID stalled a migration's
identity pass for good, with no message. RE2 cannot take that long on any ID, and what it
cannot match in linear time (backreferences such as ``\\1``, lookarounds such as ``(?=``)
it refuses when the config is read, naming the key.

RE2 differs from ``re`` in ways a user-ID pattern may meet: ``\\d``, ``\\w``, ``\\s``
and ``\\b`` are ASCII only (``\\p{Nd}``, ``\\pL`` name the Unicode classes), and a brace
that is no repetition RE2 can count (``{,5}``, ``{99999999999}``) is literal text to it.
Such braces are refused, as is a pattern ``re`` cannot compile, so that a pattern never
quietly means something else than it says to a Python user.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import re2

# A repetition as Python reads it (an escaped brace is text to both). RE2 reads ``{,m}`` and
# counts past what a C int holds as literal text, where Python repeats.
_REPEAT = re.compile(r"(?<!\\)\{([0-9]*)(,?)([0-9]*)\}")
MAX_REPEAT = 1000  # RE2's limit; a larger count is an error to it, or text past 2**31


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the config error names the key; RE2's own log is noise
    return options


def pattern_problem(pattern: str) -> str | None:
    """Why RE2 cannot use ``pattern`` (for the config check), or None."""
    try:
        re.compile(pattern)  # compiling never backtracks; only matching does
    except (re.error, OverflowError, RecursionError) as exc:
        return f"{pattern!r} is not a valid regular expression ({exc})"
    for brace in _REPEAT.finditer(pattern):
        low, comma, high = brace.groups()
        if not low and comma and high:
            return (f"{pattern!r}: {brace.group()} would be literal text to RE2, which "
                    f"matches this pattern: write {{0,{high}}}")
        if max(int(low or 0), int(high or 0)) > MAX_REPEAT:
            return (f"{pattern!r}: {brace.group()} repeats more than RE2, which matches "
                    f"this pattern, can count ({MAX_REPEAT})")
    try:
        re2.compile(pattern, options=_options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return (f"{pattern!r} is not a regular expression RE2 can match ({reason}); "
                "backreferences and lookarounds are not supported")
    except UnicodeEncodeError:
        return f"{pattern!r} holds a lone surrogate, which no ID can be matched against"
    return None


def user_id_matcher(pattern: str) -> Callable[[str], bool]:
    """``value -> bool``: whether the whole of ``value`` matches ``pattern``."""
    compiled = re2.compile(pattern, options=_options())
    fullmatch = compiled.fullmatch

    def matches(value: str) -> bool:
        try:
            return fullmatch(value) is not None
        except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): matched as U+FFFD
            text = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return fullmatch(text) is not None

    return matches
