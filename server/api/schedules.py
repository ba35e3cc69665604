"""``/api/v1/schedules``: lighting schedules (dimming profiles) assigned to a target.

    GET    /api/v1/schedules                 every schedule, with where it stands now
    POST   /api/v1/schedules                 create (201; 409 if the id is taken)
    GET    /api/v1/schedules/{id}            one, with tonight's steps at its lamps
    PUT    /api/v1/schedules/{id}            create or replace
    DELETE /api/v1/schedules/{id}
    POST   /api/v1/schedules/preview         a profile's night at a target, nothing stored
    GET    /api/v1/schedules/{id}/energy     energy used beside all night at 100 % (?days=7)

A schedule is ``{"name", "target", "steps", "exceptions", "enabled", "priority"}``: the
target is a group command's (``{"ward": …}``, ``{"parent": "<cabinet>"}``, ``{"devices":
[…]}``), steps and exceptions as in :mod:`rules.schedules`. Every write re-sends the step
in force to the schedule's lamps once (:mod:`server.schedules.runner`). Operators and
admins write, as they send commands; every token reads.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import numpy as np
from aiohttp import web
from pydantic import Field, StrictBool, StrictInt, StringConstraints, field_validator

from rules.schedules import MAX_EXCEPTIONS, DateException, Plan, Profile, Step, _check_order, local_night
from server import keys
from server.api.models import ID, GroupTarget, Id, TimeOrEpoch
from server.errors import Conflict, DomainError, Invalid, NotFound, Unavailable
from server.http import validate
from server.http.auth import require
from server.http.jsonutil import json_response
from server.http.validate import Body, Name, Query, Text
from server.schedules.energy import energy_report
from server.schedules.runner import COMMAND, POSITIONS_SQL, Scheduler
from server.store.audit import audit
from server.store.history import parse_time

routes = web.RouteTableDef()

# A schedule id, but not "preview": that path is the preview's (POST) alone.
SCHEDULE = "/api/v1/schedules/{id:(?!preview$)[^/]+}"
COLS = ("id, name, description, enabled, priority, target, steps, exceptions, version, created_by, "
        "created_at, updated_at, applied_until, last_step, last_applied_at")

ENERGY_MAX_DAYS = 31  # an hourly sum over a month of a ward's lamps: a second or two
Steps = Annotated[list[Step], Field(min_length=1, max_length=24, description=(
    "the steps of a night, in order: each starts at dusk±offset, dawn±offset or local HH:MM"))]
Exceptions = Annotated[list[DateException], Field(max_length=MAX_EXCEPTIONS, description=(
    "other steps for the nights of a date (YYYY-MM-DD, or MM-DD every year) or from/to"))]


def _in_order(steps: list[Step]) -> list[Step]:
    _check_order(steps)
    return steps


class ScheduleIn(Body):
    """A lighting schedule: a dimming profile and the lamps that follow it."""

    id: Id | None = Field(None, description="letters, digits and _.:- (default: made up)")
    name: Annotated[Name, StringConstraints(max_length=200)] = Field(examples=["Ward night dimming"])
    description: Annotated[Text, StringConstraints(max_length=2000)] = ""
    enabled: StrictBool = True
    priority: StrictInt = Field(0, ge=-100, le=100, description=(
        "a lamp in several schedules follows the highest priority, then the smallest target"))
    target: GroupTarget = Field(description="as a group command's: ward, parent (a cabinet), "
                                            "kind, devices, bbox")
    steps: Steps
    exceptions: Exceptions = Field(default=[])

    _steps_in_order = field_validator("steps")(_in_order)


class SchedulePreviewIn(Body):
    """A profile to try out: its night at a target's lamps (or the city), nothing stored."""

    steps: Steps
    exceptions: Exceptions = Field(default=[])
    target: GroupTarget | None = None
    night: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = Field(
        None, description="the night's date, YYYY-MM-DD (default: tonight)")

    _steps_in_order = field_validator("steps")(_in_order)


class EnergyQuery(Query):
    days: int = Field(7, ge=1, le=ENERGY_MAX_DAYS, description="how many days before `to`")
    to: TimeOrEpoch | None = Field(None, description="RFC 3339 or epoch ms (default: now)")


validate.explain(r"^\d{4}-\d{2}-\d{2}$", "must be a date like 2027-02-06")
BODY_MODELS = (ScheduleIn, SchedulePreviewIn)


def _scheduler(request: web.Request) -> Scheduler:
    scheduler = request.app.get(keys.SCHEDULES)
    if scheduler is None:
        raise Unavailable("the lighting scheduler is not running")
    return scheduler


