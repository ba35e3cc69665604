"""The map as it was: every device's status, latest values and worst active alarm at a past
instant (``GET /api/v1/state?at=``, and the snapshot a websocket replay starts from).

What history exists, and what each part of a device's past state is read from:

- **values**: telemetry. Per device and metric, the newest reading at or before the
  instant, through :func:`latest_at_raw` (the one function here that reads telemetry, the
  row store and compressed days alike). It probes one UTC day
  (one partition) at a time, newest first, for the (device, metric) pairs still missing,
  up to ``LOOKBACK_DAYS``: one index probe per pair instead of a scan of the day.
- **status**: no history of online/offline is stored. It is derived from the last reading
  at or before the instant by the staleness scan's own rule (``server/ingest/maintenance.py``:
  stale after 3 reporting intervals, offline after 10; ``unknown`` with no reading in the
  lookback). This answers for every instant the telemetry covers, backfilled data included,
  and costs the write path nothing; recording changes from now on would have left every
  earlier instant unanswered. Its limits: connectivity reported by the protocol (an MQTT
  last will, a silent Modbus unit) is not in telemetry, so such a device shows online until
  its readings are 3 intervals old; the scan's grace for the server's own downtime is not
  applied; a device silent for longer than the lookback shows ``unknown``.
- **alarms**: ``alarm_events``, each with a copy of the alarm as it stood after the event
  (a trigger, migration 0007). An alarm counts at the instant as it does live: active, not
  closed, not suppressed, not out of service. For events older than the trigger (no copy)
  the state is folded from the event names: active after ``raised`` until ``cleared`` or
  ``closed``, with the alarm's present severity, suppression and crew.

The registry itself is today's: devices deleted since are absent, moved ones are drawn where
they are now. Crew tokens see only alarms assigned to their crew at that instant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from server.ingest.maintenance import OFFLINE_INTERVALS, STALE_INTERVALS
from server.live.deltas import iso_ms
from server.store.history import latest_in_segments, snapshot
from server.vocab import Severity

LOOKBACK_DAYS = 8  # UTC days probed for a device's latest values, newest first
RANK = {s: i for i, s in enumerate(reversed([v.value for v in Severity]), start=1)}

# The devices in scope, with what status derivation and value display need.
DEVICES_SQL = """
select d.key, d.id, d.kind, d.name, d.parent, d.external_id, d.ward, d.properties, d.adapter,
       d.adapter_config, ST_AsGeoJSON(d.geom, 7)::jsonb as geometry,
       coalesce(d.expected_interval_s, k.expected_interval_s) as interval_s
from devices d join kinds k on k.kind = d.kind
where ($1::float8 is null
       or (d.geom && ST_MakeEnvelope($1, $2, $3, $4, 4326)
           and ST_Intersects(d.geom, ST_MakeEnvelope($1, $2, $3, $4, 4326))))
  and ($5::text[] is null or d.kind = any($5::text[]))
order by d.id
limit $6
"""

# (device, metric) pairs worth looking for: the kind's catalogue metrics and whatever else
# the device has reported (its current state's metric names).
PAIRS_SQL = """
select d.key, m.id as metric_id
from devices d
join kinds k on k.kind = d.kind
left join device_state s on s.device_key = d.key
join metrics m on m.name = any(k.metrics) or coalesce(s.times ? m.name, false)
where d.key = any($1::int[])
"""

# The newest reading of each pair in one window [$3, $4): one backward index probe per pair.
PROBE_SQL = """
select p.k, p.m, t.ts, t.value, t.quality
from unnest($1::int[], $2::smallint[]) as p(k, m)
cross join lateral (
    select ts, value, quality from telemetry t
    where t.device_key = p.k and t.metric_id = p.m and t.ts >= $3 and t.ts < $4
    order by t.ts desc limit 1
) t
"""

# Whether the row store, or the compressed segments, hold anything of a UTC day: a day's
# partition with rows answers at its first row, an empty one (compressed, or before the data
# begins) at once.
RAW_DAY_SQL = ("select exists (select 1 from telemetry where ts >= $1 "
               "and ts < $1 + interval '1 day')")
SEGMENTS_DAY_SQL = "select exists (select 1 from telemetry_segments where day = $1)"

# Alarms that may be open at $1 (raised by then, not closed by then), each with its newest
# event at or before $1 (with its copy of the alarm) and, for events older than the copies,
# its newest raise/clear/close; and its ward (its device's, else where it was raised).
ALARMS_AT_SQL = """
select a.id, a.device, a.severity, a.suppressed, a.out_of_service, a.assigned_crew,
       a.shelved_until, c.alarm as copy, f.event as last_activity,
       coalesce(d.ward, (select w.code from wards w
                         where a.geom is not null and ST_Intersects(w.geom, a.geom)
                         limit 1)) as ward
