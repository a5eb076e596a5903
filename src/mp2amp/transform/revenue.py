"""Revenue: configured Mixpanel properties -> Amplitude's top-level revenue fields.

Amplitude counts revenue only from the top-level ``price``, ``quantity``, ``revenue``,
``productId``, ``revenueType`` and ``currency`` of an event; the same numbers left in
``event_properties`` are just properties (a classic migration revenue mismatch). Mixpanel
has no reserved event-level revenue field, so the property names come from the config
(``RevenueSettings``); nothing is hoisted by default. They are the Mixpanel names: a
tracking plan that renames or moves a configured property does not lose its amount (the
plan's new name is accepted too; a name that is also a Mixpanel property the plan
renames, moves or drops, or the plan's new name of another configured property, is refused
with the config). The original properties stay in ``event_properties`` too (as the plan
leaves them), so charts built on them keep working.

Rules (all deterministic, none invents a value):

* Numbers may arrive as strings ("800.00"): parsed as decimal numbers; anything that does
  not parse to a finite number is left alone (the event is still sent, without revenue),
  and counted (``revenue_not_a_number``: "$19.99", "1,299.00" and other scripts' digits
  are not guessed at) when the event is sent: one rejected for another reason is counted
  under that reason only. So is an amount that overflows a double (1e308 x 2.5, or an
  order's sum): JSON has no infinity (orjson would write ``null``), so it is not sent.
* Single item: ``price`` (and ``quantity``, an integer, Amplitude's default 1) and/or
  ``revenue``. A fractional quantity (2.5 kg) sends ``price x quantity`` as ``revenue``
  (Amplitude would book the price once); a quantity that is not a number sends no price. Amplitude recomputes revenue as ``price x quantity`` when all are sent, so
  when the recorded revenue differs (tax, discounts) only ``revenue`` is sent and price /
  quantity stay event properties: the recorded amount is what Mixpanel reports showed.
* Multi-item order (``items`` names a list of objects using the same price / quantity /
  product-id names): one Amplitude event per Mixpanel event, so counts reconcile. With one
  item its price, quantity and product id are hoisted. With several, ``revenue`` is the
  order-level revenue property when set, else the sum of ``price x quantity`` over the
  items (correctly rounded, so the items' order never changes it); ``productId`` is left
  unset (there is no single product) and the list stays in ``event_properties``. An item
  without a parseable price or quantity makes the sum unknown, so no sum is sent.
* Refunds: events named in ``refund_events`` (Mixpanel or plan name) carry negative
  ``price``/``revenue`` (and a positive ``quantity``) (Amplitude allows negative values for refunds) and ``revenueType``
  "refund" unless the event has its own type. A negative amount on any event is kept.
* ``productId`` / ``revenueType`` / ``currency`` are sent only with a ``price`` or
  ``revenue`` (Amplitude requires one of them); ``currency`` only as a 3-letter ASCII
  code, upper-cased. A number there is written as Mixpanel (JavaScript) shows it, as a
  group name and the plan's ``type: string`` write it: 29066.0 is "29066", 1e16
  "10000000000000000".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from mp2amp.transform.settings import RevenueSettings
from mp2amp.transform.values import ValueStats, clip, int_text, js_number_text

_INF = float("inf")


def number(value: object) -> float | None:
    """A finite number from a number or a numeric string; ``None`` otherwise."""
    t = type(value)
    if t is int or t is float:
        try:
            result = float(value)  # type: ignore[arg-type]
        except OverflowError:  # an integer past a double's range (the stdlib parser's):
            return None  # sanitizing rejects the event by its field (non_json_value)
    elif t is str:
        if "_" in value or not value.isascii():  # type: ignore[operator,attr-defined]
            # float() would accept "1_000" and other scripts' digits ("١٢٣"); a price string
            # never means the first, and the plan's coercion refuses the second too
            return None
        try:
            result = float(value)  # type: ignore[arg-type]
        except ValueError:
            return None
    else:
        return None
    if result != result or result in (_INF, -_INF):
        return None
    return result


def integer(value: object) -> int | None:
    """A whole number (2, 2.0, "2"); ``None`` for fractions and non-numbers."""
    parsed = number(value)
    if parsed is None or not parsed.is_integer():
        return None
    return int(parsed)


def amount_keys(rs: RevenueSettings) -> tuple[str, ...]:
    """The configured properties whose presence gives an event revenue fields."""
    return tuple(k for k in (rs.price, rs.revenue, rs.items) if k)


def _text(value: object) -> str | None:
    if type(value) is str:
        return value.strip() or None
    if type(value) is int:
        return int_text(value)
    if type(value) is float and number(value) is not None:
        return js_number_text(value)  # as Mixpanel shows it: 29066.0 is "29066"
    return None  # NaN/Infinity: no product or type is made up of them


_NO_NUMBER = -_INF  # a quantity that is there but is not a number (never a real quantity)
MAX_QUANTITY = 2**31 - 1  # Amplitude's quantity is an Integer (32 bits)


def _quantity(container: dict[str, Any], key: str | None) -> float | None:
    """The quantity as a number; ``None`` when absent (Amplitude's default 1), and
    ``_NO_NUMBER`` when present but not a number (then price x quantity is unknown)."""
    if not key:
        return None
    value = container.get(key)
    if value is None:
        return None
    parsed = number(value)
    return _NO_NUMBER if parsed is None else parsed


def _amount_unparsed(props: dict[str, Any], rs: RevenueSettings, price_key: str | None,
                     revenue_key: str | None, items_key: str | None) -> bool:
    """True when a configured amount is given but is not a number."""
    for key in (price_key, revenue_key):
        if key:
            given = props.get(key)
            if given is not None and number(given) is None:
                return True
    items = props.get(items_key) if items_key else None
    if type(items) is list and rs.price:
        for item in items:
            if type(item) is dict and (given := item.get(rs.price)) is not None \
                    and number(given) is None:
                return True
    return False


def _item_values(
    item: dict[str, Any], rs: RevenueSettings
) -> tuple[float | None, float | None, str | None]:
    price = number(item.get(rs.price)) if rs.price else None
    product = _text(item.get(rs.product_id)) if rs.product_id else None
    return price, _quantity(item, rs.quantity), product


def _single(price: float | None, quantity: float | None,
            revenue: float | None) -> tuple[float | None, int | None, float | None]:
    """(price, quantity, revenue) to send for one item. Amplitude takes a whole quantity
    only: with a fraction (2.5 kg) price x quantity is sent as revenue instead, and with a
    quantity that is not a number the price alone would be booked as one unit, so it is
    not sent (nothing is invented)."""
    if price is None or quantity is None:
        return price, None, revenue
    if quantity == _NO_NUMBER:
        return None, None, revenue
    if quantity.is_integer() and abs(quantity) <= MAX_QUANTITY:
        return price, int(quantity), revenue
    # a fraction, or a whole number past an Integer: the amount travels as revenue
    return None, None, price * quantity if revenue is None else revenue


def _sum(amounts: list[float]) -> float:
    """The correctly rounded sum (``math.fsum``): the same items in any order give the
    same revenue, and a small item beside large ones is not lost. One that overflows a
    double (or adds infinities of both signs) is infinite: not sent, like any overflow."""
    try:
        return math.fsum(amounts)  # inf - inf gives NaN on some Pythons, raises on others
    except (OverflowError, ValueError):
        return _INF


RevenueFields = Callable[[dict[str, Any], tuple[str, str]], dict[str, Any]]


def revenue_reader(rs: RevenueSettings, counts: Counter[str] | None = None,
                   stats: ValueStats | None = None) -> tuple[RevenueFields, Callable[[], None]]:
    """``(fields, book)``. ``fields(props, event_names)``: the top-level revenue fields for
    one event (empty when it carries no revenue), with the settings read once rather than
    per event; ``productId``/``revenueType`` cut to Amplitude's string limit (``clip``), as
    every other top-level string. What it counts, ``revenue_not_a_number`` for an event
    whose configured price or revenue (or an item's price) is there but is not a number
    ("$19.99", "1,299.00") or whose amount overflows (sent without that amount, so a
    revenue chart that differs from Mixpanel's says why) and the cuts, is held until
    ``book()`` adds it to ``counts`` and ``stats``: the caller books only an event it
    sends, right after its ``fields`` (a later step may reject it; the next ``fields``
    drops what a rejected event held)."""
    price_key, quantity_key, revenue_key = rs.price, rs.quantity, rs.revenue
    product_key, type_key, currency_key, items_key = (
        rs.product_id, rs.revenue_type, rs.currency, rs.items)
    refunds = frozenset(rs.refund_events)
    pending, cuts = Counter[str](), ValueStats()  # the last event's, until booked

    def book() -> None:
        if pending:
            if counts is not None:
                counts.update(pending)
            pending.clear()
        if cuts.truncated:
            if stats is not None:
                stats.truncated.update(cuts.truncated)
            cuts.truncated.clear()

    def cut(text: str, field: str) -> str:
        return clip(text, field, cuts)

    def fields(props: dict[str, Any], event_names: tuple[str, str]) -> dict[str, Any]:
        if pending or cuts.truncated:  # an event read but not sent (rejected later)
            pending.clear()
            cuts.truncated.clear()
        if _amount_unparsed(props, rs, price_key, revenue_key, items_key):
            pending["revenue_not_a_number"] += 1
        price: float | None = None
        quantity: int | None = None
        revenue: float | None = None
        product: str | None = None
        items = props.get(items_key) if items_key else None
        if type(items) is list and items and all(type(i) is dict for i in items):
            parsed = [_item_values(i, rs) for i in items]
            order_total = number(props.get(revenue_key)) if revenue_key else None
            if len(parsed) == 1:
                item_price, item_quantity, product = parsed[0]
                price, quantity, revenue = _single(item_price, item_quantity, None)
            elif all(p is not None and q != _NO_NUMBER for p, q, _ in parsed):
                revenue = _sum([p * (1.0 if q is None else q) for p, q, _ in parsed
                                if p is not None])
            if order_total is not None:
                revenue = order_total
        else:
            if revenue_key:
                revenue = number(props.get(revenue_key))
            if price_key:
                price, quantity, revenue = _single(number(props.get(price_key)),
                                                   _quantity(props, quantity_key), revenue)
            if product_key:
                product = _text(props.get(product_key))
        if price is not None and quantity is not None and not math.isfinite(price * quantity):
            price, quantity = None, None  # Amplitude's price x quantity would overflow
            if revenue is None:  # (a recorded revenue differs: they would not be sent anyway)
                pending["revenue_not_a_number"] = 1  # (once an event)
        if revenue is not None and not math.isfinite(revenue):  # an overflowing product/sum
            revenue = None  # (orjson would write null: no amount, and no count of it)
            pending["revenue_not_a_number"] = 1
        if price is None and revenue is None:
            return {}
        if price is not None and revenue is not None and abs(
                price * (1 if quantity is None else quantity) - revenue
        ) > 1e-9 * max(1.0, abs(revenue)):
            # Amplitude would recompute revenue as price x quantity; the recorded revenue
            # (tax, discounts...) is the truth, so price/quantity stay event properties only.
            price, quantity = None, None
        refund = bool(refunds) and (event_names[0] in refunds or event_names[1] in refunds)
        out: dict[str, Any] = {}
        if price is not None:
            out["price"] = -abs(price) if refund else price
            if quantity is not None:
                # a refund's amount is negative: a negative quantity would turn it round
                out["quantity"] = abs(quantity) if refund else quantity
        if revenue is not None:
            out["revenue"] = -abs(revenue) if refund else revenue
        if product is not None:
            out["productId"] = cut(product, "productId")
        revenue_type = _text(props.get(type_key)) if type_key else None
        if revenue_type is None and refund:
            revenue_type = "refund"
        if revenue_type is not None:
            out["revenueType"] = cut(revenue_type, "revenueType")
        currency = props.get(currency_key) if currency_key else None
        if type(currency) is str:
            code = currency.strip()
            if len(code) == 3 and code.isascii() and code.isalpha():  # ISO 4217: A-Z only
                out["currency"] = code.upper()
        return out

    return fields, book
