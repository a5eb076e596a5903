"""Batch ids are reproducible, so a resume skips settled batches and resends only the rest."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mp2amp.load import DeadLetterFile, Uploader, UploadSettings
from mp2amp.load.deadletter import read_dead_letters


def settings(url: str, **kw: Any) -> UploadSettings:
    base: dict[str, Any] = dict(api_key="test-key", api_host=url, concurrency=4,
                                max_events=100, backoff_base=0.005, backoff_cap=0.05)
    base.update(kw)
    return UploadSettings(**base)


async def upload(url: str, windows: dict[str, list[dict[str, Any]]], observer: Any,
                 settled: frozenset[str] = frozenset(), **kw: Any) -> tuple[Any, dict[str, int]]:
    counts = {}
    async with Uploader(settings(url, **kw), observer=observer, settled_batches=settled) as up:
        for key, evs in windows.items():
            for i, e in enumerate(evs):
                await up.submit(e, (key, i + 1), batch_key=key)
            counts[key] = await up.flush(key)
        return await up.close(), counts


def test_same_events_same_batch_ids_and_resume_sends_only_unsettled(fake_cls, gen_events,
                                                                    observer, recording_observer):
    windows = {"2024-01-01": gen_events(900, prefix="a"), "2024-01-02": gen_events(700, prefix="b")}
    fake = fake_cls()

    async def scenario() -> None:
        url = await fake.start()
        try:
            first, counts = await upload(url, windows, observer)
            assert first.accepted == 1600
            assert counts == {k: sum(1 for b in observer.accepted if b.startswith(k + "/"))
                              for k in windows}
            # a second observer sees the same ids for the same events
            again = recording_observer()
            await upload(url, windows, again)
            assert again.accepted == observer.accepted
            # resume: half the batches were settled before the crash
            ids = sorted(observer.accepted)
            settled = frozenset(ids[::2])
            resumed = recording_observer()
            sent_before = sum(fake.ingest_attempts.values())
            report, _ = await upload(url, windows, resumed, settled=settled)
            assert set(resumed.sent) == set(ids) - settled
            assert report.skipped == sum(len(observer.accepted[b]) for b in settled)
            assert report.batches_skipped == len(settled)
            assert report.settled == report.submitted == 1600
            # only the unsettled batches went over the wire again
            assert sum(fake.ingest_attempts.values()) - sent_before == 1600 - report.skipped
        finally:
            await fake.stop()

    asyncio.run(scenario())


def test_interleaved_windows_keep_separate_batches(fake_cls, gen_events, observer):
    a, b = gen_events(300, prefix="a"), gen_events(300, prefix="b")
    fake = fake_cls()

    async def scenario() -> Any:
        url = await fake.start()
        try:
            async with Uploader(settings(url), observer=observer) as up:
                for ea, eb in zip(a, b, strict=True):
                    await up.submit(ea, ("a", 1), batch_key="A")
                    await up.submit(eb, ("b", 1), batch_key="B")
                assert await up.flush("A") >= 1
                return await up.close()
        finally:
            await fake.stop()

    report = asyncio.run(scenario())
    assert report.accepted == 600
    for batch_id, ids in observer.accepted.items():
        prefix = "a-" if batch_id.startswith("A/") else "b-"
        assert all(i.startswith(prefix) for i in ids), batch_id


def test_unserializable_event_is_dead_lettered_not_lost(fake_cls, gen_events, observer,
                                                        tmp_path: Path):
    events = gen_events(10)
    events[4]["event_properties"]["huge"] = 2 ** 70   # JSON cannot carry it losslessly
    fake = fake_cls()
    dlq = DeadLetterFile(tmp_path / "d.jsonl")

    async def scenario() -> Any:
        url = await fake.start()
        try:
            async with Uploader(settings(url), observer=observer, dead_letters=dlq) as up:
                for i, e in enumerate(events):
                    await up.submit(e, ("f", i + 1))
                return await up.close()
        finally:
            await fake.stop()

    report = asyncio.run(scenario())
    dlq.close()
    assert report.dead_lettered == {"unserializable": 1} and report.accepted == 9
    assert [r["line"] for r in read_dead_letters(tmp_path / "d.jsonl")] == [5]
