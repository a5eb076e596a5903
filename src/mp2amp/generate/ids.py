"""Seeded identifiers shaped like the ones real SDKs produce.

Everything here draws from the one ``random.Random`` of a run, so a seed reproduces
every id. Insert-id styles (fixtures/wild and platform-conventions §2a):

* web: mixpanel-js ``cheap_guid`` - 16 lowercase base-36 characters (here: base64 of
  96 random bits folded onto ``[0-9a-z]``, which is fast and looks the same);
  (``InsertIds`` cuts them from big random blocks: one RNG call per 256 ids)
* iOS / Android: 16 hex characters, as the exports in fixtures/wild show;
* server (python): ``uuid4().hex``, 32 hex characters.
"""

from __future__ import annotations

from binascii import b2a_base64, hexlify
from random import Random

from mp2amp.generate.platforms import ANDROID, IOS, WEB

_V4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_V4_SET = (0x8000 << 48) | (4 << 76)


def device_uuid(rng: Random, platform: str) -> str:
    """``crypto.randomUUID()`` style for web/Android; iOS IDFV is upper-case. The text of
    ``uuid.UUID(int=..., version=4)``, without building the object."""
    h = f"{rng.getrandbits(128) & _V4_CLEAR | _V4_SET:032x}"
    value = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return value.upper() if platform == IOS else value


_BASE36 = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ+/", b"abcdefghijklmnopqrstuvwxyz7k"
)


def user_id(rng: Random, index: int) -> str:
    """Application user ids: mostly opaque strings, some e-mail-like, some numeric."""
    x = rng.random()
    if x < 0.5:
        return f"u_{rng.getrandbits(40):010x}"
    if x < 0.75:
        return f"user{index}@example.com"
    return str(100000 + index)


class InsertIds:
    """Insert ids cut from big random blocks: one RNG call per 256 ids instead of one each.

    Ids are ASCII ``bytes``: the event writer splices them into pre-serialized JSON as is,
    The emitter's hot loop cuts them itself (``cursor``, then ``seek`` to where it stopped;
    the methods refill a used-up block).
    """

    __slots__ = ("_rng", "hex_at", "hex_block", "web_at", "web_block")
    _BLOCK = 256

    def __init__(self, rng: Random) -> None:
        self._rng = rng
        self.web_block, self.web_at = b"", 0
        self.hex_block, self.hex_at = b"", 0

    def web(self) -> bytes:
        at = self.web_at
        if at + 16 > len(self.web_block):
            self.web_block, at = b2a_base64(self._rng.randbytes(12 * self._BLOCK), newline=False).translate(_BASE36), 0
        self.web_at = at + 16
        return self.web_block[at:at + 16]

    def hex(self, size: int) -> bytes:
        at = self.hex_at
        if at + size > len(self.hex_block):
            self.hex_block, at = hexlify(self._rng.randbytes(16 * self._BLOCK)), 0
        self.hex_at = at + size
        return self.hex_block[at:at + size]

    def cursor(self, web: bool) -> tuple[bytes, int]:
        """The block that ``web()`` (or ``hex``) cuts from, and where the next id starts."""
        return (self.web_block, self.web_at) if web else (self.hex_block, self.hex_at)

    def seek(self, web: bool, at: int) -> None:
        if web:
            self.web_at = at
        else:
            self.hex_at = at

    def for_platform(self, platform: str) -> bytes:
        if platform == WEB:
            return self.web()
        return self.hex(16 if platform in (IOS, ANDROID) else 32)
