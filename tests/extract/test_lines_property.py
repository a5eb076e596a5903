"""Property: however records are split across lines and mixed with garbage, every record
comes back once, in order, at its first line, and every garbage line is one rejection."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.extract.lines import parse_lines, split_lines

values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8,
)
records = st.dictionaries(st.text(min_size=1, max_size=6), values, min_size=1, max_size=4)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(records, st.floats(0, 1), st.booleans(), st.booleans()),
                min_size=1, max_size=12),
       st.integers(1, 50))
def test_split_and_garbage_lines(items: list[tuple[dict, float, bool, bool]], chunk: int) -> None:
    lines: list[bytes] = []
    expected: list[tuple[int, dict]] = []
    garbage_lines: list[int] = []
    for record, where, split, garbage_before in items:
        if garbage_before:
            lines.append(b"#garbage#")
            garbage_lines.append(len(lines))
        data = json.dumps(record, ensure_ascii=False).encode()
        expected.append((len(lines) + 1, record))
        if split and len(data) > 1:
            cut = 1 + int(where * (len(data) - 2))
            lines += [data[:cut], data[cut:]]
        else:
            lines.append(data)
    body = b"\n".join(lines) + b"\n"
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    out = list(parse_lines("p", split_lines(chunks)))
    assert [(r.line, r.record) for r in out if r.record is not None] == expected
    assert [r.line for r in out if r.record is None] == garbage_lines