from alarms a
left join devices d on d.id = a.device
join lateral (
    select e.alarm from alarm_events e
    where e.alarm_id = a.id and e.at <= $1
    order by e.at desc, e.id desc limit 1
) c on true
left join lateral (
    select e.event from alarm_events e
    where e.alarm_id = a.id and e.at <= $1 and e.event in ('raised', 'cleared', 'closed')
    order by e.at desc, e.id desc limit 1
) f on c.alarm is null
where a.raised_at <= $1 and (a.closed_at is null or a.closed_at > $1)
  and ($2::text[] is null or a.device = any($2::text[]))
"""


@dataclass(frozen=True, slots=True)
class Scope:
    """Which devices and alarms a caller sees: ``crew`` is set for a crew token (its crew,
    or "" when the token names none: then no alarms at all)."""

    bbox: tuple[float, float, float, float] | None = None
    kinds: tuple[str, ...] | None = None
    crew: str | None = None
    limit: int = 50_000


@dataclass(slots=True)
class DeviceAt:
    key: int
    row: Mapping[str, Any]
    interval_s: int
    last_seen: datetime | None
    status: str
    values: dict[str, Any]
    times: dict[str, int]  # metric -> epoch ms of the value shown
    alarm_severity: str | None = None


class Metrics:
    """The metric catalogue: names and which are booleans (shown true/false, as live)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.names: dict[int, str] = {}
        self.bools: set[int] = set()
        for r in rows:
            self.names[r["id"]] = r["name"]
            if r["value_type"] == "bool":
                self.bools.add(r["id"])

    @classmethod
    async def load(cls, conn: asyncpg.Connection) -> Metrics:
        return cls(await conn.fetch("select id, name, value_type from metrics"))

    def shown(self, metric_id: int, value: float, quality: int) -> Any:
        """A reading as the map shows it: bad quality is null, never a number."""
        if quality:
            return None
        return value == 1.0 if metric_id in self.bools else value


def epoch_ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def status_at(at: datetime, last_seen: datetime | None, interval_s: int) -> str:
    """The staleness scan's rule applied at ``at``."""
    if last_seen is None:
        return "unknown"
    age = (at - last_seen).total_seconds()
    if age > OFFLINE_INTERVALS * interval_s:
        return "offline"
    if age > STALE_INTERVALS * interval_s:
        return "stale"
    return "online"


async def latest_at_raw(conn: asyncpg.Connection, at: datetime,
                        device_keys: list[int]) -> dict[int, dict[int, tuple[datetime, float, int]]]:
    """Per device and metric id, the newest raw reading at or before ``at``:
    ``{device_key: {metric_id: (ts, value, quality)}}``, from the row store and the
    compressed days alike."""
    out: dict[int, dict[int, tuple[datetime, float, int]]] = {}
    if not device_keys:
        return out
    pairs = await conn.fetch(PAIRS_SQL, device_keys)
    keys = [r["key"] for r in pairs]
    mids = [r["metric_id"] for r in pairs]
    # Windows [lo, hi) of one UTC day each (one partition), the first ending just after ``at``.
    hi = at + timedelta(microseconds=1)
    lo = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    async with snapshot(conn):  # a compression committing meanwhile shows nothing twice
        return await _latest_by_day(conn, out, keys, mids, lo, hi)


async def _latest_by_day(conn: asyncpg.Connection, out: dict, keys: list[int], mids: list[int],
                         lo: datetime, hi: datetime) -> dict:
    for _ in range(LOOKBACK_DAYS):
        if not keys:
            break
        # Either store may hold nothing of the day: one probe each says so, instead of one
        # per pair (most of the lookback, for metrics a device never reported).
        found = {}
        if await conn.fetchval(RAW_DAY_SQL, lo):
            rows = await conn.fetch(PROBE_SQL, keys, mids, lo, hi)
            found = {(k, m): (ts, value, quality) for k, m, ts, value, quality in rows}
        if await conn.fetchval(SEGMENTS_DAY_SQL, lo.date()):
            # the day's compressed readings too (server/store/history.py): the later one wins
            for pair, got in (await latest_in_segments(conn, keys, mids, lo, hi)).items():
                if pair not in found or got[0] >= found[pair][0]:
                    found[pair] = got
        for (k, m), got in found.items():
            out.setdefault(k, {})[m] = got
        if found:
            left = [(k, m) for k, m in zip(keys, mids, strict=True) if m not in out.get(k, ())]
            keys, mids = [k for k, _ in left], [m for _, m in left]
        hi, lo = lo, lo - timedelta(days=1)
    return out


