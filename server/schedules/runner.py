"""The scheduler: each schedule's steps sent as group commands when they start, at each lamp.

Once per wake-up (:meth:`Scheduler.tick`), for every enabled schedule, the lamps whose
current step started after the schedule's ``applied_until`` are commanded (``set_dim`` to
the step's level, one group per level), and ``applied_until`` moves to now **in the same
transaction** as the command rows, the schedule's row locked (``for update skip locked``).
So each step start is commanded exactly once, whatever happens:

* a restart inside a step commands nothing again (its start is before ``applied_until``);
* steps that started while the server was down are caught up once at start: a lamp gets
  the step in force *now*, not every step it missed (commands are absolute levels);
* a schedule created, edited or re-enabled has ``applied_until`` null: the step in force
  is commanded at once;
* two server processes never both command a step: the second finds the row locked, or
  ``applied_until`` already moved.

Which lamps a schedule commands: its target, as a group command picks it
(:mod:`server.commands.targets`); a lamp in several enabled schedules follows the highest
``priority``, then the smallest target (a cabinet's schedule beats its ward's), then the
lowest id. A lamp that changes hands (a new schedule, a device added or moved) gets its
new schedule's step in force at the next wake-up. The same assignment, lamps under a
scheduled cabinet included, goes to the alarm engine, whose ``lighting_schedule`` rule
checks lamps against their schedule (:mod:`rules.schedules`).

Time comes from a :class:`~server.schedules.clock.Clock`, so tests drive it by hand.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np
from pydantic import ValidationError

from rules.schedules import Assignments, Lamps, Plan, Profile
from server.commands.service import CommandService, PreparedGroup
from server.commands.targets import Selection
from server.errors import DomainError
from server.runtime.tasks import cancel_and_wait
from server.schedules.clock import Clock
from server.settings import SchedulesSettings

__all__ = ["COMMAND", "Scheduler", "actor_of"]

logger = logging.getLogger(__name__)

COMMAND = "set_dim"  # absolute levels: a step commanded twice does no harm (catalog.py)
MIN_TTL_S = 60.0
SIGNATURE_SQL = """select (select count(*) from schedules), (select max(updated_at) from schedules),
                          (select coalesce(sum(version), 0) from schedules),
                          (select count(*) from devices), (select max(updated_at) from devices)"""
POSITIONS_SQL = """select id, key, kind, ST_X(ST_PointOnSurface(geom)) as lon,
                          ST_Y(ST_PointOnSurface(geom)) as lat
                   from devices where id = any($1::text[])"""
CHILD_LAMPS_SQL = """select id, key, parent, ST_X(ST_PointOnSurface(geom)) as lon,
                            ST_Y(ST_PointOnSurface(geom)) as lat
                     from devices where parent = any($1::text[]) and kind = 'streetlight'"""


def actor_of(schedule_id: str) -> str:
    """Who the audit log and the command groups say sent a schedule's commands."""
    return f"schedule:{schedule_id}"


@dataclass(slots=True)
class Compiled:
    """One schedule as the scheduler runs it."""

    id: str
    name: str
    version: int
    enabled: bool
    priority: int
    target: dict[str, Any]
    plan: Plan | None
    applied_until: datetime | None
    error: str | None = None
    members: list[str] = field(default_factory=list)  # devices its target picks
    kinds: dict[str, str] = field(default_factory=dict)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))  # lamps it commands
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    lamps: Lamps | None = None
    new: set[str] = field(default_factory=set)  # gained since: their step in force is due
    next_at: float = math.inf  # the next step start at any of its lamps (epoch s)

    @property
    def runnable(self) -> bool:
        return self.enabled and self.plan is not None and self.error is None and len(self.ids) > 0

    def due_now(self, now: float) -> bool:
        return self.runnable and (self.applied_until is None or bool(self.new) or self.next_at <= now)


