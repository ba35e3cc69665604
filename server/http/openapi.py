"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /api/v1/openapi.json``.

What a request may carry comes from the code that checks it, so the two cannot drift: the
pydantic models of server/api/models.py (bodies become components, query models become
parameters), the rule models of rules/models.py and the command catalogue. Responses and
the GeoJSON and CSV bodies the registry checks itself are still described here by hand.
Two tests keep it honest: every route the app registers under /api/v1 must appear here
(tests/server/test_openapi.py), and schemathesis sends generated requests to the live app
and checks every answer against this document.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from rules.models import Rule as RuleModel
from server import keys
from server.api import models
from server.commands.catalog import CATALOGUE
from server.http.jsonutil import json_response
from server.settings import Settings
from server.store.catalog import METRIC_NAMES
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


# ---------------------------------------------------------------- models

REF = "#/components/schemas/{model}"
# The request models (server/api/models.py): bodies become components, queries parameters.
BODY_MODELS: list[type[BaseModel]] = [
    *(model for model, _ in models.ALARM_ACTIONS.values()), models.CommandIn,
    models.GroupCommandIn, models.BacktestIn, models.CrewIn, models.CrewPatch, models.TokenIn,
]


def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A member's schema without pydantic's titles and ``null`` defaults; for a query
    parameter also without the ``null`` branch (a parameter is absent, never null)."""
    out = {k: v for k, v in prop.items() if k != "title" and not (k == "default" and v is None)}
    branches = out.get("anyOf")
    if branches and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        del out["anyOf"]
        out = {**(rest[0] if len(rest) == 1 else {"anyOf": rest}), **out}
    return out


def command_variants() -> list[dict[str, Any]]:
    """One shape per command of the catalogue (server/commands/catalog.py): its name and the
    arguments it takes, which the command service checks against the same catalogue."""
    out = []
    for spec in sorted(CATALOGUE.values(), key=lambda c: c.name):
        args = {key: {"type": a.type, **({"minimum": a.minimum} if a.minimum is not None else {}),
                      **({"maximum": a.maximum} if a.maximum is not None else {})}
                for key, a in spec.args.items()}
        needed = [key for key, a in spec.args.items() if a.required]
        args_schema = {"type": "object", "properties": args, "additionalProperties": False,
                       **({"required": needed} if needed else {})}
        out.append({"title": spec.name, "description": spec.description,
                    "properties": {"name": {"const": spec.name}, "args": args_schema},
                    "required": ["name", "args"] if needed else ["name"]})
    return out


def model_components() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in BODY_MODELS:
        schema = model.model_json_schema(ref_template=REF, by_alias=True)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    for name in ("CommandIn", "GroupCommandIn"):
        out[name]["oneOf"] = command_variants()
    return _json_schema_words(out)


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _json_schema_words(node: Any) -> Any:
    """Pydantic leaves the bounds of a type it cannot describe (a union, a custom type) in
    its own words (``ge``, ``le``); JSON Schema's are ``minimum``, ``maximum``."""
    if isinstance(node, dict):
        return {(_BOUNDS.get(k, k) if not isinstance(v, (dict, list)) and "type" in node else k):
                _json_schema_words(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_json_schema_words(v) for v in node]
    return node


def rule_components() -> dict[str, Any]:
    """The rule documents, from the models that parse them (rules/models.py); a metric is
    one of the catalogue's (server/store/catalog.py), which the rule engine checks."""
    schema = TypeAdapter(RuleModel).json_schema(ref_template=REF)
    out = schema.pop("$defs", {})
    out["RuleDocument"] = {**schema, "description": "a rule as in the YAML rule files (CONTRACT.md)"}
    for definition in out.values():
        props = definition.get("properties", {})
        if "metric" in props:
            known = {"type": "string", "enum": sorted(METRIC_NAMES)}
            nullable = {"type": "null"} in props["metric"].get("anyOf", ())
            props["metric"] = {"anyOf": [known, {"type": "null"}]} if nullable else known
    return _json_schema_words(out)


def query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The query parameters a :class:`~server.http.validate.Query` model reads."""
    schema = model.model_json_schema(ref_template=REF, by_alias=True)
    defs, required = schema.get("$defs", {}), set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        s = _non_null(prop)
        if "$ref" in s:  # an enum: inline, a parameter's schema reads best whole
            s = {**defs[s.pop("$ref").rsplit("/", 1)[1]], **s}
            s.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "schema": s}
        if description := s.pop("description", None):
            param["description"] = description
        if name in required:
            param["required"] = True
        out.append(param)
    return out


# ---------------------------------------------------------------- schemas

_GEOMETRY_TYPES = ["Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                   "MultiPolygon", "GeometryCollection"]

SCHEMAS: dict[str, Any] = {
    "Problem": obj({
        "type": STR, "title": STR, "status": INT, "detail": STR, "instance": STR,
        "errors": arr(ANY, description="every problem found, for requests with many fields"),
    }, ["title", "status", "detail"], description="RFC 9457 problem details"),
    "ImportProblem": {"allOf": [ref("Problem"), obj({
        "error_count": INT,
        "errors": arr(obj({
            "row": {**INT, "description": "CSV: the row as a spreadsheet numbers it (header = 1)"},
            "index": {**INT, "description": "GeoJSON: the feature's index, from 0"},
            "id": nullable(STR), "field": STR, "reason": STR,
        }, ["id", "field", "reason"]), description="at most 1,000; error_count has the total"),
    })]},
    "Geometry": obj({"type": {"enum": _GEOMETRY_TYPES}, "coordinates": {"type": "array"},
                     "geometries": {"type": "array"}}, ["type"],
                    description="a GeoJSON geometry in WGS 84 (longitude first)"),
    "Point": obj({"type": {"const": "Point"},
                  "coordinates": arr(NUM, minItems=2, maxItems=3)}, ["type", "coordinates"]),
    "Device": obj({
        "type": {"const": "Feature"},
        "id": STR,
        "geometry": ref("Geometry"),
        "properties": obj({
            "kind": STR, "name": STR, "parent": nullable(STR), "external_id": nullable(STR),
            "ward": nullable(STR),
            "status": {"enum": DEVICE_STATUSES},
            "last_seen": nullable(TIME),
            "values": {**OBJ, "description": "latest value per metric"},
            "alarm_severity": nullable({"enum": SEVERITIES}),
            "adapter": nullable(STR), "adapter_config": nullable(OBJ),
        }, ["kind", "name", "status", "values"], additionalProperties=True,
            description="kind, name, parent, external_id and the computed state beside the "
                        "device's free properties"),
    }, ["type", "id", "geometry", "properties"], description="a device as a GeoJSON Feature"),
    "DeviceIn": obj({
        "type": {"const": "Feature"},
        "id": {**STR, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$", "examples": ["SL-000123"]},
        "geometry": ref("Geometry"),
        "properties": obj({"kind": {**STR, "examples": ["streetlight"]}, "name": STR,
                           "parent": nullable(STR), "external_id": nullable(STR),
                           "adapter": nullable(STR), "adapter_config": nullable(OBJ)},
                          ["kind"], additionalProperties=True),
    }, ["type", "id", "geometry", "properties"]),
    "DeviceCollection": obj({
        "type": {"const": "FeatureCollection"}, "features": arr(ref("Device")),
        "numberReturned": INT, "links": arr(ref("Link")),
    }, ["type", "features"]),
    "ExportCollection": obj({
        "type": {"const": "FeatureCollection"},
        "features": arr(obj({
            "type": {"const": "Feature"}, "id": STR, "geometry": ref("Geometry"),
            "properties": obj({"kind": STR, "name": STR, "parent": nullable(STR),
                               "external_id": nullable(STR), "ward": nullable(STR)},
                              ["kind", "name", "parent", "external_id", "ward"],
                              additionalProperties=True),
        }, ["type", "id", "geometry", "properties"])),
    }, ["type", "features"], description="the inventory: no live state"),
    "DeviceCollectionIn": obj({"type": {"const": "FeatureCollection"},
                               "features": arr(ref("DeviceIn"), minItems=1)},
                              ["type", "features"]),
    "DevicePatch": obj({"type": STR, "id": STR, "geometry": ref("Geometry"),
                        "properties": obj({}, additionalProperties=True)},
                       description="JSON merge patch (RFC 7396); null removes a property"),
    "Link": obj({"rel": STR, "href": STR, "type": STR}, ["rel", "href"]),
    "Reading": obj({
        "device_id": {**STR, "minLength": 1},  # without values, an entry is a dead letter
        "ts": {"oneOf": [TIME, INT], "description": "RFC 3339 or epoch milliseconds"},
        "values": obj({}, additionalProperties={"type": ["number", "boolean"]}),
    }, ["device_id"]),
    "PushResult": obj({"accepted": INT, "rejected": {"type": ["integer", "array"]}},
                      ["accepted", "rejected"]),
    "History": obj({
        "device": STR, "metric": STR, "from": TIME, "to": TIME, "bucket": STR, "agg": STR,
        "points": arr(arr(ANY, minItems=2, maxItems=2),
                      description="[time, value] pairs; value null for a bad-quality reading"),
        "truncated": BOOL,
    }, ["device", "metric", "points"]),
    "Alarm": obj({
        "id": INT, "rule": STR, "device": STR, "severity": {"enum": SEVERITIES},
        "priority": INT, "state": {"enum": ALARM_STATES}, "active": BOOL,
        "shelved_until": nullable(TIME), "suppressed": BOOL, "out_of_service": BOOL,
        "chattering": BOOL, "raised_at": TIME, "acked_at": nullable(TIME),
        "acked_by": nullable(STR), "cleared_at": nullable(TIME), "closed_at": nullable(TIME),
        "value": nullable(NUM), "message": STR, "geometry": nullable(ref("Geometry")),
        "children": arr(ANY), "incident": nullable(INT), "assigned_crew": nullable(STR),
        "work_state": nullable(STR),
    }, ["id", "rule", "device", "severity", "state", "shelved_until", "suppressed",
        "out_of_service", "raised_at", "acked_at", "acked_by", "cleared_at", "value", "message",
        "geometry", "children"]),
    "AlarmList": obj({"alarms": arr(ref("Alarm")), "count": INT, "links": arr(ref("Link"))},
                     ["alarms"]),
    "AlarmEvents": obj({"alarm": INT, "events": arr(obj({
        "id": INT, "at": TIME, "event": STR, "actor": nullable(STR), "reason": nullable(STR),
        "details": OBJ}, ["id", "at", "event"]))}, ["alarm", "events"]),
    "AlarmKpis": obj({"from": TIME, "to": TIME, "operator_consoles": INT, "activations": INT},
                     ["from", "to"], additionalProperties=True,
                     description="ISA-18.2 / EEMUA 191 performance figures for the period"),
    "Rule": obj({"id": STR, "kind": STR, "source": STR, "enabled": BOOL, "evaluated": BOOL,
                 "document": ref("RuleDocument"), "created_at": TIME, "updated_at": TIME},
                ["id", "kind", "document"]),
    "RuleList": obj({"rules": arr(ref("Rule")), "errors": arr(ANY)}, ["rules"]),
    "Backtest": obj({"from": TIME, "to": TIME, "alarms": arr(OBJ)}, ["from", "to"],
                    additionalProperties=True),
    "Command": obj({
        "id": {**STR, "format": "uuid"}, "device": STR, "name": STR, "args": OBJ,
        "status": {"enum": COMMAND_STATES}, "group": nullable(STR),
        "requested_by": nullable(STR), "created_at": TIME, "sent_at": nullable(TIME),
        "finished_at": nullable(TIME), "expires_at": TIME, "result": ANY,
        "error": nullable(STR), "links": arr(ref("Link")),
    }, ["id", "status"]),
    "CommandList": obj({"device": STR, "commands": arr(ref("Command")), "numberReturned": INT,
                        "links": arr(ref("Link"))}, ["device", "commands"]),
    "GroupPreview": obj({"name": STR, "args": ANY, "target": OBJ, "count": INT, "queued": INT,
                         "by_kind": OBJ, "by_status": OBJ, "by_route": OBJ,
                         "devices": arr(OBJ), "skipped": arr(ANY)}, ["count", "devices"]),
    "CommandGroup": obj({
        "id": STR, "name": STR, "args": ANY, "target": ANY, "requested_by": nullable(STR),
        "created_at": TIME, "total": INT,
        "counts": obj({s: INT for s in COMMAND_STATES}), "done": BOOL,
        "results": arr(obj({"device": STR, "command": STR, "status": {"enum": COMMAND_STATES},
                            "result": ANY, "error": nullable(STR), "sent_at": nullable(TIME),
                            "finished_at": nullable(TIME)}, ["device", "status"])),
        "skipped": ANY, "links": arr(ref("Link")),
    }, ["id"]),
    "Crew": obj({
        "id": STR, "name": STR, "ward": nullable(STR), "location": nullable(ref("Point")),
        "available": BOOL, "escalation_level": INT, "contacts": OBJ, "webhook_signed": BOOL,
        "open_alarms": INT, "updated_at": TIME,
    }, ["id", "name"]),
    "CrewList": obj({"crews": arr(ref("Crew")), "numberReturned": INT}, ["crews"]),
    "AuditEntry": obj({"id": INT, "at": TIME, "actor": STR, "action": STR,
                       "device": nullable(STR), "target": nullable(STR), "details": ANY},
                      ["id", "at", "actor", "action"]),
    "AuditList": obj({"entries": arr(ref("AuditEntry")), "numberReturned": INT,
                      "links": arr(ref("Link"))}, ["entries"]),
    "Token": obj({
        "id": INT, "name": STR, "role": {"enum": ROLES}, "crew": nullable(STR),
        "prefix": {**STR, "description": "the token's first characters, to recognise it"},
        "created_at": TIME, "last_used_at": nullable(TIME), "revoked_at": nullable(TIME),
        "active": BOOL,
    }, ["id", "name", "role", "crew", "prefix", "created_at", "last_used_at", "revoked_at",
        "active"]),
    "TokenList": obj({"tokens": arr(ref("Token"))}, ["tokens"]),
    "TokenCreated": {"allOf": [ref("Token"), obj({"token": {
        **STR, "description": "the bearer token itself: shown this once, stored only hashed"}},
        ["token"])]},
    "ImportReport": obj({"dry_run": BOOL, "format": {"enum": ["geojson", "csv"]},
                         "devices": INT, "created": INT, "updated": INT},
                        ["dry_run", "format", "devices", "created", "updated"]),
    "WardSummary": obj({"bbox": nullable(arr(NUM)), "totals": OBJ, "wards": arr(OBJ)},
                       ["totals", "wards"]),
    "Me": obj({"name": STR, "role": {"enum": ROLES}, "crew": nullable(STR)},
              ["name", "role", "crew"]),
    "TileJSON": obj({"tilejson": STR, "tiles": arr(STR), "minzoom": INT, "maxzoom": INT,
                     "bounds": arr(NUM), "vector_layers": arr(OBJ)}, ["tilejson", "tiles"]),
    "LayerList": {"type": ["object", "array"]},
    "Health": obj({"status": STR}, ["status"]),
    "Ready": obj({"status": STR, "checks": obj({}, additionalProperties=STR)},
                 ["status", "checks"]),
}


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
    codes = set(errors) | (set() if public else set(AUTH_ERRORS))
    if request:
        codes |= {413}
    for code in sorted(codes):
        resp[str(code)] = {"$ref": f"#/components/responses/{code}"}
    out["responses"] = resp
    if public:
        out["security"] = []
    return out


LOCATION = {"Location": {"schema": STR}}


# ---------------------------------------------------------------- paths


def _paths() -> dict[str, Any]:
    p: dict[str, Any] = {}
    dev = ["devices"]
    p["/api/v1/devices"] = {
        "get": op("Devices as GeoJSON, filtered by bbox, kind, ward and parent",
                  {200: ok(ref("DeviceCollection"), ctype=GEOJSON)}, tags=dev, errors=(400,),
                  params=query_params(models.DeviceQuery)),
        "post": op("Create devices: one Feature or a FeatureCollection (all or nothing)",
                   {201: ok({"oneOf": [ref("Device"), ref("DeviceCollection")]}, "Created",
                            GEOJSON)},
                   tags=dev, errors=(400, 403, 409, 415),
                   request=body({"oneOf": [ref("DeviceIn"), ref("DeviceCollectionIn")]}, JSON,
                                GEOJSON),
                   description="Integrators and admins. Existing ids are a 409: use PATCH, or "
                               "POST /api/v1/import to create or update in bulk."),
    }
    p["/api/v1/devices/{id}"] = {
        "parameters": [path_id()],
        "get": op("One device as a GeoJSON Feature", {200: ok(ref("Device"), ctype=GEOJSON)},
                  tags=dev, errors=(404,)),
        "patch": op("Change a device (JSON merge patch of geometry and properties)",
                    {200: ok(ref("Device"), ctype=GEOJSON)}, tags=dev,
                    errors=(400, 403, 404, 409, 415),
                    request=body(ref("DevicePatch"), JSON, "application/merge-patch+json")),
        "delete": op("Delete a device", {204: ok(None, "Deleted")}, tags=dev,
                     errors=(403, 404)),
    }
    tel = ["telemetry"]
    p["/api/v1/telemetry"] = {
        "post": op("Push readings over HTTP (the MQTT payload plus device_id, or an array)",
                   {202: ok(ref("PushResult"), "Accepted; rejected entries are dead letters")},
                   tags=tel, errors=(400, 403, 415),
                   request=body({"oneOf": [ref("Reading"), arr(ref("Reading"), minItems=1)]})),
    }
    p["/api/v1/devices/{id}/telemetry"] = {
        "parameters": [path_id()],
        "get": op("A device's history of one metric, raw or in time buckets",
                  {200: ok(ref("History"))}, tags=tel, errors=(400, 404),
                  params=query_params(models.HistoryQuery)),
    }

    al = ["alarms"]
    p["/api/v1/alarms"] = {
        "get": op("Alarms, newest first (open ones unless state says otherwise)",
                  {200: ok(ref("AlarmList"))}, tags=al, errors=(400, 403),
                  params=query_params(models.AlarmQuery)),
    }
    alarm_id = path_id(schema={**INT, "minimum": 0, "maximum": 2**63 - 1})
    p["/api/v1/alarms/{id}"] = {
        "parameters": [alarm_id],
        "get": op("One alarm", {200: ok(ref("Alarm"))}, tags=al, errors=(403, 404)),
    }
    p["/api/v1/alarms/{id}/events"] = {
        "parameters": [alarm_id],
        "get": op("An alarm's history (raised, acked, shelved, ...)", {200: ok(ref("AlarmEvents"))},
                  tags=al, errors=(403, 404)),
    }
    for action, (model, text) in models.ALARM_ACTIONS.items():
        p[f"/api/v1/alarms/{{id}}/{action}"] = {
            "parameters": [alarm_id],
            "post": op(text, {200: ok(ref("Alarm"))}, tags=al,
                       errors=(400, 403, 404, 409, 415),
                       # the body may be left out when every member may
                       request=body(ref(model.__name__), required=any(
                           f.is_required() for f in model.model_fields.values()))),
        }
    p["/api/v1/alarms/kpis"] = {
        "get": op("Alarm system performance over a period", {200: ok(ref("AlarmKpis"))},
                  tags=al, errors=(400,),
                  params=query_params(models.KpiQuery)),
    }

    ru = ["rules"]
    p["/api/v1/rules"] = {
        "get": op("Rules, with the errors of rule files that did not load",
                  {200: ok(ref("RuleList"))}, tags=ru),
        "post": op("Create a rule (integrator)",
                   {201: ok(ref("Rule"), "Created", headers=LOCATION)}, tags=ru,
                   errors=(400, 403, 409, 415), request=body(ref("RuleDocument"))),
    }
    p["/api/v1/rules/{id}"] = {
        "parameters": [path_id()],
        "get": op("One rule", {200: ok(ref("Rule"))}, tags=ru, errors=(404,)),
        "put": op("Create or replace a rule (integrator)",
                  {200: ok(ref("Rule"), headers=LOCATION),
                   201: ok(ref("Rule"), "Created", headers=LOCATION)},
                  tags=ru, errors=(400, 403, 409, 415), request=body(ref("RuleDocument"))),
        "delete": op("Delete a rule (integrator)", {204: ok(None, "Deleted")}, tags=ru,
                     errors=(403, 404, 409)),
    }
    p["/api/v1/rules/backtest"] = {
        "post": op("What a rule would have raised over stored history",
                   {200: ok(ref("Backtest"))}, tags=ru, errors=(400, 403, 415),
                   request=body(ref("BacktestIn"))),
    }

    cm = ["commands"]
    p["/api/v1/devices/{id}/commands"] = {
        "parameters": [path_id()],
        "post": op("Command a device (operator)",
                   {202: ok(ref("Command"), "Accepted: pending", headers=LOCATION)}, tags=cm,
                   errors=(400, 403, 404, 409, 415, 503), request=body(ref("CommandIn"))),
        "get": op("A device's commands, newest first", {200: ok(ref("CommandList"))}, tags=cm,
                  errors=(400, 404), params=query_params(models.CommandListQuery)),
    }
    p["/api/v1/commands/{id}"] = {
        "parameters": [path_id(schema={**STR, "format": "uuid"})],
        "get": op("One command's status and result", {200: ok(ref("Command"))}, tags=cm,
                  errors=(404,)),
    }
    p["/api/v1/commands/preview"] = {
        "post": op("Which devices a group command would reach, before sending it (operator)",
                   {200: ok(ref("GroupPreview"))}, tags=cm, errors=(400, 403, 409, 415, 503),
                   request=body(ref("GroupCommandIn"))),
    }
    p["/api/v1/commands"] = {
        "post": op("Command a group of devices (operator)",
                   {202: ok(ref("CommandGroup"), "Accepted", headers=LOCATION)}, tags=cm,
                   errors=(400, 403, 409, 415, 503), request=body(ref("GroupCommandIn"))),
    }
    p["/api/v1/command-groups/{id}"] = {
        "parameters": [path_id(schema={**STR, "format": "uuid"})],
        "get": op("A group command: counts by status and a result per device",
                  {200: ok(ref("CommandGroup"))}, tags=cm, errors=(400, 404),
                  params=query_params(models.GroupQuery)),
    }

    cr = ["crews"]
    p["/api/v1/crews"] = {
        "get": op("Maintenance crews", {200: ok(ref("CrewList"))}, tags=cr, errors=(400, 403),
                  params=query_params(models.CrewQuery)),
        "post": op("Create a crew (operator)", {201: ok(ref("Crew"), "Created", headers=LOCATION)},
                   tags=cr, errors=(400, 403, 409, 415), request=body(ref("CrewIn"))),
    }
    p["/api/v1/crews/{id}"] = {
        "parameters": [path_id()],
        "get": op("One crew", {200: ok(ref("Crew"))}, tags=cr, errors=(403, 404)),
        "patch": op("Change a crew (operator; a crew's own token: available, location)",
                    {200: ok(ref("Crew"))}, tags=cr, errors=(400, 403, 404, 409, 415),
                    request=body(ref("CrewPatch"))),
        "delete": op("Delete a crew (operator)", {204: ok(None, "Deleted")}, tags=cr,
                     errors=(403, 404, 409)),
    }

    p["/api/v1/audit"] = {
        "get": op("The audit log (admin): who did what, when, newest first",
                  {200: ok(ref("AuditList"))}, tags=["audit"], errors=(400, 403),
                  params=query_params(models.AuditFilter)),
    }

    tk = ["tokens"]
    p["/api/v1/tokens"] = {
        "get": op("API tokens (admin); never their secrets", {200: ok(ref("TokenList"))},
                  tags=tk, errors=(400, 403),
                  params=query_params(models.TokenQuery)),
        "post": op("Create a token (admin); the secret is in this answer only",
                   {201: ok(ref("TokenCreated"), "Created",
                            headers={**LOCATION, "Cache-Control": {"schema": STR}})},
                   tags=tk, errors=(400, 403, 415), request=body(ref("TokenIn"))),
    }
    p["/api/v1/tokens/{id}"] = {
        "parameters": [path_id(schema=INT)],
        "delete": op("Revoke a token (admin); effective at once", {204: ok(None, "Revoked")},
                     tags=tk, errors=(403, 404, 409)),
    }

    io = ["import and export"]
    p["/api/v1/import"] = {
        "post": op(
            "Create or update devices in bulk from GeoJSON or CSV (all or nothing)",
            {200: ok(ref("ImportReport")),
             422: {"description": "The file has problems; every one is listed and nothing "
                                  "was written",
                   "content": {PROBLEM: {"schema": ref("ImportProblem")}}}},
            tags=io, errors=(400, 403),
            params=query_params(models.ImportQuery),
            request=body({"type": "string"}, GEOJSON, JSON, "text/csv"),
            description=(
                "Integrators and admins. The whole file is checked first with the rules of "
                "the devices API; any problem gives 422 with every problem (CSV row or "
                "feature index, field, reason) and nothing is written. Otherwise it is "
                "written in one transaction, creating or updating by device id. A GeoJSON "
                "Feature replaces the device it names; a CSV row updates only the columns the "
                "file has. CSV columns: id, kind, name, parent, external_id, adapter, "
                "adapter_config (JSON), properties (JSON object), lon + lat or wkt; other "
                "columns become text properties. Bodies up to the import limit (256 MiB by "
                "default), not the ordinary one.")),
    }
    p["/api/v1/export"] = {
        "get": op("The device registry as GeoJSON or CSV (streamed), filtered by bbox and kind",
                  {200: {"description": "the devices, in a form POST /api/v1/import takes back",
                         "content": {GEOJSON: {"schema": ref("ExportCollection")},
                                     "text/csv": {"schema": STR}}}},
                  tags=io, errors=(400,),
                  params=query_params(models.ExportQuery)),
    }

    p["/api/v1/wards/summary"] = {
        "get": op("Per ward: devices by status, lamps out, open alarms",
                  {200: ok(ref("WardSummary"))}, tags=["map"], errors=(403,)),
    }
    p["/api/v1/me"] = {
        "get": op("Who this token is", {200: ok(ref("Me"))}, tags=["map"]),
    }
    p["/api/v1/ws"] = {
        "get": op(
            "The live websocket (state and alarms for a viewport)",
            {101: ok(None, "Switching protocols")}, tags=["map"], errors=(400,),
            params=[param("token", description="the bearer token, for browsers")],
            description='Send {"op": "subscribe", "bbox": [...], "layers": [...], '
                        '"alarms": true}; receive a snapshot, then state and alarm messages '
                        "(CONTRACT.md). A plain HTTP GET is answered 400."),
    }
    p["/api/v1/openapi.json"] = {
        "get": op("This document", {200: ok(OBJ)}, tags=["meta"]),
    }

    tl = ["tiles"]
    layer = path_id("layer", description="a layer id, or several joined with ','")
    p["/tiles"] = {"get": op("The tile layers", {200: ok(ref("LayerList"))}, tags=tl)}
    p["/tiles/{layer}.json"] = {
        "parameters": [layer],
        "get": op("TileJSON 3.0 of a layer", {200: ok(ref("TileJSON"))}, tags=tl,
                  errors=(400, 404)),
    }
    p["/tiles/{layer}/{z}/{x}/{y}.mvt"] = {
        "parameters": [layer, path_id("z", schema={**INT, "minimum": 0, "maximum": 24}),
                       path_id("x", schema={**INT, "minimum": 0}),
                       path_id("y", schema={**INT, "minimum": 0})],
        "get": op("A Mapbox vector tile (WebMercatorQuad, XYZ)",
                  {200: {"description": "the tile", "content": {
                      "application/vnd.mapbox-vector-tile": {"schema": STR}}},
                   204: ok(None, "An empty tile"), 304: ok(None, "Not modified (ETag)")},
                  tags=tl, errors=(400, 404)),
    }
    p["/metrics"] = {
        "get": op("Prometheus metrics", {200: {"description": "text exposition format",
                                               "content": {"text/plain": {"schema": STR}}}},
                  tags=["meta"]),
    }
    p["/healthz"] = {"get": op("The process answers", {200: ok(ref("Health"))}, tags=["meta"],
                               public=True)}
    p["/readyz"] = {"get": op("The process can do its job (database, MQTT, ingest)",
                              {200: ok(ref("Ready")),
                               503: {"description": "not ready; the checks say why",
                                     "content": {PROBLEM: {"schema": ref("Ready")}}}},
                              tags=["meta"], public=True)}
    return p


def _configured(schemas: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The bounds this server is configured with, where the models carry the widest."""
    schemas["ShelveIn"]["properties"]["minutes"]["maximum"] = settings.rules.shelve_max_minutes
    for name in ("CommandIn", "GroupCommandIn"):
        ttl = schemas[name]["properties"]["ttl_s"]
        next(b for b in ttl["anyOf"] if b.get("type") == "number")["maximum"] = \
            settings.commands.max_ttl_s
    return schemas


def document(settings: Settings | None = None) -> dict[str, Any]:
    schemas = {**SCHEMAS, **model_components(), **rule_components()}
    if settings is not None:
        schemas = _configured(schemas, settings)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ioc-server",
            "version": "1.0.0",
            "summary": "Realtime GIS and telemetry for a city Intelligent Operations Center",
            "description": (
                "Every endpoint but /healthz and /readyz takes `Authorization: Bearer <token>` "
                "(or `?token=` where a browser cannot set headers). Roles: viewer (read), crew "
                "(read, its own alarms), operator (alarms, commands), integrator (devices, "
                "adapters, rules), admin (everything, tokens). Errors are "
                "application/problem+json (RFC 9457). Each token has a rate limit by role "
                "(429 with Retry-After); request bodies are bounded (413)."),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"query_token": []}],
        "tags": [{"name": t} for t in (
            "devices", "telemetry", "alarms", "rules", "commands", "crews", "audit", "tokens",
            "import and export", "map", "tiles", "meta")],
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "responses": RESPONSES,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "query_token": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }


routes = web.RouteTableDef()


@routes.get("/api/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(document(request.app[keys.SETTINGS]), headers={"Cache-Control": "no-cache"})
