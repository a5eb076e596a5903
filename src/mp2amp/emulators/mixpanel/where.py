"""A subset of Mixpanel segmentation expressions, for ``where`` on export and engage.

Supported: ``properties["name"]`` (and ``event["$time"]``), string / number / true / false
literals, ``== != > >= < <= in``, ``and or not``, ``+ - * / %``, unary ``-``, parentheses,
``defined()``, ``boolean() number() string()``, ``floor() round() ceil()`` and
``datetime()``. Anything else is refused at parse time with a message naming the
character position, so a client gets a clear 400 rather than a silently wrong filter.
So is nesting deeper than ``MAX_DEPTH`` (parentheses, calls, ``not``, unary ``-``): the
parser and the compiled filter recurse once per level. Chains of one precedence
(``a + b - c``, ``a or b or c``) are flat lists, evaluated in a loop, so their length is
bounded only by the 10000-character cap.

Semantics follow the reference: a missing property is *undefined*; comparing mismatched
types gives *undefined*; ``and``/``or``/``not`` and the final filter treat undefined as
false. ``in`` is substring match on strings and membership on lists. ``boolean()`` is
Mixpanel's documented typecast (data-type docs, cited by reference 5.5): ``"false"``, 0,
null, undefined and ``""`` are false, any other set value true.

Date strings: the expression's own (``datetime("2024-01-01")``, ``$time > "..."``) are read
in the timezone given to ``compile_where``; those of the records (a property, or anything
computed from one) in ``value_tz``: profile dates are UTC (reference 5.5 "Date: ISO
YYYY-MM-DDTHH:MM:SS in UTC"), whatever the project's timezone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

Lookup = Callable[[str], Any]
Compiled = Callable[[Lookup], Any]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>==|!=|>=|<=|>|<|\(|\)|\[|\]|,|\+|-|\*|/|%)
    | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\", "/": "/"}
_FUNCTIONS = ("defined", "boolean", "number", "string", "datetime", "floor", "round", "ceil")
_COMPARISONS = ("==", "!=", ">", ">=", "<", "<=", "in")
# each level costs about 8 parser frames (or_expr .. primary): 64 levels stay far inside
# Python's default recursion limit of 1000, even under aiohttp's and the executor's frames
MAX_DEPTH = 64


class WhereError(ValueError):
    """The expression is not valid (or uses something this emulator does not support)."""


@dataclass(frozen=True, slots=True)
class Datetime:
    """A point in time (UTC epoch seconds); what ``datetime()`` and ``$time`` evaluate to."""

    epoch: float


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _unquote(text: str, pos: int) -> str:
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise WhereError(f"unsupported escape \\{nxt} in string at character {pos}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            start = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise WhereError(f"unexpected character {text[start]!r} at character {start}")
        kind = m.lastgroup or ""
        start = m.start(kind)
        tokens.append(_Tok(kind, m.group(kind), start))
        pos = m.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


def parse_datetime(text: str, tz: ZoneInfo) -> Datetime | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS`` read in ``tz`` (a trailing Z means UTC)."""
    try:
        if text.endswith("Z"):
            return Datetime(datetime.fromisoformat(text[:-1] + "+00:00").timestamp())
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return Datetime(parsed.timestamp())


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def truthy(v: Any) -> bool:
    """A value as a condition (``and``/``or``/``not``, the final filter): undefined is false."""
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if _is_num(v):
        return bool(v) and not (isinstance(v, float) and math.isnan(v))
    if isinstance(v, str | list | dict):
        return len(v) > 0
    return isinstance(v, Datetime)


def cast_boolean(v: Any) -> bool:
    """``boolean()``: "false", 0, null, undefined and "" are false, any other set value is
    true (Mixpanel data-type docs), so a "true"/"false" string property casts as it reads."""
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if _is_num(v):
        return v != 0 and not (isinstance(v, float) and math.isnan(v))
    if isinstance(v, str):
        return v not in ("", "false")
    return True


