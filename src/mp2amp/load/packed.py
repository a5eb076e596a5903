"""A batch kept as its compressed request body, from its first event until it is sent.

Why: each lane has a batch filling up (up to 2000 events), batches waiting in its queue,
and a request waiting for its answer. As separate ~1 KB bytes objects in glibc's heap
those events held up to ~40 MB of the migration process, and the heap's fragmentation
then set the run's peak memory. ``OpenBody`` compresses a batch's events a few hundred at
a time as they arrive (each byte is compressed once, as before), so at most that many
are kept raw per lane; the closed batch is a ``Packed`` body.

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

    __slots__ = ("_read", "body", "head", "raw_size", "sizes")

    def __init__(self, sizes: Iterable[int], body: bytes, raw_size: int, head: int) -> None:
        self.body = body          # gzip of head + events joined by "," + tail
        self.raw_size = raw_size  # the uncompressed length
        self.head = head          # bytes before the first event
        self.sizes = array("I", sizes)
        self._read: tuple[bytes, list[int]] | None = None  # see event_bytes

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
        """One event's bytes, the body staying packed. The body is decompressed once and
        kept: whoever reads one event of an accepted batch (a caller's observer) mostly
        reads them all."""
        if self._read is None:
            self._read = (isal_zlib.decompress(self.body, 31), self._starts())
        raw, starts = self._read
        start = starts[slot]
        return raw[start:start + self.sizes[slot]]

    def unpack(self, items: Iterable[Submitted]) -> None:
        """Give these events of the batch their bytes back (the others are left alone)."""
        mine = [item for item in items if item.packed is self]
        if not mine:
            return
        raw, starts = self._read or (isal_zlib.decompress(self.body, 31), self._starts())
        sizes = self.sizes
        for item in mine:
            start = starts[item.slot]
            item.data = raw[start:start + sizes[item.slot]]
            item.packed = None


class OpenBody:
    """The gzip request body of a batch still open: the events so far, compressed in
    pieces of ``piece`` events (the last few wait raw)."""

    __slots__ = ("_comp", "_head", "_parts", "_pending", "_piece", "_raw", "_sizes")

    def __init__(self, head: bytes, level: int, piece: int = 256) -> None:
        self._comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
        self._head = len(head)
        self._parts = [self._comp.compress(head)]  # compressed output so far
        self._pending: list[bytes] = []            # events not compressed yet
        self._piece = piece
        self._raw = len(head)                      # uncompressed bytes so far
        self._sizes = array("I")

    def add(self, data: bytes) -> None:
        pending = self._pending
        pending.append(data)
        self._sizes.append(len(data))
        self._raw += len(data)
        if len(pending) >= self._piece:
            self._compress()

    def _compress(self) -> None:
        joined = b",".join(self._pending)
        if len(self._sizes) > len(self._pending):  # events before these: a comma between
            joined = b"," + joined
        self._parts.append(self._comp.compress(joined))
        self._pending = []

    def close(self, tail: bytes) -> Packed:
        """The finished body (no event may be added after this)."""
        if self._pending:
            self._compress()
        self._parts.append(self._comp.compress(tail))
        self._parts.append(self._comp.flush())
        commas = max(0, len(self._sizes) - 1)
        packed = Packed(self._sizes, b"".join(self._parts), self._raw + commas + len(tail),
                        self._head)
        self._parts = []
        return packed


def attach(items: Sequence[Submitted], packed: Packed) -> None:
    """Point each event of a closed batch at its body (their bytes are in it)."""
    for slot, item in enumerate(items):
        item.packed = packed
        item.slot = slot
        item.data = _EMPTY
