"""The demo city's last day: readings from the simulator's patterns and the alarms of the
faults in them, written as if the city had been running (``ioc demo``).

So the map's time slider (the last 24 h by default) has something to replay from the first
start: lamps switching on at dusk and dimming at midnight, traffic peaks, water demand,
and faults coming and going, each with the alarm the demo's rules would have raised and an
operator's acknowledgement.

**What is written.** Every simulated device's catalogue metrics at a steady spacing per
kind (:data:`STEP_FACTOR` times its expected reporting interval, never closer than the
simulator's own: the past state's status, derived from reading ages, stays ``online``),
each device at its own second within the step, values from :class:`~server.simulate.
world.World` (patterns, then faults) rounded as devices send them. Faults are drawn
from a seeded schedule (:data:`EPISODES`); during one the device's readings carry it
(a dark lamp, an open door, a NaN of bad quality, nothing at all for a silent device) and
an alarm of the demo rule it would trip is stored with its events (raised, acknowledged,
cleared), each event with its copy of the alarm as it then stood, as the live writers
leave them (migration 0007). Alarms are closed by the time the history ends.

**How.** Binary COPY, an hour of readings per transaction, oldest first. The row store's
partitions are made on the way; the hourly rollups pick the hours up through their dirty
marks. The server is already serving meanwhile: this runs in the background.

**Once.** ``ioc_meta.demo_history`` records the range being filled and how far it got, in
the transaction of each hour, so a demo stopped half way resumes where it stopped and
never writes an hour twice. On a later start only what is missing is filled: from the
newest reading the city already has (the previous run's live data, or its history) to
the moment this start began, within the last :data:`HOURS` hours.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np
import orjson

from rules.models import Rule
from server.simulate import DEFAULT_INTERVALS
from server.simulate.faults import Fault, FaultBook
from server.simulate.fleet import Fleet, load_fleet
from server.simulate.patterns import BOOL_METRICS, DECIMALS, Patterns
from server.simulate.world import World
from server.store.catalog import KINDS
from server.store.compress import ROW

logger = logging.getLogger(__name__)

HOURS = 24  # how much history the demo city gets
STEP_FACTOR = 2.5  # readings this many expected intervals apart: under the stale mark (3)
CHUNK = timedelta(hours=1)  # readings written per transaction
META_KEY = "demo_history"
SENTINELS = 8  # devices whose newest reading says where the city's data ends
EPISODE_EVERY_S = 1200.0  # one fault every 20 minutes of history, on average
US = 1_000_000
PG_EPOCH_S = 946_684_800  # 2000-01-01 UTC: PostgreSQL's binary timestamps count from it

# What the history's faults are, how long they last (minutes), and the demo rule each trips
# (server/cli/demo_rules.yaml): (fault kind, device kind, rule, minutes, weight).
EPISODES: tuple[tuple[str, str, str | None, tuple[int, int], int], ...] = (
    ("lamp_fault", "streetlight", "lamp-fault", (20, 120), 8),
    ("day_burner", "streetlight", "lamp-day-burner", (60, 150), 2),
    ("silent", "streetlight", None, (20, 60), 2),  # no rule: the lamp just shows offline
    ("door_open", "lighting_cabinet", "cabinet-door", (5, 25), 2),
    ("controller_flash", "traffic_controller", "controller-flash", (5, 20), 2),
    ("sensor_nan", "pressure_sensor", "sensor-fault", (10, 40), 1),
    ("silent", "camera", "device-offline", (15, 45), 1),
)
OPERATOR = "demo-operator"


@dataclass(slots=True)
class Episode:
    fault: Fault
    rule: str | None
    kind: str  # the device's
    index: int  # its place in its kind's group


@dataclass(slots=True)
class Report:
    ranges: list[Range]
    points: int = 0
    alarms: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------- what to fill
async def _meta(conn: asyncpg.Connection) -> dict | None:
    raw = await conn.fetchval("select value from ioc_meta where key = $1", META_KEY)
    if raw is None:
        return None
    return orjson.loads(raw) if isinstance(raw, str | bytes) else raw


async def _set_meta(conn: asyncpg.Connection, value: dict) -> None:
    await conn.execute(
        """insert into ioc_meta (key, value, updated_at) values ($1, $2::text::jsonb, now())
           on conflict (key) do update set value = excluded.value, updated_at = now()""",
        META_KEY, orjson.dumps(value).decode())


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


async def newest_reading(conn: asyncpg.Connection, before: datetime,
                         since: datetime) -> datetime | None:
    """The newest reading in [since, before) of a few devices of the most numerous kind:
    where the city's data ends (one silent device does not move it back)."""
    keys = [r["key"] for r in await conn.fetch(
        """select key from devices where kind = (select kind from devices
               where kind = any($1::text[]) group by kind order by count(*) desc limit 1)
           order by key limit $2""", list(DEFAULT_INTERVALS), SENTINELS)]
    if not keys:
        return None
    return await conn.fetchval(
        """select max(t.ts) from unnest($1::int[]) as k(key)
           cross join lateral (select ts from telemetry
                               where device_key = k.key and ts >= $3 and ts < $2
                               order by ts desc limit 1) t""", keys, before, since)


