"""Request bodies and query strings checked by pydantic models, the ones the OpenAPI
document is derived from (server/http/openapi/), so the two cannot drift.

``await body(request, Model)`` and ``query(request, Model)`` answer one 400 problem that
names every field and what is wrong with it (``errors``: ``[{"field", "reason"}]``) and
says the first in ``detail``. Strings refuse NUL characters, which PostgreSQL cannot store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_to_bytes

from aiohttp import web
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import ErrorDetails

from server.http.jsonutil import read_json, text_flaw
from server.http.problems import Problem

M = TypeVar("M", bound=BaseModel)

NO_NUL = r"^[^\x00]*$"
# Text of any length, one line or many, but no NUL (PostgreSQL refuses it).
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
# Text with something in it besides blanks: blanks as str.strip() sees them, spelled out,
# because the regex engines (Rust's in pydantic, Python's, ECMA's) each read \s their own way.
_BLANKS = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
NAME = f"^[^\\x00]*[^\\x00{_BLANKS}][^\\x00]*$"
Name = Annotated[str, StringConstraints(pattern=NAME)]


class Body(BaseModel):
    """A JSON request body: unknown members are an error (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)


class Query(BaseModel):
    """A query string: every value arrives as text; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore", use_enum_values=True)


def csv_pattern(choices: Iterable[str]) -> str:
    alt = "(" + "|".join(choices) + ")"
    return f"^{alt}(,{alt})*$"


def _split(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    items = value.split(",")
    if "" in items:
        raise ValueError("an empty item; separate values by single commas, e.g. a,b")
    return items


def csv_of(item: Any, pattern: str, description: str) -> Any:
    """A comma-separated list in one query parameter (``?state=shelved,closed``)."""
    return Annotated[list[item], BeforeValidator(_split),
                     WithJsonSchema({"type": "string", "pattern": pattern,
                                     "description": description})]


_FLAGS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
# A yes/no query parameter: exactly these words (anything else is a 400, not a guess).
Flag = Annotated[StrictBool, BeforeValidator(lambda v: _FLAGS.get(v, v)),
                 WithJsonSchema({"type": "string", "enum": list(_FLAGS)})]


def number(*, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Any:
    """A JSON number (integer or not, never a string or a boolean) within bounds.

    Pydantic cannot push bounds into the ``int | float`` union's schema, so it is written
    out here (JSON Schema's own words) beside the same bounds it validates."""
    schema: dict[str, Any] = {"type": "number"}
    for key, value in (("exclusiveMinimum", gt), ("minimum", ge), ("maximum", le)):
        if value is not None:
            schema[key] = value
    return Annotated[StrictInt | StrictFloat, Field(gt=gt, ge=ge, le=le), WithJsonSchema(schema)]


_EXPLAINED: dict[str, str] = {}


def explain(pattern: str, reason: str) -> None:
    """Say what a pattern wants in words, for the problems that name a field."""
    _EXPLAINED[pattern] = reason


def field_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():  # not the branch tags of a union ("list[str]", "function-after")
            out += f".{part}" if out else part
    return out


def reason_of(err: ErrorDetails) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a member this request takes (unexpected member)"
    if kind in ("enum", "literal_error"):
        return f"must be one of {ctx.get('expected', '').replace(' or ', ', ')}, got {err['input']!r}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == NO_NUL:
            return "must not contain NUL characters"
        if ctx.get("pattern") in _EXPLAINED:
            return f"{_EXPLAINED[ctx['pattern']]}, got {err['input']!r}"
        if ctx.get("pattern") == NAME:
            return "must be a non-empty string without NUL characters"
        return f"must match {ctx.get('pattern')}, got {err['input']!r}"
    if kind == "string_too_short":
        return "must be a non-empty string"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer, got {err['input']!r}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false, got {err['input']!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return err["msg"].replace("Input should be", "must be") + f", got {err['input']!r}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"].replace("Input should be", "must be")


def problem(err: ValidationError, what: str = "the request") -> Problem:
    errors: list[dict[str, str]] = []
    for e in err.errors(include_url=False):
        field = field_name(e["loc"])
        if any(x["field"] == (field or "(body)") for x in errors):
            continue  # one reason per field: the first branch of a union says enough
        if not field and e["type"] in ("model_type", "model_attributes_type", "dict_type"):
            return Problem(400, f"send a JSON object as {what}")
        errors.append({"field": field or "(body)", "reason": reason_of(e)})
    first = errors[0]
    # "geometry has no coordinates" already names its field: say it once.
    detail = (first["reason"] if first["reason"].startswith(first["field"] + " ")
              else f"{first['field']} {first['reason']}")
    if first["reason"].startswith("is not a member"):
        detail = (f"unknown parameter {first['field']}" if what == "the query"
                  else f"unexpected member {first['field']} in {what}")
    if len(errors) > 1:
        detail = f"{len(errors)} problem(s) in {what}, the first: {detail}"
    return Problem(400, detail, errors=errors)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return isinstance(value, list) and any(_has_nul(v) for v in value)


def refuse_nul(doc: Any, what: str = "the body") -> None:
    """A 400 if any text in a free-form document (stored as jsonb) holds a NUL character."""
    if _has_nul(doc):
        raise Problem(400, f"text in {what} must not contain NUL characters (PostgreSQL "
                           "cannot store them)")


def parse(model: type[M], data: Any, what: str = "the request",
          context: dict[str, Any] | None = None) -> M:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        raise problem(err, what) from None


async def body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    """The JSON body as ``model``; an absent body is ``{}`` when ``optional``."""
    if optional and not (await request.read()).strip():
        return parse(model, {}, "the body")
    return parse(model, await read_json(request), "the body")


def query(request: web.Request, model: type[M]) -> M:
    """The query string as ``model`` (the first of repeated parameters; not ``token``)."""
    q = request.query
    data = {k: q.get(k) for k in q if k != "token"}
    return parse(model, data, "the query")


# Path segments and query values: ids, codes, times, bboxes and lists of a few dozen names.
MAX_PARAM_CHARS = 1024
# A SensorThings $filter may carry a polygon (geo.intersects); its own parser bounds it.
LONG_PARAMS = {"$filter": 8000}


def _bad_parameter(name: str, where: str, reason: str) -> Problem:
    return Problem(400, f"{where} parameter {name} {reason}", field=name,
                   errors=[{"field": name, "reason": reason}])


def _undecodable(raw: str) -> bool:
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@web.middleware
async def input_middleware(request: web.Request, handler):
    """Path and query values every handler can store or look up, checked in one place: valid
    UTF-8 (no unpaired surrogates), no NUL, at most ``MAX_PARAM_CHARS``; else a 400 that
    names the parameter. (asyncpg refuses a NUL in any text: an id with one was a 500.)"""
    raw_path, _, raw_query = request.raw_path.partition("?")
    bad = [seg for seg in raw_path.split("/") if _undecodable(seg)]
    for name, value in request.match_info.items():
        # yarl leaves a segment that is not UTF-8 percent-encoded as it came
        reason = ("is not valid UTF-8 (an unpaired surrogate?)" if any(seg in value for seg in bad)
                  else text_flaw(value, MAX_PARAM_CHARS))
        if reason:
            raise _bad_parameter(name, "path", reason)
    if bad:
        raise Problem(400, "the path is not valid UTF-8 once percent-decoded",
                      errors=[{"field": "(path)", "reason": "is not valid UTF-8"}])
    for pair in raw_query.split("&") if raw_query else ():
        raw_name, _, raw_value = pair.partition("=")
        name = unquote_to_bytes(raw_name.replace("+", " ")).decode("utf-8", "replace")
        try:
            value = unquote_to_bytes(raw_value.replace("+", " ")).decode("utf-8")
            reason = (text_flaw(name, MAX_PARAM_CHARS)
                      or text_flaw(value, LONG_PARAMS.get(name, MAX_PARAM_CHARS)))
        except UnicodeDecodeError:
            reason = "is not valid UTF-8 (an unpaired surrogate?)"
        if reason and name != "token":  # the auth middleware's: hashed, never stored
            raise _bad_parameter(name.replace("\x00", "\\x00")[:100], "query", reason)
    return await handler(request)


__all__ = [
    "Body",
    "Flag",
    "Name",
    "Query",
    "Text",
    "body",
    "csv_of",
    "csv_pattern",
    "field_name",
    "input_middleware",
    "number",
    "parse",
    "problem",
    "query",
    "reason_of",
]
