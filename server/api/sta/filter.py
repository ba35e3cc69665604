"""The ``$filter`` language (OData 4 as SensorThings 1.1 uses it): a tokenizer and a
recursive-descent parser into a small syntax tree. Pure, no I/O; :mod:`.sql` compiles the
tree to parameterized SQL against an entity set's properties.

Grammar (lowest precedence first; keywords are lowercase, as in OData)::

    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := primary (("eq"|"ne"|"gt"|"ge"|"lt"|"le") primary)?
    primary := "(" or ")" | literal | name "(" [or ("," or)*] ")" | path
    literal := 'text' ('' escapes a quote) | number | date-time (2026-12-05T08:00:00Z, or a
               date) | true | false | null | geography'POLYGON((…))' (WKT, lon lat)

Every refusal is a :class:`FilterError`: a 400 naming the query option, with the position
(1-based) and the reason. The input is bounded before any work (length, NUL, nesting depth),
so no input reaches Python's recursion limit.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import shapely
from shapely.errors import ShapelyError
from shapely.validation import explain_validity

from server.errors import Invalid

MAX_CHARS = 8000  # as server/http/validate.py lets $filter through (a request line is ~8 kB)
MAX_DEPTH = 32  # parentheses, "not"s and function calls inside each other
MAX_TOKENS = 1000
MAX_GEO_POINTS = 10_000

CMP_OPS = ("eq", "ne", "gt", "ge", "lt", "le")
ARITH_OPS = ("add", "sub", "mul", "div", "mod")
KEYWORDS = frozenset({*CMP_OPS, *ARITH_OPS, "and", "or", "not", "has", "in"})


class FilterError(Invalid):
    """A query option that cannot be read: ``field`` names the option, ``position`` is the
    1-based character where reading stopped (None when it is about the whole text)."""

    def __init__(self, reason: str, position: int | None, param: str = "$filter") -> None:
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{param}: {reason}{where}", field=param, position=position,
                         errors=[{"field": param, "reason": reason + where}])
        self.reason = reason


# ---------------------------------------------------------------- syntax tree
@dataclass(frozen=True, slots=True)
class Lit:
    value: Any  # str, float, datetime, bool, None, or WKB bytes for a geometry
    type: str  # "text" | "number" | "time" | "bool" | "null" | "geom"
    pos: int


@dataclass(frozen=True, slots=True)
class Path:
    parts: tuple[str, ...]
    pos: int

    @property
    def text(self) -> str:
        return "/".join(self.parts)


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Cmp:
    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Logic:
    op: str  # "and" | "or"
    items: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Not:
    item: Node
    pos: int


Node = Lit | Path | Call | Cmp | Logic | Not


# ---------------------------------------------------------------- tokens
@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "name" | "text" | "number" | "time" | "geo" | "punct"
    text: str
    pos: int  # 0-based offset


_NAME = r"[A-Za-z_@$][A-Za-z0-9_.@$]*"
_TOKEN = re.compile(rf"""
  (?P<ws>[ \t\r\n]+)
| (?P<time>\d{{4}}-\d{{2}}-\d{{2}}
    (?:T\d{{2}}:\d{{2}}(?::\d{{2}}(?:\.\d{{1,9}})?)?(?:Z|[+-]\d{{2}}:\d{{2}})?)?)
  (?![\w.:+-])