class _Const:
    """A literal of the expression: its date strings are read in the expression's timezone."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, _g: Lookup) -> Any:
        return self.value


def _compare(op: str, a: Any, b: Any, a_tz: ZoneInfo, b_tz: ZoneInfo) -> bool | None:
    if a is None or b is None:
        return None
    if op == "in":
        if isinstance(b, str) and isinstance(a, str):
            return a in b
        if isinstance(b, list):
            return a in b
        return None
    if isinstance(a, Datetime) and isinstance(b, str):
        b = parse_datetime(b, b_tz)
    elif isinstance(b, Datetime) and isinstance(a, str):
        a = parse_datetime(a, a_tz)
    if a is None or b is None:
        return None
    if isinstance(a, Datetime) and isinstance(b, Datetime):
        a, b = a.epoch, b.epoch
    elif not ((_is_num(a) and _is_num(b)) or type(a) is type(b)):
        return None  # mismatched types are undefined
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if isinstance(a, bool | list | dict):
        return None  # no ordering on booleans, lists or objects
    if op == ">":
        return bool(a > b)
    if op == ">=":
        return bool(a >= b)
    if op == "<":
        return bool(a < b)
    return bool(a <= b)


def _arith(op: str, a: Any, b: Any) -> Any:
    if not (_is_num(a) and _is_num(b)):
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    return a / b if op == "/" else a % b


def _to_number(v: Any) -> Any:
    if _is_num(v):
        return v
    if isinstance(v, bool):
        return 1 if v else 0
    if isinstance(v, Datetime):
        return v.epoch
    if isinstance(v, str):
        try:
            num = float(v)
        except ValueError:
            return None
        return int(num) if num.is_integer() and "." not in v and "e" not in v.lower() else num
    return None


def _to_string(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, Datetime):
        try:
            return datetime.fromtimestamp(v.epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return None
    return v if isinstance(v, str) else str(v)


def _any(nodes: tuple[Compiled, ...]) -> Compiled:
    # a loop, not nested calls: a long "or" chain cannot overflow the stack
    return lambda g: any(truthy(node(g)) for node in nodes)


def _all(nodes: tuple[Compiled, ...]) -> Compiled:
    return lambda g: all(truthy(node(g)) for node in nodes)


def _arith_chain(first: Compiled, rest: tuple[tuple[str, Compiled], ...]) -> Compiled:
    """``first op1 x1 op2 x2 ...`` left to right, in a loop whatever the chain's length."""

    def run(g: Lookup) -> Any:
        acc = first(g)
        for op, node in rest:
            acc = _arith(op, acc, node(g))
        return acc

    return run


def _rounding(name: str, arg: Compiled) -> Compiled:
    fns: dict[str, Callable[[Any], Any]] = {"floor": math.floor, "round": round, "ceil": math.ceil}
    fn = fns[name]
    return lambda g: (lambda v: fn(v) if _is_num(v) and math.isfinite(v) else None)(arg(g))


