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

import uuid
from binascii import b2a_base64
from random import Random

from mp2amp.generate.platforms import ANDROID, IOS, WEB


def device_uuid(rng: Random, platform: str) -> str:
    """``crypto.randomUUID()`` style for web/Android; iOS IDFV is upper-case."""
    value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
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
    """Insert ids cut from big random blocks: one RNG call per 256 ids instead of one each."""

    __slots__ = ("_hex", "_hex_at", "_rng", "_web", "_web_at")
    _BLOCK = 256

    def __init__(self, rng: Random) -> None:
        self._rng = rng
        self._web, self._web_at = "", 0
        self._hex, self._hex_at = "", 0

    def web(self) -> str:
        at = self._web_at
        if at + 16 > len(self._web):
            block = b2a_base64(self._rng.randbytes(12 * self._BLOCK), newline=False)
            self._web, at = block.translate(_BASE36).decode(), 0
        self._web_at = at + 16
        return self._web[at:at + 16]

    def hex(self, size: int) -> str:
        at = self._hex_at
        if at + size > len(self._hex):
            self._hex, at = self._rng.randbytes(16 * self._BLOCK).hex(), 0
        self._hex_at = at + size
        return self._hex[at:at + size]

    def for_platform(self, platform: str) -> str:
        if platform == WEB:
            return self.web()
        return self.hex(16 if platform in (IOS, ANDROID) else 32)

