"""Work orders' operations (server/api/work_orders.py) and the crews' photos on alarms."""

from __future__ import annotations

from typing import Any

from server.http.openapi.build import (
    INT,
    JSON,
    LOCATION,
    STR,
    TIME,
    arr,
    body,
    nullable,
    obj,
    ok,
    op,
    param,
    path_id,
)

TAG = ["work orders"]
TYPES = {"type": "string", "enum": ["inspection", "pruning", "removal"]}
STATUSES = {"type": "string", "enum": ["open", "in_progress", "done"]}
NOTE = {"type": "string", "maxLength": 4000, "pattern": r"\S"}
PHOTO = {"type": "string", "format": "binary", "description": "a JPEG, PNG or WebP picture"}
JPEG = {200: ok({"type": "string", "format": "binary"}, ctype="image/jpeg")}

EVENT = obj({"at": TIME, "status": STR, "note": nullable(STR), "by": nullable(STR),
             "photo": nullable(STR)}, ["at", "status"])
WORK_ORDER = obj({
    "id": INT, "device": STR, "device_kind": STR, "device_name": nullable(STR), "type": TYPES,
    "status": STATUSES, "crew": nullable(STR), "note": nullable(STR), "created_by": nullable(STR),
    "created_at": TIME, "updated_at": TIME, "done_at": nullable(TIME),
    "geometry": nullable({"type": "object"}), "events": arr(EVENT)},
    ["id", "device", "type", "status", "crew"])


def paths() -> dict[str, Any]:
    p: dict[str, Any] = {}
    p["/api/v1/work-orders"] = {
        "get": op("Work orders, newest first (a crew token: its crew's)",
                  {200: ok(obj({"work_orders": arr(WORK_ORDER)}, ["work_orders"]))}, tags=TAG,
                  errors=(400, 403), params=[
                      param("status", schema={"type": "string", "enum": [
                          "open", "in_progress", "done", "active", "all"]},
                            description="active: open or in_progress; all (the default)"),
                      param("type", schema=TYPES), param("device"), param("crew")]),
        "post": op("Create a work order for a device such as a tree (operator)",
                   {201: ok(WORK_ORDER, "Created", headers=LOCATION)}, tags=TAG,
                   errors=(400, 403, 415),
                   request=body(obj({"device": {"type": "string", "minLength": 1, "maxLength": 128},
                                     "type": TYPES, "crew": STR, "note": NOTE}, ["device", "type"],
                                    additionalProperties=False), JSON)),
    }
    wo_id = path_id(schema={**INT, "minimum": 0})
    p["/api/v1/work-orders/{id}"] = {
        "parameters": [wo_id],
        "get": op("One work order with its history", {200: ok(WORK_ORDER)}, tags=TAG, errors=(403, 404)),
    }
    for step, what in (("start", "Start the work (the crew assigned, or an operator)"),
                       ("done", "Finish the work, with a note and a photo (the crew assigned, or an "
                                "operator); a finished pruning sets the tree's last_pruned")):
        p[f"/api/v1/work-orders/{{id}}/{step}"] = {
            "parameters": [wo_id],
            "post": op(what, {200: ok(WORK_ORDER)}, tags=TAG, errors=(400, 403, 404, 409, 413, 415, 503),
                       request={"required": False, "content": {
                           JSON: {"schema": obj({"note": NOTE}, additionalProperties=False)},
                           "multipart/form-data": {"schema": obj({"note": NOTE, "photo": PHOTO})}}}),
        }
    p["/api/v1/work-orders/{id}/photos/{name}"] = {
        "parameters": [wo_id, path_id("name")],
        "get": op("A crew's photo of a work order: a JPEG without metadata (whoever may read the order)",
                  JPEG, tags=TAG, errors=(403, 404)),
    }
    return p


def alarm_photo_path(alarm_id: dict[str, Any]) -> dict[str, Any]:
    return {"/api/v1/alarms/{id}/photos/{name}": {
        "parameters": [alarm_id, path_id("name")],
        "get": op("A crew's photo of its work on an alarm: a JPEG without metadata (whoever may read "
                  "the alarm; a crew token: its crew's alarms)", JPEG, tags=["alarms"], errors=(403, 404)),
    }}
