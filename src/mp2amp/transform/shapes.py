"""Per-shape mapping plans: the per-key work of ``Transformer`` done once per key set.

Events from one SDK share a key set, so which rule applies to each property, its readable
name, collisions with custom properties, which revenue and group keys are present and
whether page properties can be added without collisions are decided once per
``(mp_lib, $os, keys...)`` shape. The per-event work left is a few C-level dict and tuple
operations (see ``events.Transformer``).

Default properties that describe the device and SDK (everything a mapping rule names,
except the page and referrer ones that change from event to event) are the shape's
*context*: their values repeat for every event of one device, so the event properties
they become and the top-level fields converted from them are memoized per context values
(``Context``); only the other properties are checked event by event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from operator import itemgetter
from typing import Any, NamedTuple
from urllib.parse import SplitResult, urlsplit

from mp2amp.transform import mapping
from mp2amp.transform.geo import LOCATION_FIELDS
from mp2amp.transform.values import MAX_STRING, ValueProblem, ValueStats, clip

FIELD_ORDER = (
    "platform", "os_name", "os_version", "device_brand", "device_manufacturer",
    "device_model", "carrier", "app_version", "country", "region", "city", "dma",
    "location_lat", "location_lng", "ip", "idfa",
)
_FIELD_RANK = {name: rank for rank, name in enumerate(FIELD_ORDER)}
_COORDINATES = ("location_lat", "location_lng")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_NEVER, _UNMAPPED, _ALWAYS = 0, 1, 2
_KEEP = {"never": _NEVER, "unmapped": _UNMAPPED, "always": _ALWAYS}
PAGE_URL, PAGE_DOMAIN, PAGE_PATH = (
    "[Amplitude] Page URL", "[Amplitude] Page Domain", "[Amplitude] Page Path")
# Rule properties whose values change from event to event: checked per event, not
# memoized in the context (they would make every context entry single-use).
_PER_EVENT = frozenset({
    "$current_url", "current_page_title", "current_domain", "current_url_path",
    "current_url_protocol", "current_url_search", "$referrer", "$referring_domain",
    "$search_engine", "mp_keyword", "$duration",
})
_urlsplit_uncached: Callable[[str], SplitResult] = getattr(urlsplit, "__wrapped__", urlsplit)
MAX_URLS = 1_024  # ~1.8 KB each (measured), oldest quarter dropped when full: ~1.8 MB
MAX_MEMO = 4_096  # per memo; the transformer also bounds all memos of a kind together
# The transformer's memo bounds. Shapes (and fronts) by count and by the property keys
# they hold (~200 bytes a key in all the memos: 20,000 shapes of 250 keys held ~1 GB),
# a key counted once more per KEY_CHARS characters of its text (``memo_weight``).
MAX_SHAPES = 20_000
MAX_SHAPE_KEYS = 200_000
KEY_CHARS = 200
MAX_MEMO_ENTRIES = 4_096  # conversions, all memos together, ~2 KB each: reached early
# in a run, so its memory is the same at 1M events as at 5M (8192 held a 1M-event
# project's ~6.7k conversions without filling, then grew at 5M; misses are cheap now)
MAX_CONTEXT_ENTRIES = 16_384  # contexts (~one per device), all together, ~2.3 KB each:
# a 1M-event project has 66k devices and fills it, as every larger one does. Measured
# there: 4096 -> 16384 entries took the pipeline from 11.8 to 11.1 us/event for ~28 MB.

PAGE_ALL = (PAGE_URL, PAGE_DOMAIN, PAGE_PATH)
"""The page properties in the order they are added (``page_properties``); a shape's
``page`` lists those its event properties do not already have."""

Converted = tuple[dict[str, Any], dict[str, Any], bool, list[dict[str, Any] | None]]
"""A memo entry: the top-level fields (platform, converted fields, library, in output
order), the event properties kept because no field came of them, whether those kept
values are plain (need no sanitizing), and output templates by variant (``out_template``,
built when first needed)."""


class Conversion(NamedTuple):
    """Default properties -> top-level fields, shared by the shapes that convert the same
    properties the same way (one SDK's events of every name), with one memo."""

    constants: tuple[tuple[str, Any], ...]  # platform
    converts: tuple[tuple[str, str, Callable[..., Any], str | None], ...]  # field order
    os_name: str | None  # default when $os gave none
    getter: Callable[[dict[str, Any]], tuple[Any, ...]]  # the converted properties' values
    memo: dict[tuple[Any, ...], Converted]


ContextEntry = tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, Any] | None],
                     tuple[type, ...]]
