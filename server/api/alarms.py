"""``/api/v1/alarms``: list and read alarms, act on them (ISA-18.2 lifecycle), history, KPIs.

Roles: everyone may read; operators (and admins) acknowledge, shelve, unshelve, assign and
take alarms out of service; a crew token reads, comments on and sets the work state of
the alarms assigned to its crew, and only those.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from geo.geojson import GeometryError, parse_bbox
from rules.kpi import alarm_kpis
from rules.vocab import SEVERITIES
from server import keys
from server.alarms.views import ALARM_SELECT, alarm_json
from server.http.auth import principal, require
from server.http.jsonutil import json_response, read_json
from server.http.problems import Problem, bad_request, int_param
from server.store.schema import ALARM_STATES as ALARM_STATE_NAMES

routes = web.RouteTableDef()

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
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
}


def _bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise bad_request(f"{name} must be true or false, got {raw!r}")


def _list(request: web.Request, name: str) -> list[str]:
    return [v for v in request.query.get(name, "").split(",") if v]


def _time(request: web.Request, name: str, default: datetime) -> datetime:
    raw = request.query.get(name)
    if not raw:
        return default
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"{name} must be an RFC 3339 time like 2026-11-22T10:00:00Z, "
                          f"got {raw!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@routes.get("/api/v1/alarms")
async def list_alarms(request: web.Request) -> web.Response:
    who = principal(request)
    where, args = [], []

    def arg(v: Any) -> str:
        args.append(v)
        return f"${len(args)}"

    states = _list(request, "state")
    if not states or states == ["open"]:
        where.append("a.state <> 'closed'")
    elif states != ["all"]:
        bad = [s for s in states if s not in ALARM_STATE_NAMES]
        if bad:
            raise bad_request(f"unknown state {', '.join(bad)}; states: "
                              f"{', '.join(ALARM_STATE_NAMES)}, or open (default) or all")
        where.append(f"a.state = any({arg(states)}::text[])")
    severities = _list(request, "severity")
    if severities:
        bad = [s for s in severities if s not in SEVERITIES]
        if bad:
            raise bad_request(f"unknown severity {', '.join(bad)}; one of {', '.join(SEVERITIES)}")
        where.append(f"a.severity = any({arg(severities)}::text[])")
    try:
        bbox = parse_bbox(request.query.get("bbox"))
    except GeometryError as e:
        raise bad_request(str(e)) from None
    if bbox:
        env = f"ST_MakeEnvelope({arg(bbox[0])}, {arg(bbox[1])}, {arg(bbox[2])}, {arg(bbox[3])}, 4326)"
        where.append(f"coalesce(a.geom, d.geom) && {env} "
                     f"and ST_Intersects(coalesce(a.geom, d.geom), {env})")
    for name in ("rule", "device"):
        values = _list(request, name)
        if values:
            where.append(f"a.{name} = any({arg(values)}::text[])")
    crew = request.query.get("crew")
    if request.query.get("assigned") == "me":
        if who.crew is None:
            raise bad_request("assigned=me needs a crew token; use crew=<id> otherwise")
        crew = who.crew
    elif request.query.get("assigned") not in (None, ""):
        raise bad_request("assigned takes one value: me")
    if who.role == "crew":
        if crew not in (None, who.crew):
            raise Problem(403, f"a crew token sees its own crew's alarms ({who.crew}) only")
        crew = who.crew or ""
    if crew is not None:
        where.append(f"a.assigned_crew = {arg(crew)}")
    for flag in ("suppressed", "out_of_service", "chattering", "active"):
        v = _bool(request, flag)
        if v is not None:
            where.append(f"a.{flag} = {arg(v)}")
    shelved = _bool(request, "shelved")
    if shelved is not None:
        where.append(("" if shelved else "not ") + "coalesce(a.shelved_until > now(), false)")
    incident = _id_param(request, "incident", "an alarm id")
    if incident is not None:
        where.append(f"a.incident = {arg(incident)}")
    priorities = _list(request, "priority")
    if priorities:
        if any(p not in ("1", "2", "3") for p in priorities):
            raise bad_request("priority is 1 (high), 2 (medium) or 3 (low)")
        where.append(f"a.priority = any({arg([int(p) for p in priorities])}::smallint[])")
    before = _id_param(request, "before", "an alarm id (the last one of the previous page)")
    if before is not None:
        where.append(f"a.id < {arg(before)}")
    limit = int_param(request.query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    sql = ALARM_SELECT + (" where " + " and ".join(where) if where else "")
    sql += f" order by a.id desc limit {arg(limit + 1)}"
    async with request.app[keys.DB].acquire() as conn:
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
        raise Problem(404, f"no alarm with id {raw}")
    return alarm_id


def _id_param(request: web.Request, name: str, what: str) -> int | None:
    raw = request.query.get(name)
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > MAX_ID:
        raise bad_request(f"{name} must be {what}")
    return int(raw)


async def _visible(request: web.Request, conn, alarm_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(ALARM_SELECT + " where a.id = $1", alarm_id)
    if row is None:
        raise Problem(404, f"no alarm with id {alarm_id}")
    who = principal(request)
    if who.role == "crew" and row["assigned_crew"] != who.crew:
        raise Problem(403, f"alarm {alarm_id} is not assigned to your crew ({who.crew or 'none'})")
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


@routes.post(r"/api/v1/alarms/{id:\d+}/{action}")
async def act(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    roles = ACTIONS.get(action)
    if roles is None:
        raise Problem(404, f"no alarm action {action!r}; actions: {', '.join(ACTIONS)}")
    who = require(request, *roles)
    body: Any = {}
    if request.body_exists:
        raw = await request.read()
        if raw.strip():
            body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request("send a JSON object")
    engine = request.app[keys.ALARMS]
    alarm = await engine.act(_alarm_id(request), action, who, body)
    return json_response(alarm)


@routes.get("/api/v1/alarms/kpis")
async def kpis(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    end = _time(request, "to", now)
    try:
        start = _time(request, "from", end - timedelta(days=1))
    except OverflowError:
        raise bad_request("to is too early; give from as well") from None
    if start >= end:
        raise bad_request("from must be before to")
    if end - start > timedelta(days=KPI_MAX_DAYS):
        raise bad_request(f"at most {KPI_MAX_DAYS} days at a time")
    consoles = request.app[keys.SETTINGS].rules.operator_consoles
    raw = request.query.get("consoles")
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise bad_request("consoles must be a positive integer")
        consoles = int(raw)
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
        stale = await conn.fetchval(
            """select count(*) from alarms
               where raised_at < $1::timestamptz - interval '24 hours'
                 and (cleared_at is null or cleared_at > $1) and (closed_at is null or closed_at > $1)
                 and not suppressed""", end)
    shown = [r for r in raised if r["annunciated"]]
    out = alarm_kpis([float(r["t"]) for r in shown], [r["priority"] for r in shown],
                     [r["point"] for r in shown], start.timestamp(), end.timestamp(),
                     consoles=consoles, chattering=chattering, stale=stale)
    return json_response({"from": start, "to": end, "operator_consoles": consoles,
                          "activations": len(raised), "not_annunciated": len(raised) - len(shown),
                          **out})
