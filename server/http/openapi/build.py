"""The small builders the document is written with: types, operations, responses."""

from __future__ import annotations

from typing import Any

from server.vocab import AlarmState, CommandState, DeviceStatus, Role, Severity, values

JSON = "application/json"
GEOJSON = "application/geo+json"
PROBLEM = "application/problem+json"

ROLES = list(values(Role))
SEVERITIES = list(values(Severity))
COMMAND_STATES = list(values(CommandState))
ALARM_STATES = list(values(AlarmState))
DEVICE_STATUSES = list(values(DeviceStatus))


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    t = schema.get("type")
    if isinstance(t, str):
        return {**schema, "type": [t, "null"]}
    if "$ref" in schema or "oneOf" in schema or "enum" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
OBJ = {"type": "object"}
ANY: dict[str, Any] = {}


def obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    out.update(extra)
    return out


def arr(items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **extra}


# ---------------------------------------------------------------- responses and parameters

_ERROR_TEXT = {
    400: "The request is not valid; the problem says what to change.",
    401: "No token, or an unknown or revoked one.",
    403: "The token's role may not do this.",
    404: "No such resource.",
    409: "Conflicts with the current state.",
    413: "The body is larger than this endpoint accepts.",
    415: "Send JSON.",
    422: "Well-formed but not acceptable; every problem is listed.",
    429: "Too many requests for this token; see Retry-After.",
    502: "A device the server relays (a camera) did not answer as it should.",
    503: "A service this needs is not running.",
}
RESPONSES = {
    str(code): {
        "description": text,
        "content": {PROBLEM: {"schema": ref("Problem")}},
        **({"headers": {"Retry-After": {"schema": INT, "description": "seconds"}}}
           if code == 429 else {}),
        **({"headers": {"WWW-Authenticate": {"schema": STR}}} if code == 401 else {}),
    }
    for code, text in _ERROR_TEXT.items()
}
AUTH_ERRORS = (401, 429)


def param(name: str, where: str = "query", schema: dict[str, Any] | None = None,
          description: str = "", required: bool | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "in": where, "schema": schema or STR}
    if description:
        out["description"] = description
    if where == "path" or required:
        out["required"] = True
    return out


def path_id(name: str = "id", schema: dict[str, Any] | None = None,
            description: str = "") -> dict[str, Any]:
    return param(name, "path", schema or STR, description)


def body(schema: dict[str, Any], *types: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {t: {"schema": schema} for t in (types or (JSON,))}}


def ok(schema: dict[str, Any] | None, description: str = "OK", ctype: str = JSON,
       headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {ctype: {"schema": schema}}
    if headers:
        out["headers"] = headers
    return out


def op(summary: str, responses: dict[int | str, Any], *, tags: list[str],
       errors: tuple[int, ...] = (), params: list[dict[str, Any]] | None = None,
       request: dict[str, Any] | None = None, description: str = "",
       public: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "tags": tags}
    if description:
        out["description"] = description
    if params:
        out["parameters"] = params
    if request:
        out["requestBody"] = request
    resp = {str(k): v for k, v in responses.items()}
    # 400 everywhere: any path or query value with a NUL, invalid UTF-8 or over 1,024
    # characters is refused on every route (server/http/validate.py, input_middleware).
    codes = set(errors) | {400} | (set() if public else set(AUTH_ERRORS))
    if request:
        codes |= {413}
    for code in sorted(codes):
        resp[str(code)] = {"$ref": f"#/components/responses/{code}"}
    out["responses"] = resp
    if public:
        out["security"] = []
    return out


LOCATION = {"Location": {"schema": STR}}