"""The context properties' event properties (renamed, fixed, plain), then the conversion
of the same values (``Converted`` without its plain flag: an entry's keeps are plain), then
the values' types: the memo is keyed by the values alone (1, 1.0 and True are one key),
and an entry serves only values of the same types (``same_types``)."""


class Context(NamedTuple):
    """The context properties of the shapes that read them the same way, with one memo
    keyed by their values (values that are not hashable get no entry)."""

    getter: Callable[[dict[str, Any]], tuple[Any, ...]]  # the context properties' values
    renames: tuple[tuple[str, str], ...]  # (source, name) of the kept ones, fixes applied
    memo: dict[tuple[Any, ...], ContextEntry]


class Shape(NamedTuple):
    """What to do with each property of events that share one key set."""

    names: tuple[str, ...]  # event-property names, in input order ...
    values: Callable[[dict[str, Any]], tuple[Any, ...]]  # ... and their values (C-level)
    pairs: tuple[tuple[str, str], ...] | None  # (source, name) when every name is clean
    template: dict[str, Any]  # the names with None values (copied: no resizes per event)
    fixes: tuple[tuple[str, Callable[..., Any]], ...]  # value rewrites of kept properties
    page: tuple[str, ...]  # the page properties to add (PAGE_ALL: one dict.update)
    getter: Callable[[dict[str, Any]], tuple[Any, ...]]  # conversion.getter
    memo: dict[tuple[Any, ...], Converted]  # conversion.memo
    conversion: Conversion
    revenue: bool  # a configured revenue property is present
    groups: tuple[str, ...]  # the configured group keys present, in configured order
    context: Context | None  # None when a name is not clean (then no per-event shortcut)
    customs: tuple[tuple[str, str], ...]  # (source, name) of the non-context properties


class Front(NamedTuple):
    """What ``Transformer.event`` needs of one (event name, mp_lib, $os, keys) shape; the
    checks before the shape (record, name, hot shard, identity events, event type) passed
    when it was learnt and give the same answer for every record of this shape."""

    event_type: str
    getter: Callable[[dict[str, Any]], tuple[Any, ...]]  # context values
    memo: dict[tuple[Any, ...], ContextEntry]  # the context's memo
    template: dict[str, Any]
    customs: tuple[tuple[str, str], ...]  # (source, name) checked per event
    page: tuple[str, ...]
    revenue: bool
    groups: tuple[str, ...]
    shape: Shape  # for a context-memo miss served in place (``_context_entry``)
    kept_fixes: tuple[Callable[..., Any] | None, ...]  # per context rename: its fix


Compiled = tuple[str | None, Callable[..., Any], str | None, int, int, Callable[..., Any] | None]


def compile_table(platform: mapping.Platform, keep_ip: bool) -> dict[str, Compiled]:
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


def build_shape(
    props: dict[str, Any], lib: Any, os_value: Any, table: dict[str, Compiled],
    platform: mapping.Platform, revenue_keys: tuple[str, ...], group_keys: tuple[str, ...],
    conversions: dict[tuple[Any, ...], Conversion], contexts: dict[tuple[Any, ...], Context],
) -> Shape:
    """The per-key plan for one event shape; its conversion and context are taken from (or
    added to) ``conversions`` and ``contexts``, so shapes that read alike share memos."""
    renames: list[tuple[str, str]] = []
    in_context: set[str] = set()  # sources whose values key the context memo
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
            in_context.add(key)  # the converted values are part of every context entry
        if keep == _ALWAYS or (keep == _UNMAPPED and field is None):
            renames.append((key, target))
            taken.add(target)
            if fix is not None:
                fixes.append((target, fix))
            if fix is not None or key not in _PER_EVENT:
                in_context.add(key)  # kept fixed in the context entry
        elif keep == _UNMAPPED:
            taken.add(target)
    converts.sort(key=lambda c: (c[0], c[1]))
    constants: tuple[tuple[str, Any], ...] = ()
    os_name = None
    if platform == "ios":
        key = os_value.lower() if type(os_value) is str else "ios"
        constants = (("platform", mapping.APPLE_PLATFORMS.get(key, "iOS")),)
        os_name = constants[0][1].lower()
    elif platform == "android":
        constants = (("platform", "Android"),)
        os_name = "android"
    elif platform == "web":
        constants = (("platform", "Web"),)
    names = tuple(dst for _, dst in renames)
    page: tuple[str, ...] = ()
    # Page properties are cut from the $current_url value, which is itself an event
    # property: a clean URL makes them clean (the core checks only the input values).
    if platform == "web" and any(src == "$current_url" for src, _ in renames):
        # Only an event property can already hold one (kept values are never named so),
        # and it wins: the others are added.
        page = tuple(key for key in PAGE_ALL if key not in names)
        page = PAGE_ALL if page == PAGE_ALL else page  # the transformer tests it with ``is``
    clean = all(type(k) is str and len(k) <= MAX_STRING and k.isascii() for k in taken)
    steps = tuple(c[2:] for c in converts)
    signature = (constants, os_name, steps)
    conversion = conversions.get(signature)
    if conversion is None:
        conversion = conversions[signature] = Conversion(
            constants, steps, os_name, getter([c[2] for c in converts]), {})
    context = None
    customs = tuple(pair for pair in renames if pair[0] not in in_context)
    if clean:
        sources = tuple(key for key in props if key in in_context)
        kept = tuple(pair for pair in renames if pair[0] in in_context)
        # The entry depends on the values, the conversion and the kept names (fixes are
        # per kept name): shapes that agree on these share one context memo.
        context_key = (signature, sources, kept,
                       tuple(fix for fix in fixes if fix[0] in {dst for _, dst in kept}))
        context = contexts.get(context_key)
        if context is None:
            context = contexts[context_key] = Context(getter(list(sources)), kept, {})
    return Shape(names, getter([src for src, _ in renames]), tuple(renames) if clean else None,
                 dict.fromkeys(names), tuple(fixes), page, conversion.getter, conversion.memo,
                 conversion, any(k in props for k in revenue_keys),
                 tuple(k for k in group_keys if k in props), context, customs)


