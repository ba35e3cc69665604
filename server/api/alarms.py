"""``/api/v1/alarms``: list and read alarms, act on them (ISA-18.2 lifecycle), history, KPIs.

Roles: everyone may read; operators (and admins) acknowledge, shelve, unshelve, assign and
take alarms out of service, close and reopen them; a crew token reads, comments on and sets
the work state (with a note and a photo) of the alarms assigned to its crew, and only those
(not the KPIs, which count every alarm). A crew's photo is served under its alarm, to the
roles that may read that alarm.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from geo.geojson import GeometryError, parse_bbox
from rules.kpi import activation_series, alarm_kpis
from server import keys
from server.alarms.views import ALARM_SELECT, alarm_json
from server.api import workphotos
from server.api.models import ALARM_ACTIONS, AlarmQuery, KpiQuery
from server.errors import Forbidden, Invalid, NotFound
from server.http import validate
from server.http.auth import principal, require
from server.http.jsonutil import json_response
from server.store.catalog import KIND_NAMES
from server.store.schema import ALARM_STATES as ALARM_STATE_NAMES

routes = web.RouteTableDef()

KPI_MAX_DAYS = 400

# action -> roles allowed besides admin; "crew" means: a crew token, its own alarms only
ACTIONS: dict[str, tuple[str, ...]] = {
    "ack": ("operator",),
    "shelve": ("operator",),
    "unshelve": ("operator",),
    "assign": ("operator",),
    "out_of_service": ("operator",),
    "comment": ("operator", "crew"),
    "work": ("operator", "crew"),
    "close": ("operator",),
    "reopen": ("operator",),
}


# The ward an alarm belongs to: its device's, or for an incident at an estimated point (no
# device ward) the ward that point lies in. As the ward roll-up counts it.
WARD_OF_ALARM = ("coalesce(d.ward, (select w.code from wards w where a.geom is not null "
                 "and ST_Intersects(w.geom, a.geom) limit 1))")


def _time(raw: str | None, name: str, default: datetime | None) -> datetime:
    if not raw:
        return default
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"{name} must be an RFC 3339 time like 2026-11-22T10:00:00Z, got {raw!r}",
                      field=name) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _bbox(raw: str | None) -> tuple[float, float, float, float] | None:
    try:
        return parse_bbox(raw)
    except GeometryError as e:
        raise Invalid(str(e), field="bbox") from None


@routes.get("/api/v1/alarms")
async def list_alarms(request: web.Request) -> web.Response:
    who = principal(request)
    where, args = [], []

    def arg(v: Any) -> str:
        args.append(v)
        return f"${len(args)}"

    q = validate.query(request, AlarmQuery)
    states = q.state or []
    if not states or states == ["open"]:
        where.append("a.state <> 'closed'")
    elif states != ["all"]:
        bad = [s for s in states if s not in ALARM_STATE_NAMES]
        if bad:
            raise Invalid(f"unknown state {', '.join(bad)}; states: "
                          f"{', '.join(ALARM_STATE_NAMES)}, or open (default) or all", field="state")
        where.append(f"a.state = any({arg(states)}::text[])")
    if q.severity:
        where.append(f"a.severity = any({arg(q.severity)}::text[])")
    bbox = _bbox(q.bbox)
    if bbox:
        env = f"ST_MakeEnvelope({arg(bbox[0])}, {arg(bbox[1])}, {arg(bbox[2])}, {arg(bbox[3])}, 4326)"
        where.append(f"coalesce(a.geom, d.geom) && {env} "
                     f"and ST_Intersects(coalesce(a.geom, d.geom), {env})")
    for name, values in (("rule", q.rule), ("device", q.device)):
        if values:
            where.append(f"a.{name} = any({arg(values)}::text[])")
    crew = q.crew
    if q.assigned == "me":
        if who.crew is None:
            raise Invalid("assigned=me needs a crew token; use crew=<id> otherwise", field="assigned")
        crew = who.crew
    if who.role == "crew":
        if crew not in (None, who.crew):
            raise Forbidden(f"a crew token sees its own crew's alarms ({who.crew}) only")
        crew = who.crew or ""
    if crew is not None:
        where.append(f"a.assigned_crew = {arg(crew)}")
    for flag in ("suppressed", "out_of_service", "chattering", "active"):
        v = getattr(q, flag)
        if v is not None:
            where.append(f"a.{flag} = {arg(v)}")
    if q.shelved is not None:
        where.append(("" if q.shelved else "not ") + "coalesce(a.shelved_until > now(), false)")
    if q.incident is not None:
        where.append(f"a.incident = {arg(q.incident)}")
    if q.priority:
        if any(p not in (1, 2, 3) for p in q.priority):
            raise Invalid("priority is 1 (high), 2 (medium) or 3 (low)", field="priority")
        where.append(f"a.priority = any({arg(q.priority)}::smallint[])")
    if q.kind:
        bad = sorted(set(q.kind) - KIND_NAMES)
        if bad:
            raise Invalid(f"unknown device kind {', '.join(bad)}; kinds: {', '.join(sorted(KIND_NAMES))}",
                          field="kind")
        where.append(f"d.kind = any({arg(q.kind)}::text[])")
    if q.ward:
        where.append(f"{WARD_OF_ALARM} = any({arg(q.ward)}::text[])")
    for column, lo, hi in (("raised_at", "from", "to"), ("closed_at", "closed_from", "closed_to")):
        raw_lo, raw_hi = getattr(q, "from_" if lo == "from" else lo), getattr(q, hi)
        start = _time(raw_lo, lo, None) if raw_lo else None
        end = _time(raw_hi, hi, None) if raw_hi else None
        if start and end and start >= end:
            raise Invalid(f"{lo} must be before {hi}", field=lo)
        if start:
            where.append(f"a.{column} >= {arg(start)}")
        if end:
            where.append(f"a.{column} < {arg(end)}")
    if q.q:
        like = arg("%" + q.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        where.append(f"(a.message ilike {like} or a.device ilike {like} or a.rule ilike {like} "
                     f"or d.name ilike {like})")
    if q.before is not None:
        where.append(f"a.id < {arg(q.before)}")
    limit = q.limit
    sql = ALARM_SELECT + (" where " + " and ".join(where) if where else "")
    sql += f" order by a.id desc limit {arg(limit + 1)}"
    async with request.app[keys.DB].acquire() as conn:
        if q.ward:
            known = await conn.fetchval("select array_agg(code) from wards where code = any($1::text[])",
                                        q.ward)
            bad = sorted(set(q.ward) - set(known or ()))
            if bad:
                raise Invalid(f"unknown ward {', '.join(bad)}; GET /api/v1/wards/summary lists them",
                              field="ward")
        rows = await conn.fetch(sql, *args)
    more = len(rows) > limit
    alarms = [alarm_json(r) for r in rows[:limit]]
    body: dict[str, Any] = {"alarms": alarms, "count": len(alarms)}
    if more:
        q = dict(request.query)
        q["before"] = str(alarms[-1]["id"])
        body["links"] = [{"rel": "next", "href": str(request.rel_url.with_query(q))}]
    return json_response(body)


MAX_ID = 2**63 - 1  # alarms.id is a bigint


def _alarm_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    alarm_id = int(raw)
    if alarm_id > MAX_ID:
        raise NotFound(f"no alarm with id {raw}")
    return alarm_id


async def _visible(request: web.Request, conn, alarm_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(ALARM_SELECT + " where a.id = $1", alarm_id)
    if row is None:
        raise NotFound(f"no alarm with id {alarm_id}")
    who = principal(request)
    if who.role == "crew" and row["assigned_crew"] != who.crew:
        raise Forbidden(f"alarm {alarm_id} is not assigned to your crew ({who.crew or 'none'})")
    return alarm_json(row)


@routes.get(r"/api/v1/alarms/{id:\d+}")
async def get_alarm(request: web.Request) -> web.Response:
    async with request.app[keys.DB].acquire() as conn:
        return json_response(await _visible(request, conn, _alarm_id(request)))


@routes.get(r"/api/v1/alarms/{id:\d+}/events")
async def alarm_events(request: web.Request) -> web.Response:
    alarm_id = _alarm_id(request)
    async with request.app[keys.DB].acquire() as conn:
        await _visible(request, conn, alarm_id)
        rows = await conn.fetch(
            "select id, at, event, actor, reason, details from alarm_events "
            "where alarm_id = $1 order by id", alarm_id)
    return json_response({"alarm": alarm_id, "events": [dict(r) for r in rows]})


@routes.post(r"/api/v1/alarms/{id:\d+}/{action:" + "|".join(ACTIONS) + "}")
async def act(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    roles = ACTIONS.get(action)
    if roles is None:
        raise NotFound(f"no alarm action {action!r}; actions: {', '.join(ACTIONS)}")
    who = require(request, *roles)
    if who.role == "crew":  # another crew's alarm is a 403 whatever the body says
        async with request.app[keys.DB].acquire() as conn:
            await _visible(request, conn, _alarm_id(request))
    model = ALARM_ACTIONS[action][0]
    jpeg = None
    if action == "work":  # JSON, or multipart with the crew's photo
        fields, raw = await workphotos.read_form(request)
        body = validate.parse(model, fields, "the body").model_dump(exclude_unset=True)
        if raw is not None:
            body["photo"], jpeg = await workphotos.clean(request, raw)
    else:
        body = (await validate.body(request, model, optional=True)).model_dump(exclude_unset=True)
    engine = request.app[keys.ALARMS]
    alarm = await engine.act(_alarm_id(request), action, who, body)
    if jpeg is not None:
        await workphotos.put(request, jpeg)
    return json_response(alarm)


@routes.get(r"/api/v1/alarms/{id:\d+}/photos/{name}")
async def alarm_photo(request: web.Request) -> web.Response:
    """A crew's photo of its work on this alarm, to whoever may see the alarm."""
    alarm_id = _alarm_id(request)
    name = request.match_info["name"]
    async with request.app[keys.DB].acquire() as conn:
        await _visible(request, conn, alarm_id)
        known = await conn.fetchval(
            "select exists(select 1 from alarm_events where alarm_id = $1 and details ->> 'photo' = $2)",
            alarm_id, name.removesuffix(".jpg"))
    if not known:
        raise NotFound(f"alarm {alarm_id} has no photo {name}")
    return workphotos.serve(request, name)


