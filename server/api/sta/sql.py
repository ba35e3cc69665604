"""``$filter`` and ``$orderby`` trees (:mod:`.filter`) compiled to SQL over one entity set's
properties. Every literal becomes a bound parameter (``$n``); the only text that reaches the
SQL is the entity set's own column expressions and the fixed operator and function table
below. Type errors (a text compared with a number, a geometry ordered) are refusals naming
the position, so a compiled filter runs without SQL errors (tests/fuzz/test_fuzz_sta.py
runs thousands of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.api.sta.filter import Call, Cmp, FilterError, Lit, Logic, Node, Not, Path, parse_time


@dataclass(frozen=True, slots=True)
class Prop:
    """A property a filter may name: its SQL over the entity set's aliases, and its type
    ("text", "number", "time", "bool", "geom", or "json": a JSON object whose members are
    named by the rest of the path, e.g. ``properties/ward``)."""

    sql: str
    type: str


@dataclass(frozen=True, slots=True)
class Val:
    sql: str
    type: str  # as Prop.type, plus "null"
    label: str
    json: tuple[str, str] | None = None  # (object SQL, text[] parameter) of a JSON member


OPS = {"eq": "=", "ne": "is distinct from", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
CASTS = {"text": "text", "number": "float8", "time": "timestamptz", "bool": "boolean"}
GEO_FUNCS = {
    "geo.intersects": "ST_Intersects", "st_intersects": "ST_Intersects", "st_within": "ST_Within",
    "st_contains": "ST_Contains", "st_disjoint": "ST_Disjoint", "st_touches": "ST_Touches",
    "st_overlaps": "ST_Overlaps", "st_crosses": "ST_Crosses", "st_equals": "ST_Equals",
}
# name: (argument types, result type, SQL template over the arguments {0}, {1})
FUNCS: dict[str, tuple[tuple[str, ...], str, str]] = {
    **{name: (("geom", "geom"), "bool", fn + "({0}, {1})") for name, fn in GEO_FUNCS.items()},
    "substringof": (("text", "text"), "bool", "(strpos({1}, {0}) > 0)"),
    "contains": (("text", "text"), "bool", "(strpos({0}, {1}) > 0)"),
    "startswith": (("text", "text"), "bool", "starts_with({0}, {1})"),
    "endswith": (("text", "text"), "bool", "(right({0}, char_length({1})) = {1})"),
    "length": (("text",), "number", "char_length({0})::float8"),
    "indexof": (("text", "text"), "number", "(strpos({0}, {1}) - 1)::float8"),
    "tolower": (("text",), "text", "lower({0})"),
    "toupper": (("text",), "text", "upper({0})"),
    "trim": (("text",), "text", "btrim({0})"),
    "concat": (("text", "text"), "text", "concat({0}, {1})"),
    **{part: (("time",), "number", f"extract({part} from {{0}} at time zone 'UTC')::float8")
       for part in ("year", "month", "day", "hour", "minute", "second")},
    "now": ((), "time", "now()"),
    "round": (("number",), "number", "round({0})"),
    "floor": (("number",), "number", "floor({0})"),
    "ceiling": (("number",), "number", "ceil({0})"),
}


def canonical(parts: tuple[str, ...]) -> str:
    """``id`` is ``@iot.id``'s short name in any segment."""
    return "/".join("@iot.id" if p == "id" else p for p in parts)


