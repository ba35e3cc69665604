"""The REST API's request models: every JSON body and query string a handler reads.

Handlers validate with these (server/http/validate.py) and the OpenAPI document derives
its request schemas and query parameters from them (server/http/openapi/), so what is
documented is what is checked. Rules that need the database (a kind in the catalogue, a
crew that exists) stay in the handlers and services.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from yarl import URL

from geo.geojson import GEOMETRY_TYPES, GeometryError, parse_geometry
from rules.lifecycle import WORK_STATES
from server.http import validate
from server.http.validate import NAME, Body, Flag, Name, Query, Text, csv_of, csv_pattern, number
from server.notify import signing
from server.store.catalog import KIND_NAMES, METRIC_NAMES
from server.store.history import AGGS, MAX_RAW
from server.vocab import AlarmState, CommandState, Role, Severity, values

ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
# Decimal degrees within range (the order of min and max a pattern cannot say; the handler does).
LON = r"-?(180(\.0+)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]+)?)"
LAT = r"-?(90(\.0+)?|[1-8]?[0-9](\.[0-9]+)?)"
BBOX = f"^{LON},{LAT},{LON},{LAT}$"
MAX_BIGINT = 2**63 - 1

Word = Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\x00]+$")]
Id = Annotated[str, StringConstraints(pattern=ID)]
Bbox = Annotated[str, StringConstraints(pattern=BBOX),
                 Field(description="minLon,minLat,maxLon,maxLat (WGS 84)")]
Number = StrictInt | StrictFloat
# RFC 3339 is what the document promises (and, where it says so, epoch milliseconds); a time
# without its offset is accepted too, read as UTC, for the people who type one.
_DATE_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
_OFFSET = r"([Zz]|[+ -][0-9]{2}:[0-9]{2})?"  # ' ': a '+' the query string turned into a space
_EPOCH_MS = r"-?[0-9]{1,15}(\.[0-9]+)?"
Time = Annotated[str, StringConstraints(pattern=f"^{_DATE_TIME}{_OFFSET}$"),
                 WithJsonSchema({"type": "string", "format": "date-time"})]
TimeOrEpoch = Annotated[str, StringConstraints(pattern=f"^({_DATE_TIME}{_OFFSET}|{_EPOCH_MS})$"),
                        WithJsonSchema({"type": "string", "anyOf": [
                            {"format": "date-time"},
                            {"pattern": f"^{_EPOCH_MS}$", "description": "epoch milliseconds"}]})]
validate.explain(f"^{_DATE_TIME}{_OFFSET}$", "must be an RFC 3339 time like 2026-11-22T10:00:00Z")
validate.explain(f"^({_DATE_TIME}{_OFFSET}|{_EPOCH_MS})$",
                 "must be an RFC 3339 time like 2026-11-22T10:00:00Z or epoch milliseconds")
validate.explain(BBOX, "must be minLon,minLat,maxLon,maxLat in WGS 84 degrees, e.g. 105.8,21.5,105.9,21.6")
# A whole number; 3.0 is one too, in JSON as in JSON Schema.
Whole = Annotated[StrictInt, BeforeValidator(
    lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]
KINDS = sorted(KIND_NAMES)
Kinds = csv_of(str, csv_pattern(KINDS), "one kind or several, comma-separated")


def limit(default: int, maximum: int) -> Any:
    return Field(default, ge=1, le=maximum)


# ---------------------------------------------------------------- devices


class DeviceQuery(Query):
    bbox: Bbox | None = None
    kind: Kinds | None = None
    ward: Text | None = None
    parent: Text | None = None
    limit: int = limit(1000, 50_000)
    after: Text | None = Field(None, description="the last id of the previous page")


GEOMETRY_SCHEMA = {
    "type": "object", "description": "a GeoJSON geometry in WGS 84 (longitude first)",
    "properties": {"type": {"enum": sorted(GEOMETRY_TYPES)}, "coordinates": {"type": "array", "minItems": 1},
                   "geometries": {"type": "array", "minItems": 1}},
    "required": ["type"]}


def _geometry(value: Any) -> Any:
    try:
        return parse_geometry(value, "geometry")  # its messages say what is wrong and where
    except GeometryError as err:
        raise ValueError(str(err)) from None


def _kind(value: str, info: ValidationInfo) -> str:
    """A kind of the database's ``kinds`` table when the handler passes it (``ioc migrate``
    adds the catalogue's and never deletes one), else of the catalogue."""
    known = (info.context or {}).get("kinds") or KIND_NAMES
    if value not in known:
        raise ValueError(f"unknown kind {value!r}; known kinds: {', '.join(sorted(known))}")
    return value


