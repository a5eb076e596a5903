"""How identity shows up in the export, for each ID-merge system (mixpanel-api.md §3.6, §4).

Simplified ID Merge (no identity events at all):
  anonymous event:  ``distinct_id = "$device:<id>"``, ``$device_id = <id>``
  identified event: ``distinct_id = <user id>``, ``$device_id = <id>``, ``$user_id = <user id>``
  server event:     ``distinct_id = <user id>`` only (mixpanel-python sets no ``$user_id``)

Original ID Merge (older SDKs, identity events carry the links):
  anonymous event:  ``distinct_id = <device id>`` (no ``$device:`` prefix), ``$device_id``
  identified event: ``distinct_id = <user id>``, ``$device_id``, ``$user_id``
  ``$identify`` from an SDK (mixpanel-js / swift / android ``identify()``): the device's
    default properties plus ``distinct_id: <user id>``, ``$anon_distinct_id: <previous
    distinct_id>``, ``$device_id``, ``$user_id`` - the names the JS SDK really sends;
  ``$identify`` from a backend (HTTP API shape): ``$identified_id``, ``$anon_id``;
  ``$create_alias`` (``alias(alias, original)``): ``alias``, ``distinct_id: <user id>``;
  ``$merge`` (``/import`` only): ``$distinct_ids: [<user id>, <legacy id>]``.
"""

from __future__ import annotations

from typing import Any


def anonymous_distinct_id(device_id: str, id_merge: str) -> str:
    return "$device:" + device_id if id_merge == "simplified" else device_id


def sdk_identify(template: dict[str, Any], user_id: str, anon_distinct_id: str,
                 device_id: str) -> dict[str, Any]:
    props = dict(template)
    props["distinct_id"] = user_id
    props["$anon_distinct_id"] = anon_distinct_id
    props["$device_id"] = device_id
    props["$user_id"] = user_id
    return props


def http_identify(user_id: str, anon_id: str) -> dict[str, Any]:
    return {"time": 0, "distinct_id": user_id, "$anon_id": anon_id, "$identified_id": user_id,
            "$mp_api_endpoint": "api.mixpanel.com"}


def create_alias(user_id: str, alias: str) -> dict[str, Any]:
    return {"time": 0, "distinct_id": user_id, "alias": alias, "$mp_api_endpoint": "api.mixpanel.com"}


def merge(user_id: str, other: str) -> dict[str, Any]:
    return {"time": 0, "$distinct_ids": [user_id, other], "$import": True,
            "$mp_api_endpoint": "api.mixpanel.com"}