@dataclass(frozen=True, slots=True)
class Range:
    """History to write: [frm, to) of the range begun at ``began`` (its faults are drawn
    for the whole range, so a resumed range goes on with the same ones)."""

    began: datetime
    frm: datetime
    to: datetime


async def plan(conn: asyncpg.Connection, now: datetime, hours: int = HOURS) -> list[Range]:
    """The ranges still to fill, oldest first: what a stopped run left, then the gap from
    the newest reading (or ``now - hours``) to ``now``."""
    start = now - timedelta(hours=hours)
    ranges = []
    covered = start  # history is written (or being resumed) up to here
    meta = await _meta(conn)
    if meta is not None:
        began, through, to = (_parse(meta[k]) for k in ("from", "through", "to"))
        if through < to and to > start:
            ranges.append(Range(began, max(through, start), to))
        covered = max(covered, to)
    newest = await newest_reading(conn, now, start)
    frm = covered if newest is None else max(covered, newest + timedelta(microseconds=1))
    if frm < now - timedelta(seconds=1):
        ranges.append(Range(frm, frm, now))
    return ranges


# ---------------------------------------------------------------- readings
class City:
    """The simulated city and its history's faults over one range."""

    def __init__(self, fleet: Fleet, keys: dict[str, int], metrics: dict[str, int],
                 seed: int, kinds: Iterable[str] | None = None) -> None:
        self.fleet = fleet
        self.seed = seed
        self.book = FaultBook(fleet, seed, interval_s=None)
        self.world = World(fleet, Patterns(fleet, seed), self.book)
        self.episodes: list[Episode] = []
        expected = {k.kind: k.expected_interval_s for k in KINDS}
        self.kinds = []  # (kind, step s, device keys, phase s, [(metric, id)])
        catalogue = {k.kind: k.metrics or () for k in KINDS}
        kinds = set(kinds) if kinds is not None else None
        for kind, group in sorted(fleet.groups.items()):
            if kind not in DEFAULT_INTERVALS or not len(group) or (kinds is not None
                                                                   and kind not in kinds):
                continue
            step = max(DEFAULT_INTERVALS[kind], STEP_FACTOR * expected.get(kind, 60))
            dev = np.array([keys[i] for i in group.ids], np.int64)
            # each device reports at its own moment within the step, a whole millisecond
            phase = (dev * 7919 % int(step * 1000)) / 1000.0
            names = [(m, metrics[m]) for m in catalogue.get(kind, ()) if m in metrics]
            self.kinds.append((kind, float(step), dev, phase, names))

    def plan_episodes(self, frm: datetime, to: datetime) -> None:
        """The faults of [frm, to), drawn from the range's own seed (the same range, the
        same faults), each over before ``to``."""
        rng = random.Random(f"{self.seed}:{frm.isoformat()}")
        t, end = frm.timestamp(), to.timestamp()
        written = {k[0] for k in self.kinds}
        pool = [e for e in EPISODES if e[1] in written]
        ids = len(self.episodes)
        while pool:
            t = round(t + rng.expovariate(1 / EPISODE_EVERY_S), 3)  # whole ms, as stamped
            fault_kind, kind, rule, (lo, hi), _ = rng.choices(pool, [e[4] for e in pool])[0]
            stop = round(t + 60 * rng.uniform(lo, hi), 3)
            if stop > end - 300:
                break
            idx = rng.randrange(len(self.fleet.groups[kind]))
            ids += 1
            fault = Fault(ids, fault_kind, self.fleet.groups[kind].ids[idx], t, stop,
                          members={kind: np.array([idx])})
            self.episodes.append(Episode(fault, rule, kind, idx))

    def _at(self, t: float) -> None:
        active = [e.fault for e in self.episodes if e.fault.start <= t < e.fault.end]
        if [f.id for f in active] != [f.id for f in self.book.active]:
            self.book.active = active
            self.book.version += 1

    def readings(self, frm: float, to: float) -> tuple[np.ndarray, ...]:
        """Every reading with ``frm <= ts < to`` (epoch seconds): columns of device key,
        metric id, ts (µs since 2000), value, quality; in time order."""
        cols: dict[str, list[np.ndarray]] = {"d": [], "m": [], "t": [], "v": [], "q": []}
        for kind, step, dev, phase, names in self.kinds:
            # a slot's devices report at slot + phase (phase < step): the slots reaching [frm, to)
            for t in np.arange(np.floor((frm - step) / step) * step, to, step).tolist():
                stamp = t + phase
                keep = (stamp >= frm) & (stamp < to)
                if keep.any():
                    self._add(cols, kind, t, stamp, keep, dev, names)
        # a device reports a fault as it starts and as it ends, not at its next report
        by_kind = {k[0]: k for k in self.kinds}
        for e in self.episodes:
            kind, step, dev, phase, names = by_kind[e.kind]
            for t in (e.fault.start, e.fault.end):
                if frm <= t < to and not (t == e.fault.start and e.fault.kind == "silent"):
                    keep = np.zeros(len(dev), bool)
                    keep[e.index] = True
                    self._add(cols, kind, t, np.full(len(dev), t), keep, dev, names)
        if not cols["t"]:
            return tuple(np.empty(0) for _ in range(5))
        out = [np.concatenate(c) for c in cols.values()]
        order = np.argsort(out[2], kind="stable")
        return tuple(c[order] for c in out)


    def _add(self, cols: dict[str, list[np.ndarray]], kind: str, t: float, stamp: np.ndarray,
             keep: np.ndarray, dev: np.ndarray, names: list[tuple[str, int]]) -> None:
        """The ``keep`` devices' readings of the values at ``t``, stamped ``stamp``."""
        self._at(t)
        vals = self.world.values(kind, t)
        keep = keep & ~self.world.silent(kind)
        ts = np.round((stamp[keep] - PG_EPOCH_S) * 1000).astype(np.int64) * 1000  # whole ms
        for name, mid in names:
            v = vals.get(name)
            if v is None:
                continue
            v = np.asarray(v, np.float64)[keep]
            v = np.round(v) if name in BOOL_METRICS else np.round(v, DECIMALS.get(name, 3))
            bad = ~np.isfinite(v)
            cols["d"].append(dev[keep])
            cols["m"].append(np.full(len(v), mid, np.int64))
            cols["t"].append(ts)
            cols["v"].append(np.where(bad, 0.0, v))  # as ingest stores a NaN:
            cols["q"].append(np.where(bad, 2, 0))  # 0 of quality NOT_A_NUMBER