# The geometry as a shapely geometry, checked by geo.geojson (valid, in WGS 84 ranges).
Geometry = Annotated[Any, AfterValidator(_geometry), WithJsonSchema(GEOMETRY_SCHEMA)]
Kind = Annotated[StrictStr, AfterValidator(_kind),
                 WithJsonSchema({"type": "string", "enum": KINDS, "examples": ["streetlight"]})]
NonEmpty = Annotated[str, StringConstraints(pattern=NAME)]


def _device_id(value: Any) -> Any:
    if not isinstance(value, str) or not re.fullmatch(ID, value):
        raise ValueError("the Feature id must be a device id: letters, digits and _ . : - "
                         "(at most 128), e.g. SL-000123")
    return value


DeviceId = Annotated[Any, AfterValidator(_device_id), WithJsonSchema({
    "type": "string", "pattern": ID, "examples": ["SL-000123"],
    "description": "the device id (if absent, properties.id)"})]


def _object_or_empty(value: Any) -> Any:
    return {} if value is None else value


class DeviceProperties(BaseModel):
    """The reserved properties, typed; any other member is a free property of the device."""

    model_config = ConfigDict(extra="allow")

    kind: Kind
    name: StrictStr | None = None
    parent: NonEmpty | None = None
    external_id: NonEmpty | None = None
    adapter: NonEmpty | None = Field(None, description="the polling adapter bound to it")
    adapter_config: dict[str, Any] | None = None


