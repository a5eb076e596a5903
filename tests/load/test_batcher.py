"""The batcher is pure: the properties below hold for any stream and any limits."""

from __future__ import annotations

from itertools import pairwise

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.load.batcher import ENVELOPE_BYTES, Batcher, Limits, batches, request_bytes

sizes = st.lists(st.integers(min_value=1, max_value=5000), max_size=400)
limits = st.builds(Limits, max_events=st.integers(1, 2000),
                   max_bytes=st.integers(ENVELOPE_BYTES + 1, 40_000))


@settings(max_examples=300, deadline=None)
@given(sizes, limits)
def test_batches_keep_order_and_every_item_once(item_sizes, lim):
    out = list(batches(list(enumerate(item_sizes)), lim))
    assert [i for b in out for i in b] == list(range(len(item_sizes)))
    assert all(b for b in out)


@settings(max_examples=300, deadline=None)
@given(sizes, limits)
def test_batches_respect_count_and_bytes_unless_one_item_is_too_big(item_sizes, lim):
    for b in batches(list(enumerate(item_sizes)), lim):
        assert len(b) <= lim.max_events
        if len(b) > 1:
            assert request_bytes(item_sizes[i] for i in b) <= lim.payload_bytes


@settings(max_examples=200, deadline=None)
@given(sizes, limits)
def test_batches_are_maximal(item_sizes, lim):
    """A batch is cut only when the next item would not fit: no needless small batches."""
    out = list(batches(list(enumerate(item_sizes)), lim))
    for b, nxt in pairwise(out):
        grown = [*b, nxt[0]]
        assert (len(grown) > lim.max_events
                or request_bytes(item_sizes[i] for i in grown) > lim.payload_bytes)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers(-2**63, 2**63 - 1) | st.text(max_size=20),
                                max_size=5), max_size=60),
       st.integers(ENVELOPE_BYTES + 50, 3000))
def test_incremental_size_equals_the_serialized_request(events, max_bytes):
    lim = Limits(2000, max_bytes)
    for b in batches([(e, len(orjson.dumps(e))) for e in events], lim):
        assert request_bytes(len(orjson.dumps(e)) for e in b) == len(orjson.dumps(b))


def test_same_stream_same_batches():
    stream = [(i, (i * 37) % 900 + 1) for i in range(1000)]
    lim = Limits(50, 5000)
    assert list(batches(stream, lim)) == list(batches(stream, lim))


def test_flush_and_len():
    b: Batcher[int] = Batcher(Limits(3, 10_000))
    assert b.flush() is None
    assert b.add(1, 10) is None and b.add(2, 10) is None and len(b) == 2
    assert b.add(3, 10) == [1, 2, 3] and len(b) == 0


@pytest.mark.parametrize("kw", [dict(max_events=0), dict(max_events=2001),
                                dict(max_bytes=ENVELOPE_BYTES)])
def test_limits_are_validated(kw):
    with pytest.raises(ValueError):
        Limits(**kw)