def _json(row, scheduler: Scheduler) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "name", "description", "enabled", "priority", "target", "steps",
                               "exceptions", "version", "created_by", "created_at", "updated_at",
                               "applied_until", "last_step", "last_applied_at")}
    out["timezone"] = scheduler.settings.timezone
    out["status"] = scheduler.status(row["id"])
    out["links"] = [{"rel": "self", "href": f"/api/v1/schedules/{row['id']}"},
                    {"rel": "energy", "href": f"/api/v1/schedules/{row['id']}/energy"}]
    return out


def _target(doc: GroupTarget | None) -> dict[str, Any] | None:
    return doc.model_dump(exclude_unset=True) if doc is not None else None


async def _lamps_of(request: web.Request, target: dict[str, Any]) -> list[dict[str, Any]]:
    """The devices a target gives a schedule, or a 400 naming ``target``."""
    commands = request.app.get(keys.COMMANDS)
    if commands is None:
        raise Unavailable("the command service is not running")
    try:
        sel = await commands.select(target, COMMAND, {"level": 0})
    except DomainError as err:
        raise Invalid(f"target: {err.detail}", field="target",
                      errors=[{"field": "target", "reason": err.detail}]) from None
    if not sel.devices and sel.skipped:  # say why, e.g. MQTT is not configured on this server
        why = f"selects no device that can take set_dim ({sel.skipped[0]['id']}: {sel.skipped[0]['reason']})"
        raise Invalid(f"target: {why}", field="target", errors=[{"field": "target", "reason": why}])
    return sel.devices