class DeviceFeatureIn(BaseModel):
    """A device as a GeoJSON Feature (foreign members are allowed, as GeoJSON says)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["Feature"]
    id: DeviceId = None
    geometry: Geometry
    properties: Annotated[DeviceProperties, BeforeValidator(_object_or_empty)]

    @model_validator(mode="before")
    @classmethod
    def _a_feature(cls, value: Any) -> Any:
        if not isinstance(value, dict) or value.get("type") != "Feature":
            raise ValueError("each item must be a GeoJSON Feature")
        props = value.get("properties")
        if value.get("id") is None and isinstance(props, dict) and "id" in props:
            value = {**value, "id": props["id"]}
        if value.get("id") is None:
            value = {**value, "id": None}  # absent everywhere: validated, so an error says so
        return value


class DeviceCollectionIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["FeatureCollection"]
    features: list[DeviceFeatureIn] = Field(min_length=1)


class DevicePatchProperties(BaseModel):
    """In a patch: null removes a free property, or clears parent, external_id, adapter."""

    model_config = ConfigDict(extra="allow")

    # Absent is not null: "= None" marks a member optional without allowing null.
    kind: Kind = None  # type: ignore[assignment]
    name: StrictStr = None  # type: ignore[assignment]
    parent: Id | None = Field(None, description="another device's id, or null")
    external_id: Word | None = None
    adapter: Word | None = None
    adapter_config: dict[str, Any] | None = None


class DevicePatchIn(Body):
    """JSON merge patch (RFC 7396) of a device: its geometry and/or properties."""

    type: Any = Field(None, description="ignored (a Feature read, edited and sent back)")
    id: Id | None = Field(None, description="the device's own id, if sent (it cannot change)",
                          json_schema_extra={"readOnly": True})
    geometry: Geometry = None
    properties: DevicePatchProperties | None = None


# ---------------------------------------------------------------- telemetry


# Only the envelope is checked here (an object naming its device); the rest is the MQTT
# decoder's (adapters/mqtt/protocol.py), which turns a bad time or value, or an unknown device,
# into a dead letter without losing the good readings beside it: so ts and values (and the
# device_id pattern) are described here, not validated.
class ReadingIn(BaseModel):
    """A reading as an MQTT telemetry payload plus its device_id; an entry the server cannot
    use becomes a dead letter, listed in ``rejected``."""

    model_config = ConfigDict(extra="allow")  # the decoder judges any other member

    device_id: Annotated[StrictStr, StringConstraints(min_length=1), WithJsonSchema(
        {"type": "string", "pattern": ID, "examples": ["SL-000123"]})]
    ts: Annotated[Any, WithJsonSchema({
        "oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}],
        "description": "RFC 3339 or epoch milliseconds (default: when it arrives)"})] = None
    values: Annotated[Any, WithJsonSchema({
        "type": "object", "additionalProperties": {"type": ["number", "boolean"]},
        "description": "metric name → value, e.g. {\"power_w\": 41.5}"})] = None


class HistoryQuery(Query):
    metric: Annotated[Word, WithJsonSchema({"type": "string", "enum": sorted(METRIC_NAMES)})] = Field(
        description="a metric of the catalogue, e.g. power_w")
    from_: TimeOrEpoch | None = Field(None, alias="from",
                                      description="RFC 3339 or epoch ms (default: to - 1 day)")
    to: TimeOrEpoch | None = Field(None, description="RFC 3339 or epoch ms (default: now)")
    bucket: Annotated[str, StringConstraints(pattern=r"^0*[1-9][0-9]{0,5}(s|m|h|d)$")] | None = Field(
        None, description="5m, 1h, 1d ... (omit for raw points)")
    agg: Literal[AGGS] = "avg"  # type: ignore[valid-type]
    limit: int = limit(10_000, MAX_RAW)


# ---------------------------------------------------------------- alarms

PRIORITIES = csv_of(int, csv_pattern(["1", "2", "3"]), "1 (high), 2 (medium) or 3 (low), comma-separated")


class AlarmQuery(Query):
    state: csv_of(str, f"^(open|all|{csv_pattern(values(AlarmState))[1:-1]})$",
                  "comma-separated states, or open (default) or all alone") | None = None  # type: ignore[valid-type]
    severity: csv_of(Severity, csv_pattern(values(Severity)),
                     "comma-separated severities") | None = None  # type: ignore[valid-type]
    bbox: Bbox | None = None
    rule: csv_of(str, r"^[^\x00,]+(,[^\x00,]+)*$", "comma-separated rule ids") | None = None  # type: ignore[valid-type]
    device: csv_of(str, r"^[^\x00,]+(,[^\x00,]+)*$", "comma-separated device ids") | None = None  # type: ignore[valid-type]
    crew: Text | None = None
    assigned: Literal["me"] | None = None
    suppressed: Flag | None = None
    out_of_service: Flag | None = None
    chattering: Flag | None = None
    active: Flag | None = None
    shelved: Flag | None = None
    incident: Annotated[int, Field(ge=0, le=MAX_BIGINT)] | None = None
    priority: PRIORITIES | None = None  # type: ignore[valid-type]
    ward: csv_of(str, r"^[^\x00,]+(,[^\x00,]+)*$", "comma-separated ward codes: the device's ward, "
                 "or the ward an incident's point lies in") | None = None  # type: ignore[valid-type]
    kind: csv_of(str, r"^[^\x00,]+(,[^\x00,]+)*$",
                 "comma-separated device kinds") | None = None  # type: ignore[valid-type]
    from_: Time | None = Field(None, alias="from", description="raised at or after, RFC 3339")
    to: Time | None = Field(None, description="raised before, RFC 3339")
    closed_from: Time | None = Field(None, description="closed at or after, RFC 3339")
    closed_to: Time | None = Field(None, description="closed before, RFC 3339")
    q: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]+$")] | None = Field(
        None, description="free text: part of the message, device id or name, or rule id "
                          "(case-insensitive)")
    before: Annotated[int, Field(ge=0, le=MAX_BIGINT)] | None = Field(
        None, description="an alarm id: the last one of the previous page")
    limit: int = limit(500, 5000)


class KpiQuery(Query):
    from_: Time | None = Field(None, alias="from", description="RFC 3339 (default: to - 1 day)")
    to: Time | None = Field(None, description="RFC 3339 (default: now)")
    consoles: int | None = Field(None, ge=1, le=1000,
                                 description="operator consoles (default: the configured number)")


class _Action(Body):
    reason: Text | None = Field(None, description="why, for the alarm's history")


class AckIn(_Action):
    pass


class ShelveIn(_Action):
    minutes: number(gt=0, le=10_080) = Field(  # type: ignore[valid-type]
        description="how long; the server's shelve_max_minutes caps it")


class UnshelveIn(_Action):
    pass


class AssignIn(_Action):
    crew: Word = Field(description="a crew id (GET /api/v1/crews)")


class OutOfServiceIn(_Action):
    enabled: StrictBool = Field(True, description="true takes it out of service, false returns it")


class CommentIn(_Action):
    text: Annotated[Name, StringConstraints(max_length=4000)]


class WorkIn(_Action):
    state: Literal[WORK_STATES]  # type: ignore[valid-type]
    note: Annotated[Text, StringConstraints(max_length=4000)] | None = Field(
        None, description="the crew's note, for the alarm's history (multipart: also a file 'photo')")


class CloseIn(_Action):
    pass


class ReopenIn(_Action):
    pass


ALARM_ACTIONS: dict[str, tuple[type[_Action], str]] = {
    "ack": (AckIn, "Acknowledge (operator)."),
    "shelve": (ShelveIn, 'Shelve for a while (operator): `{"minutes": n}`.'),
    "unshelve": (UnshelveIn, "Unshelve (operator)."),
    "assign": (AssignIn, 'Assign to a crew (operator): `{"crew": id}`.'),
    "out_of_service": (OutOfServiceIn, "Take the alarm out of service, or back in (operator)."),
    "comment": (CommentIn, 'Comment (operator, or the crew it is assigned to): `{"text": "..."}`.'),
    "work": (WorkIn, "Set the work state (operator, or the crew it is assigned to), with a note; "
                     "as multipart/form-data also one file 'photo' (JPEG, PNG or WebP)."),
    "close": (CloseIn, "Close an alarm whose condition is over or whose crew has finished (operator); "
                       "it is acknowledged too."),
    "reopen": (ReopenIn, "Reopen a closed alarm (operator): unacknowledged again "
                         "(active_unacked, or rtn_unacked if its condition is over), its work open."),
}


# ---------------------------------------------------------------- commands


class CommandIn(Body):
    name: Word = Field(examples=["set_dim"])
    args: dict[str, Any] = Field(None, examples=[{"level": 50}])  # type: ignore[assignment]
    ttl_s: number(gt=0, le=7 * 86_400) | None = Field(  # type: ignore[valid-type]
        None, description="how long an offline device's command waits in the queue (the "
                          "server's max_ttl_s caps it)")


OneOrMany = Word | list[Word]


class GroupTarget(Body):
    """Which devices: by ward, cabinet (parent), kind, ids or bbox; several keys narrow it."""

    ward: OneOrMany = None  # type: ignore[assignment]
    parent: OneOrMany = None  # type: ignore[assignment]
    kind: OneOrMany = None  # type: ignore[assignment]
    devices: list[Word] = None  # type: ignore[assignment]
    bbox: list[number(ge=-180, le=180)] = Field(  # type: ignore[valid-type]
        None, min_length=4, max_length=4, description="minLon, minLat, maxLon, maxLat")
    road: Word = Field(  # type: ignore[assignment]
        None, description="a road_segment device id: the devices within_m of it")
    geometry: dict[str, Any] = Field(  # type: ignore[assignment]
        None, description="a GeoJSON Polygon, or a LineString with within_m > 0")
    within_m: number(ge=0, le=2000) = Field(  # type: ignore[valid-type]
        None, description="metres around road or geometry (road: 30 by default; geometry: 0)")

    # Unknown keys pass to the command service, which names them and the known ones.
    model_config = Body.model_config | {"extra": "allow", "json_schema_extra": {
        "minProperties": 1, "additionalProperties": False}}


class GroupCommandIn(CommandIn):
    target: GroupTarget


class CommandListQuery(Query):
    limit: int = limit(50, 1000)
    after: Text | None = Field(None, description="the last command id of the previous page")


class GroupQuery(Query):
    status: CommandState | None = None


class GroupListQuery(Query):
    limit: int = limit(20, 200)


# ---------------------------------------------------------------- rules


class BacktestIn(Body):
    rule: dict[str, Any] = Field(description="a rule document (RuleDocument)")
    from_: Time | Number | None = Field(None, alias="from", description="RFC 3339 or epoch ms")
    to: Time | Number | None = Field(None, description="RFC 3339 or epoch ms")


# ---------------------------------------------------------------- crews

EMAIL_RE = re.compile(r"^[^@\s<>\x00]+@[^@\s<>\x00]+\.[^@\s<>\x00]+$")


def _point(value: dict[str, Any]) -> dict[str, Any]:
    coords = value.get("coordinates")
    if value.get("type") == "Point" and not (
            isinstance(coords, list) and len(coords) == 2  # the column is 2D: no altitude
            and all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords)):
        raise ValueError("must be a Point whose coordinates are [longitude, latitude], two numbers")
    try:
        geom = parse_geometry(value, "location")
    except GeometryError as err:
        raise ValueError(str(err)) from None
    if geom.geom_type != "Point":
        raise ValueError(f"location must be a GeoJSON Point, got {geom.geom_type}")
    return value


def _webhook(value: str) -> str:
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


def _secret(value: str) -> str:
    signing.check_secret(value)  # ValueError says why (Standard Webhooks)
    return value


Point = Annotated[dict[str, Any], AfterValidator(_point), WithJsonSchema({
    "type": "object", "description": "a GeoJSON Point (longitude, latitude)",
    "properties": {"type": {"const": "Point"}, "coordinates": {
        "type": "array", "minItems": 2, "maxItems": 2,
        "prefixItems": [{"type": "number", "minimum": -180, "maximum": 180},
                        {"type": "number", "minimum": -90, "maximum": 90}]}},
    "required": ["type", "coordinates"]})]
Email = Annotated[str, StringConstraints(pattern=EMAIL_RE.pattern)]
validate.explain(EMAIL_RE.pattern, "must be an e-mail address such as crew01@example.org")
Webhook = Annotated[str, StringConstraints(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s\x00]*)?$"),
                    AfterValidator(_webhook)]
B64 = "[A-Za-z0-9+/]"
Secret = Annotated[str, StringConstraints(  # base64 of 24 to about 64 bytes (Standard Webhooks)
    pattern=f"^whsec_({B64}{{4}}){{8,20}}({B64}{{2}}==|{B64}{{3}}=|{B64}{{4}})$"),
                   AfterValidator(_secret)]


class Contacts(Body):
    """In a patch: null removes a contact."""

    email: Email | None = None
    webhook: Webhook | None = None
    webhook_secret: Secret | None = None
    phone: Name | None = None


class ContactsIn(Body):
    email: Email = None  # type: ignore[assignment]
    webhook: Webhook = None  # type: ignore[assignment]
    webhook_secret: Secret = None  # type: ignore[assignment]
    phone: Name = None  # type: ignore[assignment]


class CrewPatch(Body):
    """JSON merge patch (RFC 7396) of a crew; in ``contacts`` null removes one."""

    # Absent is not null: "= None" marks a member optional without allowing null.
    id: Id = Field(None, description="the crew's own id, if sent (it cannot change)",  # type: ignore[assignment]
                   json_schema_extra={"readOnly": True})
    name: Name = None  # type: ignore[assignment]
    ward: Word | None = Field(None, description="a ward code (e.g. W05) or null")
    location: Point | None = None
    available: StrictBool = None  # type: ignore[assignment]
    escalation_level: Whole = Field(None, ge=1, le=9,  # type: ignore[assignment]
                                    description="1 first line, 2 supervisors, ...")
    contacts: Contacts = None  # type: ignore[assignment]
    # What GET answers, so a crew read, edited and sent back is accepted; they are ignored.
    webhook_signed: Any = Field(None, json_schema_extra={"readOnly": True})
    open_alarms: Any = Field(None, json_schema_extra={"readOnly": True})
    updated_at: Any = Field(None, json_schema_extra={"readOnly": True})


class CrewIn(CrewPatch):
    id: Id = Field(description="letters, digits and _.:- (up to 128), e.g. CREW-09")
    name: Name
    contacts: ContactsIn = None  # type: ignore[assignment]


class CrewQuery(Query):
    ward: Text | None = None
    available: Flag | None = None


# ---------------------------------------------------------------- tokens and audit


class TokenIn(Body):
    role: Role
    name: Annotated[Name, StringConstraints(max_length=200)] | None = Field(
        None, description="default: the role")
    crew: Word | None = Field(None, description="required for the crew role")
    expires_at: Time | None = Field(None, description=(
        "when the token stops working (RFC 3339, in the future); it never does when absent"))

    model_config = Body.model_config | {"json_schema_extra": {
        "if": {"properties": {"role": {"const": "crew"}}, "required": ["role"]},
        "then": {"required": ["crew"]}}}


class TokenQuery(Query):
    include_revoked: Flag = True


class AuditFilter(Query):
    model_config = Query.model_config | {"extra": "forbid"}

    actor: Text | None = None
    device: Text | None = None
    action: Text | None = Field(None, description="an action or its prefix, e.g. command")
    from_: TimeOrEpoch | None = Field(None, alias="from", description="RFC 3339 or epoch ms")
    to: TimeOrEpoch | None = Field(None, description="RFC 3339 or epoch ms")
    limit: int = limit(100, 1000)
    after: int | None = Field(None, ge=1, le=MAX_BIGINT)


# ---------------------------------------------------------------- import and export


class ImportQuery(Query):
    format: Literal["geojson", "csv"] | None = Field(
        None, description="default: from the Content-Type, else the content")
    dry_run: Flag = Field(False, description="check and report, write nothing")


class ExportQuery(Query):
    format: Literal["geojson", "csv"] = "geojson"
    bbox: Bbox | None = None
    kind: Kinds | None = None  # type: ignore[valid-type]
