"""The filesystem of an fsspec URL, opened the way mp2amp needs for each store: a GCS
emulator through gcsfs's JSON-API class, since the default one first asks a gRPC API that
emulators do not serve and waits out 60 s of retries each time."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.utils import get_protocol

GCS_PROTOCOLS = frozenset({"gs", "gcs"})


def gcs_emulator(options: Mapping[str, Any]) -> bool:
    """Whether gcsfs will talk to a GCS emulator: an ``endpoint_url`` over plain http
    (Google's own are https), or gcsfs's STORAGE_EMULATOR_HOST when none is given."""
    endpoint = options.get("endpoint_url")
    if endpoint:
        return str(endpoint).startswith("http://")
    return os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default")


def url_to_fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """``fsspec.core.url_to_fs(url, **storage_options)``, but a ``gs://``/``gcs://`` URL
    on an emulator gets the plain ``GCSFileSystem`` (all the JSON API an emulator has)."""
    options = dict(storage_options or {})
    if get_protocol(url) in GCS_PROTOCOLS and gcs_emulator(options):
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(**options)
        return fs, str(fs._strip_protocol(url))
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, str(path)
