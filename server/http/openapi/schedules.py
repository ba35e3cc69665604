"""The lighting schedules' operations and components (server/api/schedules.py)."""

from __future__ import annotations

from typing import Any

from server.api import schedules as api
from server.http.openapi.build import (
    BOOL,
    INT,
    LOCATION,
    NUM,
    OBJ,
    STR,
    TIME,
    arr,
    body,
    nullable,
    obj,
    ok,
    op,
    path_id,
    ref,
)
from server.http.openapi.schemas import REF, _json_schema_words, query_params

TAG = ["schedules"]


def paths() -> dict[str, Any]:
    p: dict[str, Any] = {}
    p["/api/v1/schedules"] = {
        "get": op("Lighting schedules, with where each stands now", {200: ok(ref("ScheduleList"))},
                  tags=TAG),
        "post": op("Create a lighting schedule (operator); its step in force is sent at once",
                   {201: ok(ref("Schedule"), "Created", headers=LOCATION)}, tags=TAG,
                   errors=(400, 403, 409, 415, 503), request=body(ref("ScheduleIn"))),
    }
    p["/api/v1/schedules/{id}"] = {
        "parameters": [path_id()],
        "get": op("One lighting schedule, with tonight's steps at its lamps",
                  {200: ok(ref("Schedule"))}, tags=TAG, errors=(404,)),
        "put": op("Create or replace a lighting schedule (operator)",
                  {200: ok(ref("Schedule"), headers=LOCATION),
                   201: ok(ref("Schedule"), "Created", headers=LOCATION)},
                  tags=TAG, errors=(400, 403, 415, 503), request=body(ref("ScheduleIn"))),
        "delete": op("Delete a lighting schedule (operator); its lamps keep their last level",
                     {204: ok(None, "Deleted")}, tags=TAG, errors=(403, 404)),
    }
    p["/api/v1/schedules/preview"] = {
        "post": op("A profile's night at a target's lamps, and the energy it saves (operator)",
                   {200: ok(ref("SchedulePreview"))}, tags=TAG, errors=(400, 403, 415, 503),
                   request=body(ref("SchedulePreviewIn"))),
    }
    p["/api/v1/schedules/{id}/energy"] = {
        "parameters": [path_id()],
        "get": op("Energy a schedule's lamps used, beside the same lamps at 100 % all night",
                  {200: ok(ref("ScheduleEnergy"))}, tags=TAG, errors=(400, 404),
                  params=query_params(api.EnergyQuery)),
    }
    return p


STEP_OUT = obj({"at": STR, "level": NUM, "start": TIME}, ["at", "level", "start"])
NIGHT = {
    "night": {**STR, "format": "date"}, "exception": nullable(STR),
    "at": obj({"lat": NUM, "lon": NUM}), "sunset": TIME, "sunrise": TIME,
    "steps": arr(STEP_OUT), "energy_share": {**NUM, "description": "of a night at 100 %"},
    "saved_pct": NUM,
}


def components() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in api.BODY_MODELS:
        schema = model.model_json_schema(ref_template=REF, by_alias=True)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    out["ScheduleNight"] = obj(NIGHT, ["night", "sunset", "sunrise", "steps", "energy_share"])
    out["Schedule"] = obj({
        "id": STR, "name": STR, "description": STR, "enabled": BOOL, "priority": INT,
        "target": OBJ, "steps": arr(ref("Step")), "exceptions": arr(OBJ), "version": INT,
        "created_by": nullable(STR), "created_at": TIME, "updated_at": TIME,
        "applied_until": {**nullable(TIME), "description": (
            "every step that started up to here has been commanded")},
        "last_step": {**nullable(OBJ), "description": (
            "the step last commanded: step, level, exception, started_at, devices, groups")},
        "last_applied_at": nullable(TIME), "timezone": STR,
        "status": obj({"lamps": INT, "overridden": INT, "error": STR, "level_now": NUM,
                       "next": obj({"at": TIME, "level": NUM})}, ["lamps"]),
        "tonight": ref("ScheduleNight"), "links": arr(ref("Link")),
    }, ["id", "name", "enabled", "target", "steps", "exceptions", "status"])
    out["ScheduleList"] = obj({"schedules": arr(ref("Schedule")), "timezone": STR}, ["schedules"])
    out["SchedulePreview"] = obj({"lamps": nullable(INT), **NIGHT},
                                 ["night", "sunset", "sunrise", "steps", "energy_share"])
    out["ScheduleEnergy"] = obj({
        "schedule": STR, "from": TIME, "to": TIME, "lamps": INT, "measured_lamps": INT,
        "used_kwh": NUM, "full_kwh": {**NUM, "description": "the same lamps at 100 % all night"},
        "saved_kwh": NUM, "saved_pct": nullable(NUM), "planned_saved_pct": NUM,
        "source": nullable(STR), "nights": arr(obj({"night": STR, "used_kwh": NUM, "full_kwh": NUM,
                                                    "saved_pct": nullable(NUM)})),
    }, ["schedule", "from", "to", "lamps", "used_kwh", "full_kwh", "saved_kwh", "saved_pct"])
    return _json_schema_words(out)
