"""The SensorThings ``$filter`` (and ``$orderby``) parser and compiler fed 100,000 generated
inputs, the way tests/fuzz/test_fuzz_decoders.py feeds the decoders: nothing but its own
refusal (a 400 naming ``$filter``/``$orderby`` with a reason) escapes, and every filter that
compiles binds exactly the parameters its SQL uses (an unused or missing ``$n`` is an error
in PostgreSQL, i.e. a 500). tests/server/test_sta.py runs filters of the same generator
through the API against PostgreSQL.

Each Hypothesis example draws a seed: ``BASE`` filters built from the grammar over a random
entity set's own properties (comparisons, and/or/not, functions, geo.intersects, times,
JSON members, now and then a wrong type or a keyword out of place), each followed by
``MUTANTS`` broken copies (a span cut, repeated or swapped, a quote, a parenthesis, a NUL,
an unpaired surrogate or a huge number put in).
"""

from __future__ import annotations

import random
import re
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from server.api.sta.filter import FilterError, parse, parse_orderby
from server.api.sta.model import SETS
from server.api.sta.sql import Compiler
from server.errors import Invalid
from tests.fuzz.test_fuzz_decoders import FUZZ

TARGET = 100_000
BASE = 10
MUTANTS = 9
seen: Counter[str] = Counter()

FIELDS_OF: dict[str, dict[str, str]] = {
    name: {path: prop.type for path, prop in es.props.items()} for name, es in SETS.items()}

TEXTS = ["SL-000001", "power_w", "it''s", "", "é lamp", "streetlight", "W", "online", "%", "_"]
NUMBERS = ["0", "-1", "3.5", "1e3", "88", "-0.0", "1e308", "2.5E-3", "40"]
TIMES = ["2026-11-20T00:00:00Z", "2026-11-20", "2026-11-20T10:00:00.123+07:00",
         "2026-11-21T01:00:00.123456789Z", "2000-01-01T00:00Z", "9999-12-30T00:00:00Z"]
GEOMS = ["POINT(105.84 21.59)", "POLYGON((105.83 21.58, 105.85 21.58, 105.85 21.6, 105.83 21.6, "
         "105.83 21.58))", "LINESTRING(105 21, 106 22)", "SRID=4326;POINT(1 2)",
         "MULTIPOINT((1 2), (3 4))"]
MEMBERS = ["kind", "ward", "status", "unit", "value_type", "metrics", "nosuch", "a/b"]
FUNCS_OF = {  # function: (argument types, result type)
    "substringof": (("text", "text"), "bool"), "startswith": (("text", "text"), "bool"),
    "endswith": (("text", "text"), "bool"), "contains": (("text", "text"), "bool"),
    "length": (("text",), "number"), "indexof": (("text", "text"), "number"),
    "tolower": (("text",), "text"), "toupper": (("text",), "text"), "trim": (("text",), "text"),
    "concat": (("text", "text"), "text"), "year": (("time",), "number"),
    "hour": (("time",), "number"), "now": ((), "time"), "round": (("number",), "number"),
    "floor": (("number",), "number"), "ceiling": (("number",), "number"),
    "geo.intersects": (("geom", "geom"), "bool"), "st_within": (("geom", "geom"), "bool"),
    "st_disjoint": (("geom", "geom"), "bool"),
}
ODD = ["(", ")", "'", "''", ",", "/", " ", "\x00", "\ud800", "é", "eq", " and ", " or ", "not ",
       "9" * 400, "geography'", "$", "@iot.id", "-", ".", ":", "Z", "T", "add", "null", "\t"]


def literal(rnd: random.Random, t: str) -> str:
    if t == "text":
        return f"'{rnd.choice(TEXTS)}'"
    if t == "number":
        return rnd.choice(NUMBERS)
    if t == "time":
        return rnd.choice(TIMES) if rnd.random() < 0.9 else f"'{rnd.choice(TIMES)}'"
    if t == "bool":
        return rnd.choice(["true", "false"])
    if t == "geom":
        return f"geography'{rnd.choice(GEOMS)}'"
    return "null"


def value(rnd: random.Random, fields: dict[str, str], t: str, depth: int) -> str:
    """An expression of type ``t``: a property, a literal or a function call."""
    paths = [p for p, pt in fields.items() if pt == t]
    r = rnd.random()
    if paths and r < 0.45:
        return rnd.choice(paths)
    if t != "geom" and depth < 3 and r < 0.6:
        funcs = [f for f, (_, res) in FUNCS_OF.items() if res == t]
        if funcs:
            f = rnd.choice(funcs)
            args = ", ".join(value(rnd, fields, a, depth + 1) for a in FUNCS_OF[f][0])
            return f"{f}({args})"
    return literal(rnd, t)


