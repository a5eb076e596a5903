"""Which part of a glob pattern a part of one of its matches stands at.

A pattern part starting with '.' or '_' names hidden or ``_`` names at its own position
only, as ``glob.glob`` does for hidden ones: ``out/*/_part-*`` names ``_part-0`` files,
not the ``_temporary/`` folder they sit in; a ``**`` names no such name in the folders it
spans. Between two ``**`` a part's place is not fixed (``in/**/_backfill/**``): such a
name there is named by a ``.`` or ``_`` part of that stretch that matches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatch

RECURSIVE = "**"


def pattern_parts_at(parts: Sequence[str], pattern: Sequence[str]) -> list[str | None]:
    """For each of a match's ``parts`` (its path below the pattern's literal part), the
    pattern part that matched it (``pattern``: the pattern's parts from the same place),
    or ``None`` for a part a ``**`` spans (unless a hidden or ``_`` part between two
    ``**`` matches it: its place there depends on how many folders each ``**`` spans)."""
    pattern = [p for p in pattern if p]
    if RECURSIVE not in pattern:
        return [pattern[i] if i < len(pattern) else None for i in range(len(parts))]
    first = pattern.index(RECURSIVE)
    last = len(pattern) - 1 - pattern[::-1].index(RECURSIVE)
    head, tail = pattern[:first], pattern[last + 1:]
    out = [_middle_part(part, pattern[first + 1:last]) for part in parts]
    for i, part in enumerate(head[:len(parts)]):
        out[i] = part
    for i, part in enumerate(tail):  # the parts after the last '**' end the match
        at = len(parts) - len(tail) + i
        if at >= len(head):
            out[at] = part
    return out


def _middle_part(part: str, middle: Sequence[str]) -> str | None:
    """The hidden or ``_`` part between two ``**`` that matches ``part``, if any."""
    return next((p for p in middle if p[:1] in "._" and p[:1] == part[:1]
                 and fnmatch(part, p)), None)


def names_at(part: str, pattern_part: str | None, prefix: str) -> bool:
    """Whether ``pattern_part`` names ``part``, a name starting with ``prefix`` ('.' or
    '_'), at its position: it starts with ``prefix`` too (and matched it)."""
    return pattern_part is not None and pattern_part.startswith(prefix) \
        and part.startswith(prefix)
