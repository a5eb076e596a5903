"""A closed batch kept as its compressed request body until it is sent.

Why: a batch can wait in its lane's queue (two per lane by default) while the lane's
previous request is in flight, and a request's events wait for its answer. As separate
~1 KB bytes objects in glibc's heap they weigh ~8x their compressed body; compressed once
when the batch closes (it is compressed once either way), the events' bytes are freed at
once.

A packed batch is sent whole. Anything else (a cap lowered by a 413, a held device, any
answer but a 200) first unpacks it: the body is decompressed and each event gets its
bytes back, exactly as they were submitted. The events point at their ``Packed``, never
the other way: a cycle would keep every finished batch alive until the cyclic GC ran.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from isal import isal_zlib

if TYPE_CHECKING:
    from mp2amp.load.observer import Submitted

_EMPTY = b""


class Packed:
    """The gzip request body of one whole batch and where each event sits in it."""

    __slots__ = ("body", "head", "raw_size", "sizes")

    def __init__(self, sizes: Iterable[int], body: bytes, raw_size: int, head: int) -> None:
        self.body = body          # gzip of head + events joined by "," + tail
        self.raw_size = raw_size  # the uncompressed length
        self.head = head          # bytes before the first event
        self.sizes = array("I", sizes)

    def __len__(self) -> int:
        return len(self.sizes)

    def _starts(self) -> list[int]:
        starts = []
        pos = self.head
        for size in self.sizes:
            starts.append(pos)
            pos += size + 1  # the comma
        return starts

    def event_bytes(self, slot: int) -> bytes:
        """One event's bytes (the body stays packed)."""
        start = self._starts()[slot]
        return isal_zlib.decompress(self.body, 31)[start:start + self.sizes[slot]]

    def unpack(self, items: Iterable[Submitted]) -> None:
        """Give these events of the batch their bytes back (the others are left alone)."""
        mine = [item for item in items if item.packed is self]
        if not mine:
            return
        raw = isal_zlib.decompress(self.body, 31)
        starts = self._starts()
        sizes = self.sizes
        for item in mine:
            start = starts[item.slot]
            item.data = raw[start:start + sizes[item.slot]]
            item.packed = None


def pack(items: Sequence[Submitted], body: bytes, raw_size: int, head: int) -> None:
    """Let the events of a closed batch drop their bytes: ``body`` holds them."""
    packed = Packed([len(i.data) for i in items], body, raw_size, head)
    for slot, item in enumerate(items):
        item.packed = packed
        item.slot = slot
        item.data = _EMPTY
