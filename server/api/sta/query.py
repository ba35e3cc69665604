"""The query options of a request (``$filter``, ``$orderby``, ``$top``, ``$skip``, ``$count``,
``$select``, ``$expand`` one level deep with its own options) and the resource path
(``Things('SL-0001')/Datastreams``), read into plain values. Pure, no I/O; every refusal
is a 400 naming the option (or ``@iot.id`` / ``path``) and saying what would be read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from server.api.sta.filter import Node, parse, parse_orderby
from server.api.sta.model import SETS, EntitySet
from server.errors import Invalid, NotFound

TOP_DEFAULT = 100
TOP_MAX = 10_000
SKIP_MAX = 10_000_000
EXPAND_TOP_DEFAULT = 100
OPTIONS = ("$filter", "$orderby", "$top", "$skip", "$count", "$select", "$expand")
EXPAND_OPTIONS = ("$filter", "$orderby", "$top", "$skip", "$count", "$select")
MAX_EXPANDS = 8


@dataclass(slots=True)
class Options:
    top: int = TOP_DEFAULT
    skip: int = 0
    count: bool = False
    filter: Node | None = None
    orderby: list[tuple[Node, bool]] | None = None
    select: tuple[str, ...] | None = None
    expand: list[Expand] = field(default_factory=list)
    raw: dict[str, str] = field(default_factory=dict)  # as given, for the next pages' links


@dataclass(slots=True)
class Expand:
    nav: str
    options: Options


def _integer(text: str, name: str, hi: int) -> int:
    t = text.strip()
    if not (t.isascii() and t.isdigit()) or len(t) > 12:
        raise Invalid(f"{name} must be a whole number from 0 to {hi}, got {text[:40]!r}", field=name)
    value = int(t)
    if value > hi:
        raise Invalid(f"{name} must be at most {hi}, got {value}", field=name)
    return value


def selectable(es: EntitySet) -> list[str]:
    return ["@iot.id", "@iot.selfLink", *es.fields, *es.navs]


def parse_options(query: Mapping[str, str], es: EntitySet, *, nested: str | None = None) -> Options:
    """``query``'s options for the entity set ``es``; ``nested`` names the ``$expand`` item
    they came from (they may not expand again: one level)."""
    allowed = EXPAND_OPTIONS if nested else OPTIONS
    where = f" inside $expand={nested}(…)" if nested else ""
    opts = Options(top=EXPAND_TOP_DEFAULT if nested else TOP_DEFAULT)
    for name, value in query.items():
        if not name.startswith("$"):
            continue  # OData: custom options (no $) are the service's to ignore
        if name not in allowed:
            if name == "$expand":
                raise Invalid(f"$expand reaches one level here: {nested} cannot expand again",
                              field="$expand")
            raise Invalid(f"unknown query option {name!r}{where}; the options are "
                          f"{', '.join(allowed)}", field=name)
        opts.raw[name] = value
        if name == "$top":
            opts.top = _integer(value, name, TOP_MAX)
        elif name == "$skip":
            opts.skip = _integer(value, name, SKIP_MAX)
        elif name == "$count":
            if value not in ("true", "false"):
                raise Invalid(f"$count must be true or false, got {value[:40]!r}", field="$count")
            opts.count = value == "true"
        elif name == "$filter":
            opts.filter = parse(value, "$filter")
        elif name == "$orderby":
            opts.orderby = parse_orderby(value, "$orderby")
        elif name == "$select":
            opts.select = _select(value, es)
        elif name == "$expand":
            opts.expand = _expand(value, es)
    return opts


def _select(text: str, es: EntitySet) -> tuple[str, ...]:
    names = [n.strip() for n in text.split(",")]
    known = selectable(es)
    out = []
    for n in names:
        n = "@iot.id" if n == "id" else n
        if n not in known:
            raise Invalid(f"$select: {es.name} have no property {n[:60]!r}; choose from "
                          f"{', '.join(known)}", field="$select")
        out.append(n)
    return tuple(dict.fromkeys(out))


def split_top(text: str, sep: str, param: str) -> list[str]:
    """``text`` split at ``sep`` outside parentheses and quoted strings."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise Invalid(f"{param}: a ')' at position {i + 1} closes nothing", field=param)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise Invalid(f"{param}: a quoted string is not closed", field=param)
    if depth:
        raise Invalid(f"{param}: a '(' is not closed", field=param)
    parts.append(text[start:])
    return parts