def copy_buffer(d: np.ndarray, m: np.ndarray, t: np.ndarray, v: np.ndarray, q: np.ndarray) -> bytes:
    """Readings as PostgreSQL binary COPY data for (device_key, metric_id, ts, value, quality)."""
    rows = np.zeros(len(t), ROW)
    rows["nf"], rows["l1"], rows["l2"], rows["l3"], rows["l4"], rows["l5"] = 5, 4, 2, 8, 8, 2
    rows["device"], rows["metric"], rows["ts"], rows["value"], rows["quality"] = d, m, t, v, q
    return b"PGCOPY\n\xff\r\n\x00" + bytes(8) + rows.tobytes() + b"\xff\xff"


# ---------------------------------------------------------------- alarms
ALARM_SQL = """
insert into alarms (rule, device, severity, priority, state, active, raised_at, acked_at,
                    acked_by, cleared_at, closed_at, value, message, geom, dedup_key, updated_at)
select $1, d.id, $2, $3, 'closed', false, $4, $5, $6, $7, $8, $9, $10, ST_PointOnSurface(d.geom),
       $1 || ':' || d.id || ':' || extract(epoch from $4::timestamptz)::bigint, $8
from devices d where d.id = $11
returning id
"""

# The alarm as it stood after an event: the stored (closed) row with the columns of then.
EVENT_SQL = """
insert into alarm_events (alarm_id, at, event, actor, alarm)
select a.id, $2, $3, $4, (to_jsonb(a) - 'geom') || jsonb_build_object(
    'state', $5::text, 'active', $6::boolean, 'acked_at', $7::timestamptz, 'acked_by', $4::text,
    'cleared_at', $8::timestamptz, 'closed_at', $9::timestamptz, 'updated_at', $2::timestamptz)
from alarms a where a.id = $1
"""