def convert(
    conversion: Conversion, props: dict[str, Any], library: str, stats: ValueStats
) -> tuple[Converted, bool]:
    """Top-level fields and the event properties kept because no field came of them;
    the flag says whether the result may be memoized (no per-event count was made)."""
    fields: dict[str, Any] = {}
    keeps: dict[str, Any] = {}
    cacheable = True
    coordinates: dict[str, tuple[str, Any]] = {}
    for src, field, converter, keep_as in conversion.converts:
        value = props[src]
        if type(value) is float and value == 0.0:
            cacheable = False  # -0.0 == 0.0 as a memo key, but they are written differently
        converted = converter(value, props)
        if converted is None:
            if keep_as is not None:
                keeps[keep_as] = value
        elif converted is not mapping.DISCARD:
            if field in fields:  # a property ranked before it gave the field
                if keep_as is not None:  # kept as when unmapped: its value is never lost
                    keeps[keep_as] = value
                continue
            if type(converted) is str and (len(converted) > MAX_STRING
                                           or not converted.isascii()):
                cacheable = cacheable and len(converted) <= MAX_STRING  # count each cut
                converted = _clip_from(converted, field, src, stats)
            fields[field] = converted
            if field in _COORDINATES:  # a lone one is kept as the property it came from
                coordinates[field] = (src if keep_as is None else keep_as, value)
    if conversion.os_name is not None and "os_name" not in fields:
        fields["os_name"] = conversion.os_name
    if "country" in fields or "region" in fields or "city" in fields:
        for name in LOCATION_FIELDS:  # all four together: one resets the others
            if name not in fields:
                fields[name] = None
    if ("location_lat" in fields) != ("location_lng" in fields):
        # Amplitude needs both coordinates; a lone one stays an event property, under the
        # name an unmapped one gets (never over the event's own property) and as given.
        for field in _COORDINATES:
            if field in fields:
                del fields[field]
                name, given = coordinates[field]
                keeps.setdefault(name, given)
    top = dict(conversion.constants)
    top.update(fields)
    top["library"] = library
    return (top, keeps, plain(keeps.values()), [None] * 8), cacheable


def _clip_from(value: str, field: str, src: str, stats: ValueStats) -> str:
    """``clip`` for a field converted from property ``src``: bad text is reported on the
    property the record holds (``$model``), not on the first source of the field present
    (``src`` is its name after the tracking plan: ``event_properties.`` is traced back to
    the record's name, ``source_field``)."""
    try:
        return clip(value, field, stats)
    except ValueProblem:
        raise ValueProblem(f"event_properties.{src}", f"properties.{src} holds invalid text (a "
                           f"lone surrogate) and cannot become {field}: the event is "
                           "rejected; fix or drop the property to send it") from None


