"""The sender's pure parts: request bodies and the ids a verdict is sorted by."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.load import UploadSettings
from mp2amp.load.observer import Submitted
from mp2amp.load.sender import IdPairs, Sender

ids = st.one_of(st.none(), st.text(min_size=1, max_size=5))


def _items(pairs: list[tuple[str | None, str | None]]) -> list[Submitted]:
    return [Submitted(orjson.dumps({"insert_id": str(n), "device_id": d, "user_id": u}),
                      ("s", n), "b", d, u, 0, 0, n) for n, (d, u) in enumerate(pairs)]


class _Up:
    def __init__(self, **kw: Any) -> None:
        self.settings = UploadSettings(api_key="k\"ey", **kw)


@given(st.lists(st.tuples(ids, ids), max_size=30), st.booleans(), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_a_body_is_the_batch_request_of_its_events_compressed_or_not(
        pairs: list[tuple[str | None, str | None]], compressed: bool, level: int) -> None:
    items = _items(pairs)
    sender = Sender(_Up(gzip=compressed, gzip_level=level, min_id_length=3))  # type: ignore[arg-type]
    body, size = sender.body(items)
    raw = gzip.decompress(body) if compressed else body
    assert size == len(raw)
    assert orjson.loads(raw) == {"api_key": "k\"ey", "events": [orjson.loads(i.data) for i in items],
                                 "options": {"min_id_length": 3}}


@given(st.lists(st.tuples(ids, ids), max_size=30), st.integers(-40, 40), st.integers(-40, 40))
def test_id_pairs_read_each_events_device_and_user(
        pairs: list[tuple[str | None, str | None]], start: int, stop: int) -> None:
    view = IdPairs(_items(pairs))
    assert len(view) == len(pairs)
    assert list(view) == pairs
    assert [view[i] for i in range(-len(pairs), len(pairs))] == pairs + pairs
    assert view[start:stop] == pairs[start:stop]