class Compiler:
    """Compiles trees against ``props``, appending literals to ``params`` (shared with the
    rest of the statement, so numbering continues)."""

    def __init__(self, props: Mapping[str, Prop], params: list[Any], set_name: str,
                 param: str = "$filter") -> None:
        self.props = props
        self.params = params
        self.set_name = set_name
        self.param = param

    def error(self, reason: str, pos: int | None) -> FilterError:
        return FilterError(reason, pos, self.param)

    def bind(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${len(self.params)}::{cast}"

    # ---------------------------------------------------------------- entry points
    def where(self, node: Node) -> str:
        v = self.value(node)
        if v.json is not None:
            v = self.as_type(v, "bool", node.pos)
        if v.type == "null":
            return "false"
        if v.type != "bool":
            raise self.error(f"{v.label} is a {v.type}, not a condition; compare it, e.g. "
                             f"{v.label} eq …", node.pos)
        return v.sql

    def order(self, items: list[tuple[Node, bool]]) -> list[str]:
        out = []
        for node, desc in items:
            v = self.value(node)
            if v.json is not None:
                v = self.as_type(v, "text", node.pos)
            if v.type == "geom":
                raise self.error(f"cannot order by the geometry {v.label}", node.pos)
            out.append(f"{v.sql} {'desc' if desc else 'asc'}")
        return out

    # ---------------------------------------------------------------- values
    def value(self, node: Node) -> Val:
        match node:
            case Lit():
                return self.literal(node)
            case Path():
                return self.path(node)
            case Call():
                return self.call(node)
            case Cmp():
                return Val(self.compare(node), "bool", "a comparison")
            case Logic():
                joiner = f" {node.op} "
                return Val("(" + joiner.join(self.where(i) for i in node.items) + ")", "bool",
                           f"an '{node.op}'")
            case Not():
                return Val(f"(not {self.where(node.item)})", "bool", "a 'not'")
        raise self.error("unreadable expression", None)  # pragma: no cover - the parser's types

    def literal(self, lit: Lit) -> Val:
        label = "the literal " + ("null" if lit.value is None else "geography'…'"
                                  if lit.type == "geom" else repr(lit.value))
        if lit.type == "null":
            return Val("null", "null", label)
        if lit.type == "geom":
            return Val(f"ST_GeomFromWKB({self.bind(lit.value, 'bytea')}, 4326)", "geom", label)
        return Val(self.bind(lit.value, CASTS[lit.type]), lit.type, label)

    def time_literal(self, lit: Lit) -> Val:
        return self.literal(Lit(parse_time(lit.value, lit.pos - 1, self.param), "time", lit.pos))

    def path(self, node: Path) -> Val:
        key = canonical(node.parts)
        prop = self.props.get(key)
        if prop is not None and prop.type != "json":
            return Val(prop.sql, prop.type, repr(node.text))
        parts = key.split("/")
        for i in range(len(parts), 0, -1):
            head = self.props.get("/".join(parts[:i]))
            if head is not None and head.type == "json":
                members = parts[i:]
                if not members:
                    raise self.error(f"{node.text!r} is an object; name one of its members, "
                                     f"e.g. {node.text}/kind", node.pos)
                return Val("", "json", repr(node.text), (head.sql, self.bind(members, "text[]")))
            if head is not None:
                break
        names = sorted(k for k, p in self.props.items())
        raise self.error(f"{self.set_name} have no property {node.text!r}; filter on "
                         f"{', '.join(names)}", node.pos)

    def as_type(self, v: Val, want: str, pos: int) -> Val:
        """A JSON member read as ``want``: a member of another JSON type reads as null."""
        if v.json is None:
            return v
        obj, keys = v.json
        member = f"({obj} #> {keys})"
        if want == "text":
            return Val(f"({obj} #>> {keys})", "text", v.label)
        if want == "number":
            # jsonb holds numbers float8 cannot (1e400): those read as null, not an error
            num = f"{member}::numeric"
            return Val(f"(case when jsonb_typeof({member}) = 'number' and ({num} = 0 or abs({num}) "
                       f"between 1e-300 and 1e300) then {num}::float8 end)", "number", v.label)
        if want == "bool":
            return Val(f"(case when jsonb_typeof({member}) = 'boolean' then {member}::boolean end)",
                       "bool", v.label)
        raise self.error(f"{v.label} is a JSON member: compare it with text, a number, true or "
                         f"false (not a {want})", pos)

    def call(self, node: Call) -> Val:
        spec = FUNCS.get(node.name)
        if spec is None:
            raise self.error(f"unknown function {node.name}(); the functions are "
                             f"{', '.join(sorted(FUNCS))}", node.pos)
        types, result, template = spec
        if len(node.args) != len(types):
            raise self.error(f"{node.name}() takes {len(types)} argument"
                             f"{'' if len(types) == 1 else 's'}, got {len(node.args)}", node.pos)
        args = []
        for arg, want in zip(node.args, types, strict=True):
            v = self.value(arg)
            if v.json is not None:
                v = self.as_type(v, want, arg.pos)
            if v.type == "null":
                v = Val(f"null::{CASTS.get(want, 'geometry')}", want, v.label)
            if v.type != want:
                raise self.error(f"{node.name}() needs a {want} here, but {v.label} is a {v.type}",
                                 arg.pos)
            args.append(v.sql)
        return Val(template.format(*args), result, f"{node.name}()")

    def compare(self, node: Cmp) -> str:
        # A time may be written as a quoted string ('2026-12-01T00:00:00Z'), as some clients
        # do: the literal is read as a time when the other side is one (and bound once only).
        if _is_text(node.left):
            right = self.value(node.right)
            left = self.time_literal(node.left) if right.type == "time" else self.value(node.left)
        else:
            left = self.value(node.left)
            right = (self.time_literal(node.right) if left.type == "time" and _is_text(node.right)
                     else self.value(node.right))
        if "null" in (left.type, right.type):
            if node.op not in ("eq", "ne"):
                raise self.error(f"only eq and ne compare with null, not {node.op}", node.pos)
            other = right if left.type == "null" else left
            if other.type == "null":
                return "true" if node.op == "eq" else "false"
            if other.json is not None:
                other = self.as_type(other, "text", node.pos)
            return f"({other.sql} is {'not ' if node.op == 'ne' else ''}null)"
        if left.json is not None and right.json is not None:
            left, right = self.as_type(left, "text", node.pos), self.as_type(right, "text", node.pos)
        elif left.json is not None:
            left = self.as_type(left, right.type, node.pos)
        elif right.json is not None:
            right = self.as_type(right, left.type, node.pos)
        if {left.type, right.type} == {"number", "bool"}:
            # a true/false result is stored as 1/0 (Observations of a TruthObservation stream)
            num, other = (left, right) if left.type == "number" else (right, left)
            as_number = Val(f"(case {other.sql} when true then 1.0::float8 when false then 0.0::float8 "
                            "end)", "number", other.label)
            left, right = (num, as_number) if num is left else (as_number, num)
        if left.type != right.type:
            raise self.error(f"cannot compare {left.label} (a {left.type}) with {right.label} "
                             f"(a {right.type})", node.pos)
        if left.type == "geom":
            raise self.error("geometries are compared with geo.intersects(…) or st_within(…), "
                             f"not {node.op}", node.pos)
        if left.type == "bool" and node.op not in ("eq", "ne"):
            raise self.error(f"true and false compare with eq and ne only, not {node.op}", node.pos)
        return f"({left.sql} {OPS[node.op]} {right.sql})"


def _is_text(node: Node) -> bool:
    return isinstance(node, Lit) and node.type == "text"
