"""What the routes read from a request besides JSON: multipart form fields, the group
properties a /groupidentify request names (its reference caps them per request), and a
deletion request sent as a form."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from multidict import MultiDictProxy

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


DELETION_FLAGS = ("requester", "ignore_invalid_id", "ignore_invalid_ids", "delete_from_org",
                  "include_mapped_user_ids")


def deletion_form(form: MultiDictProxy[Any]) -> dict[str, Any]:
    """A form-encoded /api/2/deletions/users request as the JSON body it stands for (the ID
    fields repeat, one value each)."""
    return {"amplitude_ids": form.getall("amplitude_ids", []),
            "user_ids": form.getall("user_ids", []),
            **{k: form[k] for k in DELETION_FLAGS if k in form}}
