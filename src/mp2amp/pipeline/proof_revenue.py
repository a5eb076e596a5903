"""The proof's own statement of the revenue rules (``docs/mapping.md`` "Revenue"), written
again here rather than read from ``transform.revenue``: the proof must see a revenue bug
in the transform, not repeat it.

* ``expected_revenue``: the top-level ``price``, ``quantity``, ``revenue``, ``productId``,
  ``revenueType`` and ``currency`` a record should give under ``[transform.revenue]``;
* ``as_exported``: those as Amplitude's export shows them (``$price``, ``$quantity``,
  ``$productId``, ``$revenueType`` event properties, and ``$revenue``, which Amplitude
  computes as price x quantity when a price is sent, else the sent revenue). The export
  shows no currency, so ``differences`` never compares it: a wrong or missing currency is
  out of the demo's sight (the rule is stated for the unit tests that hold it to the
  transform's);
* ``RevenueTotals``: the total revenue of the expected events vs the export's (and
  segmentation's ``revenue_amount`` when it answers), per UTC day, in cents. Each total
  is the exact sum of its amounts, rounded once to the cent: the same amounts give the
  same cents whatever their order, and a total past a double (a huge ``$revenue``) is
  still a number of cents that differs, not an overflow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

MAX_STRING = 1024  # productId / revenueType are cut like every top-level string
# "parsed as decimal numbers": a plain number, blanks around it allowed (ASCII only: no
# "$19.99", "1,299.00", "1_000" or other scripts' digits)
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)
_MAX_QUANTITY = 2**31 - 1  # Amplitude's quantity is a 32-bit Integer
_NOT_A_NUMBER = object()  # a quantity that is there but is not a number
_EXACT_INT = 2**53  # every integer up to this is a double
_TINIEST = 1074  # every finite double is a whole multiple of 2**-1074
# the export's names of the top-level revenue fields (currency has none: never compared)
EXPORTED = (("price", "$price"), ("quantity", "$quantity"), ("revenue", "$revenue"),
            ("productId", "$productId"), ("revenueType", "$revenueType"))
TOP_LEVEL = ("price", "quantity", "revenue", "productId", "revenueType", "currency")

Fields = tuple[object, ...]  # TOP_LEVEL's expected values (None: not sent)


class RevenueNames(NamedTuple):
    """``[transform.revenue]`` as the migration is configured (Mixpanel names)."""

    price: str | None = None
    quantity: str | None = None
    revenue: str | None = None
    product_id: str | None = None
    revenue_type: str | None = None
    currency: str | None = None
    items: str | None = None
    refund_events: frozenset[str] = frozenset()

    @classmethod
    def of(cls, table: Mapping[str, Any]) -> RevenueNames:
        """From the ``[transform.revenue]`` table (its config keys)."""
        given = {k: v for k, v in table.items() if k != "refund_events"}
        return cls(**given, refund_events=frozenset(table.get("refund_events", ())))

    @property
    def enabled(self) -> bool:
        return bool(self.price or self.revenue or self.items)


def number(value: object) -> float | None:
    """A finite number from a number or a plain numeric string (never a boolean)."""
    if type(value) is int:
        try:
            result = float(value)
        except OverflowError:  # past a double: the event is rejected anyway
            return None
    elif type(value) is float:
        result = value
    elif type(value) is str and _NUMBER.fullmatch(value):
        result = float(value)
    else:
        return None
    return result if math.isfinite(result) else None


def _quantity(container: Mapping[str, Any], key: str | None) -> object:
    """A quantity: None when not given (Amplitude's default 1), else a number or
    ``_NOT_A_NUMBER``."""
    value = container.get(key) if key else None
    if value is None:
        return None
    parsed = number(value)
    return _NOT_A_NUMBER if parsed is None else parsed


def js_number(value: float) -> str:
    """A finite number as JavaScript's ``String()`` writes it (ECMA-262 Number::toString),
    as Mixpanel shows it: 5.0 is "5", 2**60 "1152921504606847000", 1e21 "1e+21", 1.5e-7
    "1.5e-7". Stated here from the standard, not with the transform's code it checks."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} has no JavaScript number text")
    if value == 0:
        return "0"  # -0 too
    if value < 0:
        return "-" + js_number(-value)
    # repr's digits are the shortest that read back as the value, as JavaScript picks
    _, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    k, n = len(digits), len(digits) + exponent  # the value is 0.digits x 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{'+' if n > 0 else '-'}{abs(n - 1)}"


def _text(value: object) -> str | None:
    """A product id or revenue type as Mixpanel (JavaScript) shows it: an integer a double
    holds exactly (all up to 2**53, and 2**60) as that double; any other keeps all its
    digits, as docs/mapping.md's plan ``type: string`` writes it."""
    if type(value) is str:
        text = value.strip()
        return text[:MAX_STRING] if text else None
    if type(value) is int:
        if abs(value) > _EXACT_INT:
            try:
                as_double = float(value)
            except OverflowError:  # past a double (the event is rejected anyway)
                return str(value)
            if int(as_double) == value:
                return js_number(as_double)
        return str(value)
    if type(value) is float and math.isfinite(value):
        return js_number(value)
    return None


def _one_item(price: float | None, quantity: object, revenue: float | None
              ) -> tuple[float | None, int | None, float | None]:
    """(price, quantity, revenue) of a single item: a whole quantity goes with the price;
    a fraction (or one past an Integer) sends price x quantity as revenue; a quantity
    that is not a number sends no price."""
    if price is None or quantity is None:
        return price, None, revenue
    if quantity is _NOT_A_NUMBER:
        return None, None, revenue
    assert isinstance(quantity, float)
    if quantity.is_integer() and abs(quantity) <= _MAX_QUANTITY:
        return price, int(quantity), revenue
    return None, None, price * quantity if revenue is None else revenue


def expected_revenue(props: Mapping[str, Any], event: str, names: RevenueNames
                     ) -> Fields | None:
    """``TOP_LEVEL``'s values a record should be sent with (None: the event carries no
    revenue fields)."""
    if not names.enabled:
        return None
    price: float | None = None
    quantity: int | None = None
    revenue: float | None = None
    product: object = None
    items = props.get(names.items) if names.items else None
    if type(items) is list and items and all(type(i) is dict for i in items):
        found = [(number(i.get(names.price)) if names.price else None,
                  _quantity(i, names.quantity),
                  _text(i.get(names.product_id)) if names.product_id else None)
                 for i in items]
        if len(found) == 1:
            price, quantity, revenue = _one_item(found[0][0], found[0][1], None)
            product = found[0][2]
        elif all(p is not None and q is not _NOT_A_NUMBER for p, q, _ in found):
            # no single product; revenue is the sum of price x quantity
            try:
                revenue = math.fsum(p * (1.0 if q is None else q)  # type: ignore[operator]
                                    for p, q, _ in found)
            except (OverflowError, ValueError):  # past a double, or inf - inf: not sent
                revenue = None
        order = number(props.get(names.revenue)) if names.revenue else None
        if order is not None:  # the order-level revenue wins over the items' sum
            revenue = order
    else:
        revenue = number(props.get(names.revenue)) if names.revenue else None
        if names.price:
            price, quantity, revenue = _one_item(number(props.get(names.price)),
                                                 _quantity(props, names.quantity), revenue)
        if names.product_id:
            product = _text(props.get(names.product_id))
    if price is not None and not math.isfinite(price * (quantity or 1)):
        price, quantity = None, None  # Amplitude's price x quantity would overflow
    if revenue is not None and not math.isfinite(revenue):
        revenue = None  # JSON has no infinity: not sent
    if price is None and revenue is None:
        return None
    if price is not None and revenue is not None and abs(
            price * (1 if quantity is None else quantity) - revenue) > 1e-9 * max(1.0, abs(revenue)):
        price, quantity = None, None  # the recorded revenue (tax, discount) is the truth
    refund = event in names.refund_events
    if refund:  # negative amounts, a positive quantity
        price = None if price is None else -abs(price)
        quantity = None if quantity is None else abs(quantity)
        revenue = None if revenue is None else -abs(revenue)
    kind = _text(props.get(names.revenue_type)) if names.revenue_type else None
    if kind is None and refund:
        kind = "refund"
    currency = props.get(names.currency) if names.currency else None
    code = currency.strip() if type(currency) is str else ""
    return (price, quantity, revenue, product, kind,
            code.upper() if len(code) == 3 and code.isascii() and code.isalpha() else None)


def amount(fields: Fields | None) -> float | None:
    """The revenue Amplitude books for these fields: price x quantity (1 when not sent)
    when a price is sent, else the revenue."""
    if fields is None:
        return None
    price, quantity, revenue = fields[0], fields[1], fields[2]
    if isinstance(price, float):
        return price * (quantity if isinstance(quantity, int) else 1)
    return revenue if isinstance(revenue, float) else None


def as_exported(fields: Fields | None) -> dict[str, object]:
    """The ``$`` event properties the export shows for these fields (absent: None)."""
    if fields is None:
        return {target: None for _, target in EXPORTED}
    out: dict[str, object] = {target: value for (_, target), value
                              in zip(EXPORTED, fields, strict=False)}
    out["$revenue"] = amount(fields)
    return out


def differences(event: Mapping[str, Any], fields: Fields | None) -> list[str]:
    """What an exported event's revenue fields get wrong (empty: none): its ``$`` event
    properties, and the top-level fields that have an export name wherever the export row
    has them (not ``currency``: the export has none, so it is not compared)."""
    props = event.get("event_properties")
    if not isinstance(props, dict):
        props = {}
    wrong: list[str] = []
    for name, want in as_exported(fields).items():
        _compare(name, props.get(name), want, wrong)
    top = dict(zip(TOP_LEVEL, fields or (None,) * len(TOP_LEVEL), strict=True))
    for name, _ in EXPORTED:
        want = top[name]
        if name in event:  # the emulator's export has none of these at the top level
            _compare(name, event[name], want, wrong)
    return wrong


def _compare(name: str, have: object, want: object, wrong: list[str]) -> None:
    if _same(have, want):
        return
    wrong.append(f"{name} {have!r} (expected {want!r})"[:90])


def _same(have: object, want: object) -> bool:
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        if type(have) not in (int, float):
            return False
        # a float computed twice the same way is equal; the margin is for a JSON round trip
        return abs(float(have) - float(want)) <= 1e-9 * max(1.0, abs(float(want)))  # type: ignore[arg-type]
    return type(have) is type(want) and have == want


def exported_amount(event: Mapping[str, Any]) -> float | None:
    """The revenue an exported event shows (its ``$revenue``), if any."""
    props = event.get("event_properties")
    value = props.get("$revenue") if isinstance(props, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return float(value) if math.isfinite(value) else None


def cents(amounts: Sequence[float]) -> int:
    """A total of finite amounts in cents: their exact sum (in units of 2**-1074, as
    integers: a float sum overflows past ~1.8e308, and x 100 past ~1.8e306), rounded
    half to even to the cent."""
    units = 0
    for value in amounts:
        numerator, denominator = float(value).as_integer_ratio()  # a power of two
        units += numerator << (_TINIEST - denominator.bit_length() + 1)
    return round(Fraction(units * 100, 1 << _TINIEST))


def _currency(value: int) -> float | None:
    """Cents as a number of the currency for JSON (None: past a double, which JSON and
    orjson cannot carry)."""
    try:
        return value / 100
    except OverflowError:
        return None


def money(value: int) -> str:
    """Cents as 1,234.56 (a refund total may be negative)."""
    sign = "-" if value < 0 else ""
    whole, part = divmod(abs(value), 100)
    return f"{sign}{whole:,}.{part:02d}"


@dataclass(slots=True)
class RevenueTotals:
    """Total revenue: of the expected events (Mixpanel's records, by the rules), of
    Amplitude's export, and of segmentation's ``revenue_amount`` (None: not answered),
    in cents, with the UTC days on which they differ."""

    expected: int = 0
    export: int = 0
    segmentation: int | None = None
    segmentation_note: str = ""  # why segmentation's total is not there
    expected_events: int = 0  # expected events that carry revenue
    export_events: int = 0  # exported events that show a $revenue
    daily_mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (self.expected == self.export and not self.daily_mismatches
                and self.segmentation in (None, self.expected))

    def as_dict(self) -> dict[str, Any]:
        # amounts as numbers of the currency (from the cents: 10899.04)
        return {"ok": self.ok, "expected": _currency(self.expected),
                "export": _currency(self.export),
                "segmentation": None if self.segmentation is None
                else _currency(self.segmentation),
                "segmentation_note": self.segmentation_note or None,
                "expected_events": self.expected_events, "export_events": self.export_events,
                "daily_mismatches": self.daily_mismatches}


def revenue_totals(expected: Mapping[str, Sequence[float]],
                   exported: Mapping[str, Sequence[float]],
                   segmentation: Mapping[str, float] | None, note: str = "") -> RevenueTotals:
    """Totals from the amounts per UTC day (``segmentation``: its daily revenue, days in
    the Amplitude project's timezone, UTC in the demo; None: not answered, ``note`` says
    why)."""
    if segmentation is not None and not all(map(math.isfinite, segmentation.values())):
        # not a JSON number (an answer's "inf" string, say): no total to compare with
        segmentation, note = None, "revenue_amount answered a non-finite amount"
    out = RevenueTotals(
        expected=cents([a for day in expected.values() for a in day]),
        export=cents([a for day in exported.values() for a in day]),
        expected_events=sum(map(len, expected.values())),
        export_events=sum(map(len, exported.values())), segmentation_note=note)
    if segmentation is not None:
        out.segmentation = cents(list(segmentation.values()))
    for day in sorted(set(expected) | set(exported) | set(segmentation or {})):
        want, got = cents(expected.get(day, ())), cents(exported.get(day, ()))
        seg = None if segmentation is None else cents([segmentation.get(day, 0.0)])
        if want != got or seg not in (None, want):
            also = "" if seg is None else f", segmentation {money(seg)}"
            out.daily_mismatches.append(f"revenue on {day}: expected {money(want)}, "
                                        f"Amplitude's export has {money(got)}{also}")
    return out