@routes.get("/api/v1/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    scheduler = _scheduler(request)
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(f"select {COLS} from schedules order by id")
    return json_response({"schedules": [_json(r, scheduler) for r in rows],
                          "timezone": scheduler.settings.timezone})


@routes.get(SCHEDULE)
async def get_schedule(request: web.Request) -> web.Response:
    scheduler = _scheduler(request)
    sid = request.match_info["id"]
    async with request.app[keys.DB].acquire() as conn:
        row = await conn.fetchrow(f"select {COLS} from schedules where id = $1", sid)
    if row is None:
        raise NotFound(f"no schedule {sid!r}")
    out = _json(row, scheduler)
    centre = scheduler.centre(sid)
    c = scheduler.schedules.get(sid)
    if centre is not None and c is not None and c.plan is not None:
        out["tonight"] = _night_json(c.plan, local_night(scheduler.tz, scheduler.clock.now()), *centre)
    return json_response(out)


def _night_json(plan: Plan, night: int, lat: float, lon: float) -> dict[str, Any]:
    p = plan.night_plan(night, lat, lon)

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

    return {"night": p["night"], "exception": p["exception"], "at": {"lat": lat, "lon": lon},
            "sunset": iso(p["sunset"]), "sunrise": iso(p["sunrise"]),
            "steps": [{**s, "start": iso(s["start"])} for s in p["steps"]],
            "energy_share": round(p["energy_share"], 4),
            "saved_pct": round(100 * (1 - p["energy_share"]), 1)}


async def _store(request: web.Request, sid: str, doc: ScheduleIn, *, create: bool) -> web.Response:
    who = require(request, "operator")
    scheduler = _scheduler(request)
    target = _target(doc.target) or {}
    lamps = await _lamps_of(request, target)
    if not lamps:
        raise Invalid("target: it selects no device that takes set_dim (streetlights and lighting "
                      "cabinets)", field="target",
                      errors=[{"field": "target", "reason": "selects no device that takes set_dim"}])
    steps = [s.model_dump(mode="json") for s in doc.steps]
    exceptions = [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in doc.exceptions]
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        cur = await conn.fetchrow("select version from schedules where id = $1 for update", sid)
        if cur is not None and create:
            raise Conflict(f"schedule {sid!r} exists; PUT /api/v1/schedules/{sid} replaces it")
        # Any change re-sends the step in force once (applied_until null): what the lamps
        # should do now may have changed with it.
        await conn.execute(
            """insert into schedules (id, name, description, enabled, priority, target, steps,
                                      exceptions, created_by)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               on conflict (id) do update set name = excluded.name,
                   description = excluded.description, enabled = excluded.enabled,
                   priority = excluded.priority, target = excluded.target, steps = excluded.steps,
                   exceptions = excluded.exceptions, version = schedules.version + 1,
                   updated_at = now(), applied_until = null""",
            sid, doc.name, doc.description, doc.enabled, doc.priority, target, steps, exceptions,
            who.actor)
        await audit(conn, who.actor, "schedule.create" if cur is None else "schedule.update",
                    target=sid, details={"name": doc.name, "target": target, "steps": steps,
                                         "exceptions": len(exceptions), "enabled": doc.enabled,
                                         "lamps": len(lamps)})
    await scheduler.reload()
    async with request.app[keys.DB].acquire() as conn:
        row = await conn.fetchrow(f"select {COLS} from schedules where id = $1", sid)
    return json_response(_json(row, scheduler), status=201 if cur is None else 200,
                         headers={"Location": f"/api/v1/schedules/{sid}"})


@routes.post("/api/v1/schedules")
async def create_schedule(request: web.Request) -> web.Response:
    require(request, "operator")
    doc = await validate.body(request, ScheduleIn)
    return await _store(request, doc.id or f"sch-{uuid.uuid4().hex[:8]}", doc, create=True)


@routes.put(SCHEDULE)
async def put_schedule(request: web.Request) -> web.Response:
    require(request, "operator")
    sid = request.match_info["id"]
    doc = await validate.body(request, ScheduleIn)
    if doc.id is not None and doc.id != sid:
        raise Invalid(f"the body's id {doc.id!r} is not {sid!r}; a schedule cannot be renamed",
                      field="id", errors=[{"field": "id", "reason": f"must be {sid!r} or left out"}])
    if re.fullmatch(ID, sid) is None:
        raise Invalid(f"schedule ids are letters, digits and _.:- (up to 128), not {sid!r}",
                      field="id")
    return await _store(request, sid, doc, create=False)


@routes.delete(SCHEDULE)
async def delete_schedule(request: web.Request) -> web.Response:
    who = require(request, "operator")
    sid = request.match_info["id"]
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        row = await conn.fetchrow("delete from schedules where id = $1 returning name", sid)
        if row is None:
            raise NotFound(f"no schedule {sid!r}")
        await audit(conn, who.actor, "schedule.delete", target=sid, details={"name": row["name"]})
    await _scheduler(request).reload()
    return web.Response(status=204)


@routes.post("/api/v1/schedules/preview")
async def preview(request: web.Request) -> web.Response:
    require(request, "operator")
    doc = await validate.body(request, SchedulePreviewIn)
    scheduler = _scheduler(request)
    profile = Profile.model_validate({"steps": [s.model_dump() for s in doc.steps],
                                      "exceptions": [e.model_dump(by_alias=True) for e in doc.exceptions]})
    plan = Plan(profile, scheduler.tz, scheduler.settings.resolution_s)
    target = _target(doc.target)
    async with request.app[keys.DB].acquire() as conn:
        if target:
            ids = [d["id"] for d in await _lamps_of(request, target)]
            rows = await conn.fetch(POSITIONS_SQL, ids)
            count = len(rows)
            if rows:
                lat = float(np.median([r["lat"] for r in rows]))
                lon = float(np.median([r["lon"] for r in rows]))
        if not target or not rows:
            count = 0 if target else None
            box = await conn.fetchrow("select ST_Y(ST_Centroid(ST_Extent(geom))) as lat, "
                                      "ST_X(ST_Centroid(ST_Extent(geom))) as lon from devices")
            lat, lon = (box["lat"], box["lon"]) if box["lat"] is not None else (21.59, 105.85)
    if doc.night is not None:
        try:
            day = datetime.fromisoformat(doc.night).date()
        except ValueError:
            raise Invalid(f"night {doc.night!r} is not a date of the calendar", field="night") from None
        night = (day - datetime(1970, 1, 1).date()).days
    else:
        night = local_night(scheduler.tz, scheduler.clock.now())
    return json_response({"lamps": count, **_night_json(plan, night, lat, lon)})


@routes.get("/api/v1/schedules/{id}/energy")
async def energy(request: web.Request) -> web.Response:
    scheduler = _scheduler(request)
    sid = request.match_info["id"]
    q = validate.query(request, EnergyQuery)
    to = parse_time(q.to, "to") or datetime.now(UTC)
    try:
        frm = to - timedelta(days=q.days)
    except OverflowError:
        raise Invalid(f"to is too early for {q.days} days before it", field="to") from None
    async with request.app[keys.DB].acquire() as conn:
        row = await conn.fetchrow("select id from schedules where id = $1", sid)
        if row is None:
            raise NotFound(f"no schedule {sid!r}")
        c = scheduler.schedules.get(sid)
        if c is None or c.lamps is None:
            keys_, lat, lon = np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        else:
            keys_, lat, lon = c.keys, c.lamps.lat, c.lamps.lon
        report = await energy_report(conn, keys_, lat, lon, frm, to, scheduler.tz)
    out: dict[str, Any] = {"schedule": sid, **report}
    centre = scheduler.centre(sid)
    if centre is not None and c is not None and c.plan is not None:
        tonight = c.plan.night_plan(local_night(scheduler.tz, scheduler.clock.now()), *centre)
        out["planned_saved_pct"] = round(100 * (1 - tonight["energy_share"]), 1)
    return json_response(out)

