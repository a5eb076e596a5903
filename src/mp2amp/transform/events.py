"""The pure per-event transform: one Mixpanel event in, one Amplitude event (or why not) out.

Order inside ``Transformer.event`` (each step may end the event with a Skip or Rejection):

1. hot-shard restore (``hotshard``); identity records and bookkeeping events are skipped;
2. ``time`` -> UTC ms (``timeconv``: unit detection, legacy project-local time);
3. privacy rules on the Mixpanel property names (drop, hash, excluded users, retention);
4. the tracking plan (rename/drop events and properties, types, user properties);
5. identity from the identity stage: at least one of user_id/device_id or ``missing_id``;
6. default properties -> top-level fields / readable event properties (``mapping``),
   location fields together (``geo``);
7. revenue (``revenue``), groups (configured keys);
8. value sanitizing (``values``): 1024-character strings, 40 levels, JSON-only values;
9. ``insert_id`` (``insert_id``) from the event as Mixpanel stored it.

The output is exactly a Batch API event. ``session_id`` is left to the sessionizer. The
transformer holds no clock, network or global state; its only mutable state is the
per-property counts in ``stats``, which never influence an output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from mp2amp import __version__
from mp2amp.errors import ConfigError, Rejection
from mp2amp.models import Resolved, Skip
from mp2amp.transform import mapping
from mp2amp.transform.geo import LOCATION_FIELDS
from mp2amp.transform.hotshard import (
    HOTSHARD_EVENT,
    HOTSHARD_RECORD,
    ORIGINAL_DISTINCT_ID,
    ORIGINAL_EVENT,
    restore_hotshard,
)
from mp2amp.transform.insert_id import insert_id_for, usable_insert_id
from mp2amp.transform.revenue import revenue_fields
from mp2amp.transform.settings import TransformSettings
from mp2amp.transform.timeconv import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    LocalTimeConverter,
    TimeError,
    to_epoch_ms,
)
from mp2amp.transform.values import MAX_STRING, ValueProblem, ValueStats, clip, sanitize_props

IDENTITY_EVENTS = frozenset({"$identify", "$create_alias", "$merge"})
RESERVED_EVENT_TYPES = frozenset({
    "[Amplitude] Start Session", "[Amplitude] End Session", "[Amplitude] Revenue",
    "[Amplitude] Revenue (Verified)", "[Amplitude] Revenue (Unverified)",
    "[Amplitude] Merged User", "$identify", "$groupidentify",
})
MAX_GROUP_TYPES = 5
MAX_GROUP_VALUES = 10
UNPLANNED_FLAG = "mp2amp_unplanned"
FIELD_ORDER = (
    "platform", "os_name", "os_version", "device_brand", "device_manufacturer",
    "device_model", "carrier", "app_version", "country", "region", "city", "dma",
    "location_lat", "location_lng", "ip", "idfa",
)
_FIELD_RANK = {name: rank for rank, name in enumerate(FIELD_ORDER)}
_MAX_SHAPES = 20_000
_MAX_URLS = 50_000
_MAX_MEMO = 4_096
_HOTSHARD_EVENTS = frozenset({HOTSHARD_EVENT, HOTSHARD_RECORD})
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_NEVER, _UNMAPPED, _ALWAYS = 0, 1, 2
_KEEP = {"never": _NEVER, "unmapped": _UNMAPPED, "always": _ALWAYS}
_PAGE_URL, _PAGE_DOMAIN, _PAGE_PATH = (
    "[Amplitude] Page URL", "[Amplitude] Page Domain", "[Amplitude] Page Path")

class _Shape(NamedTuple):
    """What to do with each property of events that share one key set."""

    names: tuple[str, ...]  # event-property names, in input order ...
    values: Callable[[dict[str, Any]], tuple[Any, ...]]  # ... and their values (C-level)
    fixes: tuple[tuple[str, Callable[..., Any]], ...]  # value rewrites of kept properties
    constants: dict[str, Any]  # platform
    converts: tuple[tuple[str, str, Callable[..., Any], str | None], ...]  # field order
    os_name: str | None  # default when $os gave none
    page_url: bool  # derive the [Amplitude] Page ... properties from $current_url
    clean_keys: bool  # every event-property name is short ASCII text
    getter: Callable[[dict[str, Any]], tuple[Any, ...]]  # the converted properties' values
    memo: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]]


Compiled = tuple[str | None, Callable[..., Any], str | None, int, int, Callable[..., Any] | None]


def _compile(platform: mapping.Platform, keep_ip: bool) -> dict[str, Compiled]:
    """Per-platform dispatch: property -> (field, converter, keep_as, keep, priority, fix)."""
    table: dict[str, Compiled] = {}
    for source, rule in mapping.rules_for(platform).items():
        field = rule.field
        if field == "ip" and not keep_ip:
            field = None
        fix = mapping.direct_to_empty if rule.convert == "direct_to_empty" else None
        table[source] = (field, mapping.CONVERTERS[rule.convert], rule.keep_as,
                         _KEEP[rule.keep], rule.priority, fix)
    return table


class Transformer:
    """Turns Mixpanel events into Amplitude Batch API events under one ``TransformSettings``."""

    def __init__(self, settings: TransformSettings) -> None:
        self.settings = settings
        self.values = ValueStats()
        self.counts: Counter[str] = Counter()
        # The IP goes out only when both the setting and the privacy rules allow it.
        keep_ip = settings.keep_ip and (settings.privacy is None or settings.privacy.keep_ip)
        self._tables = {p: _compile(p, keep_ip) for p in mapping.PLATFORMS}
        self._local: LocalTimeConverter | None = None
        if settings.legacy_time:
            try:
                self._local = LocalTimeConverter(settings.timezone, settings.timezone_changes)
            except (ValueError, KeyError) as exc:  # unknown zone or malformed date
                raise ConfigError([f"transform timezone settings: {exc}"]) from exc
        self._library = settings.library or f"mp2amp/{__version__}"
        self._revenue = settings.revenue if settings.revenue.enabled else None
        rs = settings.revenue
        self._revenue_keys = tuple(k for k in (rs.price, rs.revenue, rs.items) if k)
        self._names = mapping.DEFAULT_EVENT_NAMES if settings.amplitude_event_names else {}
        # Memo tables (bounded): per event shape, and per page URL. Pure caches: the output
        # is the same with or without them.
        self._shapes: dict[tuple[Any, ...], _Shape] = {}
        self._urls: dict[str, tuple[str, str | None, str | None]] = {}

    def event(self, record: Any, ids: Resolved) -> dict[str, Any] | Rejection | Skip:
        """One Amplitude event, or the Rejection/Skip that explains why there is none."""
        try:
            return self._event(record, ids)
        except ValueProblem as problem:
            return Rejection(problem.reason, str(problem), field=problem.field)
        except Exception as exc:  # never let one record stop the run; tests assert on it
            return Rejection("transform_error", f"{type(exc).__name__}: {exc}"[:300])

    def stats(self) -> dict[str, dict[str, int]]:
        """What the transform changed so far: truncations and flattenings per property."""
        return {"truncated": dict(self.values.truncated),
                "flattened": dict(self.values.flattened), "other": dict(self.counts)}

    # --- the steps ---------------------------------------------------------------------

    def _event(self, record: Any, ids: Resolved) -> dict[str, Any] | Rejection | Skip:
        if type(record) is not dict or "event" not in record:
            return _not_an_event(record)
        source_name, props = record["event"], record.get("properties")
        if (type(source_name) is str and source_name in _HOTSHARD_EVENTS) or (
                type(props) is dict and (ORIGINAL_EVENT in props or ORIGINAL_DISTINCT_ID in props)):
            restored = restore_hotshard(record)
            if type(restored) is not dict:
                return restored
            source_name, props = restored["event"], restored.get("properties")
        if type(source_name) is not str or not source_name.strip():
            return Rejection("missing_event_name", "the event has no name", field="event")
        if source_name in IDENTITY_EVENTS:
            return Skip("identity_record", f"{source_name} feeds the identity graph")
        if props is None:
            props = {}
        elif type(props) is not dict:
            return Rejection("not_an_event", "properties is not an object", field="properties")
        try:
            raw_ms = to_epoch_ms(props.get("time"))
            time_ms = raw_ms if self._local is None else self._to_utc(raw_ms, props)
        except TimeError as err:
            return Rejection(err.reason, str(err), field="properties.time")
        source_props = props
        privacy = self.settings.privacy
        if privacy is not None:
            kept = privacy.apply(source_name, props, ids, time_ms)
            if type(kept) is not dict:
                return kept
            props = kept
        name, user_props, flagged = source_name, None, False
        plan = self.settings.plan
        if plan is not None:
            planned = plan.apply(source_name, props)
            if isinstance(planned, Skip | Rejection):
                return planned
            name, props, flagged = planned.event_name, planned.props, planned.flagged
            user_props = planned.user_props or None
        if ids.user_id is None and ids.device_id is None:
            return Rejection("missing_id", "no usable user_id or device_id for this event "
                             "(absent, junk or blocklisted IDs)", field="properties.distinct_id")
        out = self._shell(name, ids, time_ms)
        event_props, clean_keys = self._map(props, out)
        if self._revenue is not None and any(k in props for k in self._revenue_keys):
            out.update(revenue_fields(props, self._revenue, (source_name, name)))
        if flagged:
            event_props[UNPLANNED_FLAG] = True
        out["event_properties"] = (
            event_props if clean_keys and _plain(event_props.values())
            else sanitize_props(event_props, "event_properties", self.values))
        if user_props:
            out["user_properties"] = sanitize_props(user_props, "user_properties", self.values)
        if self.settings.group_keys:
            groups = self._groups(props)
            if groups:
                out["groups"] = groups
        out["insert_id"] = insert_id_for(
            source_name, source_props.get("distinct_id"), raw_ms,
            usable_insert_id(source_props.get("$insert_id")), source_props)
        return out

    def _to_utc(self, raw_ms: int, props: dict[str, Any]) -> int:
        assert self._local is not None
        # Mixpanel's UTC processing/receive time settles DST folds (see timeconv).
        processed = props.get("mp_processing_time_ms")
        if type(processed) is not int:
            processed = props.get("$mp_api_timestamp_ms")
        utc = self._local.to_utc_ms(raw_ms, processed if type(processed) is int else None)
        if not MIN_TIME_MS <= utc < MAX_TIME_MS:
            raise TimeError("time_out_of_range", f"time {raw_ms} ms is out of range in UTC")
        return utc

    def _shell(self, name: str, ids: Resolved, time_ms: int) -> dict[str, Any]:
        event_type = self._names.get(name, name)
        if event_type in RESERVED_EVENT_TYPES:
            raise ValueProblem("event", f"event name {event_type!r} is reserved by Amplitude",
                               "reserved_event_type")
        if len(event_type) > MAX_STRING or not event_type.isascii():
            event_type = clip(event_type, "event_type", self.values)
        out: dict[str, Any] = {"event_type": event_type}
        user_id, device_id = ids.user_id, ids.device_id
        if user_id is not None:
            out["user_id"] = _id(user_id, "user_id")
        if device_id is not None:
            out["device_id"] = _id(device_id, "device_id")
        out["time"] = time_ms
        out["insert_id"] = ""  # placeholder that keeps the key order; set last
        return out

    def _map(self, props: dict[str, Any], out: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Default properties -> top-level fields in ``out``; returns the event properties.

        Events from one SDK share a key set, so the per-key work (which rule, which name,
        collisions with custom properties) is done once per (mp_lib, $os, keys) shape.
        """
        lib, os_value = props.get("mp_lib"), props.get("$os")
        try:
            shape_key: tuple[Any, ...] | None = (lib, os_value, *props)
            shape = self._shapes.get(shape_key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable mp_lib/$os value: no caching for this one
            shape_key, shape = None, None
        if shape is None:
            shape = self._shape(props, lib, os_value)
            if shape_key is not None:
                if len(self._shapes) >= _MAX_SHAPES:
                    self._shapes.clear()
                self._shapes[shape_key] = shape
        event_props = dict(zip(shape.names, shape.values(props), strict=False))
        for dst, fix in shape.fixes:
            event_props[dst] = fix(event_props[dst], props)
        out.update(shape.constants)
        # Field values depend only on the converted properties' values, which repeat a lot
        # (one device, one city): memoized per shape, keyed by values *and* their types.
        values = shape.getter(props)
        try:
            memo_key: tuple[Any, ...] | None = (values, tuple(map(type, values)))
            result = shape.memo.get(memo_key)  # type: ignore[arg-type]
        except TypeError:  # a list or dict where a scalar was expected
            memo_key, result = None, None
        if result is None:
            result, cacheable = self._convert(shape, props)
            if memo_key is not None and cacheable:
                if len(shape.memo) >= _MAX_MEMO:
                    shape.memo.clear()
                shape.memo[memo_key] = result
        out.update(result[0])
        if result[1]:
            event_props.update(result[1])
        if shape.page_url:
            url = props["$current_url"]
            if type(url) is str and url:  # the shape knows the key, not the value's type
                _page_properties(url, event_props, self._urls)
        out["library"] = self._library
        return event_props, shape.clean_keys

    def _convert(
        self, shape: _Shape, props: dict[str, Any]
    ) -> tuple[tuple[dict[str, Any], dict[str, Any]], bool]:
        """Top-level fields and the event properties kept because no field came of them."""
        fields: dict[str, Any] = {}
        keeps: dict[str, Any] = {}
        cacheable = True
        for src, field, convert, keep_as in shape.converts:
            value = props[src]
            converted = convert(value, props)
            if converted is None:
                if keep_as is not None:
                    keeps[keep_as] = value
            elif converted is not mapping.DISCARD and field not in fields:
                if type(converted) is str and (len(converted) > MAX_STRING
                                               or not converted.isascii()):
                    cacheable = cacheable and len(converted) <= MAX_STRING  # count each cut
                    converted = clip(converted, field, self.values)
                fields[field] = converted
        if shape.os_name is not None and "os_name" not in fields:
            fields["os_name"] = shape.os_name
        if "country" in fields or "region" in fields or "city" in fields:
            for name in LOCATION_FIELDS:  # all four together: one resets the others
                if name not in fields:
                    fields[name] = None
        if ("location_lat" in fields) != ("location_lng" in fields):
            # Amplitude needs both coordinates; a lone one stays an event property.
            for field, prop in (("location_lat", "latitude"), ("location_lng", "longitude")):
                if field in fields:
                    keeps.setdefault(prop, fields.pop(field))
        return (fields, keeps), cacheable

    def _shape(self, props: dict[str, Any], lib: Any, os_value: Any) -> _Shape:
        """The per-key plan for one event shape (see ``_map``)."""
        platform = mapping.detect_platform(lib, os_value, "$browser" in props)
        table = self._tables[platform]
        renames: list[tuple[str, str]] = []
        fixes: list[tuple[str, Callable[..., Any]]] = []
        converts: list[tuple[int, int, str, str, Callable[..., Any], str | None]] = []
        taken: set[str] = set()
        for key in props:
            rule = table.get(key)
            if rule is None:
                renames.append((key, key))
                taken.add(key)
                continue
            field, convert, keep_as, keep, priority, fix = rule
            target = key if keep_as is None or keep_as in props or keep_as in taken else keep_as
            if field is not None:
                converts.append((_FIELD_RANK[field], priority, key, field, convert,
                                 target if keep == _UNMAPPED else None))
            if keep == _ALWAYS or (keep == _UNMAPPED and field is None):
                renames.append((key, target))
                taken.add(target)
                if fix is not None:
                    fixes.append((target, fix))
            elif keep == _UNMAPPED:
                taken.add(target)
        converts.sort(key=lambda c: (c[0], c[1]))
        constants: list[tuple[str, Any]] = []
        os_name = None
        if platform == "ios":
            key = os_value.lower() if type(os_value) is str else "ios"
            constants.append(("platform", mapping.APPLE_PLATFORMS.get(key, "iOS")))
            os_name = constants[0][1].lower()
        elif platform == "android":
            constants.append(("platform", "Android"))
            os_name = "android"
        elif platform == "web":
            constants.append(("platform", "Web"))
        page_url = platform == "web" and "$current_url" in props
        clean = all(type(k) is str and len(k) <= MAX_STRING and k.isascii() for k in taken)
        return _Shape(tuple(dst for _, dst in renames), _getter([src for src, _ in renames]),
                      tuple(fixes), dict(constants), tuple(c[2:] for c in converts), os_name,
                      page_url, clean, _getter([c[2] for c in converts]), {})

    def _groups(self, props: dict[str, Any]) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        budget = MAX_GROUP_VALUES
        for key in self.settings.group_keys:
            if key not in props:
                continue
            if len(groups) == MAX_GROUP_TYPES or budget == 0:
                self.counts["groups_over_limit"] += 1
                break
            value = props[key]
            names = [_group_name(v) for v in value] if type(value) is list \
                else [_group_name(value)]
            usable = list(dict.fromkeys(n for n in names if n is not None))
            if not usable:
                continue
            if len(usable) > budget:
                self.counts["groups_over_limit"] += 1
                usable = usable[:budget]
            budget -= len(usable)
            groups[key] = usable if type(value) is list else usable[0]
        return groups


def _id(value: str, field: str) -> str:
    if len(value) > MAX_STRING:
        raise ValueProblem(field, f"{field} is longer than {MAX_STRING} characters", "invalid_id")
    return value


def _no_values(props: dict[str, Any]) -> tuple[Any, ...]:
    return ()


def _getter(keys: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A C-level ``props -> tuple of values`` for these keys (always a tuple)."""
    if len(keys) > 1:
        return itemgetter(*keys)
    if keys:
        only = itemgetter(keys[0])
        return lambda props: (only(props),)
    return _no_values


def _plain(values: Iterable[Any]) -> bool:
    """True when no value needs ``sanitize_props`` (the common case, checked cheaply)."""
    for value in values:
        t = type(value)
        if t is str:
            if len(value) > MAX_STRING or not value.isascii():
                return False
        elif t is float:
            if value - value != 0.0:  # NaN or an infinity
                return False
        elif t is int:
            if not _INT_MIN <= value <= _INT_MAX:
                return False
        elif t is list:
            if not _plain_scalars(value):
                return False
        elif not (t is bool or value is None):
            return False
    return True


def _plain_scalars(values: list[Any]) -> bool:
    for value in values:
        t = type(value)
        if t is str:
            if len(value) > MAX_STRING or not value.isascii():
                return False
        elif t is float:
            if value - value != 0.0:
                return False
        elif t is int:
            if not _INT_MIN <= value <= _INT_MAX:
                return False
        elif not (t is bool or value is None):
            return False  # nested containers: the full pass counts depth
    return True


def _group_name(value: object) -> str | None:
    if type(value) is str:
        name = value.strip()
        return name[:MAX_STRING] if name else None
    if type(value) is int:
        return str(value)
    if type(value) is float and value == value and value.is_integer():
        return str(int(value))
    return None


def _page_properties(
    url: str, event_props: dict[str, Any], cache: dict[str, tuple[str, str | None, str | None]]
) -> None:
    """The page properties Amplitude's Browser SDK derives from the page URL."""
    parts = cache.get(url)
    if parts is None:
        try:
            split = urlsplit(url)
            parts = (url.split("?", 1)[0], split.hostname or None, split.path or None)
        except ValueError:
            parts = (url.split("?", 1)[0], None, None)
        if len(cache) >= _MAX_URLS:
            cache.clear()
        cache[url] = parts
    page_url, host, path = parts
    if page_url:
        event_props.setdefault(_PAGE_URL, page_url)
    if host:
        event_props.setdefault(_PAGE_DOMAIN, host)
    if path:
        event_props.setdefault(_PAGE_PATH, path)


def _not_an_event(record: object) -> Rejection:
    if type(record) is dict and any(k in record for k in ("$distinct_id", "$group_id")):
        return Rejection("not_an_event", "a profile update (Engage/Groups), not an event; "
                         "profiles are migrated by `mp2amp profiles`", field="event")
    kind = type(record).__name__ if type(record) is not dict else "object without 'event'"
    return Rejection("not_an_event", f"expected a Mixpanel event object, got {kind}",
                     field="event")