def _alarm_now(row: Mapping[str, Any]) -> dict[str, Any]:
    """What an alarm row of ALARMS_AT_SQL was at the instant: its copy, or the fold."""
    where = {"id": row["id"], "device": row["device"], "ward": row["ward"]}
    copy = row["copy"]
    if copy is not None:
        shelved = copy.get("shelved_until")
        return where | {
            "active": copy.get("active"), "state": copy.get("state"),
            "suppressed": copy.get("suppressed"), "out_of_service": copy.get("out_of_service"),
            "severity": copy.get("severity"), "assigned_crew": copy.get("assigned_crew"),
            "shelved_until": datetime.fromisoformat(shelved) if shelved else None}
    active = row["last_activity"] == "raised"
    return where | {"active": active, "state": "active_unacked" if active else "rtn_unacked",
                    "suppressed": row["suppressed"], "out_of_service": row["out_of_service"],
                    "severity": row["severity"], "assigned_crew": row["assigned_crew"],
                    "shelved_until": row["shelved_until"]}


async def alarms_at(conn: asyncpg.Connection, at: datetime, device_ids: list[str] | None = None,
                    crew: str | None = None) -> list[dict[str, Any]]:
    """The alarms open at ``at`` (not closed then) that the caller may see, each as it then
    was: id, device, ward, severity, state, active, suppressed, out_of_service,
    shelved_until, assigned_crew."""
    out = []
    for row in await conn.fetch(ALARMS_AT_SQL, at, device_ids):
        a = _alarm_now(row)
        if a["state"] != "closed" and visible(a, crew):
            out.append(a)
    return out


def counts(alarm: Mapping[str, Any]) -> bool:
    """Whether an alarm colours its device (the live snapshot's rule)."""
    return bool(alarm["active"]) and alarm["state"] != "closed" and not alarm["suppressed"] \
        and not alarm["out_of_service"]


def visible(alarm: Mapping[str, Any], crew: str | None) -> bool:
    return crew is None or (bool(crew) and alarm.get("assigned_crew") == crew)


async def alarm_severity_at(conn: asyncpg.Connection, at: datetime, device_ids: list[str] | None,
                            crew: str | None) -> dict[str, str]:
    """Per device, the highest severity among the alarms active at ``at`` that the caller
    may see."""
    worst: dict[str, str] = {}
    for a in await alarms_at(conn, at, device_ids, crew):
        if not counts(a):
            continue
        dev, sev = a["device"], a["severity"]
        if RANK.get(sev, 0) > RANK.get(worst.get(dev), 0):
            worst[dev] = sev
    return worst


async def state_at(conn: asyncpg.Connection, at: datetime, scope: Scope) -> tuple[list[DeviceAt], bool]:
    """Every device in ``scope`` as it was at ``at``, ordered by id; and whether more
    devices than ``scope.limit`` matched (then the first ``limit`` are returned)."""
    rows = await conn.fetch(DEVICES_SQL, *(scope.bbox or (None,) * 4),
                            list(scope.kinds) if scope.kinds is not None else None,
                            scope.limit + 1)
    truncated = len(rows) > scope.limit
    rows = rows[:scope.limit]
    metrics = await Metrics.load(conn)
    latest = await latest_at_raw(conn, at, [r["key"] for r in rows])
    whole = scope.bbox is None and scope.kinds is None and not truncated
    severity = await alarm_severity_at(conn, at, None if whole else [r["id"] for r in rows],
                                       scope.crew)
    out = []
    for r in rows:
        per = latest.get(r["key"], {})
        values: dict[str, Any] = {}
        times: dict[str, int] = {}
        last = None
        for mid, (ts, value, quality) in per.items():
            name = metrics.names.get(mid)
            if name is None:
                continue
            values[name] = metrics.shown(mid, value, quality)
            times[name] = epoch_ms(ts)
            last = ts if last is None or ts > last else last
        interval = r["interval_s"] or 60
        out.append(DeviceAt(r["key"], r, interval, last, status_at(at, last, interval), values,
                            times, severity.get(r["id"])))
    return out, truncated


def feature_of(d: DeviceAt) -> dict[str, Any]:
    """A device at the instant as a GeoJSON Feature shaped like ``/api/v1/devices``' ones."""
    r = d.row
    props: dict[str, Any] = dict(r["properties"] or {})
    props.update(kind=r["kind"], name=r["name"], parent=r["parent"], external_id=r["external_id"],
                 ward=r["ward"], status=d.status, last_seen=d.last_seen, values=d.values,
                 alarm_severity=d.alarm_severity)
    if r["adapter"]:
        props["adapter"] = r["adapter"]
        props["adapter_config"] = r["adapter_config"]
    return {"type": "Feature", "id": r["id"], "geometry": r["geometry"], "properties": props}


def snapshot_entry(d: DeviceAt) -> dict[str, Any]:
    """A device at the instant as an entry of a websocket snapshot (the live one's shape)."""
    return {"id": d.row["id"], "kind": d.row["kind"], "status": d.status, "values": d.values,
            "alarm_severity": d.alarm_severity,
            "last_seen": iso_ms(epoch_ms(d.last_seen)) if d.last_seen is not None else None}
