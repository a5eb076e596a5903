"""Batches kept compressed from their first event (load/packed.py): the same requests, the same
events back."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from mp2amp.load import Uploader, UploadSettings
from mp2amp.load.observer import Submitted
from mp2amp.load.packed import OpenBody, attach
from mp2amp.load.sender import Sender

# event contents with the characters a cut could trip on: commas, brackets, quotes, escapes
texts = st.text(alphabet=st.sampled_from(list(',[]{}"\\:é𝄞\n\t ab01')), max_size=12)
events = st.lists(st.fixed_dictionaries({"insert_id": texts, "event_type": texts},
                                        optional={"p": st.dictionaries(texts, texts, max_size=3)}),
                  min_size=1, max_size=25)


class _Up:
    def __init__(self, **kw: Any) -> None:
        self.settings = UploadSettings(api_key="key", **kw)


def _items(evs: list[dict[str, Any]]) -> list[Submitted]:
    return [Submitted(orjson.dumps(e), ("s", n), "b/0/0", "d", None, 0, 0, n)
            for n, e in enumerate(evs)]


def _packed(sender: Sender, items: list[Submitted], piece: int) -> None:
    """What the uploader does: each event's bytes into the open body, then attach."""
    body = sender.open_body() if piece == 256 else OpenBody(sender._head,
                                                             sender.up.settings.gzip_level, piece)
    for item in items:
        body.add(item.data)
        item.data = b""
    attach(items, body.close(sender.tail))


@given(events, st.integers(0, 3), st.sampled_from([1, 2, 3, 7, 256]))
@settings(max_examples=80, deadline=None)
def test_a_packed_batch_sends_the_same_body_and_unpacks_to_the_same_bytes(
        evs: list[dict[str, Any]], level: int, piece: int) -> None:
    sender = Sender(_Up(gzip_level=level))  # type: ignore[arg-type]
    items = _items(evs)
    want = [i.data for i in items]
    plain_body, plain_size = sender.body(list(items))
    _packed(sender, items, piece)
    assert all(i.data == b"" and i.packed is items[0].packed for i in items)
    body, size = sender.body(items)
    assert size == plain_size
    assert gzip.decompress(body) == gzip.decompress(plain_body)
    packed = items[0].packed
    assert packed is not None
    assert [packed.event_bytes(i.slot) for i in items] == want  # one by one, still packed
    packed.unpack(items[1:])  # some of them
    assert [i.data for i in items[1:]] == want[1:] and items[0].packed is packed
    packed.unpack(items)
    assert [i.data for i in items] == want
    assert all(i.packed is None for i in items)
    packed.unpack(items)  # a second time changes nothing
    assert [i.data for i in items] == want
    assert gzip.decompress(sender.body(items)[0]) == gzip.decompress(plain_body)  # rebuilt


@given(events)
@settings(max_examples=30, deadline=None)
def test_a_packed_events_dict_is_read_from_the_body(evs: list[dict[str, Any]]) -> None:
    sender = Sender(_Up())  # type: ignore[arg-type]
    items = _items(evs)
    _packed(sender, items, 3)
    assert [i.event for i in items] == evs
    assert all(i.packed is not None for i in items)


def test_without_gzip_events_keep_their_bytes(fake_cls: Any, gen_events: Any,
                                             observer: Any) -> None:
    async def run() -> Any:
        fake = fake_cls()
        url = await fake.start()
        try:
            s = UploadSettings(api_key="test-key", api_host=url, gzip=False, max_events=50)
            async with Uploader(s, observer=observer) as up:
                for i, e in enumerate(gen_events(120)):
                    await up.submit(e, ("src.jsonl", i + 1), batch_key="w1")
                assert up._bodies is None
                assert all(i.packed is None and i.data for ln in up._lanes for i in ln.queue)
                report = await up.close()
            return report, fake
        finally:
            await fake.stop()

    report, fake = asyncio.run(run())
    assert report.accepted == 120 and fake.bodies_gzip == 0


def test_queued_batches_hold_no_event_bytes_and_all_arrive(fake_cls: Any, gen_events: Any,
                                                           observer: Any) -> None:
    evs = gen_events(3000, devices=40)

    class GatedFake(fake_cls):  # type: ignore[misc, valid-type]
        """Holds every request until the test opens the gate."""

        def __post_init__(self) -> None:
            super().__post_init__()
            self.gate = asyncio.Event()

        async def ingest(self, request: web.Request) -> web.StreamResponse:
            await self.gate.wait()
            return await super().ingest(request)

    async def run() -> tuple[list[tuple[bytes, bool]], Any, Any]:
        fake = GatedFake()
        url = await fake.start()
        try:
            s = UploadSettings(api_key="test-key", api_host=url, concurrency=2, max_events=100)
            async with Uploader(s, observer=observer) as up:
                for i, e in enumerate(evs[:1200]):  # up to the backpressure limit (2x2x100)
                    if up._queued >= s.pending_cap:
                        break
                    await up.submit(e, ("src.jsonl", i + 1), batch_key="w1")
                await asyncio.sleep(0.05)  # each lane has taken its first batch
                # what waits in the queues now (the observer unpacks accepted events later)
                queued = [(i.data, i.packed is not None) for ln in up._lanes for i in ln.queue]
                fake.gate.set()
                for i, e in enumerate(evs[up.report.submitted:], start=up.report.submitted):
                    await up.submit(e, ("src.jsonl", i + 1), batch_key="w1")
                report = await up.close()
            return queued, report, fake
        finally:
            await fake.stop()

    queued, report, fake = asyncio.run(run())
    assert len(queued) >= 100, "no batch was waiting in a lane queue"
    assert set(queued) == {(b"", True)}
    assert report.accepted == len(evs)
    assert sorted(i for _, i in fake.stored) == sorted(e["insert_id"] for e in evs)
    assert sorted(observer.accepted_ids()) == sorted(e["insert_id"] for e in evs)


@pytest.mark.parametrize(("max_bytes", "max_events"), [(3_000, 7), (100_000, 3), (1_600, 2000)])
def test_batches_cut_by_bytes_or_by_count_arrive_whole_and_in_order(
        fake_cls: Any, gen_events: Any, observer: Any, max_bytes: int, max_events: int) -> None:
    evs = gen_events(700, devices=9)

    async def run() -> Any:
        fake = fake_cls(max_bytes=max_bytes)  # a request above the cap would get a 413
        url = await fake.start()
        try:
            s = UploadSettings(api_key="test-key", api_host=url, max_bytes=max_bytes,
                               max_events=max_events, concurrency=3)
            async with Uploader(s, observer=observer) as up:
                for i, e in enumerate(evs):
                    await up.submit(e, ("src.jsonl", i + 1), batch_key="w1")
                report = await up.close()
            return report, fake
        finally:
            await fake.stop()

    report, fake = asyncio.run(run())
    assert 413 not in fake.statuses and report.splits == 0
    assert report.accepted == len(evs) and sorted(fake.sequence) == sorted(
        e["insert_id"] for e in evs)
    for device, arrived in fake.arrival.items():  # each device's events in submission order
        assert arrived == [e["insert_id"] for e in evs if e["device_id"] == device]
    assert sum(observer.sent.values()) == len(evs)