def condition(rnd: random.Random, fields: dict[str, str], depth: int = 0) -> str:
    r = rnd.random()
    if depth < 3 and r < 0.2:
        op = rnd.choice(["and", "or"])
        return f"{condition(rnd, fields, depth + 1)} {op} {condition(rnd, fields, depth + 1)}"
    if depth < 3 and r < 0.27:
        return f"not ({condition(rnd, fields, depth + 1)})"
    if depth < 3 and r < 0.32:
        return f"({condition(rnd, fields, depth + 1)})"
    if r < 0.42:
        geoms = [p for p, pt in fields.items() if pt == "geom"] or ["location"]
        return f"{rnd.choice(['geo.intersects', 'st_within', 'st_disjoint'])}({rnd.choice(geoms)}, " \
               f"{literal(rnd, 'geom')})"
    if r < 0.5:
        jsons = [p for p, pt in fields.items() if pt == "json"]
        if jsons:
            lit = literal(rnd, rnd.choice(["text", "number", "bool", "null"]))
            return f"{rnd.choice(jsons)}/{rnd.choice(MEMBERS)} {rnd.choice(['eq', 'ne', 'gt'])} {lit}"
    if r < 0.55:
        return f"{value(rnd, fields, 'text', depth)} {rnd.choice(['eq', 'ne'])} null"
    t = rnd.choice(["text", "number", "time", "bool", "text", "number", "time"])
    left = value(rnd, fields, t, depth)
    right_t = t if rnd.random() < 0.92 else rnd.choice(["text", "number", "time", "bool", "geom"])
    op = rnd.choice(["eq", "ne"] if t == "bool" else ["eq", "ne", "gt", "ge", "lt", "le"])
    return f"{left} {op} {value(rnd, fields, right_t, depth)}"


def generate_filter(rnd: random.Random, set_name: str) -> str:
    return condition(rnd, FIELDS_OF[set_name])


def orderby(rnd: random.Random, fields: dict[str, str]) -> str:
    items = [f"{rnd.choice(list(fields))}{rnd.choice(['', ' asc', ' desc'])}"
             for _ in range(rnd.randint(1, 3))]
    return ", ".join(items)


def mutate(text: str, rnd: random.Random) -> str:
    if not text:
        return rnd.choice(ODD)
    i = rnd.randrange(len(text) + 1)
    j = min(len(text), i + rnd.randint(1, 12))
    match rnd.randrange(6):
        case 0:
            return text[:i] + text[j:]  # a span cut
        case 1:
            return text[:i] + rnd.choice(ODD) + text[i:]  # something odd put in
        case 2:
            return text[:j] + text[i:]  # a span repeated
        case 3:
            return text[:i]  # cut short
        case 4:
            words = text.split(" ")
            a, b = rnd.randrange(len(words)), rnd.randrange(len(words))
            words[a], words[b] = words[b], words[a]
            return " ".join(words)
        case _:
            return text[:i] + rnd.choice(ODD) + text[j:]  # a span replaced


def check(text: str, set_name: str, param: str) -> None:
    es = SETS[set_name]
    params: list = [None] * 5 if es.telemetry else []
    first = len(params)
    try:
        if param == "$filter":
            sql = Compiler(es.props, params, es.name, param).where(parse(text, param))
        else:
            sql = ", ".join(Compiler(es.props, params, es.name, param).order(parse_orderby(text, param)))
    except FilterError as err:
        assert err.extra["field"] == param and err.reason.strip(), (text, err)
        seen["refused"] += 1
        return
    except Invalid as err:  # pragma: no cover - FilterError is the only refusal
        raise AssertionError(f"{text!r}: refused without a position: {err}") from None
    used = {int(n) for n in re.findall(r"\$(\d+)", sql)}
    assert used == set(range(first + 1, len(params) + 1)), (text, sql, len(params))
    seen["compiled"] += 1


@FUZZ
@given(st.integers(0, 2**32 - 1))
def test_sta_filter_parser_and_compiler(seed) -> None:
    rnd = random.Random(seed)
    for _ in range(BASE):
        set_name = rnd.choice(sorted(FIELDS_OF))
        fields = FIELDS_OF[set_name]
        param = "$orderby" if rnd.random() < 0.1 else "$filter"
        text = condition(rnd, fields) if param == "$filter" else orderby(rnd, fields)
        check(text, set_name, param)
        for _ in range(MUTANTS):
            text2 = mutate(text, rnd)
            for _ in range(rnd.randrange(3)):
                text2 = mutate(text2, rnd)
            check(text2, set_name, param)
        seen["sta"] += 1 + MUTANTS


def test_the_sta_filter_saw_100k_inputs() -> None:
    """Runs after the fuzzer in this module (pytest keeps file order); both outcomes occur."""
    assert seen["sta"] >= TARGET, f"only {seen['sta']} inputs"
    assert seen["compiled"] > TARGET // 10 and seen["refused"] > TARGET // 10, seen
