"""A run's binding to the Amplitude API key its first batch went out under: another key
is refused on resume (the rest of the migration would go to another project), unless
``--new-api-key`` says it is the same project's key regenerated. Only a salted HMAC of the
key is kept in the ledger, never the key."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mp2amp.errors import AuthError, TerminalError
from mp2amp.ledger import Ledger
from mp2amp.load.sender import RetriesExhausted
from mp2amp.load.settings import CONNECT_FAILED

if TYPE_CHECKING:
    from mp2amp.load.uploader import Uploader

log = logging.getLogger("mp2amp.migrate")

API_KEY_META = "amplitude_key"  # "salt:digest" of the key the first batch went out under
# the digest --new-api-key replaced, binding the run until the new key has sent a batch
API_KEY_BEFORE = "amplitude_key_before"


def _key_digest(salt: str, api_key: str) -> str:
    return hmac.new(salt.encode(), api_key.encode(), hashlib.sha256).hexdigest()


def bind_api_key(ledger: Ledger, api_key: str) -> str | None:
    """Refuse another key than the one this run's batches went out under (another Amplitude
    project would get the rest of the migration). A run not bound yet is bound by its first
    batch sent (recorded before the request leaves: a crash after Amplitude's 200 must not
    leave the run unbound); returns the digest it offers then, None when bound already."""
    known = ledger.get_meta(API_KEY_META) or ledger.get_meta(API_KEY_BEFORE)
    if known is None:  # a new run, or one whose every request was refused (or older)
        salt = secrets.token_hex(16)
        offered = f"{salt}:{_key_digest(salt, api_key)}"
        ledger.record_when_sent(API_KEY_META, offered)
        return offered
    salt, _, digest = known.partition(":")
    if not hmac.compare_digest(_key_digest(salt, api_key), digest):
        raise TerminalError(
            "AMPLITUDE_API_KEY is not the key this run started with: part of this migration "
            "went out under the original key (Amplitude took it, or may have: its answer was "
            "not recorded), and the rest would go to another project. Set AMPLITUDE_API_KEY "
            "to the original key and run the same command with --resume; if the new key is "
            "the same project's (a key regenerated), resume with --new-api-key; to migrate "
            "into another project, start a new run in a new work folder ([run] workdir)")
    return None


def rebind_api_key(ledger: Ledger, api_key: str) -> str | None:
    """``--new-api-key``: the run goes on under ``api_key``, taken to be the same Amplitude
    project's key (regenerated), and bound to it once its first batch is sent (until then,
    and again if Amplitude refuses it outright, the old key's digest binds: a mistyped new
    key leaves the run as it was); says so when it replaces another. Returns the digest
    offered (``bind_api_key``'s)."""
    known = ledger.get_meta(API_KEY_META) or ledger.get_meta(API_KEY_BEFORE)
    if known is not None:
        ledger.set_meta(API_KEY_BEFORE, known)
        ledger.drop_meta(API_KEY_META, known)
    salt = secrets.token_hex(16)
    offered = f"{salt}:{_key_digest(salt, api_key)}"
    ledger.record_when_sent(API_KEY_META, offered)
    was_salt, _, digest = (known or "").partition(":")
    if known is not None and not hmac.compare_digest(_key_digest(was_salt, api_key), digest):
        log.warning("--new-api-key: this run now goes on under the AMPLITUDE_API_KEY set now, "
                    "not the key it started with; it must be the same Amplitude project's key "
                    "(what went in under the old key stays where it is)")
    return offered


@contextmanager
def unbinding_a_refused_key(ledger: Ledger, offered: str | None,
                            up: Uploader) -> Iterator[None]:
    """Drop the digest this run recorded (``offered``: no earlier run sent under the key)
    when nothing of the run can have reached Amplitude: it stopped because Amplitude
    refused the key, and every answer it got was a 400 (Amplitude takes nothing of a
    request it answers 400) or a connection never made; or because Amplitude could not
    be reached at all (every request failed to connect: a wrong api_host). A resume may
    then correct the key. Requests still in flight as it stopped carried the same key
    Amplitude had just refused (or went nowhere either). Any other answer (a 200, a 5xx,
    a timeout) keeps the run bound: part of it may be in that key's project."""
    try:
        yield
    except BaseException:
        answers = up.report.requests_by_status
        if offered is not None and up.report.accepted == 0 and answers \
                and set(answers) <= {"400", CONNECT_FAILED} \
                and isinstance(up.failure, AuthError if "400" in answers else RetriesExhausted):
            ledger.drop_meta(API_KEY_META, offered)
        raise
