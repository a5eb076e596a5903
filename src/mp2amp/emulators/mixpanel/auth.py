"""Who is calling: service account (Basic + ``project_id``), API secret, or project token.

Mixpanel accepts the Basic credentials base64-encoded or as plain text, so both are read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from mp2amp.emulators.mixpanel.config import MixpanelConfig


@dataclass(frozen=True, slots=True)
class Caller:
    kind: str  # "service_account" | "api_secret" | "token"
    user: str


@dataclass(frozen=True, slots=True)
class AuthFailure:
    status: int
    message: str


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an Authorization header, base64 or plain text; else None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    value = value.strip()
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = value  # plain-text "user:secret"
    if ":" not in decoded:
        decoded = value if ":" in value else decoded + ":"
    user, _, password = decoded.partition(":")
    return user, password


def authenticate(
    config: MixpanelConfig,
    project_id: int,
    header: str | None,
    query_project_id: str | None,
    *,
    allow_secret: bool = True,
    allow_token: bool = False,
) -> Caller | AuthFailure:
    """Check the caller of a query endpoint (export, engage, lexicon) or ``/import``.

    Failures use the statuses Mixpanel is known to answer: no credentials 401, wrong
    credentials 400 "Unable to authenticate request" (what clients observe on export),
    service account without ``project_id`` 400, another project's id 403.
    """
    creds = basic_credentials(header)
    if creds is None:
        if header and header.strip().lower().startswith("bearer"):
            return AuthFailure(401, "OAuth bearer tokens are not supported by this emulator")
        return AuthFailure(401, "Unauthorized: missing or malformed Basic credentials")
    user, password = creds
    if password:
        return _service_account(config, project_id, user, password, query_project_id)
    if allow_token and config.token is not None and _same(user, config.token):
        return Caller("token", "token")
    if allow_secret:
        if config.api_secret is None and config.service_account is None:
            return Caller("api_secret", "secret")
        if config.api_secret is not None and _same(user, config.api_secret):
            return Caller("api_secret", "secret")
    return AuthFailure(400, "Unable to authenticate request")


def _service_account(
    config: MixpanelConfig,
    project_id: int,
    user: str,
    password: str,
    query_project_id: str | None,
) -> Caller | AuthFailure:
    if not _service_account_matches(config, user, password):
        return AuthFailure(400, "Unable to authenticate request")
    if query_project_id is None or query_project_id == "":
        return AuthFailure(
            400, "project_id is required when authenticating with a service account"
        )
    if query_project_id.strip() != str(project_id):
        return AuthFailure(
            403, f"service account has no access to project {query_project_id.strip()!r}"
        )
    return Caller("service_account", user)


def _service_account_matches(config: MixpanelConfig, user: str, password: str) -> bool:
    """Anything goes only with no credentials configured at all: with just an API secret
    set, a made-up service account must fail as it would on Mixpanel."""
    if config.service_account is None:
        return config.api_secret is None
    want_user, _, want_secret = config.service_account.partition(":")
    return _same(user, want_user) and _same(password, want_secret)
