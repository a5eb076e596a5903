"""The /2/httpapi and /batch pipeline: request checks, validation, limits, dedup, storage.

One call per request, returning ``(status, body)`` with ``body["code"] == status``. A request
is all or nothing: any invalid event, throttled ID or exhausted quota ingests nothing.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson

from mp2amp.emulators.amplitude.config import (
    BATCH_MAX_BYTES,
    DEDUP_WINDOW_S,
    HTTPAPI_MAX_BYTES,
    MAX_EVENTS_PER_REQUEST,
    AmplitudeConfig,
)
from mp2amp.emulators.amplitude.identify import apply_update
from mp2amp.emulators.amplitude.ids import NO_PERSON, Identities
from mp2amp.emulators.amplitude.store import EventStore, groups_json, hashed_device_id
from mp2amp.emulators.amplitude.throttle import Limiter, LimitVerdict
from mp2amp.emulators.amplitude.validate import (
    DEFAULT_MIN_ID_LENGTH,
    PROPERTY_OPS,
    holds,
    is_group_name,
    validate_events,
)

TOO_LARGE = {"code": 413, "error": "Payload too large"}
IDENTIFY_TYPES = frozenset({"$identify", "$groupidentify"})

log = logging.getLogger("mp2amp.emulators.amplitude")


def max_bytes(endpoint: str) -> int:
    return BATCH_MAX_BYTES if endpoint == "batch" else HTTPAPI_MAX_BYTES


def missing(field: str) -> tuple[int, dict[str, Any]]:
    return 400, {"code": 400, "error": "Request missing required field", "missing_field": field}


def group_key(group_type: str, group_value: Any) -> str:
    return f"{group_type}\x1f{group_value}"


def group_values(value: Any) -> list[str]:
    """The group names in one ``groups`` value (a name or a list of names); what names no
    group (null, "", an object) is skipped rather than stored as a group "None"."""
    items = value if type(value) is list else [value]
    return [str(v) for v in items if is_group_name(v)]


class Ingestor:
    """Owns the mutable ingestion state (shared with identify, export and privacy)."""

    def __init__(
        self, config: AmplitudeConfig, store: EventStore, ids: Identities, limiter: Limiter,
        groups: dict[str, dict[str, Any]],
    ) -> None:
        self.config = config
        self.store = store
        self.ids = ids
        self.limiter = limiter
        self.groups = groups
        self.events_stored = 0
        self.duplicates = 0

    def check_request(self, payload: Any, endpoint: str) -> tuple[int, dict[str, Any]] | None:
        """Request-level checks; None when the events may be looked at."""
        if not isinstance(payload, dict):
            return 400, {"code": 400, "error": "Invalid JSON request body"}
        api_key = payload.get("api_key")
        if not api_key:
            return missing("api_key")
        events = payload.get("events")
        # the reference is silent on the order; README (and reference 10) name a missing
        # field before a wrong key
        if events is None:
            return missing("events")
        if api_key != self.config.api_key:
            return 400, {"code": 400, "error": f"Invalid API key: {api_key}"}
        if not isinstance(events, list):
            return 400, {"code": 400, "error": "Invalid event JSON"}
        if len(events) > MAX_EVENTS_PER_REQUEST:
            return 413, dict(TOO_LARGE)
        options = payload.get("options")
        if options is not None and (
            not isinstance(options, dict)
            or ("min_id_length" in options and (
                type(options["min_id_length"]) is not int or options["min_id_length"] < 1))
        ):
            return 400, {"code": 400, "error": "Invalid options: min_id_length must be a positive integer"}
        return None

    def handle(
        self, payload: Any, endpoint: str, body: bytes, remote: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """``body`` is the raw (decompressed) request body ``payload`` was parsed from."""
        refused = self.check_request(payload, endpoint)
        if refused is not None:
            return refused
        events: list[dict[str, Any]] = payload["events"]
        if not events:
            return 200, {"code": 200, "events_ingested": 0, "payload_size_bytes": len(body),
                         "server_upload_time": int(self.config.now() * 1000)}
        options = payload.get("options") or {}
        per_device: dict[str, int] = {}
        per_user: dict[str, int] = {}
        result = validate_events(events, options.get("min_id_length", DEFAULT_MIN_ID_LENGTH),
                                 (per_device, per_user))
        if not result.ok:
            return 400, result.error_body()
        now = self.config.now()
        eps = self.config.eps_for(endpoint)
        # reference 2.2: the daily per-ID quota is documented for Batch only
        quota = self.config.daily_quota if endpoint == "batch" else None
        verdict = self.limiter.admit(per_device, per_user, now, eps, quota)
        if not verdict.ok:
            return 429, self._throttled_body(events, verdict, eps)
        upload_ms = int(now * 1000)
        try:
            # The body is stored as received; a multi-line one (a bare CR is a line break
            # to the readers' splitlines too) is re-encoded to fit on one line.
            self._store(events, upload_ms, remote, body if b"\n" not in body
                        and b"\r" not in body else orjson.dumps(payload))
        except OSError:
            raise  # a failed write (disk full): the server's 500 names its cause
        except Exception as exc:  # a bug: _store took back what it did, so answer JSON
            log.exception("storing a request failed; nothing of it was kept")
            return 500, {"code": 500, "error": "Internal server error: storing the events "
                         f"failed ({type(exc).__name__}: {exc}); nothing was stored: send "
                         "the request again, and report it with the emulator's log if it "
                         "fails again"}
        return 200, {"code": 200, "events_ingested": len(events),
                     "payload_size_bytes": len(body), "server_upload_time": upload_ms}

    @staticmethod
    def _throttled_body(events: list[dict[str, Any]], verdict: LimitVerdict, eps: int) -> dict[str, Any]:
        devices = verdict.throttled_devices.keys() | verdict.quota_devices.keys()
        users = verdict.throttled_users.keys() | verdict.quota_users.keys()
        indices = [i for i, e in enumerate(events)
                   if e.get("device_id") in devices or e.get("user_id") in users]
        return {
            "code": 429, "error": "Too many requests for some devices and users",
            "eps_threshold": eps, "throttled_devices": verdict.throttled_devices,
            "throttled_users": verdict.throttled_users, "throttled_events": indices,
            "exceeded_daily_quota_users": verdict.quota_users,
            "exceeded_daily_quota_devices": verdict.quota_devices,
        }

    def _store(
        self, events: list[dict[str, Any]], upload_ms: int, remote: str | None, body: bytes
    ) -> None:
        """Store one request, all or nothing: whatever fails part-way (the write, or any
        event), what the request changed in memory is taken back, so that its retry is
        stored and not taken for a duplicate, nor applies its properties twice."""
        undo = _Undo(len(self.ids.journal))
        keys: list[str] = []
        try:
            self._apply(events, upload_ms, remote, body, undo, keys)
        except BaseException:
            # the store cut its files and ids.log back itself when the write failed
            self._roll_back(undo, keys)
            raise

    def _apply(
        self, events: list[dict[str, Any]], upload_ms: int, remote: str | None, body: bytes,
        undo: _Undo, keys: list[str],
    ) -> None:
        """Dedup, assign IDs, apply properties and write; ``undo`` and ``keys`` record what
        it changed (for ``_store``'s roll-back)."""
        seen = self.store.seen
        oldest = upload_ms - DEDUP_WINDOW_S * 1000
        assign = self.ids.assign
        user_props = self.ids.user_props
        groups = self.groups
        ops_free = PROPERTY_OPS.isdisjoint
        aids: list[int | None] = []
        snaps: list[dict[str, Any] | None] = []
        group_snaps: dict[str, Any] = {}
        changed = False
        stored = 0
        for index, event in enumerate(events):
            device_id = event.get("device_id")
            user_id = event.get("user_id")
            person = bool(user_id or device_id)
            insert_id = event.get("insert_id")
            if insert_id:
                # reference 1.6: the device, or the hash of user_id that stands for it (the
                # export's device_id), so a user-only event and its hashed device share a key
                # (validation let only a str user_id through)
                key = (f"{device_id or hashed_device_id(str(user_id))}\x1f{insert_id}"
                       if person else group_dedup_key(event, insert_id))
                first = seen.get(key)
                if first is not None:
                    if first >= oldest:
                        aids.append(None)
                        snaps.append(None)
                        continue
                    undo.expired.append((key, first))
                seen[key] = upload_ms
                keys.append(key)
            # validation let an event without IDs through only as a group update
            aid = assign(user_id, device_id) if person else NO_PERSON
            aids.append(aid)
            stored += 1
            event_type = event["event_type"]
            if event_type == "$groupidentify":
                self._group_identify(event, undo)
            update = event.get("user_properties")
            if not person:
                snapshot = None  # nobody's properties to show or update
            elif event.get("$skip_user_properties_sync"):
                snapshot = sent_properties(update)
            else:
                # Copy-on-write: a snapshot is never mutated once taken, so unchanged
                # properties are shared by the events that carry them, not copied per event.
                snapshot = user_props.get(aid)
                if update:
                    if snapshot is None:
                        snapshot = {}
                    if ops_free(update):
                        if not holds(snapshot, update):
                            undo.props.append((aid, user_props.get(aid)))
                            snapshot = user_props[aid] = {**snapshot, **update}
                            self.ids.journal.append(["p", aid, snapshot])
                            changed = True
                    else:
                        undo.props.append((aid, user_props.get(aid)))
                        snapshot = dict(snapshot)
                        apply_update(snapshot, update)
                        user_props[aid] = snapshot
                        self.ids.journal.append(["p", aid, snapshot])
                        changed = True
                if not snapshot:
                    snapshot = None
            snaps.append(snapshot)
            event_groups = event.get("groups")
            if event_groups and event_type != "$groupidentify":
                snap = {t: {v: dict(groups[group_key(t, v)]) for v in group_values(vals)
                            if group_key(t, v) in groups}
                        for t, vals in event_groups.items()}
                group_snaps[str(index)] = {t: v for t, v in snap.items() if v}
        annotation = {"t": upload_ms, "p": str(uuid.uuid4())[:24], "r": remote,
                      "a": aids, "u": snaps, "g": group_snaps}
        duplicates = self.duplicates + len(events) - stored
        events_stored = self.events_stored + stored
        # the counters too (totals, so replaying an entry state.json has is harmless): after
        # a kill, state.json's would lag the event files
        self.ids.journal.append(["c", events_stored, duplicates])
        self.store.append(body, annotation, keys, upload_ms, self.ids.journal)
        self.ids.journal = []
        self.duplicates = duplicates
        self.events_stored = events_stored
        if changed:
            self.ids.dirty = True

    def _roll_back(self, undo: _Undo, keys: list[str]) -> None:
        """Forget what a request that failed did; amplitude IDs it handed out stay (the
        retry gets the same ones: their journal entries go with the next line)."""
        seen = self.store.seen
        for key in keys:
            del seen[key]
        seen.update(undo.expired)
        undo.props.reverse()  # the oldest state of each person last, so it holds
        for aid, props in undo.props:
            if props is None:
                self.ids.user_props.pop(aid, None)
            else:
                self.ids.user_props[aid] = props
        undo.groups.reverse()
        for group, values in undo.groups:
            if values is None:
                self.groups.pop(group, None)
            else:
                self.groups[group] = values
        journal = self.ids.journal
        journal[undo.journal_start:] = [e for e in journal[undo.journal_start:]
                                        if e[0] != "p" and e[0] != "g" and e[0] != "c"]

    def flush_id_journal(self) -> None:
        if self.ids.journal:
            self.store.append_ids(self.ids.journal)
            self.ids.journal = []

    def _group_identify(self, event: dict[str, Any], undo: _Undo) -> None:
        update = event.get("group_properties") or {}
        for group_type, value in (event.get("groups") or {}).items():
            for group_value in group_values(value):
                key = group_key(group_type, group_value)
                before = self.groups.get(key)
                undo.groups.append((key, before))
                props = dict(before) if before is not None else {}  # the old one is the undo
                apply_update(props, update)
                self.groups[key] = props
                self.ids.journal.append(["g", key, dict(props)])
                self.ids.dirty = True


class _Undo:
    """What one request changed in memory before its write, to take back if it fails."""

    def __init__(self, journal_start: int) -> None:
        self.journal_start = journal_start
        self.expired: list[tuple[str, int]] = []  # dedup keys older than the window
        self.props: list[tuple[int, dict[str, Any] | None]] = []
        self.groups: list[tuple[str, dict[str, Any] | None]] = []


def group_dedup_key(event: dict[str, Any], insert_id: str) -> str:
    """The dedup key of a group update without IDs, on its groups: a retried one must not
    apply its $add twice, and another group's update with the same insert_id is not it."""
    return f"\x01{groups_json(event.get('groups'))}\x1f{insert_id}"


def sent_properties(update: dict[str, Any] | None) -> dict[str, Any] | None:
    """An event's own user properties under ``$skip_user_properties_sync`` (reference 2.4:
    "only the user properties sent with the event"): its update applied to nothing."""
    if not update:
        return None
    if PROPERTY_OPS.isdisjoint(update):
        return update
    props: dict[str, Any] = {}
    apply_update(props, update)
    return props or None
