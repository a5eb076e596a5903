"""The pure per-event transform: one Mixpanel event in, one Amplitude event (or why not) out.

Order inside ``Transformer.event`` (each step may end the event with a Skip or Rejection):

1. hot-shard restore (``hotshard``) and identity records (a renamed $identify counts as the
   plain one does, excluded user or not); then excluded users (privacy), before anything
   may reject the record; bookkeeping events are skipped;
2. ``time`` -> UTC ms (``timeconv``: unit detection, legacy project-local time), then the
   retention date (privacy) and only then a missing event name;
3. privacy rules on the Mixpanel property names (drop, hash);
4. the tracking plan (rename/drop events and properties, types, user properties);
5. identity from the identity stage: a usable user_id or device_id (at most 1024
   characters; an overlong one is dropped when the other is usable) or a rejection;
6. default properties -> top-level fields / readable event properties (``mapping``),
   location fields together (``geo``);
7. revenue (``revenue``), groups: configured by Mixpanel name, as the plan made them;
8. value sanitizing (``values``): 1024-character strings, 40 levels, JSON-only values;
9. ``insert_id`` (``insert_id``) from the event as Mixpanel stored it.

The output is exactly a Batch API event; ``session_id`` is left to the sessionizer. The
transformer holds no clock, network or global state; its only mutable state is the counts
in ``stats``, which never influence an output.

Two paths, one result: ``_event`` runs every step above for any record and, without a plan
or privacy rules, records what it learnt about the record's shape (``Front``: the event
name, ``mp_lib``, ``$os`` and the property keys in order) and about its context values
(``shapes.Context``). ``event`` serves a record whose shape and context it has seen with
the per-event work only, and hands everything else (first sights, odd times or values,
missing IDs) to ``_event`` before it has counted or changed anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from mp2amp import __version__
from mp2amp.errors import Rejection
from mp2amp.models import IDENTITY_RECORD, UTC_TIME_MARK, Resolved, Skip
from mp2amp.transform import mapping
from mp2amp.transform.configured import by_source_name, present
from mp2amp.transform.eventtime import event_times, local_time
from mp2amp.transform.groups import groups_of, unhashed_groups
from mp2amp.transform.hotshard import (
    HOTSHARD_EVENT,
    HOTSHARD_RECORD,
    ORIGINAL_DISTINCT_ID,
    ORIGINAL_EVENT,
    restore_hotshard,
)
from mp2amp.transform.insert_id import (
    BEFORE_IDENTITY,
    JUNK_LONGEST,
    MAX_PREFIX,
    PRESHUFFLE,
    SHORT_HASH,
    event_insert_id,
)
from mp2amp.transform.problems import RESERVED_EVENT_TYPES, not_an_event, source_field, usable_ids
from mp2amp.transform.revenue import amount_keys, revenue_reader
from mp2amp.transform.settings import TransformSettings
from mp2amp.transform.shapes import (
    FIELD_ORDER,
    MAX_CONTEXT_ENTRIES,
    MAX_MEMO,
    MAX_MEMO_ENTRIES,
    MAX_SHAPE_KEYS,
    MAX_SHAPES,
    PAGE_ALL,
    Context,
    ContextEntry,
    Conversion,
    Converted,
    Front,
    Shape,
    build_shape,
    compile_table,
    convert,
    drop_oldest,
    memo_weight,
    out_template,
    plain_props,
    plain_value,
    remember_page,
    same_types,
)
from mp2amp.transform.timeconv import TimeError, processed_ms_of, seconds_to_ms
from mp2amp.transform.values import MAX_STRING, ValueProblem, ValueStats, clip, sanitize_props

__all__ = ["FIELD_ORDER", "IDENTITY_EVENTS", "RESERVED_EVENT_TYPES", "Transformer"]

IDENTITY_EVENTS = frozenset({"$identify", "$create_alias", "$merge"})
UNPLANNED_FLAG = "mp2amp_unplanned"
_MAX_NAMES = 50_000
_HOUR_MS: Final = 3_600_000
_HOTSHARD_EVENTS = frozenset({HOTSHARD_EVENT, HOTSHARD_RECORD})


class Transformer:
    """Turns Mixpanel events into Amplitude Batch API events under one ``TransformSettings``.
    The plan and privacy rules are read once, here: a plan or rules object that can change
    nothing (``TrackingPlan.keep_all()``, ``PrivacyRules.none()``) is not called per event.
    """

    def __init__(self, settings: TransformSettings) -> None:
        self.settings = settings
        self._scheme = settings.insert_id_scheme
        self.values = ValueStats()
        self._held = ValueStats()  # ``_event``'s counts, added to ``values`` if it is sent
        self.counts: Counter[str] = Counter()
        self.general_path = 0  # records that took ``_event``: how well the memos serve
        # The last event's source time (ms, before a legacy project's conversion to UTC):
        # its insert_id's, so the Deduper's key (DST-fold copies an hour apart share it).
        self.raw_ms = 0
        # The IP goes out only when both the setting and the privacy rules allow it.
        keep_ip = settings.keep_ip and (settings.privacy is None or settings.privacy.keep_ip)
        self._tables = {p: compile_table(p, keep_ip) for p in mapping.PLATFORMS}
        self._local, self._hour_offsets, self._canonical = local_time(settings)
        privacy, plan = settings.privacy, settings.plan
        self._plan = plan if plan is not None and plan.changes_events else None
        # a dropped IP is dropped before a plan could rename it (the mapping drops ip/$ip)
        self._privacy = privacy if privacy is not None and (privacy.changes_events or (
            self._plan is not None and not privacy.keep_ip)) else None
        self._scrub = privacy.object_scrubber if privacy is not None else None  # see plan.apply
        self._library = settings.library or f"mp2amp/{__version__}"
        self._revenue_fields, self._book_revenue = revenue_reader(settings.revenue, self.counts,
                                                                  self.values)
        self._revenue_keys = amount_keys(settings.revenue)
        self._group_keys = settings.group_keys
        self._hashed_groups = tuple(k for k in settings.group_keys if privacy is not None
                                    and k in privacy.hash_properties)
        self._configured = (*settings.revenue.property_names, *settings.group_keys)  # by name
        self._names = mapping.DEFAULT_EVENT_NAMES if settings.amplitude_event_names else {}
        # Memo tables (bounded): per event shape, per event name, per page URL. Pure
        # caches: the output is the same with or without them.
        self._shapes: dict[tuple[Any, ...], Shape] = {}
        self._conversions: dict[tuple[Any, ...], Conversion] = {}
        self._memo_entries = 0
        self._contexts: dict[tuple[Any, ...], Context] = {}
        self._context_entries = 0
        self._fronts: dict[tuple[Any, ...], Front] = {}
        self._shape_keys = 0  # property keys the shape and front memos hold: their size
        # Without a plan or privacy rules the record's own name and keys decide everything
        # up to the shape: ``event`` may serve it from ``_fronts``.
        self._direct = self._plan is None and self._privacy is None
        self._event_types: dict[str, str] = {}
        self._urls: dict[str, dict[str, str]] = {}

    def stats(self) -> dict[str, dict[str, int]]:
        """What the transform changed so far: truncations and flattenings per property."""
        return {"truncated": dict(self.values.truncated),
                "flattened": dict(self.values.flattened), "other": dict(self.counts)}

    def exclude_merged_users(self, resolve: Callable[[dict[str, Any]], Resolved],
                             shared_device: Callable[[str], bool] | None = None) -> None:
        """After the identity pass: a listed ID's resolved user is excluded whole (not the
        first user of a device several shared: ``shared_device``, the graph's answer)."""
        if self._privacy is not None:
            self._privacy = self._privacy.with_merged_users(resolve, shared_device)

    def event(self, record: Any, ids: Resolved) -> dict[str, Any] | Rejection | Skip:
        """One Amplitude event, or the Rejection/Skip that explains why there is none.

        The common case, inlined (a call costs as much as a step): a record whose shape
        and context values were seen, with a plain epoch time, an ID and plain values.
        Anything else goes to ``_event`` before anything is counted, so both paths give
        the same result.
        """
        if type(record) is not dict or not self._direct:
            return self._event(record, ids)
        props = record.get("properties")
        if type(props) is not dict:
            return self._event(record, ids)
        try:
            front = self._fronts.get(  # the keys as their own tuple: no list step
                (record.get("event"), props.get("mp_lib"), props.get("$os"), tuple(props)))
            if front is None:
                return self._event(record, ids)
            raw = props["time"]  # the shape has the key
            if type(raw) is float:  # split by type: compiled, each compare is a C compare
                if not 1e9 <= raw < 4e9:
                    return self._event(record, ids)
                raw_ms = seconds_to_ms(raw)
            elif type(raw) is int and 1_000_000_000 <= raw < 4_000_000_000:
                raw_ms = raw * 1000
            else:
                return self._event(record, ids)
            if self._local is None:
                time_ms = raw_ms
            elif UTC_TIME_MARK in record:  # a legacy project's Data Pipelines row: UTC;
                time_ms, raw_ms = raw_ms, self._local.to_local_ms(  # ids: local
                    raw_ms, processed_ms_of(props))
            else:  # a zone offset (< 1 day) cannot take these times out of range
                offset = self._hour_offsets.get(raw_ms // _HOUR_MS)
                if offset is None:
                    return self._event(record, ids)
                time_ms = raw_ms - offset
                if self._canonical and self._local.near_change(time_ms):
                    raw_ms = self._local.to_local_ms(time_ms, processed_ms_of(props))
            self.raw_ms = raw_ms
            user_id, device_id = ids.user_id, ids.device_id
            if user_id is None:
                if device_id is None or len(device_id) > MAX_STRING:
                    return self._event(record, ids)
                variant = 2
            elif len(user_id) > MAX_STRING:
                return self._event(record, ids)
            elif device_id is None:
                variant = 1
            elif len(device_id) > MAX_STRING:
                return self._event(record, ids)
            else:
                variant = 3
            event_type, getter, memo, template, customs, page, has_revenue, groups, _, _ = front
            context = getter(props)
            try:
                entry = memo.get(context)
            except TypeError:  # a list where a scalar was expected
                return self._event(record, ids)
            if entry is None:  # a device not seen lately: one memo entry, made here
                entry = self._context_entry(front, props, context)
                if entry is None:
                    return self._event(record, ids)
            elif not same_types(context, entry[4]):  # 1 where the entry has 1.0 or True
                return self._event(record, ids)
            kept, top, keeps, outs, _ = entry
            event_props = template.copy()
            event_props.update(kept)
            for source, name in customs:
                value = props[source]
                if (type(value) is not str or len(value) > MAX_STRING
                        or not value.isascii()) and not plain_value(value):
                    return self._event(record, ids)
                event_props[name] = value
            if has_revenue:
                variant |= 4
            out = outs[variant]
            if out is None:
                out = outs[variant] = out_template(variant, top)
            out = out.copy()
            out["event_type"] = event_type
            if user_id is not None:
                out["user_id"] = user_id
            if device_id is not None:
                out["device_id"] = device_id
            out["time"] = time_ms
            if keeps:
                event_props.update(keeps)
            if page:
                url = props["$current_url"]
                if type(url) is str and url:
                    parts = self._urls.get(url)
                    if parts is None:
                        parts = remember_page(self._urls, url)
                    if page is PAGE_ALL:
                        event_props.update(parts)
                    else:
                        for key in page:
                            if key in parts:
                                event_props[key] = parts[key]
            source_name = record["event"]
            # event_insert_id's common case: a real $insert_id and a string distinct_id
            given, distinct_id = props.get("$insert_id"), props.get("distinct_id")
            if type(given) is str and type(distinct_id) is str \
                    and JUNK_LONGEST < len(text := given.strip()) <= MAX_PREFIX \
                    and text.isascii() and BEFORE_IDENTITY not in props \
                    and PRESHUFFLE not in props:  # else event_insert_id (reshuffled...)
                short = SHORT_HASH.copy()
                short.update(f"{source_name}\x1f{distinct_id}\x1f{raw_ms // 1000}".encode())
                iid = f"{text}-{short.hexdigest()}"
            else:
                iid = event_insert_id(source_name, props, raw_ms, self._scheme)
            if has_revenue:  # after the last step that may fall back: the event is sent
                out.update(self._revenue_fields(props, (source_name, source_name)))
                self._book_revenue()
            out["event_properties"] = event_props
            out["insert_id"] = iid
            if groups:  # last: groups_of may count
                value = props[groups[0]]
                if len(groups) == 1 and type(value) is str:  # groups_of's common case
                    if value := value.strip():
                        out["groups"] = {groups[0]: value[:MAX_STRING]}
                else:
                    found = groups_of(props, groups, self.counts)
                    if found:
                        out["groups"] = found
            return out
        except Exception:  # (an unhashable name, mp_lib or $os...) nothing was counted yet:
            return self._event(record, ids)  # the general path decides what it is

    def _event(self, record: Any, ids: Resolved) -> dict[str, Any] | Rejection | Skip:
        """``event`` for any record: every step, in order (see the module docstring)."""
        self.general_path += 1
        self._held.clear()  # a rejected event's
        try:
            if type(record) is not dict or "event" not in record:
                return not_an_event(record)
            source_name, props = record["event"], record.get("properties")
            learn = self._direct and type(props) is dict
            broken: Rejection | Skip | None = None  # a hot-shard rewrite not restored
            if (type(source_name) is str and source_name in _HOTSHARD_EVENTS) or (
                    type(props) is dict
                    and (ORIGINAL_EVENT in props or ORIGINAL_DISTINCT_ID in props)):
                learn = False
                restored = restore_hotshard(record)
                if isinstance(restored, Rejection | Skip):
                    broken = restored
                else:
                    source_name, props = restored["event"], restored.get("properties")
            named = type(source_name) is str and bool(source_name.strip())
            if broken is None and named and source_name in IDENTITY_EVENTS:
                # a hot shard's renamed $identify: an identity record (event_outcome), as
                # the plain one is, excluded user or not; the detail is its name
                return Skip(IDENTITY_RECORD, source_name)
            privacy = self._privacy  # an excluded user's record is skipped, never rejected
            if privacy is not None and (skip := privacy.skipped(source_name, props, ids)):
                return skip
            if broken is not None:
                return broken
            if props is None:
                props = {}
            elif type(props) is not dict:
                return Rejection("not_an_event", "properties is not an object", field="properties")
            try:  # the time first: an event before the retention date is skipped, named or not
                time_ms, raw_ms = event_times(record, props, self._local, self._hour_offsets,
                                               self._canonical)
            except TimeError as err:
                return Rejection(err.reason, str(err), field="properties.time") if named \
                    else _missing_name()
            if privacy is not None and (skip := privacy.before_retention(source_name, time_ms)):
                return skip
            if not named:
                return _missing_name()
            self.raw_ms = raw_ms  # the time the ids hash (the Deduper's key too)

            source_props = props
            if privacy is not None:
                props = privacy.scrub(props, source_name)
            name, user_props, flagged = source_name, None, False
            rules = None  # the plan's property rules: how it typed a hashed group key
            configured = props  # revenue and groups: by Mixpanel name (by_source_name)
            if self._plan is not None:
                planned = self._plan.apply(source_name, props, self._scrub)
                if isinstance(planned, Skip | Rejection):
                    return planned
                configured = by_source_name(props, planned, self._configured)
                name, props, flagged = planned.event_name, planned.props, planned.flagged
                user_props, rules = planned.user_props or None, planned.rules

            user_id, device_id = ids.user_id, ids.device_id
            if user_id is None and device_id is None:
                return Rejection("missing_id", "no usable user_id or device_id for this "
                                 "event (absent, junk or blocklisted IDs)",
                                 field="properties.distinct_id")
            event_type = self._event_types.get(name)
            if event_type is None:
                event_type = self._event_type(name)
            user_id, device_id, dropped_id = usable_ids(user_id, device_id)  # counted if sent

            # default properties -> top-level fields and readable event properties (shapes)
            lib, os_value = props.get("mp_lib"), props.get("$os")
            try:
                shape_key: tuple[Any, ...] | None = (lib, os_value, *props)
                shape = self._shapes.get(shape_key)  # type: ignore[arg-type]
            except TypeError:  # an unhashable mp_lib/$os value: no caching for this one
                shape_key, shape = None, None
            if shape is None:
                shape = self._shape(props, lib, os_value, shape_key)
            (names, values, pairs, template, fixes, page, getter, memo, _, has_revenue,
             groups, _, _) = shape
            if self._plan is not None:  # revenue and groups by their Mixpanel names
                has_revenue, groups = present(configured, self._revenue_keys, self._group_keys)
            # Event properties, checked on the way (plain_props): a value (or name) needing
            # sanitizing sends the dict through sanitize_props. The rest: fixes of these, kept
            # values (checked once per memo entry), page properties of the checked URL, True.
            event_props = None if pairs is None else plain_props(pairs, template, props)
            plain_values = event_props is not None
            if event_props is None:
                event_props = dict(zip(names, values(props), strict=False))
            for dst, fix in fixes:
                event_props[dst] = fix(event_props[dst], props)
            # Field values depend only on the converted properties' values, which repeat a lot
            # (one device, one city): memoized per conversion, keyed by values *and* types.
            converted = getter(props)
            try:
                memo_key: tuple[Any, ...] | None = (converted, tuple(map(type, converted)))
                result = memo.get(memo_key)  # type: ignore[arg-type]
            except TypeError:  # a list or dict where a scalar was expected
                memo_key, result = None, None
            if result is None:
                result = self._convert(shape, props, memo_key)
            top, keeps, keeps_plain, outs = result
            variant = (user_id is not None) | (device_id is not None) << 1 | has_revenue << 2
            out = outs[variant]
            if out is None:
                out = outs[variant] = out_template(variant, top)
            out = out.copy()
            out["event_type"] = event_type
            if user_id is not None:
                out["user_id"] = user_id
            if device_id is not None:
                out["device_id"] = device_id
            out["time"] = time_ms
            if keeps:
                event_props.update(keeps)
            if page:
                url = props["$current_url"]
                if type(url) is str and url:  # the shape knows the key, not the value's type
                    parts = self._urls.get(url)
                    if parts is None:
                        parts = remember_page(self._urls, url)
                    if page is PAGE_ALL:
                        event_props.update(parts)
                    else:
                        for key in page:
                            if key in parts:
                                event_props[key] = parts[key]

            if has_revenue:
                out.update(self._revenue_fields(configured, (source_name, name)))
            if flagged:
                event_props[UNPLANNED_FLAG] = True
            out["event_properties"] = (
                event_props if plain_values and keeps_plain
                else sanitize_props(event_props, "event_properties", self._held))
            if user_props:
                out["user_properties"] = sanitize_props(user_props, "user_properties", self._held)
            if groups and (found := groups_of(unhashed_groups(  # hashing makes no group
                    configured, source_props, self._hashed_groups, rules), groups,
                    self.counts)):
                out["groups"] = found
            out["insert_id"] = event_insert_id(source_name, source_props, raw_ms, self._scheme)
            self.counts.update(dropped_id)  # the event goes out: its overlong ID was dropped
            self._held.move_to(self.values)  # and what its other steps counted
            if has_revenue:  # (only after its own fields: a rejected event's are dropped)
                self._book_revenue()
            if learn and shape_key is not None and shape.context is not None \
                    and name in self._event_types:
                self._learn((source_name, lib, os_value, shape_key[2:]), shape, event_type, props,
                            event_props if plain_values and keeps_plain
                            and memo_key is not None and memo.get(memo_key) is result
                            else None, result)
            return out
        except ValueProblem as problem:
            return Rejection(problem.reason, str(problem),
                             field=source_field(problem.field, record, self._plan))
        except Exception as exc:  # never let one record stop the run; tests assert on it
            return Rejection("transform_error", f"{type(exc).__name__}: {exc}"[:300])

    # --- the slow paths: first sight of a shape, name or URL; DST edges ---------------

    def _learn(self, front_key: tuple[Any, ...], shape: Shape, event_type: str,
               props: dict[str, Any], event_props: dict[str, Any] | None,
               result: Converted) -> None:
        """Remember a record's shape for ``event`` and, when ``event_props`` are plain and
        ``result`` is memoized, what its context values became."""
        context = shape.context
        assert context is not None
        if front_key not in self._fronts:
            weight = memo_weight(front_key[3], front_key[:3])
            if weight < 0:  # a text over MAX_STRING: not memoized (see ``_shape``)
                return
            self._shape_keys += weight
            if len(self._fronts) >= MAX_SHAPES or self._shape_keys > MAX_SHAPE_KEYS:
                self._forget_shapes()
            fixes = dict(shape.fixes)
            self._fronts[front_key] = Front(
                event_type, context.getter, context.memo, shape.template, shape.customs,
                shape.page, shape.revenue, shape.groups, shape,
                tuple(fixes.get(dst) for _, dst in context.renames))
        if event_props is None:
            return
        values = context.getter(props)
        if any(type(v) is float and v == 0.0 for v in values):
            return  # -0.0 == 0.0 as a memo key, but they are written differently
        try:
            if values in context.memo:  # (of other types, maybe: that entry stays)
                return
        except TypeError:  # a list or dict: never a memo key
            return
        self._remember(context.memo, values, (
            {dst: event_props[dst] for _, dst in context.renames}, *result[:2], result[3],
            tuple(map(type, values))))

    def _context_entry(self, front: Front, props: dict[str, Any],
                       values: tuple[Any, ...]) -> ContextEntry | None:
        """The memo entry ``_event`` + ``_learn`` would make for these context values, made
        without the general path (a context is one device's defaults: each new device
        misses once), or ``None`` when the values need the general path."""
        for value in values:
            if type(value) is float and value == 0.0:
                return None  # -0.0 == 0.0 as a memo key, but they are written differently
        shape = front.shape
        context = shape.context
        assert context is not None  # a front is learnt only from a shape with a context
        kept: dict[str, Any] = {}
        for (source, name), fix in zip(context.renames, front.kept_fixes, strict=True):
            value = props[source]
            if type(value) is str:
                if len(value) > MAX_STRING or not value.isascii():
                    return None
            elif not plain_value(value):
                return None
            kept[name] = value if fix is None else fix(value, props)
        converted = shape.getter(props)
        try:
            memo_key = (converted, tuple(map(type, converted)))
            result = shape.memo.get(memo_key)
        except TypeError:
            return None
        if result is None:
            # scratch counts: a result that counted something (a cut value) is not
            # memoized, and the general path then counts it once
            result, cacheable = convert(shape.conversion, props, self._library, ValueStats())
            if not cacheable:
                return None
            self._remember_conversion(shape, memo_key, result)
        if not result[2]:
            return None  # kept conversion values that need sanitizing
        entry = (kept, result[0], result[1], result[3], tuple(map(type, values)))
        self._remember(context.memo, values, entry)
        return entry

    def _remember(self, memo: dict[tuple[Any, ...], ContextEntry], key: tuple[Any, ...],
                  entry: ContextEntry) -> None:
        """Add a context-memo entry within the bound: when all of them hold
        ``MAX_CONTEXT_ENTRIES``, each drops its oldest quarter (devices come and go;
        clearing all would make every active one miss)."""
        self._context_entries += 1
        if self._context_entries > MAX_CONTEXT_ENTRIES:  # all contexts together: flat
            for other in self._contexts.values():
                drop_oldest(other.memo)
            self._context_entries = sum(len(c.memo) for c in self._contexts.values()) + 1
        memo[key] = entry

    def _event_type(self, name: str) -> str:
        """The Amplitude event_type of an event name (memoized when nothing was counted)."""
        mapped = self._names.get(name, name)
        if mapped in RESERVED_EVENT_TYPES:
            raise ValueProblem("event", f"event name {mapped!r} is reserved by Amplitude",
                               "reserved_event_type")
        event_type = mapped
        if len(mapped) > MAX_STRING or not mapped.isascii():
            event_type = clip(mapped, "event_type", self._held)
        if len(mapped) <= MAX_STRING:  # a cut name is counted on every event
            if len(self._event_types) >= _MAX_NAMES:
                self._event_types.clear()
            self._event_types[name] = event_type
        return event_type

    def _shape(self, props: dict[str, Any], lib: Any, os_value: Any,
               shape_key: tuple[Any, ...] | None) -> Shape:
        platform = mapping.detect_platform(lib, os_value, "$browser" in props)
        weight = -1 if shape_key is None else memo_weight(shape_key)  # -1: not memoized,
        shared = weight >= 0  # nor its conversion and context (fresh ones: they hold names)
        shape = build_shape(props, lib, os_value, self._tables[platform], platform,
                            self._revenue_keys, self._group_keys,
                            self._conversions if shared else {},
                            self._contexts if shared else {})
        if shape_key is not None and shared:
            self._shape_keys += weight
            if len(self._shapes) >= MAX_SHAPES or self._shape_keys > MAX_SHAPE_KEYS:
                self._forget_shapes()
            self._shapes[shape_key] = shape
        return shape

    def _forget_shapes(self) -> None:  # (bounded by count and by the keys they hold)
        self._shapes.clear()
        self._conversions.clear()  # later shapes start new ones
        self._contexts.clear()
        self._fronts.clear()  # they hold the old contexts
        self._shape_keys = 0

    def _convert(self, shape: Shape, props: dict[str, Any],
                 memo_key: tuple[Any, ...] | None) -> Converted:
        result, cacheable = convert(shape.conversion, props, self._library, self._held)
        if memo_key is not None and cacheable:
            self._remember_conversion(shape, memo_key, result)
        return result

    def _remember_conversion(self, shape: Shape, key: tuple[Any, ...], result: Converted) -> None:
        """``_remember`` for the conversion memos."""
        self._memo_entries += 1
        if self._memo_entries > MAX_MEMO_ENTRIES:  # all conversions together: flat
            for conversion in self._conversions.values():
                drop_oldest(conversion.memo)
            self._memo_entries = sum(len(c.memo) for c in self._conversions.values()) + 1
        if len(shape.memo) >= MAX_MEMO:
            self._memo_entries -= drop_oldest(shape.memo)
        shape.memo[key] = result


def _missing_name() -> Rejection:
    return Rejection("missing_event_name", "the event has no name", field="event")
