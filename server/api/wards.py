"""``/api/v1/wards/summary``: the ward roll-up an operator scans first.

Per ward: devices by live status, lamps out, cameras (how many, how many online and
recording, how many down), and open alarms by severity, with a point to
put the ward's label on and its bounding box to zoom to; plus the bounding box of the
whole city, which the map fits on first load.

A lamp counts as *out* by :func:`rules.vocab.lamp_out_sql` (offline, a lamp or driver
fault, or an open alarm), the definition the ``ward_stats`` tiles use too.

``?at=`` gives the roll-up as it was at a past instant (the map's time slider shows it while
replaying): the devices as ``GET /api/v1/state?at=`` derives them (:mod:`server.live.past`)
and the alarms open then, counted by the same rules.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import Field

from rules.vocab import lamp_out, lamp_out_sql
from server import keys
from server.alarms.views import counts_as_open, counts_as_open_sql
from server.api.models import Time
from server.errors import Invalid
from server.http import validate
from server.http.auth import require
from server.http.jsonutil import json_response
from server.live.past import Scope, alarms_at, state_at
from server.store.history import parse_time
from server.vocab import Severity, values

routes = web.RouteTableDef()


# One statement: the aggregates are a few index scans over devices, device_state and the
# open alarms, so the roll-up stays cheap enough to refresh every few seconds.
SUMMARY_SQL = """
with open_alarms as (
    select a.id, a.device, a.severity, a.state, a.shelved_until,
           {counts_as_open} as counted,
           coalesce(d.ward, (select w.code from wards w
                             where a.geom is not null and ST_Intersects(w.geom, a.geom)
                             limit 1)) as ward
    from alarms a left join devices d on d.id = a.device
    where a.state <> 'closed'
      and ($1::text is null or a.assigned_crew = $1::text)  -- a crew sees its own alarms
),
alarmed as (select distinct device from open_alarms),
dev as (
    select d.ward,
           count(*) as devices,
           count(*) filter (where s.status = 'online') as online,
           count(*) filter (where s.status = 'stale') as stale,
           count(*) filter (where s.status = 'offline') as offline,
           count(*) filter (where s.status is null or s.status = 'unknown') as unknown,
           count(*) filter (where d.kind = 'streetlight') as lamps,
           count(*) filter (where d.kind = 'streetlight' and s.values->>'lamp_on' = 'true') as lamps_on,
           count(*) filter (
               where d.kind = 'streetlight' and LAMP_OUT
           ) as lamps_out,
           -- a camera is healthy when it reports and says it is online
           count(*) filter (where d.kind = 'camera') as cameras,
           count(*) filter (where d.kind = 'camera' and s.status = 'online'
                              and coalesce(s.values->>'online', 'true') = 'true') as cameras_ok,
           count(*) filter (where d.kind = 'camera' and s.values->>'recording' = 'true') as cameras_rec
    from devices d left join device_state s on s.device_key = d.key
    where d.ward is not null
    group by d.ward
),
al as (
    select ward,
           count(*) filter (where counted) as alarms,
           count(*) filter (where counted and state in ('active_unacked', 'rtn_unacked')) as unacked,
           count(*) filter (where shelved_until > now()) as shelved,
           count(*) filter (where counted and severity = 'critical') as critical,
           count(*) filter (where counted and severity = 'major') as major,
           count(*) filter (where counted and severity = 'minor') as minor,
           count(*) filter (where counted and severity = 'warning') as warning
    from open_alarms
    where ward is not null
    group by ward
)
select w.code, w.name,
       ST_X(p.pt) as label_lon, ST_Y(p.pt) as label_lat,
       ST_XMin(w.geom) as xmin, ST_YMin(w.geom) as ymin,
       ST_XMax(w.geom) as xmax, ST_YMax(w.geom) as ymax,
       coalesce(dev.devices, 0) as devices, coalesce(dev.online, 0) as online,
       coalesce(dev.stale, 0) as stale, coalesce(dev.offline, 0) as offline,
       coalesce(dev.unknown, 0) as unknown,
       coalesce(dev.lamps, 0) as lamps, coalesce(dev.lamps_on, 0) as lamps_on,
       coalesce(dev.lamps_out, 0) as lamps_out,
       coalesce(dev.cameras, 0) as cameras, coalesce(dev.cameras_ok, 0) as cameras_ok,
       coalesce(dev.cameras_rec, 0) as cameras_rec,
       coalesce(al.alarms, 0) as alarms, coalesce(al.unacked, 0) as unacked,
       coalesce(al.shelved, 0) as shelved,
       coalesce(al.critical, 0) as critical, coalesce(al.major, 0) as major,
       coalesce(al.minor, 0) as minor, coalesce(al.warning, 0) as warning
from wards w
cross join lateral (select ST_PointOnSurface(w.geom) as pt) p
left join dev on dev.ward = w.code
left join al on al.ward = w.code
order by w.code
""".replace("LAMP_OUT", lamp_out_sql("s.status", "s.values", "d.id in (select device from alarmed)")).replace(
    "{counts_as_open}", counts_as_open_sql("a")
)

EXTENT_SQL = """
select ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)
from (select ST_Extent(geom)::geometry as e
      from (select geom from wards union all select geom from devices) g) x