class Scheduler:
    """Loads the schedules, works out which lamps follow which, and sends their steps."""

    def __init__(self, pool: asyncpg.Pool, settings: SchedulesSettings, commands: CommandService, *,
                 alarms=None, clock: Clock | None = None) -> None:
        self.pool = pool
        self.settings = settings
        self.commands = commands
        self.alarms = alarms
        self.clock = clock or Clock()
        self.tz = ZoneInfo(settings.timezone)
        self.schedules: dict[str, Compiled] = {}
        self.assignments = Assignments.empty()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._signature: tuple | None = None
        self._failing = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.refresh()
        if self.settings.enabled:
            self._task = asyncio.create_task(self._run(), name="schedules.run")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def reload(self) -> None:
        """After a change through the API: read the schedules again and wake up."""
        await self.refresh()
        self.wake()

    async def _run(self) -> None:
        delay = 1.0
        while True:
            self._wake.clear()
            try:
                async with self.pool.acquire() as conn:
                    sig = tuple(await conn.fetchrow(SIGNATURE_SQL))
                if sig != self._signature:
                    await self.refresh()
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # supervision boundary: log once, try again with backoff
                if not self._failing:
                    logger.exception("lighting schedules: a pass failed; trying again")
                self._failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            if self._failing:
                logger.info("lighting schedules: running again")
            self._failing, delay = False, 1.0
            now = self.clock.now()
            wake_at = now + timedelta(seconds=self.settings.recheck_s)
            nxt = min((c.next_at for c in self.schedules.values() if c.runnable), default=math.inf)
            if math.isfinite(nxt):
                wake_at = min(wake_at, datetime.fromtimestamp(nxt, UTC))
            await self.clock.sleep_until(wake_at, self._wake)

    # ------------------------------------------------------------------ who follows what
    def compile(self, row: asyncpg.Record) -> Compiled:
        c = Compiled(row["id"], row["name"], row["version"], row["enabled"], row["priority"],
                     dict(row["target"]), None, row["applied_until"])
        try:
            profile = Profile.model_validate({"steps": row["steps"], "exceptions": row["exceptions"]})
        except ValidationError as err:  # stored by hand or by an older server
            c.error = f"the stored profile is not valid: {err.errors()[0]['msg']}"
            return c
        c.plan = Plan(profile, self.tz, self.settings.resolution_s)
        return c

    async def refresh(self) -> None:
        """Read the schedules and the devices their targets pick; settle who follows what."""
        async with self._lock:
            async with self.pool.acquire() as conn:
                self._signature = tuple(await conn.fetchrow(SIGNATURE_SQL))
                rows = await conn.fetch("select * from schedules order by id")
            old = self.schedules
            fresh: dict[str, Compiled] = {}
            for row in rows:
                c = self.compile(row)
                if c.enabled and c.plan is not None:
                    try:
                        sel = await self.commands.select(c.target, COMMAND, {"level": 0})
                    except DomainError as err:  # a ward or cabinet deleted since
                        c.error = err.detail
                    else:
                        c.members = [d["id"] for d in sel.devices]
                        c.kinds = {d["id"]: d["kind"] for d in sel.devices}
                fresh[c.id] = c
            owner: dict[str, Compiled] = {}
            for c in sorted(fresh.values(), key=lambda c: (-c.priority, len(c.members), c.id)):
                if c.enabled and c.error is None:
                    for dev in c.members:
                        owner.setdefault(dev, c)
            async with self.pool.acquire() as conn:
                pos = {r["id"]: r for r in await conn.fetch(POSITIONS_SQL, list(owner))}
                cabinets = [d for d, c in owner.items() if c.kinds.get(d) == "lighting_cabinet"]
                children = await conn.fetch(CHILD_LAMPS_SQL, cabinets) if cabinets else []
            now = self.clock.now().timestamp()
            entries = []
            for c in fresh.values():
                mine = [d for d in c.members if owner.get(d) is c and d in pos]
                c.ids = np.array(mine, dtype=object)
                c.keys = np.array([pos[d]["key"] for d in mine], dtype=np.int64)
                if c.plan is not None and mine:
                    c.lamps = c.plan.lamps([pos[d]["lat"] for d in mine], [pos[d]["lon"] for d in mine])
                    prev = old.get(c.id)
                    if prev is not None and prev.version == c.version:
                        # lamps it gained since (a device added, another schedule gone)
                        c.new = (set(mine) - set(prev.ids.tolist())) | (prev.new & set(mine))
                    self._set_next(c, now)
                    entries.append((c.id, c.plan, c.keys, c.lamps.lat, c.lamps.lon))
            # Lamps under a scheduled cabinet follow its schedule, for the lighting rule.
            for r in children:
                c = owner[r["parent"]]
                if r["id"] not in owner and c.plan is not None:
                    entries.append((c.id, c.plan, np.array([r["key"]]), np.array([r["lat"]]),
                                    np.array([r["lon"]])))
            self.schedules = fresh
            self.assignments = _merge(entries)
            if self.alarms is not None and self.alarms.core is not None:
                self.alarms.core.set_schedules(self.assignments)
            self.wake()

    def _set_next(self, c: Compiled, now: float) -> None:
        """When the schedule is next due: now if a step started after ``applied_until``
        (missed while the server was down), else the next step start at any of its lamps."""
        if c.lamps is None or not len(c.lamps):
            c.next_at = math.inf
            return
        if c.applied_until is not None and (c.lamps.current(now)[0] > c.applied_until.timestamp()).any():
            c.next_at = now
            return
        c.next_at = float(c.lamps.next(now)[0].min())

    # ------------------------------------------------------------------ sending steps
    async def tick(self) -> list[dict[str, Any]]:
        """Command every step that has started and was not commanded yet; what was sent."""
        out = []
        async with self._lock:
            now = self.clock.now()
            for c in list(self.schedules.values()):
                if c.due_now(now.timestamp()):
                    applied = await self._apply(c, now)
                    if applied is not None:
                        out.append(applied)
        return out

    async def _apply(self, c: Compiled, now: datetime) -> dict[str, Any] | None:
        assert c.lamps is not None
        t = now.timestamp()
        start, level, index, exc, night = c.lamps.current(t)
        groups: list[PreparedGroup] = []
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("select applied_until, version from schedules where id = $1 "
                                      "for update skip locked", c.id)
            if row is None or row["version"] != c.version:
                return None  # deleted, changed by another process, or another is applying it
            cursor = row["applied_until"]
            due = np.ones(len(c.ids), dtype=bool) if cursor is None else start > cursor.timestamp()
            if c.new:
                due |= np.isin(c.ids, list(c.new))
            last_step = None
            if due.any():
                groups = await self._commands(c, t, due, level)
                last_step = _last_step(c, due, start, level, index, exc, night, groups)
                await conn.execute(
                    "update schedules set applied_until = $2, last_step = $3, last_applied_at = $2 "
                    "where id = $1", c.id, now, last_step)
            elif cursor is None or cursor < now:
                await conn.execute("update schedules set applied_until = $2 where id = $1", c.id, now)
            for g in groups:
                await self.commands.record_group(conn, g)
        for g in groups:
            self.commands.admit_group(g)
        c.applied_until = now
        c.new.clear()
        self._set_next(c, t)
        if last_step is not None:
            logger.info("schedule %s: step %s (%g %%) to %d lamp(s)", c.id, last_step["step"],
                        last_step["level"], last_step["devices"])
        return last_step

    async def _commands(self, c: Compiled, t: float, due: np.ndarray,
                        level: np.ndarray) -> list[PreparedGroup]:
        """One group command per level among the due lamps, each living until the next step."""
        assert c.lamps is not None
        nxt = c.lamps.next(t)[0]
        groups = []
        for lv in np.unique(level[due]).tolist():
            which = due & (level == lv)
            wanted = set(c.ids[which].tolist())
            args = {"level": int(lv) if float(lv).is_integer() else lv}
            sel = await self.commands.select(c.target, COMMAND, args)
            devices = [d for d in sel.devices if d["id"] in wanted]
            if not devices:
                continue
            until = float(nxt[which].min())
            ttl = (until - t) if math.isfinite(until) else None
            if ttl is not None:
                ttl = min(max(ttl, MIN_TTL_S), self.commands.settings.max_ttl_s)
            target = {**sel.target, "schedule": c.id}
            sub = Selection(sel.spec, sel.args, target, devices, [])
            groups.append(self.commands.prepare_group(actor_of(c.id), sub, ttl))
        return groups

    # ------------------------------------------------------------------ views
    def status(self, schedule_id: str) -> dict[str, Any]:
        """Where a schedule stands now: lamps, the step in force and the next, as the API shows."""
        c = self.schedules.get(schedule_id)
        if c is None:
            return {"lamps": 0}
        out: dict[str, Any] = {"lamps": len(c.ids), "overridden": len(c.members) - len(c.ids)}
        if c.error:
            out["error"] = c.error
        if c.lamps is None or not len(c.lamps) or not c.enabled:
            return out
        t = self.clock.now().timestamp()
        level = c.lamps.current(t)[1]
        counts = Counter(level.tolist())
        lv = counts.most_common(1)[0][0]
        nxt, nlevel, _, _, _ = c.lamps.next(t)
        i = int(np.argmin(nxt))
        out["level_now"] = lv
        if math.isfinite(nxt[i]):
            out["next"] = {"at": datetime.fromtimestamp(float(nxt[i]), UTC), "level": float(nlevel[i])}
        return out

    def centre(self, schedule_id: str) -> tuple[float, float] | None:
        """(lat, lon) in the middle of a schedule's lamps, for its night plan."""
        c = self.schedules.get(schedule_id)
        if c is None or c.lamps is None or not len(c.lamps):
            return None
        return float(np.median(c.lamps.lat)), float(np.median(c.lamps.lon))