@routes.get("/api/v1/alarms/kpis")
async def kpis(request: web.Request) -> web.Response:
    # Every alarm's activations and rates: not a crew's business (its own alarms only).
    require(request, "viewer", "operator", "integrator")
    q = validate.query(request, KpiQuery)
    now = datetime.now(UTC)
    end = _time(q.to, "to", now)
    try:
        start = _time(q.from_, "from", end - timedelta(days=1))
    except OverflowError:
        raise Invalid("to is too early; give from as well", field="from") from None
    if start >= end:
        raise Invalid("from must be before to", field="from")
    if end - start > timedelta(days=KPI_MAX_DAYS):
        raise Invalid(f"at most {KPI_MAX_DAYS} days at a time", field="from")
    consoles = q.consoles or request.app[keys.SETTINGS].rules.operator_consoles
    async with request.app[keys.DB].acquire() as conn:
        raised = await conn.fetch(
            """select extract(epoch from e.at) as t, a.priority, a.rule || ':' || a.device as point,
                      coalesce((e.details ->> 'annunciated')::boolean, true) as annunciated
               from alarm_events e join alarms a on a.id = e.alarm_id
               where e.event = 'raised' and e.at >= $1 and e.at < $2""", start, end)
        chattering = await conn.fetchval(
            """select count(distinct alarm_id) from alarm_events
               where event = 'chattering' and at >= $1 and at < $2
                 and not coalesce((details ->> 'ended')::boolean, false)""", start, end)
        # standing over 24 h at the end, and shown then: shelved or out of service is not stale
        stale = await conn.fetchval(
            """select count(*) from alarms
               where raised_at < $1::timestamptz - interval '24 hours'
                 and (cleared_at is null or cleared_at > $1) and (closed_at is null or closed_at > $1)
                 and not suppressed and not out_of_service
                 and not coalesce(shelved_until > $1, false)""", end)
    shown = [r for r in raised if r["annunciated"]]
    out = alarm_kpis([float(r["t"]) for r in shown], [r["priority"] for r in shown],
                     [r["point"] for r in shown], start.timestamp(), end.timestamp(),
                     consoles=consoles, chattering=chattering, stale=stale)
    series = activation_series([float(r["t"]) for r in shown], start.timestamp(), end.timestamp(),
                               consoles=consoles)
    return json_response({"from": start, "to": end, "operator_consoles": consoles,
                          "activations": len(raised), "not_annunciated": len(raised) - len(shown),
                          **out, "series": series})
