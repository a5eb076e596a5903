"""Reading a source's bytes: a gzip file's decompressed stream, and a guard that makes a
storage backend's own exceptions ``OSError`` (both used by ``files``)."""

from __future__ import annotations

import gzip
import zlib
from typing import BinaryIO, cast

from isal import isal_zlib

# decompressed bytes handed over per read of a .gz (bounds what a gzip bomb takes at once;
# 64 KB stays in cache while it is split into lines: 1 MB read ~0.35 us a record slower)
GZIP_CHUNK = 1 << 16
# compressed bytes read at a time: about what inflates to GZIP_CHUNK, so zlib is not handed
# the rest of a big read again and again (1 MB reads with 64 KB out copied that rest ~15
# times: ~0.5 us a record)
GZIP_INPUT = 1 << 13
GZIP_MAGIC = b"\x1f\x8b"
TRAILER = 8  # a gzip member's CRC-32 and length
# what a damaged .gz raises, from either decompressor
GZIP_ERRORS: tuple[type[BaseException], ...] = (
    EOFError, gzip.BadGzipFile, zlib.error, cast(type[BaseException], isal_zlib.error))
PASS_THROUGH: tuple[type[BaseException], ...] = (*GZIP_ERRORS, OSError)  # read errors reported as they are

class GzipStream:
    """The decompressed bytes of a gzip file (members one after another, as gzip allows).

    A damaged or cut file hands over everything that decompresses before the damage, then
    raises: ISA-L's GzipFile fills a whole read before it returns, so up to a read's
    worth of intact records before the damage was lost with it (every record of a file
    that only lacks its 8-byte trailer, when it is small)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        # ISA-L: the same gzip, decompressed about twice as fast as zlib
        self._inflate = isal_zlib.decompressobj(wbits=31)
        self._ended = False  # the raw stream is exhausted
        # The raw stream's last 8 bytes, held back until it ends: a file's gzip trailer
        # (CRC and length), fed alone, so that a checksum mismatch is raised by a call
        # with no output of its own and every record decompressed is handed over first
        # (fed with the last 8 KB, that output was lost with the error: a small file's
        # every record)
        self._held = b""

    def _read_raw(self) -> bytes:
        while True:
            more = self._raw.read(GZIP_INPUT)
            if not more:
                self._ended = True
                held, self._held = self._held, b""
                return held
            more = self._held + more
            self._held = more[-TRAILER:]
            if len(more) > TRAILER:
                return more[:-TRAILER]

    def read(self, size: int = -1) -> bytes:
        limit = size if size > 0 else GZIP_CHUNK
        while True:
            inflate = self._inflate
            if inflate.eof:  # a member ended: another may follow
                data = inflate.unused_data.lstrip(b"\0")  # gzip tolerates zero padding
                while not data and not self._ended:
                    data = self._read_raw().lstrip(b"\0")
                if not data:
                    return b""
                inflate = self._inflate = isal_zlib.decompressobj(wbits=31)
            else:
                data = inflate.unconsumed_tail
                if not data and not self._ended:
                    data = self._read_raw()
            if data:
                out: bytes = inflate.decompress(data, limit)
                if out:
                    return out
                continue
            # the input ended inside a member: what it still holds, then the damage
            out = inflate.flush()
            if out:
                return out
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")


class GuardedReader:
    """Reads a backend stream; a backend's own exception types (botocore, aiohttp inside
    s3fs/gcsfs) become OSError, so every read failure is reported the same way."""

    def __init__(self, stream: BinaryIO) -> None:
        # read1 hands over data as it is decompressed, so a damaged .gz loses only its
        # last piece, not a whole chunk.
        self._read = getattr(stream, "read1", stream.read)

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self._read(size)
        except PASS_THROUGH:
            raise
        except Exception as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
        return data
