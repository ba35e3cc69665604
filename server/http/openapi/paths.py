"""Every operation under /api/v1 (and the map's and the tiles' paths), one entry each."""

from __future__ import annotations

from typing import Any

from server.api import models
from server.api.state import StateQuery
from server.api.wards import SummaryQuery
from server.http.openapi.build import (
    GEOJSON,
    INT,
    JSON,
    LOCATION,
    OBJ,
    PROBLEM,
    STR,
    arr,
    body,
    nullable,
    ok,
    op,
    param,
    path_id,
    ref,
)
from server.http.openapi.schedules import paths as schedule_paths
from server.http.openapi.schemas import query_params
from server.http.openapi.workorders import alarm_photo_path
from server.http.openapi.workorders import paths as work_order_paths

# ---------------------------------------------------------------- paths


def paths() -> dict[str, Any]:
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
                   request=body({"oneOf": [ref("DeviceFeatureIn"), ref("DeviceCollectionIn")]}, JSON,
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
                    request=body(ref("DevicePatchIn"), JSON, "application/merge-patch+json")),
        "delete": op("Delete a device", {204: ok(None, "Deleted")}, tags=dev,
                     errors=(403, 404)),
    }
    tel = ["telemetry"]
    p["/api/v1/telemetry"] = {
        "post": op("Push readings over HTTP (the MQTT payload plus device_id, or an array)",
                   {202: ok(ref("PushResult"), "Accepted; rejected entries are dead letters")},
                   tags=tel, errors=(400, 403, 415),
                   request=body({"oneOf": [ref("ReadingIn"), arr(ref("ReadingIn"), minItems=1)]})),
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
                       errors=(400, 403, 404, 409, 415) + ((413, 503) if action == "work" else ()),
                       # the body may be left out when every member may
                       request=body(ref(model.__name__), required=any(
                           f.is_required() for f in model.model_fields.values()))),
        }
    # the crew's photo of its work comes as multipart (server/api/workphotos.py)
    p["/api/v1/alarms/{id}/work"]["post"]["requestBody"]["content"]["multipart/form-data"] = {
        "schema": {"type": "object", "required": ["state"], "properties": {
            "state": {"type": "string", "enum": ["open", "acknowledged", "in_progress", "done"]},
            "note": {"type": "string", "maxLength": 4000},
            "photo": {"type": "string", "format": "binary"}}}}
    p.update(alarm_photo_path(alarm_id))
    p["/api/v1/alarms/kpis"] = {
        "get": op("Alarm system performance over a period (not a crew token)",
                  {200: ok(ref("AlarmKpis"))}, tags=al, errors=(400, 403),
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
                  tags=ru, errors=(400, 403, 409, 415), request=body(ref("RuleDocumentPut"))),
        "patch": op("Change some fields of a rule, e.g. enable or disable it (integrator)",
                    {200: ok(ref("Rule"), headers=LOCATION)}, tags=ru,
                    errors=(400, 403, 404, 409, 415),
                    request=body(ref("RulePatchIn"), JSON, "application/merge-patch+json"),
                    description='A JSON merge patch (RFC 7396) of the rule\'s document: '
                                '`{"enabled": false}` disables it; null removes an optional '
                                'field. The result is checked as a whole rule. Rules from '
                                'files are changed in their file (409).'),
        "delete": op("Delete a rule (integrator)", {204: ok(None, "Deleted")}, tags=ru,
                     errors=(403, 404, 409)),
    }
    p["/api/v1/rules/{id}/history"] = {
        "parameters": [path_id()],
        "get": op("A rule's changes, newest first: who, when, before and after (operator, "
                  "integrator)", {200: ok(ref("RuleHistory"))}, tags=ru, errors=(403, 404),
                  description="Changes through the API name the token's actor; rules loaded "
                              "or changed from rule files name `file`. A deleted rule's "
                              "history stays readable."),
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
    p["/api/v1/command-groups"] = {
        "get": op("Past group commands, newest first, with who sent them and counts by status",
                  {200: ok(ref("CommandGroupList"))}, tags=cm, errors=(400,),
                  params=query_params(models.GroupListQuery)),
    }
    p["/api/v1/command-catalog"] = {
        "get": op("The command catalogue: each command, the kinds that take it and its arguments",
                  {200: ok(ref("CommandCatalog"))}, tags=cm),
    }
    p["/api/v1/command-groups/{id}/cancel"] = {
        "parameters": [path_id(schema={**STR, "format": "uuid"})],
        "post": op("Cancel a group: withdraw its commands not sent yet (operator)",
                   {200: ok(ref("GroupCancelled"))}, tags=cm, errors=(403, 404, 503)),
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
        "get": op("One crew (a crew token: its own)", {200: ok(ref("Crew"))}, tags=cr, errors=(403, 404)),
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
    p["/api/v1/session"] = {
        "post": op("Sign in: trade the bearer token (a sign-in link's, used up, or any other) for "
                   "a session cookie (ioc_session: HttpOnly, SameSite=Strict)",
                   {201: ok(ref("Session"), "Signed in",
                            headers={"Set-Cookie": {"schema": STR}})}, tags=tk, errors=(409,)),
        "delete": op("Sign out: end this session and clear its cookie",
                     {204: ok(None, "Signed out")}, tags=tk),
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
        "get": op("Per ward: devices by status, lamps out, open alarms (now, or at a past instant)",
                  {200: ok(ref("WardSummary"))}, tags=["map"], errors=(400, 403),
                  params=query_params(SummaryQuery),
                  description="With `at`, the roll-up as it was then: devices' status and values "
                              "as GET /api/v1/state?at= derives them, the alarms open then. A "
                              "future or unparsable `at` is a 400 naming the field."),
    }
    p["/api/v1/search"] = {
        "get": op("Find devices by id, name, ward or address, and wards by code or name",
                  {200: ok(OBJ)}, tags=["map"], errors=(400, 403),
                  params=[param("q", required=True, description="2 to 100 characters",
                                schema={"type": "string", "minLength": 2, "maxLength": 100,
                                        "pattern": "^[^\\u0000]*$"}),
                          param("limit", schema={"type": "integer", "minimum": 1, "maximum": 50},
                                description="1-50 devices (10)")],
                  description="`{\"q\", \"wards\": [{code, name, bbox}], \"devices\": [{id, kind, "
                              "name, ward, ward_name, address, center}]}`: an exact id first, "
                              "then ids and names that start with `q`, then the rest."),
    }
    media_desc = ("A camera's `stream_url` (HLS playlist or MJPEG; `src=stream`) or `snapshot_url` "
                  "(`src=snapshot`) relayed by the server. A playlist's segments are fetched by "
                  "their path relative to it, on the same host only. A camera on a loopback, "
                  "link-local or private address is reached only when `[security] "
                  "allow_outbound` names its network (400 naming the field otherwise).")
    for path in ("/api/v1/devices/{id}/media", "/api/v1/devices/{id}/media/{path}"):
        p[path] = {
            "parameters": [path_id()] + ([path_id("path")] if path.endswith("{path}") else []),
            "get": op("A camera's stream or snapshot, through the server",
                      {200: ok({"type": "string", "format": "binary"}, ctype="application/octet-stream")},
                      tags=["map"], errors=(400, 403, 404, 502), description=media_desc,
                      params=[param("src", schema={"type": "string", "enum": ["stream", "snapshot"]})]),
        }
    p["/api/v1/me"] = {
        "get": op("Who this token is", {200: ok(ref("Me"))}, tags=["map"]),
    }
    p["/api/v1/state"] = {
        "get": op("Every device as it was at a past instant: status, latest values, worst alarm",
                  {200: ok(ref("StateCollection"), ctype=GEOJSON)}, tags=["map"],
                  errors=(400,), params=query_params(StateQuery),
                  description="Features shaped like GET /api/v1/devices' ones; status is derived "
                              "from the last reading before `at` (stale after 3 reporting "
                              "intervals, offline after 10), values are the latest reading per "
                              "metric at or before `at`, alarm_severity the highest alarm "
                              "active then (a crew token: its crew's alarms only). A future or "
                              "unparsable `at` is a 400 naming the field."),
    }
    p["/api/v1/ws"] = {
        "get": op(
            "The live websocket (state and alarms for a viewport)",
            {101: ok(None, "Switching protocols")}, tags=["map"], errors=(400,),
            params=[param("token", description="the bearer token, for browsers")],
            description='Send {"op": "subscribe", "bbox": [...], "layers": [...], '
                        '"alarms": true}; receive a snapshot, then state and alarm messages '
                        '(CONTRACT.md). {"op": "replay", "from", "to", "speed", "bbox", '
                        '"layers"} replays the past: a snapshot with "at", the state and alarm '
                        'messages with their original ts, then {"type": "replay_end"}; '
                        '{"op": "live"} returns to live (docs/api.md). '
                        "A plain HTTP GET is answered 400."),
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
    # ---------------------------------------------------------------- citizens' reports
    rp = ["reports"]
    num = r"-?[0-9]+(\\.[0-9]+)?"
    BBOX = f"^{num},{num},{num},{num}$"
    cats = {"type": "string", "enum": ["streetlight_out", "water_leak", "fallen_tree", "tree_pruning",
                                       "pothole", "flooding", "traffic_signal", "other"]}
    public_report = {"type": "object", "properties": {
        "code": STR, "status": STR, "category": STR, "ward": STR, "unit": STR, "reporters": INT,
        "events": arr({"type": "object", "properties": {"at": STR, "status": STR, "note": STR}}),
        "photos": arr(STR), "before": arr(STR), "after": arr(STR), "ward_name": nullable(STR),
        "lon": {"type": "number"}, "lat": {"type": "number"}, "created_at": STR, "sla_due": STR,
        "rated": {"type": "boolean"}, "stars": nullable(INT)}}
    period = [param("from", schema={"type": "string", "format": "date-time"},
                    description="RFC 3339 date-time, with its offset"),
              param("to", schema={"type": "string", "format": "date-time"})]
    open_data = [param("category", schema=cats), param("status", schema={"type": "string", "enum": [
        "received", "verified", "assigned", "in_progress", "resolved", "rejected", "open", "closed"]}),
        param("ward", schema={"type": "string", "minLength": 1, "maxLength": 200}), *period]
    p["/api/v1/public/reports"] = {
        "post": op("Report a problem (no token): category, lat, lon, description, optional contact, "
                   "up to 3 files 'photo'", {201: ok({"type": "object", "properties": {
                       "code": STR, "status": STR, "url": STR}}, "Received")},
                   tags=rp, errors=(400, 413, 422, 429, 503), public=True,
                   params=[param("Idempotency-Key", "header",
                                 {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,100}$"},
                                 "one random key per report (a UUID): sent again with the same key, "
                                 "the report is not made twice; the answer is the first one's "
                                 "(Idempotent-Replayed: true). 422 when the key came with another report")],
                   request=body({"type": "object", "required": ["category", "lat", "lon", "description"],
                                 "description": "and up to 3 files 'photo' (JPEG, PNG or WebP)",
                                 "properties": {"category": cats,
                                                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                                                "lon": {"type": "number", "minimum": -180, "maximum": 180},
                                                "description": {"type": "string", "pattern": r"\S",
                                                                "maxLength": 4000},
                                                "contact": {"type": "string", "maxLength": 200}}},
                                "multipart/form-data", "application/x-www-form-urlencoded")),
    }
    p["/api/v1/public/reports/stats"] = {
        "get": op("Reports received and resolved, within SLA, median hours, satisfaction (no token)",
                  {200: ok(OBJ)}, tags=rp, errors=(400,), public=True,
                  params=[param("from", schema={"type": "string", "format": "date-time"}),
                          param("to", schema={"type": "string", "format": "date-time"}),
                          param("ward"), param("category")]),
    }
    p["/api/v1/public/reports.geojson"] = {
        "get": op("Open data: every report's public fields as GeoJSON (no contact, description or code)",
                  {200: ok(OBJ, ctype="application/geo+json")}, tags=rp, errors=(400,), public=True,
                  params=open_data),
    }
    p["/api/v1/public/reports.csv"] = {
        "get": op("Open data: the same as CSV (RFC 4180)", {200: ok(STR, ctype="text/csv")}, tags=rp,
                  errors=(400,), public=True, params=open_data),
    }
    p["/api/v1/public/reports/stats/breakdown"] = {
        "get": op("The statistics per ward or per category over a period, and their total (no token)",
                  {200: ok(OBJ)}, tags=rp, errors=(400,), public=True,
                  params=[param("by", schema={"type": "string", "enum": ["ward", "category"]}), *period]),
    }
    p["/api/v1/public/basemap.json"] = {
        "get": op("TileJSON of the public base map (wards and roads; no token)", {200: ok(OBJ)},
                  tags=rp, public=True),
    }
    p["/api/v1/public/basemap/{z}/{x}/{y}.mvt"] = {
        "parameters": [path_id("z", schema={**INT, "minimum": 0, "maximum": 18}),
                       path_id("x", schema={**INT, "minimum": 0}),
                       path_id("y", schema={**INT, "minimum": 0})],
        "get": op("A public base map tile: the wards and roads layers (no token)",
                  {200: {"description": "the tile", "content": {
                      "application/vnd.mapbox-vector-tile": {"schema": STR}}},
                   204: ok(None, "An empty tile"), 304: ok(None, "Not modified (ETag)")},
                  tags=rp, errors=(400,), public=True),
    }
    p["/api/v1/public/reports/photos/{name}"] = {
        "parameters": [path_id("name")],
        "get": op("A report's photo: a JPEG without metadata (no token)",
                  {200: ok({"type": "string", "format": "binary"}, ctype="image/jpeg")},
                  tags=rp, errors=(404,), public=True),
    }
    p["/api/v1/public/reports/{code}"] = {
        "parameters": [path_id("code")],
        "get": op("A report by its tracking code (no token; never the contact)",
                  {200: ok(public_report)}, tags=rp, errors=(404,), public=True),
    }
    p["/api/v1/public/reports/{code}/rating"] = {
        "parameters": [path_id("code")],
        "post": op("Rate a resolved report once: stars 1-5, comment (no token)", {201: ok(OBJ)},
                   tags=rp, errors=(400, 404, 409), public=True,
                   request=body({"type": "object", "required": ["stars"], "properties": {
                       "stars": {"type": "integer", "minimum": 1, "maximum": 5}, "comment": STR}})),
    }
    p["/api/v1/reports"] = {
        "get": op("Citizens' reports, newest first (a crew token: its crew's)", {200: ok(OBJ)}, tags=rp,
                  errors=(400, 403), params=[
                      param("status", schema={"type": "string", "enum": [
                          "received", "verified", "assigned", "in_progress", "resolved", "rejected",
                          "open", "all"]}),
                      param("ward"), param("category"),
                      param("bbox", schema={"type": "string", "pattern": BBOX},
                            description="minLon,minLat,maxLon,maxLat")]),
    }
    p["/api/v1/reports/{id}"] = {
        "parameters": [path_id()],
        "get": op("One report with its events, photos, linked devices and alarm", {200: ok(OBJ)},
                  tags=rp, errors=(403, 404)),
    }
    p["/api/v1/reports/kpis"] = {
        "get": op("The reports' KPIs for the console's top bar: open, overdue (past the service "
                  "level), resolved, within_sla_pct, median_hours_to_resolve, satisfaction_pct",
                  {200: ok({"type": "object", "properties": {
                      "open": INT, "overdue": INT, "resolved": INT,
                      "within_sla_pct": nullable({"type": "number"}),
                      "median_hours_to_resolve": nullable({"type": "number"}),
                      "satisfaction_pct": nullable({"type": "number"}), "ratings": INT}})},
                  tags=rp, errors=(403,)),
    }
    for action, what in (("verify", "Verify a report (operator)"),
                         ("assign", "Assign a report to a crew: {\"crew\": id} (operator); the crew "
                                    "is notified through its channels"),
                         ("start", "Start the work on an assigned report: in_progress (operator; a "
                                   "crew: its own)"),
                         ("reject", "Reject a report: {\"note\"} (operator)"),
                         ("resolve", "Resolve a report: {\"note\"} (operator; a crew: its own); as "
                                     "multipart/form-data also up to 3 after-photos 'photo'"),
                         ("comment", "Comment on a report: {\"note\"} (operator; a crew: its own)")):
        types = ("application/json", "multipart/form-data") if action == "resolve" else ()
        p[f"/api/v1/reports/{{id}}/{action}"] = {
            "parameters": [path_id()],
            "post": op(what, {200: ok(OBJ)}, tags=rp,
                       errors=(400, 403, 404, 409, 413, 503) if action == "resolve" else (400, 403, 404, 409),
                       request=body({"type": "object", "properties": {"note": STR, "crew": STR}},
                                    *types, required=False)),
        }
    p["/api/v1/reports/{id}/merge"] = {
        "parameters": [path_id()],
        "post": op("Merge this report into another, kept: {\"into\": id} (operator); its codes, "
                   "photos, reporters and events move there", {200: ok(OBJ)}, tags=rp,
                   errors=(400, 403, 404, 409),
                   request=body({"type": "object", "required": ["into"], "additionalProperties": False,
                                 "properties": {"into": {"type": "integer", "minimum": 1,
                                                         "maximum": 2**63 - 1}, "note": STR}})),
    }
    p.update(schedule_paths())  # lighting schedules (server/http/openapi/schedules.py)
    p.update(work_order_paths())  # work orders (server/http/openapi/workorders.py)
    # ?token= is taken only where a client cannot send a header (server/http/auth.py).
    for path, item in p.items():
        if path == "/api/v1/ws" or path == "/tiles" or path.startswith("/tiles/"):
            item["get"]["security"] = [{"bearer": []}, {"session": []}, {"query_token": []}]
    return p


