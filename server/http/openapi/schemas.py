"""The document's components: derived from the pydantic models, the rule models and the
command catalogue, and (responses, GeoJSON) written here."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter

from rules import models as rule_models
from rules.models import Rule as RuleModel
from server.api import models
from server.commands.catalog import CATALOGUE
from server.http.openapi.build import (
    ALARM_STATES,
    ANY,
    BOOL,
    COMMAND_STATES,
    DEVICE_STATUSES,
    INT,
    NUM,
    OBJ,
    ROLES,
    SEVERITIES,
    STR,
    TIME,
    arr,
    nullable,
    obj,
    ref,
)
from server.store.catalog import METRIC_NAMES

# ---------------------------------------------------------------- models

REF = "#/components/schemas/{model}"
# The request models (server/api/models.py): bodies become components, queries parameters.
BODY_MODELS: list[type[BaseModel]] = [
    *(model for model, _ in models.ALARM_ACTIONS.values()), models.CommandIn,
    models.GroupCommandIn, models.BacktestIn, models.CrewIn, models.CrewPatch, models.TokenIn,
    models.DeviceFeatureIn, models.DeviceCollectionIn, models.DevicePatchIn, models.ReadingIn,
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
    for name, definition in out.items():
        props = definition.get("properties", {})
        model = getattr(rule_models, name, None)
        for field, info in getattr(model, "model_fields", {}).items():
            # one string or a list of them (StrList): say both, as the parser takes both
            if rule_models.StrList in (info.annotation, *typing.get_args(info.annotation)):
                many = {"type": "array", "items": {"type": "string"}}
                props[field] = {"anyOf": [{"type": "string"}, many, {"type": "null"}]}
        if "metric" in props:
            known = {"type": "string", "enum": sorted(METRIC_NAMES)}
            nullable = {"type": "null"} in props["metric"].get("anyOf", ())
            props["metric"] = {"anyOf": [known, {"type": "null"}]} if nullable else known
    # PUT /api/v1/rules/{id} takes the id from the path: in its body the id may be left out.
    put_refs = {}
    for kind, target in out["RuleDocument"]["discriminator"]["mapping"].items():
        name = target.rsplit("/", 1)[1]
        put = {**out[name], "required": [r for r in out[name].get("required", ()) if r != "id"]}
        out[name + "Put"] = put
        put_refs[kind] = target + "Put"
    out["RuleDocumentPut"] = {
        "oneOf": [{"$ref": ref} for ref in put_refs.values()],
        "discriminator": {"propertyName": "kind", "mapping": put_refs},
        "description": "a rule document; its id, if given, must be the path's"}
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
    "Geometry": models.GEOMETRY_SCHEMA,  # the one the device models check against
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
    "DeviceCollection": obj({
        "type": {"const": "FeatureCollection"}, "features": arr(ref("Device")),
        "numberReturned": INT, "links": arr(ref("Link")),
    }, ["type", "features"]),
    "StateCollection": obj({
        "type": {"const": "FeatureCollection"}, "at": TIME, "features": arr(ref("Device")),
        "numberReturned": INT, "truncated": BOOL,
    }, ["type", "at", "features"]),
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
    "Link": obj({"rel": STR, "href": STR, "type": STR}, ["rel", "href"]),
    "PushResult": obj({"accepted": INT, "rejected": {"type": ["integer", "array"]}},
                      ["accepted", "rejected"]),
    "History": obj({
        "device": STR, "metric": STR, "from": TIME, "to": TIME, "bucket": STR, "agg": STR,
        "points": arr(arr(ANY, minItems=2, maxItems=2),
                      description="[time, value] pairs; value null for a bad-quality reading"),
        "truncated": BOOL,
        "tier": {"enum": ["raw", "hourly", "daily"],
                 "description": "what answered: raw points (row store and compressed "
                                "segments alike), hourly or daily rollups"},
    }, ["device", "metric", "points", "tier"]),
    "Alarm": obj({
        "id": INT, "rule": STR, "device": STR, "severity": {"enum": SEVERITIES},
        "priority": INT, "state": {"enum": ALARM_STATES}, "active": BOOL,
        "shelved_until": nullable(TIME), "suppressed": BOOL, "out_of_service": BOOL,
        "chattering": BOOL, "raised_at": TIME, "acked_at": nullable(TIME),
        "acked_by": nullable(STR), "cleared_at": nullable(TIME), "closed_at": nullable(TIME),
        "value": nullable(NUM), "message": STR,
        "context": nullable(obj({
            "rule_kind": STR, "metric": nullable(STR), "unit": nullable(STR), "value": nullable(NUM),
            "limit": NUM, "direction": nullable({"enum": ["above", "below"]}), "level": INT,
            "event": STR}, [], additionalProperties=True,
            description="what the message says, as data, for wording it in the reader's "
                        "language (null for alarms raised before it was kept)")),
        "geometry": nullable(ref("Geometry")),
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
    "AlarmKpis": obj({"from": TIME, "to": TIME, "operator_consoles": INT, "activations": INT,
                      "series": obj({
                          "bucket_s": INT, "t": arr(NUM, description="bucket starts, epoch s"),
                          "per_operator": arr(NUM), "target": NUM, "max_manageable": NUM,
                          "flood_above": nullable(INT)}, ["bucket_s", "t", "per_operator"],
                          description="annunciated activations per operator per bucket, with "
                                      "the acceptable and most manageable rates for a bucket")},
                     ["from", "to"], additionalProperties=True,
                     description="ISA-18.2 / EEMUA 191 performance figures for the period"),
    "Rule": obj({"id": STR, "kind": STR, "source": STR, "enabled": BOOL, "evaluated": BOOL,
                 "document": ref("RuleDocument"), "created_at": TIME, "updated_at": TIME},
                ["id", "kind", "document"]),
    "RulePatchIn": obj({"enabled": nullable(BOOL)}, additionalProperties=True,
                       description="fields of the rule document to change (JSON merge patch: "
                                   "null removes a field, so it takes its default)"),
    "RuleHistory": obj({"rule": STR, "history": arr(obj({
        "id": INT, "at": TIME, "by": STR,
        "action": {"enum": ["create", "update", "delete", "enable", "disable"]},
        "source": {**STR, "description": "api, or file:<path>"},
        "before": nullable(OBJ), "after": nullable(OBJ),
        "changes": arr(obj({"field": {**STR, "description": "dotted path, e.g. select.kind"},
                            "before": ANY, "after": ANY}, ["field", "before", "after"])),
    }, ["id", "at", "by", "action", "source", "before", "after", "changes"]))},
        ["rule", "history"]),
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
                         "devices": arr(STR), "excluded": arr(obj({"id": STR, "reason": STR})),
                         "details": arr(OBJ), "skipped": arr(ANY)}, ["count", "devices", "excluded"]),
    "CommandGroupList": obj({"groups": arr(OBJ), "numberReturned": INT}, ["groups"]),
    "CommandCatalog": obj({"commands": arr(obj({
        "name": STR, "description": STR, "kinds": arr(STR), "group_kinds": arr(STR),
        "args": {"type": "object", "additionalProperties": obj({
            "type": {"enum": ["number", "integer", "boolean"]}, "minimum": nullable(NUM),
            "maximum": nullable(NUM), "required": BOOL})}},
        ["name", "kinds", "args"]))}, ["commands"]),
    "GroupCancelled": obj({"id": STR, "cancelled": INT}, ["id", "cancelled"]),
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
        "kind": {"enum": ["api", "sign_in", "session"], "description": (
            "api: made by an admin; sign_in: a sign-in link's; session: a page's")},
        "expires_at": nullable(TIME),
        "parent": nullable({**INT, "description": "a session's token: revoking it ends them"}),
    }, ["id", "name", "role", "crew", "prefix", "created_at", "last_used_at", "revoked_at",
        "active"]),
    "Session": obj({"name": STR, "role": {"enum": ROLES}, "crew": nullable(STR),
                    "expires_at": TIME}, ["name", "role", "crew", "expires_at"]),
    "TokenList": obj({"tokens": arr(ref("Token"))}, ["tokens"]),
    "TokenCreated": {"allOf": [ref("Token"), obj({"token": {
        **STR, "description": "the bearer token itself: shown this once, stored only hashed"}},
        ["token"])]},
    "ImportReport": obj({"dry_run": BOOL, "format": {"enum": ["geojson", "csv"]},
                         "devices": INT, "created": INT, "updated": INT},
                        ["dry_run", "format", "devices", "created", "updated"]),
    "WardSummary": obj({"bbox": nullable(arr(NUM)), "totals": OBJ, "wards": arr(OBJ), "at": TIME},
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