MESSAGES = {
    "lamp-fault": "lamp_fault reported",
    "lamp-day-burner": "lamp on in daylight",
    "cabinet-door": "door_open is 1",
    "controller-flash": "mode is 3",
    "sensor-fault": "bad reading of pressure_bar",
    "device-offline": "the device's link reports it gone",
}


async def store_alarm(conn: asyncpg.Connection, e: Episode, rule: Rule, rng: random.Random) -> bool:
    """The alarm of one episode and its events: raised (after the rule's delay), then either
    acknowledged while active and cleared (which closes it), or cleared and acknowledged
    later (closing it then)."""
    f = e.fault
    raised = f.start + max(5.0, float(getattr(rule, "on_delay", 0) or 0))
    cleared = f.end
    if raised >= cleared:
        return False
    early = rng.random() < 0.7
    acked = raised + rng.uniform(60, 900) if early else cleared + rng.uniform(60, 600)
    if early and acked >= cleared:
        acked = (raised + cleared) / 2
    closed = max(cleared, acked)
    ts = {k: datetime.fromtimestamp(v, UTC) for k, v in
          (("raised", raised), ("acked", acked), ("cleared", cleared), ("closed", closed))}
    alarm_id = await conn.fetchval(
        ALARM_SQL, rule.id, rule.severity, rule.priority_level, ts["raised"], ts["acked"], OPERATOR,
        ts["cleared"], ts["closed"], None if e.rule == "sensor-fault" else 1.0,
        MESSAGES.get(rule.id, rule.id), f.device)
    if alarm_id is None:
        return False
    # (at, event, actor, state, active, acked_at, cleared_at, closed_at) after each event
    steps = [(ts["raised"], "raised", None, "active_unacked", True, None, None, None)]
    if early:
        steps += [(ts["acked"], "acknowledged", OPERATOR, "active_acked", True, ts["acked"], None, None),
                  (ts["cleared"], "cleared", None, "closed", False, ts["acked"], ts["cleared"],
                   ts["cleared"])]
    else:
        steps += [(ts["cleared"], "cleared", None, "rtn_unacked", False, None, ts["cleared"], None),
                  (ts["acked"], "acknowledged", OPERATOR, "closed", False, ts["acked"], ts["cleared"],
                   ts["acked"])]
    for step in steps:
        await conn.execute(EVENT_SQL, alarm_id, *step)
    return True