class _Parser:
    def __init__(self, text: str, tz: ZoneInfo, value_tz: ZoneInfo) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.tz = tz
        self.value_tz = value_tz
        self.depth = 0

    def descend(self, tok: _Tok) -> None:
        """One level deeper (at ``tok``); refuse past MAX_DEPTH before recursion can overflow."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise WhereError(
                f"nesting deeper than {MAX_DEPTH} levels at character {tok.pos} (parentheses, "
                "function calls, not and unary minus each add one); flatten the expression"
            )

    def zone_of(self, node: Compiled) -> ZoneInfo:
        """Where a date string from ``node`` is read: a literal's in the expression's zone."""
        return self.tz if isinstance(node, _Const) else self.value_tz

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> _Tok:
        tok = self.take()
        if tok.text != text or tok.kind not in ("op",):
            got = tok.text or "end of expression"
            raise WhereError(f"expected {text!r} at character {tok.pos}, got {got!r}")
        return tok

    def is_word(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "name" and tok.text == word

    def parse(self) -> Compiled:
        node = self.or_expr()
        tok = self.peek()
        if tok.kind != "end":
            raise WhereError(f"unexpected {tok.text!r} at character {tok.pos}")
        return node

    def or_expr(self) -> Compiled:
        nodes = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            nodes.append(self.and_expr())
        return nodes[0] if len(nodes) == 1 else _any(tuple(nodes))

    def and_expr(self) -> Compiled:
        nodes = [self.not_expr()]
        while self.is_word("and"):
            self.take()
            nodes.append(self.not_expr())
        return nodes[0] if len(nodes) == 1 else _all(tuple(nodes))

    def not_expr(self) -> Compiled:
        if self.is_word("not"):
            self.descend(self.take())
            inner = self.not_expr()
            self.depth -= 1
            return lambda g: not truthy(inner(g))
        return self.comparison()

    def comparison(self) -> Compiled:
        left = self.additive()
        tok = self.peek()
        if (tok.kind == "op" and tok.text in _COMPARISONS) or self.is_word("in"):
            op = self.take().text
            right = self.additive()
            left_tz, right_tz = self.zone_of(left), self.zone_of(right)
            return lambda g: _compare(op, left(g), right(g), left_tz, right_tz)
        return left

    def additive(self) -> Compiled:
        return self.arith_level(("+", "-"), self.multiplicative)

    def multiplicative(self) -> Compiled:
        return self.arith_level(("*", "/", "%"), self.unary)

    def arith_level(self, ops: tuple[str, ...], operand: Callable[[], Compiled]) -> Compiled:
        """Operands joined by ``ops`` (one precedence), as one flat, left-to-right chain."""
        first = operand()
        rest: list[tuple[str, Compiled]] = []
        while self.peek().kind == "op" and self.peek().text in ops:
            op = self.take().text
            rest.append((op, operand()))
        return _arith_chain(first, tuple(rest)) if rest else first

    def unary(self) -> Compiled:
        if self.peek().kind == "op" and self.peek().text == "-":
            self.descend(self.take())
            inner = self.unary()
            self.depth -= 1
            return lambda g: _arith("-", 0, inner(g))
        return self.primary()

    def primary(self) -> Compiled:
        tok = self.take()
        if tok.kind == "num":
            num = float(tok.text)
            val: Any = int(num) if num.is_integer() and "." not in tok.text and "e" not in tok.text.lower() else num
            return _Const(val)
        if tok.kind == "str":
            return _Const(_unquote(tok.text, tok.pos))
        if tok.kind == "op" and tok.text == "(":
            self.descend(tok)
            inner = self.or_expr()
            self.expect(")")
            self.depth -= 1
            return inner
        if tok.kind == "name":
            if tok.text in ("true", "false"):
                return _Const(tok.text == "true")
            if tok.text in ("properties", "event"):
                return self.property_ref(tok)
            if tok.text in _FUNCTIONS:
                return self.call(tok)
            raise WhereError(
                f"unsupported name {tok.text!r} at character {tok.pos}; supported: "
                'properties["..."], event["$time"], true, false, and, or, not, in, '
                + ", ".join(f"{f}()" for f in _FUNCTIONS)
            )
        got = tok.text or "end of expression"
        raise WhereError(f"unexpected {got!r} at character {tok.pos}")

    def property_ref(self, tok: _Tok) -> Compiled:
        self.expect("[")
        key_tok = self.take()
        if key_tok.kind != "str":
            raise WhereError(
                f"{tok.text}[...] needs a quoted property name at character {key_tok.pos}"
            )
        key = _unquote(key_tok.text, key_tok.pos)
        self.expect("]")
        if tok.text == "event" and key != "$time":
            raise WhereError(
                f'event["{key}"] at character {tok.pos} is not supported; '
                'use properties["..."] (event["$time"] is the only event field)'
            )
        return lambda g: g(key)

    def call(self, tok: _Tok) -> Compiled:
        self.descend(self.expect("("))
        arg = self.or_expr()
        self.expect(")")
        self.depth -= 1
        name = tok.text
        tz = self.zone_of(arg)
        if name == "defined":
            return lambda g: arg(g) is not None
        if name == "boolean":
            return lambda g: cast_boolean(arg(g))
        if name == "number":
            return lambda g: _to_number(arg(g))
        if name == "string":
            return lambda g: _to_string(arg(g))
        if name in ("floor", "round", "ceil"):
            return _rounding(name, arg)
        # datetime(): unix seconds, or an ISO date/datetime (a literal's read in the
        # expression's timezone, a property's in value_tz)
        probe = arg(lambda _k: None)
        if isinstance(probe, str) and parse_datetime(probe, tz) is None:
            raise WhereError(
                f"datetime({probe!r}) at character {tok.pos}: expected YYYY-MM-DD or "
                "YYYY-MM-DDTHH:MM:SS, or a number of seconds since the epoch"
            )

        def to_dt(g: Lookup) -> Any:
            v = arg(g)
            if isinstance(v, Datetime):
                return v
            if _is_num(v):
                return Datetime(float(v))
            return parse_datetime(v, tz) if isinstance(v, str) else None

        return to_dt


def compile_where(
    text: str, tz: ZoneInfo, value_tz: ZoneInfo | None = None
) -> Callable[[Lookup], bool]:
    """Parse ``text`` once; the result filters records through a property lookup.

    ``tz`` reads the expression's date strings, ``value_tz`` (default ``tz``) the records'.
    Filtering raises WhereError only if evaluation overflows the stack (a backstop)."""
    if len(text) > 10_000:
        raise WhereError("where expression is longer than 10000 characters")
    try:
        fn = _Parser(text, tz, value_tz or tz).parse()
    except RecursionError:  # backstop: MAX_DEPTH should make this unreachable
        raise WhereError("where expression is nested too deeply to parse; flatten it") from None

    def run(lookup: Lookup) -> bool:
        try:
            return truthy(fn(lookup))
        except RecursionError:  # backstop: a client error (400), never a server fault
            raise WhereError("where expression is nested too deeply to evaluate; flatten it") from None

    return run