def out_template(variant: int, top: dict[str, Any]) -> dict[str, Any]:
    """The output event's keys in order for ``variant`` = 1 (user_id) | 2 (device_id) |
    4 (revenue fields may come before event_properties, which is then added later).

    ``insert_id`` keeps its place but is set last. Copying a template (a memcpy) is much
    cheaper than inserting the keys one by one.
    """
    out: dict[str, Any] = {"event_type": None}
    if variant & 1:
        out["user_id"] = None
    if variant & 2:
        out["device_id"] = None
    out["time"] = None
    out["insert_id"] = ""
    out.update(top)
    if not variant & 4:
        out["event_properties"] = None
    return out


def getter(keys: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A C-level ``props -> tuple of values`` for these keys (always a tuple)."""
    if len(keys) > 1:
        return itemgetter(*keys)
    if keys:
        only = itemgetter(keys[0])
        return lambda props: (only(props),)
    return _no_values


def _no_values(props: dict[str, Any]) -> tuple[Any, ...]:
    return ()


def plain_props(
    pairs: tuple[tuple[str, str], ...], template: dict[str, Any], props: dict[str, Any]
) -> dict[str, Any] | None:
    """The event properties ``{name: props[source]}`` (filling a copy of ``template``, the
    names in order), or ``None`` as soon as one value needs ``sanitize_props`` (``plain``'s
    test; one loop does both, the common case)."""
    out = template.copy()
    for source, name in pairs:
        value = props[source]
        t = type(value)
        if t is str:
            if len(value) > MAX_STRING or not value.isascii():
                return None
        elif t is int:
            if not _INT_MIN <= value <= _INT_MAX:
                return None
        elif t is float:
            if value - value != 0.0:  # NaN or an infinity
                return None
        elif t is list:
            if not plain_scalars(value):
                return None
        elif not (t is bool or value is None):
            return None
        out[name] = value
    return out


def same_types(values: tuple[Any, ...], types: tuple[type, ...]) -> bool:
    """Whether ``values`` has exactly ``types`` (a context entry's): cheaper than keying
    the memo by a tuple of types per event."""
    return all(type(value) is types[i] for i, value in enumerate(values))


def plain_value(value: Any) -> bool:
    """``plain`` for one value."""
    t = type(value)
    if t is str:
        return len(value) <= MAX_STRING and value.isascii()
    if t is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[no-any-return]
    if t is float:
        return value - value == 0.0  # type: ignore[no-any-return]  # not NaN or infinite
    if t is list:
        return plain_scalars(value)
    return t is bool or value is None


def plain(values: Iterable[Any]) -> bool:
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
            if not plain_scalars(value):
                return False
        elif not (t is bool or value is None):
            return False
    return True


def plain_scalars(values: list[Any]) -> bool:
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


def page_properties(url: str) -> dict[str, str]:
    """The page properties Amplitude's Browser SDK derives from the page URL (non-empty
    ones, in the order they are added)."""
    try:  # urlsplit's own cache (128 URLs) would hold over-long ones whole: not for them
        split = (urlsplit if len(url) <= MAX_STRING else _urlsplit_uncached)(url)
        host, path = split.hostname or None, split.path or None
    except ValueError:
        host = path = None
    parts = {PAGE_URL: url.split("?", 1)[0], PAGE_DOMAIN: host, PAGE_PATH: path}
    return {k: v for k, v in parts.items() if v}


def memo_weight(keys: tuple[Any, ...], head: tuple[Any, ...] = ()) -> int:
    """What a shape (or front) key holds in the memos, in ``MAX_SHAPE_KEYS`` units: one per
    item of ``keys``, plus one per ``KEY_CHARS`` characters of any text in ``keys`` or
    ``head``; -1 when a text is longer than ``MAX_STRING``: such a key is not memoized
    (the name is cut per event anyway, and distinct 100 KB names would each be held)."""
    weight = len(keys)
    for part in (head, keys):
        for item in part:
            if type(item) is str:
                size = len(item)
                if size > MAX_STRING:
                    return -1
                weight += size // KEY_CHARS
    return weight


def remember_page(urls: dict[str, dict[str, str]], url: str) -> dict[str, str]:
    """``page_properties`` of ``url``, memoized in ``urls`` (at most ``MAX_URLS``; a URL
    longer than ``MAX_STRING`` is not: 1,024 distinct 100 KB URLs would hold 100 MB)."""
    parts = page_properties(url)
    if len(url) <= MAX_STRING:
        if len(urls) >= MAX_URLS:
            drop_oldest(urls)
        urls[url] = parts
    return parts


def drop_oldest(memo: dict[Any, Any]) -> int:
    """Drop the oldest quarter (at least one) of ``memo``'s entries; how many went."""
    count = max(1, len(memo) // 4)
    for key in list(islice(memo, count)):
        del memo[key]
    return count