# ---------------------------------------------------------------- the run
async def backfill(database_url: str, pool: asyncpg.Pool, now: datetime, *, seed: int = 42,
                   hours: int = HOURS, rules: dict[str, Rule] | None = None,
                   kinds: Iterable[str] | None = None,
                   progress: Callable[[str], None] | None = None) -> Report:
    """Fill what is missing of the city's last ``hours`` hours before ``now``; the alarms
    of the faults in it for those of ``rules`` (by id) that the episodes name. ``kinds``:
    only devices of those kinds (tests; the demo writes every simulated kind)."""
    t0 = time.perf_counter()
    rules = rules or {}
    async with pool.acquire() as conn:
        ranges = await plan(conn, now, hours)
        report = Report(ranges)
        if not ranges:
            return report
        keys = {r["id"]: r["key"] for r in await conn.fetch("select id, key from devices")}
        metrics = {r["name"]: r["id"] for r in await conn.fetch("select name, id from metrics")}
    fleet = await load_fleet(database_url)
    if not len(fleet):
        return report
    for r in ranges:
        city = City(fleet, keys, metrics, seed, kinds)
        city.plan_episodes(r.began, r.to)
        rng = random.Random(f"{seed}:alarms:{r.began.isoformat()}:{r.frm.isoformat()}")
        meta = {"from": r.began.isoformat(), "to": r.to.isoformat()}
        async with pool.acquire() as conn:
            await _set_meta(conn, meta | {"through": r.frm.isoformat()})
        for a, b in _chunks(r.frm, r.to):
            cols = await asyncio.to_thread(city.readings, a.timestamp(), b.timestamp())
            async with pool.acquire() as conn, conn.transaction():
                for day in _days(a, b):
                    await conn.execute("select ioc_ensure_telemetry_partition($1)", day)
                if len(cols[0]):
                    await _copy(conn, copy_buffer(*cols))
                for e in city.episodes:
                    rule = rules.get(e.rule or "")
                    if rule is not None and a.timestamp() <= e.fault.start < b.timestamp():
                        report.alarms += await store_alarm(conn, e, rule, rng)
                await _set_meta(conn, meta | {"through": b.isoformat()})
            report.points += len(cols[0])
            if progress:
                progress(f"history: {report.points:,} readings up to {b:%H:%M} UTC")
    report.seconds = time.perf_counter() - t0
    return report


COLUMNS = ["device_key", "metric_id", "ts", "value", "quality"]


async def _copy(conn: asyncpg.Connection, data: bytes) -> None:
    """Straight into the row store; should a reading already be there (a live one at the
    very same microsecond), through a staging table that keeps the first."""
    try:
        async with conn.transaction():
            await conn.copy_to_table("telemetry", source=io.BytesIO(data), format="binary",
                                     columns=COLUMNS)
    except asyncpg.UniqueViolationError:
        await conn.execute("create temp table if not exists ioc_history_stage "
                           "(like telemetry including defaults) on commit drop")
        await conn.copy_to_table("ioc_history_stage", source=io.BytesIO(data), format="binary",
                                 columns=COLUMNS)
        await conn.execute("insert into telemetry select * from ioc_history_stage "
                           "on conflict do nothing")


def _chunks(frm: datetime, to: datetime) -> Iterable[tuple[datetime, datetime]]:
    """[frm, to) cut at whole hours."""
    a = frm
    while a < to:
        b = min(to, a.replace(minute=0, second=0, microsecond=0) + CHUNK)
        yield a, b
        a = b


def _days(a: datetime, b: datetime) -> list:
    first, last = a.astimezone(UTC).date(), (b - timedelta(microseconds=1)).astimezone(UTC).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]

