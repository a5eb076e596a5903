"""Session 21: the transformer's shape memos hold names, so they are bounded by characters
too (``shapes.memo_weight``), and a key holding text longer than 1024 characters (a name
that is cut per event anyway) is not memoized at all; nor is a page URL that long (nor
split through urlsplit's own cache of 128). Memory
stays flat however many distinct 100 KB names or URLs come (ARCHITECTURE invariant 4)."""

from __future__ import annotations

import tracemalloc
from typing import Any

from mp2amp.config import load_config
from mp2amp.models import Resolved
from mp2amp.transform.events import Transformer
from mp2amp.transform.shapes import KEY_CHARS, memo_weight

T = 1_700_000_000
IDS = Resolved("user-1", "device-1")


def _record(i: int, **props: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"time": T + i, "distinct_id": "user-1", "$insert_id": f"iid-{i}",
                         "mp_lib": "swift", "$os": "iOS"}
    p.update(props)
    return {"event": "A", "properties": p}


def _retained(records: list[dict[str, Any]]) -> tuple[int, Transformer, list[Any]]:
    """Bytes allocated and still held after a Transformer took ``records`` (made before):
    its memos, and the outputs (~1.3 KB each here: names and values cut to 1024)."""
    config = load_config(None, {"mixpanel.timezone": "UTC"}, env={})
    tracemalloc.start()
    try:
        transformer = Transformer(config.transform_settings())
        base = tracemalloc.get_traced_memory()[0]
        outs = [transformer.event(record, IDS) for record in records]
        retained = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert all(isinstance(out, dict) for out in outs), outs[0]
    return retained, transformer, outs


def test_memo_weight_counts_characters_and_refuses_over_long_text() -> None:
    assert memo_weight(("swift", "iOS", "time", "distinct_id")) == 4  # short: one a key
    assert memo_weight(("k" * 1000,)) == 1 + 1000 // KEY_CHARS
    assert memo_weight(("a",), ("E" * 1000, "swift", None)) == 1 + 1000 // KEY_CHARS
    assert memo_weight(("k" * 1025,)) == -1  # cut to 1024 per event: not memoized
    assert memo_weight(("a",), ("swift" * 300, None)) == -1  # an over-long mp_lib too


def test_distinct_100kb_property_names_are_not_held_by_the_memos() -> None:
    n = 200  # 20 MB of distinct names: held whole, they were ~100 KB each after the event
    records = [_record(i, **{f"{i:06d}" + "k" * 100_000: i}) for i in range(n)]
    retained, transformer, outs = _retained(records)
    assert retained < 2 * 2**20, f"{retained / 2**20:.1f} MB held after {n} 100 KB names"
    for i, out in enumerate(outs):  # each name cut to 1024 characters, its value kept
        (name,) = (k for k in out["event_properties"] if k.startswith(f"{i:06d}"))
        assert len(name) == 1024 and name[1015] == "~" and out["event_properties"][name] == i
    assert transformer.values.truncated  # counted, as before


def test_distinct_100kb_mp_lib_values_are_not_held_by_the_memos() -> None:
    records = [_record(i, mp_lib=f"{i:06d}" + "l" * 100_000) for i in range(200)]
    retained, _, _ = _retained(records)
    assert retained < 2 * 2**20, f"{retained / 2**20:.1f} MB held after 200 100 KB mp_libs"


def test_distinct_100kb_page_urls_are_not_held_by_the_url_memo() -> None:
    records = [_record(i, mp_lib="web", **{"$browser": "Chrome", "$current_url":
                                           f"https://x.example/{i:06d}" + "p" * 100_000})
               for i in range(100)]
    retained, _, outs = _retained(records)
    assert retained < 2 * 2**20, f"{retained / 2**20:.1f} MB held after 100 100 KB URLs"
    assert all(len(o["event_properties"]["[Amplitude] Page Path"]) == 1024 for o in outs)


def test_short_shapes_stay_served_by_the_memos_among_long_names() -> None:
    config = load_config(None, {"mixpanel.timezone": "UTC"}, env={})
    transformer = Transformer(config.transform_settings())
    transformer.event(_record(0, plan="pro"), IDS)  # learnt
    for i in range(1, 50):
        transformer.event(_record(i, **{f"{i:06d}" + "k" * 2_000: i}), IDS)
    before = transformer.general_path
    assert transformer.event(_record(99, plan="pro"), IDS) == \
        Transformer(config.transform_settings()).event(_record(99, plan="pro"), IDS)
    assert transformer.general_path == before  # served by the memo, not forgotten
