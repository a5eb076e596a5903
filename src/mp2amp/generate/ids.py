"""Seeded identifiers shaped like the ones real SDKs produce.

Everything here draws from the one ``random.Random`` of a run, so a seed reproduces
every id. Insert-id styles (fixtures/wild and platform-conventions §2a):

* web: mixpanel-js ``cheap_guid`` - 16 lowercase base-36 characters (here: base64 of
  96 random bits folded onto ``[0-9a-z]``, which is fast and looks the same);
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


def web_insert_id(rng: Random) -> str:
    return b2a_base64(rng.randbytes(12), newline=False).translate(_BASE36).decode()


def mobile_insert_id(rng: Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def server_insert_id(rng: Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def insert_id_for(platform: str, rng: Random) -> str:
    if platform == WEB:
        return web_insert_id(rng)
    if platform in (IOS, ANDROID):
        return mobile_insert_id(rng)
    return server_insert_id(rng)


def user_id(rng: Random, index: int) -> str:
    """Application user ids: mostly opaque strings, some e-mail-like, some numeric."""
    x = rng.random()
    if x < 0.5:
        return f"u_{rng.getrandbits(40):010x}"
    if x < 0.75:
        return f"user{index}@example.com"
    return str(100000 + index)