| (?P<number>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)(?![\w.:-])
| (?P<geo>(?:geography|geometry)'(?:[^']|'')*')
| (?P<text>'(?:[^']|'')*')
| (?P<name>{_NAME}(?:/{_NAME})*)
| (?P<punct>[(),])
""", re.X)


def tokenize(text: str, param: str = "$filter") -> list[Token]:
    if not isinstance(text, str):
        raise FilterError("must be text", None, param)
    if len(text) > MAX_CHARS:
        raise FilterError(f"is {len(text)} characters long; at most {MAX_CHARS} are read", None, param)
    nul = text.find("\x00")
    if nul >= 0:
        raise FilterError("contains a NUL character", nul + 1, param)
    try:
        text.encode()
    except UnicodeEncodeError as err:
        raise FilterError("is not valid UTF-8 (an unpaired surrogate?)", err.start + 1, param) from None
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch == "'":
                reason = "the text literal is not closed (write a quote inside one as '')"
            elif ch.isdigit() or ch in "-.":
                reason = f"malformed number or date-time near {text[pos:pos + 20]!r}"
            else:
                reason = f"unexpected character {ch!r}"
            raise FilterError(reason, pos + 1, param)
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, m.group(), pos))
            if len(out) > MAX_TOKENS:
                raise FilterError(f"has more than {MAX_TOKENS} terms", pos + 1, param)
        pos = m.end()
    return out


# ---------------------------------------------------------------- literals
def parse_time(text: str, pos: int, param: str) -> datetime:
    given = text
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            text = f"{d.isoformat()}T00:00:00+00:00"
        frac = re.search(r"\.(\d+)", text)
        if frac and len(frac.group(1)) > 6:  # nanoseconds: Python (and PostgreSQL) keep µs
            text = text.replace(frac.group(0), "." + frac.group(1)[:6])
        moment = datetime.fromisoformat(text)  # Python 3.11 reads "Z" too
    except ValueError:
        raise FilterError(f"{given!r} is not a valid date-time", pos + 1, param) from None
    if moment.tzinfo is None:
        raise FilterError(f"the date-time {given!r} has no time zone; add Z or an offset such as "
                          "+07:00", pos + 1, param)
    try:  # in UTC, with room for a microsecond either side (ranges end one after)
        moment = moment.astimezone(UTC)
        moment + timedelta(days=1), moment - timedelta(days=1)
    except OverflowError:
        raise FilterError(f"the date-time {given!r} is outside 0001-01-02 to 9999-12-30", pos + 1,
                          param) from None
    return moment


def parse_number(text: str, pos: int, param: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise FilterError(f"the number {text} is out of range", pos + 1, param)
    return value


def parse_geometry(tok: Token, param: str) -> bytes:
    wkt = tok.text[tok.text.index("'") + 1:-1].replace("''", "'")
    where = tok.pos + 1
    if not wkt.strip():
        raise FilterError("the geography literal is empty; write e.g. geography'POINT(105.8 21.0)'",
                          where, param)
    if wkt.count(",") > MAX_GEO_POINTS:
        raise FilterError(f"the geography literal has more than {MAX_GEO_POINTS} points", where, param)
    try:
        with warnings.catch_warnings():  # a coordinate past float's range: refused below
            warnings.simplefilter("ignore", RuntimeWarning)
            geom = shapely.from_wkt(wkt)
    except (ShapelyError, ValueError, TypeError) as err:
        raise FilterError(f"the geography literal is not WKT: {str(err)[:160]}", where, param) from None
    if geom is None or geom.is_empty:
        raise FilterError("the geography literal is empty", where, param)
    if shapely.get_srid(geom) not in (0, 4326):
        raise FilterError("the geography literal must be in WGS 84 longitude/latitude", where, param)
    coords = shapely.get_coordinates(geom)
    if not (len(coords) and (abs(coords[:, 0]) <= 180).all() and (abs(coords[:, 1]) <= 90).all()):
        raise FilterError("the geography literal's coordinates must be longitude -180..180 then "
                          "latitude -90..90, all finite", where, param)
    if not geom.is_valid:
        raise FilterError(f"the geography literal is not a valid geometry: {explain_validity(geom)}",
                          where, param)
    return shapely.to_wkb(geom, output_dimension=2)


# ---------------------------------------------------------------- parser
class Parser:
    def __init__(self, text: str, param: str = "$filter") -> None:
        self.param = param
        self.text = text
        self.tokens = tokenize(text, param)
        self.i = 0
        self.depth = 0

    # -- helpers
    def error(self, reason: str, tok: Token | None = None) -> FilterError:
        pos = (tok.pos + 1) if tok is not None else len(self.text) + 1
        return FilterError(reason, pos, self.param)

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self, expected: str) -> Token:
        tok = self.peek()
        if tok is None:
            raise self.error(f"expected {expected}, but the text ends")
        self.i += 1
        return tok

    def at(self, *names: str) -> Token | None:
        tok = self.peek()
        if tok is not None and tok.kind == "name" and tok.text in names:
            return tok
        return None

    def at_punct(self, ch: str) -> Token | None:
        tok = self.peek()
        return tok if tok is not None and tok.kind == "punct" and tok.text == ch else None

    def expect_punct(self, ch: str, what: str) -> Token:
        tok = self.peek()
        if tok is None or tok.kind != "punct" or tok.text != ch:
            found = f"found {tok.text!r}" if tok else "the text ends"
            raise self.error(f"expected {ch!r} {what}, but {found}", tok)
        self.i += 1
        return tok

    def deeper(self, tok: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", tok)

    # -- entry points
    def expression(self) -> Node:
        """One whole boolean expression: nothing may follow it."""
        node = self.or_()
        tok = self.peek()
        if tok is not None:
            raise self.error(f"unexpected {tok.text!r} after a complete expression "
                             "(join conditions with 'and' or 'or')", tok)
        return node

    def order_items(self) -> list[tuple[Node, bool]]:
        """``expr [asc|desc], …`` for ``$orderby``: (expression, descending)."""
        items = []
        while True:
            node = self.or_()
            desc = False
            tok = self.at("asc", "desc")
            if tok:
                self.i += 1
                desc = tok.text == "desc"
            items.append((node, desc))
            if self.at_punct(","):
                self.i += 1
                continue
            tok = self.peek()
            if tok is not None:
                raise self.error(f"expected ',', 'asc' or 'desc', but found {tok.text!r}", tok)
            return items

    # -- grammar
    def or_(self) -> Node:
        first = self.and_()
        items = [first]
        while self.at("or"):
            self.i += 1
            items.append(self.and_())
        return items[0] if len(items) == 1 else Logic("or", tuple(items), _pos(first))

    def and_(self) -> Node:
        first = self.not_()
        items = [first]
        while self.at("and"):
            self.i += 1
            items.append(self.not_())
        return items[0] if len(items) == 1 else Logic("and", tuple(items), _pos(first))

    def not_(self) -> Node:
        tok = self.at("not")
        if tok:
            self.i += 1
            self.deeper(tok)
            item = self.not_()
            self.depth -= 1
            return Not(item, tok.pos + 1)
        return self.cmp()

    def cmp(self) -> Node:
        left = self.primary()
        tok = self.peek()
        if tok is not None and tok.kind == "name" and tok.text in ARITH_OPS:
            raise self.error(f"the arithmetic operator {tok.text!r} is not supported here", tok)
        if tok is not None and tok.kind == "name" and tok.text in ("has", "in"):
            raise self.error(f"the operator {tok.text!r} is not supported; use eq with or", tok)
        op = self.at(*CMP_OPS)
        if not op:
            return left
        self.i += 1
        right = self.primary()
        nxt = self.at(*CMP_OPS)
        if nxt:
            raise self.error("comparisons cannot be chained; join them with 'and'", nxt)
        return Cmp(op.text, left, right, op.pos + 1)

    def primary(self) -> Node:
        tok = self.next("a value, a property or '('")
        if tok.kind == "punct":
            if tok.text != "(":
                raise self.error(f"expected a value, a property or '(', but found {tok.text!r}", tok)
            self.deeper(tok)
            node = self.or_()
            self.expect_punct(")", f"to close the '(' at position {tok.pos + 1}")
            self.depth -= 1
            return node
        if tok.kind == "text":
            return Lit(tok.text[1:-1].replace("''", "'"), "text", tok.pos + 1)
        if tok.kind == "number":
            return Lit(parse_number(tok.text, tok.pos, self.param), "number", tok.pos + 1)
        if tok.kind == "time":
            return Lit(parse_time(tok.text, tok.pos, self.param), "time", tok.pos + 1)
        if tok.kind == "geo":
            return Lit(parse_geometry(tok, self.param), "geom", tok.pos + 1)
        # a name: a constant, a keyword out of place, a function, or a property path
        if tok.text in ("true", "false"):
            return Lit(tok.text == "true", "bool", tok.pos + 1)
        if tok.text == "null":
            return Lit(None, "null", tok.pos + 1)
        if tok.text in KEYWORDS or tok.text in ("asc", "desc"):
            raise self.error(f"expected a value, a property or '(', but found the keyword "
                             f"{tok.text!r}", tok)
        nxt = self.peek()
        if nxt is not None and nxt.kind == "text" and nxt.pos == tok.pos + len(tok.text):
            raise self.error(f"unknown typed literal {tok.text}'…'; only geography'…' and "
                             "geometry'…' are read", tok)
        if self.at_punct("("):
            self.i += 1
            self.deeper(tok)
            args: list[Node] = []
            if not self.at_punct(")"):
                while True:
                    args.append(self.or_())
                    if self.at_punct(","):
                        self.i += 1
                        continue
                    break
            self.expect_punct(")", f"to close the call of {tok.text}()")
            self.depth -= 1
            return Call(tok.text, tuple(args), tok.pos + 1)
        return Path(tuple(tok.text.split("/")), tok.pos + 1)


def _pos(node: Node) -> int:
    return node.pos


def parse(text: str, param: str = "$filter") -> Node:
    return Parser(text, param).expression()


def parse_orderby(text: str, param: str = "$orderby") -> list[tuple[Node, bool]]:
    p = Parser(text, param)
    if not p.tokens:
        raise FilterError("is empty; name a property, e.g. phenomenonTime desc", None, param)
    return p.order_items()