def _last_step(c: Compiled, due, start, level, index, exc, night, groups) -> dict[str, Any]:
    """What was commanded, by the step most of the due lamps are at."""
    idx = np.flatnonzero(due)
    common = Counter(zip(index[idx].tolist(), exc[idx].tolist(), night[idx].tolist(),
                         strict=True)).most_common(1)[0][0]
    i, e, n = common
    assert c.plan is not None
    steps = c.plan.night_steps(n)
    name = None
    if e >= 0:
        ex = c.plan.profile.exceptions[e]
        name = ex.name or ex.date or f"{ex.from_}/{ex.to}"
    first = float(start[idx].min())
    return {"step": steps.texts[i], "index": i, "level": float(steps.levels[i]), "exception": name,
            "started_at": datetime.fromtimestamp(first, UTC).isoformat() if math.isfinite(first) else None,
            "devices": int(sum(len(g.cmds) for g in groups)),
            "groups": [str(g.id) for g in groups]}


def _merge(entries) -> Assignments:
    """One Assignments from (schedule id, plan, keys, lat, lon) entries, a schedule's merged."""
    by: dict[str, list] = {}
    for sid, plan, keys, lat, lon in entries:
        e = by.setdefault(sid, [sid, plan, [], [], []])
        e[2].append(np.asarray(keys, dtype=np.int64))
        e[3].append(np.asarray(lat, dtype=np.float64))
        e[4].append(np.asarray(lon, dtype=np.float64))
    return Assignments.build([(sid, plan, np.concatenate(k), np.concatenate(la), np.concatenate(lo))
                              for sid, plan, k, la, lo in by.values()])



