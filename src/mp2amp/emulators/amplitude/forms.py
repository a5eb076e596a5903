"""What the identify routes read from a request besides JSON: multipart form fields, and
the group properties a /groupidentify request names (its reference caps them per request)."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from mp2amp.emulators.amplitude.identify import has_operations


def multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a ``multipart/form-data`` body (files and unnamed parts skipped)."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
    fields: dict[str, str] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode(part.get_content_charset() or "utf-8", "replace")
    return fields


def group_property_count(items: list[Any]) -> int:
    """Group properties named by /groupidentify items: the keys of a plain object, or of
    each operation's object (``$clearAll`` names none)."""
    count = 0
    for item in items:
        props = item.get("group_properties") if isinstance(item, dict) else None
        if not isinstance(props, dict):
            continue
        if has_operations(props):
            count += sum(len(v) for v in props.values() if isinstance(v, dict))
        else:
            count += len(props)
    return count