_EXPAND_ITEM = re.compile(r"^\s*([A-Za-z]+(?:/[A-Za-z]+)*)\s*(?:\((.*)\))?\s*$", re.S)


def _expand(text: str, es: EntitySet) -> list[Expand]:
    items = split_top(text, ",", "$expand")
    if len(items) > MAX_EXPANDS:
        raise Invalid(f"$expand names {len(items)} navigation properties; at most {MAX_EXPANDS}",
                      field="$expand")
    out: list[Expand] = []
    for item in items:
        m = _EXPAND_ITEM.match(item)
        if not m:
            raise Invalid(f"$expand: {item.strip()[:60]!r} is not a navigation property, optionally "
                          "with options in parentheses, e.g. Datastreams($top=5;$select=name)",
                          field="$expand")
        path, inner = m.group(1), m.group(2)
        if "/" in path:
            raise Invalid(f"$expand reaches one level: expand {path.split('/')[0]} and follow its "
                          f"navigation links for {path[:60]!r}", field="$expand")
        nav = es.navs.get(path)
        if nav is None:
            raise Invalid(f"$expand: {es.name} have no navigation property {path!r}; choose from "
                          f"{', '.join(es.navs)}", field="$expand")
        if any(e.nav == path for e in out):
            raise Invalid(f"$expand names {path} twice", field="$expand")
        query: dict[str, str] = {}
        for part in split_top(inner or "", ";", "$expand"):
            if not part.strip():
                continue
            name, eq, value = part.partition("=")
            name = name.strip()
            if not eq or not name.startswith("$"):
                raise Invalid(f"$expand={path}(…): {part.strip()[:60]!r} is not an option such as "
                              "$top=5", field="$expand")
            if name in query:
                raise Invalid(f"$expand={path}(…) gives {name} twice", field="$expand")
            query[name] = value
        out.append(Expand(path, parse_options(query, SETS[nav.target], nested=path)))
    return out


# ---------------------------------------------------------------- the resource path
@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    key: str | None = None  # an entity's id, when the segment names one


_SEGMENT = re.compile(r"^([A-Za-z@$][A-Za-z0-9_.@$]*)(?:\((.*)\))?$", re.S)


def parse_key(text: str, where: str) -> str:
    """``'SL-0001'`` (a quote inside doubled) or a bare number: the id as text."""
    t = text.strip()
    if len(t) >= 2 and t[0] == "'" and t[-1] == "'":
        inner = t[1:-1]
        if "'" in inner.replace("''", ""):
            raise Invalid(f"the id in {where} has a lone quote; write a quote inside an id as ''",
                          field="@iot.id")
        value = inner.replace("''", "'")
        if not value:
            raise Invalid(f"the id in {where} is empty", field="@iot.id")
        return value
    if t.isascii() and t.isdigit():
        return t
    raise Invalid(f"the id in {where} must be quoted, e.g. Things('SL-000123'), got {text[:60]!r}",
                  field="@iot.id")


def parse_path(path: str) -> list[Segment]:
    """The segments of a resource path: an entity set, optionally keyed, then navigation
    properties (keyed or not), properties, ``$value`` or ``$ref``."""
    out = []
    for raw in path.strip("/").split("/"):
        m = _SEGMENT.match(raw)
        if not m:
            raise NotFound(f"no resource {raw[:80]!r} here; the entity sets are {', '.join(SETS)}",
                           field="path")
        key = parse_key(m.group(2), raw[:80]) if m.group(2) is not None else None
        out.append(Segment(m.group(1), key))
    return out