"""


# The wards alone, for the roll-up at a past instant (counted in Python from the past state).
WARDS_SQL = """
select w.code, w.name, ST_X(p.pt) as label_lon, ST_Y(p.pt) as label_lat,
       ST_XMin(w.geom) as xmin, ST_YMin(w.geom) as ymin,
       ST_XMax(w.geom) as xmax, ST_YMax(w.geom) as ymax
from wards w cross join lateral (select ST_PointOnSurface(w.geom) as pt) p
order by w.code
"""

COUNTS = ("devices", "online", "stale", "offline", "unknown", "lamps", "lamps_on", "lamps_out",
          "cameras", "cameras_ok", "cameras_rec", "alarms", "unacked", "shelved", *values(Severity))


class SummaryQuery(validate.Query):
    at: Time | None = Field(None, description="a past instant, RFC 3339: the roll-up as it was "
                                              "then (default: now)")


async def rows_at(conn: asyncpg.Connection, at: datetime, crew: str | None) -> list[dict[str, Any]]:
    """SUMMARY_SQL's rows as they were at ``at``."""
    devices, _ = await state_at(conn, at, Scope(crew=crew, limit=10_000_000))
    alarms = await alarms_at(conn, at, None, crew)
    alarmed = {a["device"] for a in alarms}
    n: dict[str, Counter] = {}
    for d in devices:
        ward = d.row["ward"]
        if ward is None:
            continue
        c = n.setdefault(ward, Counter())
        c["devices"] += 1
        c[d.status] += 1
        if d.row["kind"] == "streetlight":
            c["lamps"] += 1
            c["lamps_on"] += d.values.get("lamp_on") is True
            c["lamps_out"] += lamp_out(d.status, d.values, d.row["id"] in alarmed)
        elif d.row["kind"] == "camera":  # as SUMMARY_SQL: up when it reports and says online
            c["cameras"] += 1
            c["cameras_ok"] += d.status == "online" and d.values.get("online") is not False
            c["cameras_rec"] += d.values.get("recording") is True
    for a in alarms:
        if a["ward"] is None:
            continue
        c = n.setdefault(a["ward"], Counter())
        c["shelved"] += a["shelved_until"] is not None and a["shelved_until"] > at
        if not counts_as_open(a, at):
            continue
        c["alarms"] += 1
        c["unacked"] += a["state"] in ("active_unacked", "rtn_unacked")
        c[a["severity"]] += 1
    return [dict(r) | {k: n.get(r["code"], Counter())[k] for k in COUNTS}
            for r in await conn.fetch(WARDS_SQL)]


def _ward(r) -> dict:
    return {
        "code": r["code"],
        "name": r["name"],
        "label": [r["label_lon"], r["label_lat"]],
        "bbox": [r["xmin"], r["ymin"], r["xmax"], r["ymax"]],
        "devices": {k: r[k] for k in ("devices", "online", "stale", "offline", "unknown")},
        "lamps": {"total": r["lamps"], "on": r["lamps_on"], "out": r["lamps_out"]},
        "cameras": {"total": r["cameras"], "online": r["cameras_ok"], "recording": r["cameras_rec"],
                    "down": r["cameras"] - r["cameras_ok"]},
        "alarms": {
            "open": r["alarms"],
            "unacked": r["unacked"],
            "shelved": r["shelved"],
            "by_severity": {s: r[s] for s in values(Severity)},
        },
    }


@routes.get("/api/v1/wards/summary")
async def wards_summary(request: web.Request) -> web.Response:
    who = require(request, "viewer", "crew", "operator", "integrator")
    crew = (who.crew or "") if who.role == "crew" else None
    q = validate.query(request, SummaryQuery)
    at = None
    if q.at is not None:
        at = parse_time(q.at, "at")
        if at > datetime.now(UTC):
            raise Invalid(f"at {q.at} is in the future; the roll-up is known up to now", field="at")
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(SUMMARY_SQL, crew) if at is None else await rows_at(conn, at, crew)
        extent = await conn.fetchrow(EXTENT_SQL)
    bbox = list(extent) if extent and extent[0] is not None else None
    wards = [_ward(r) for r in rows]
    totals = {
        "lamps": sum(w["lamps"]["total"] for w in wards),
        "lamps_out": sum(w["lamps"]["out"] for w in wards),
        "alarms": sum(w["alarms"]["open"] for w in wards),
        "unacked": sum(w["alarms"]["unacked"] for w in wards),
        "devices": sum(w["devices"]["devices"] for w in wards),
        "online": sum(w["devices"]["online"] for w in wards),
        "offline": sum(w["devices"]["offline"] for w in wards),
        "cameras": sum(w["cameras"]["total"] for w in wards),
        "cameras_down": sum(w["cameras"]["down"] for w in wards),
    }
    body: dict[str, Any] = {"bbox": bbox, "totals": totals, "wards": wards}
    if at is not None:
        body["at"] = at
    return json_response(body, headers={"Cache-Control": "no-store"})
