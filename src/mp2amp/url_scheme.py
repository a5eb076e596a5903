"""Storage URLs as the backends read them (shared by the config loader and extract)."""

from __future__ import annotations


def lower_scheme(url: str) -> str:
    """``url`` with its scheme lowercased (``S3://b/k`` -> ``s3://b/k``): schemes are
    case-insensitive (RFC 3986), but the storage backends strip only a lowercase one
    ("S3://b/k" was read as bucket "S3:")."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.lower()}{sep}{rest}" if sep and scheme.isascii() and scheme.isalnum() \
        else url
