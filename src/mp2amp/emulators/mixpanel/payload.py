"""Decode an ingestion request the way Mixpanel does, whatever the SDK sent.

* ``data=`` in the query string or a form body (any Content-Type, including the
  ``text/plain`` of ``navigator.sendBeacon``), holding raw JSON or padded base64 JSON;
* a raw JSON body (object or array), or NDJSON (``/import``);
* ``Content-Encoding: gzip`` bodies;
* ``verbose``, ``ip``, ``strict``... from the query string (JS SDK) or the body (Python SDK).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web


@dataclass
class Payload:
    records: list[Any]
    params: dict[str, str]
    size: int  # bytes of JSON: the body's, or the data= field's once decoded
    wire: str  # how it came: "json-body", "ndjson-body", "form:json", "query:base64", ...
    gzip: bool


@dataclass(frozen=True, slots=True)
class PayloadError:
    status: int
    message: str
    params: dict[str, str] | None = None  # what was read before the failure (verbose, callback...)


def decode_data(value: str) -> tuple[bytes, str]:
    """The JSON text of a ``data`` field and its encoding: raw JSON, or base64 (standard or
    URL-safe, padding optional). Not parsed yet, so that its size is checked first."""
    text = value.strip()
    if text[:1] in ("[", "{"):
        return text.encode(), "json"
    compact = "".join(text.split())
    padded = compact + "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(padded, validate=True), "base64"
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(padded), "base64"
        except (binascii.Error, ValueError):
            raise ValueError("data is neither JSON nor base64-encoded JSON") from None


def _ndjson(body: bytes) -> list[Any] | PayloadError:
    out: list[Any] = []
    for n, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            return PayloadError(400, f"invalid JSON on line {n} of the body: {exc}")
    return out


def _looks_like_form(body: bytes) -> bool:
    head = body[:64].lstrip()
    if head.startswith((b"[", b"{")):  # raw JSON, whatever "&data=" a URL in it holds
        return False
    return head.startswith(b"data=") or b"&data=" in body[:4096] or b"=" in head


async def read_payload(request: web.Request, max_bytes: int) -> Payload | PayloadError:
    """The request's records. ``max_bytes`` caps the JSON they are sent as (a ``data=``
    field measured once decoded: base64 in a form is a third bigger, and mixpanel-utils
    sends 2000 profiles that way); the wire body is only held to ``client_max_size``."""
    params = {k: v for k, v in request.query.items()}
    too_big = PayloadError(413, f"request exceeds max limit of {max_bytes} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:  # past the app's client_max_size: the same 413 body
        return too_big
    except web.RequestPayloadError as exc:  # e.g. "gzip" that is not: a 400, as a 5xx
        # would make a client resend a request that can never succeed
        return PayloadError(400, f"body could not be read as its Content-Encoding says: {exc}")
    gzipped = request.headers.get("Content-Encoding", "").lower() == "gzip" or body[:2] == b"\x1f\x8b"
    # aiohttp already inflates a Content-Encoding: gzip body; a gzip body without the header
    # (or still compressed) is recognised by its magic bytes
    wire_max = request.client_max_size
    if body[:2] == b"\x1f\x8b":
        try:
            body = _bounded_gunzip(body, wire_max)
        except (OSError, EOFError, zlib.error):
            return PayloadError(400, "body says gzip but is not valid gzip data")
    if len(body) > wire_max:
        return too_big
    ctype = request.content_type.lower()
    parsed: Any = None
    wire = "json-body"
    size = len(body)
    if body.strip():
        if ctype == "application/x-www-form-urlencoded" or (
            "json" not in ctype and _looks_like_form(body)
        ):
            form = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
            params.update(form)
        elif size > max_bytes:
            return too_big
        elif ctype == "application/x-ndjson":
            lines = _ndjson(body)
            if isinstance(lines, PayloadError):
                return lines
            parsed, wire = lines, "ndjson-body"
        else:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                lines = _ndjson(body)  # JSON lines sent as application/json
                if isinstance(lines, PayloadError):
                    return PayloadError(400, "body is not valid JSON, NDJSON or a data= form")
                parsed, wire = lines, "ndjson-body"
    if parsed is None:
        data = params.get("data")
        if data is None or not data.strip():
            return PayloadError(400, "no data: send a data= field, or a JSON body", params)
        try:
            text, encoding = decode_data(data)
        except ValueError as exc:
            return PayloadError(400, f"could not decode data: {exc}", params)
        size = len(text)  # the cap and the byte rate count the JSON, not its encoding
        if size > max_bytes:
            return PayloadError(too_big.status, too_big.message, params)
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            why = "data is base64 but does not decode to JSON" if encoding == "base64" else str(exc)
            return PayloadError(400, f"could not decode data: {why}", params)
        wire = f"{'query' if 'data' in request.query and data == request.query['data'] else 'form'}:{encoding}"
    records = parsed if isinstance(parsed, list) else [parsed]
    return Payload(records, params, size, wire, gzipped)


def _bounded_gunzip(body: bytes, max_bytes: int) -> bytes:
    """Gunzip at most ``max_bytes + 1`` bytes, so a gzip bomb cannot fill memory."""
    out = b""
    rest = body
    while True:  # one member after another (pigz, cat a.gz b.gz): all of them, as gunzip does
        d = zlib.decompressobj(zlib.MAX_WBITS | 16)
        out += d.decompress(rest, max_bytes + 1 - len(out))
        if len(out) > max_bytes:
            return out  # the caller answers 413
        if not d.eof:
            raise EOFError("truncated gzip body")
        rest = d.unused_data
        if not rest.strip(b"\0"):  # padding after the last member, as gzip allows
            return out
