"""Lighting schedules (dimming profiles): the level each lamp should burn at, at any time.

Pure: numpy, zoneinfo and the sun (:mod:`rules.sun`), no I/O. The server sends the steps
as commands (server/schedules/) and the ``lighting_schedule`` rule checks lamps against
them (:mod:`rules.evaluator`); both ask this module, so they cannot disagree.

A profile is a list of **steps in the order of a night**, each ``{"at", "level"}``:

    dusk+10m  100     on at sunset + 10 minutes, full
    23:00      50     half from 23:00 (the city's local time)
    05:00     100     full again for the morning traffic
    dawn-10m    0     off 10 minutes before sunrise

``dusk``/``dawn`` are sunset and sunrise *at the lamp* (the upper limb on the horizon,
as the lighting rule computes them), with an optional offset (``dusk-5m``, ``dawn+1h``);
``HH:MM`` is local clock time. A night runs from local noon of its date to noon of the
next day: clock times from 12:00 belong to its evening, earlier ones to the next morning.

Sun steps are the anchors: a clock step is kept between the sun steps around it in the
list, so on a short summer night ``05:00`` never switches lamps on after ``dawn-10m`` has
switched them off (it then lasts no time), and ``18:00`` after ``dusk+10m`` waits for it.
Steps at the same instant: the later in the list wins. Times are floored to the
schedule's resolution (a minute), so lamps a few hundred metres apart switch together.

**Exceptions** replace the steps of the nights they cover: one ``date`` (``2027-02-06``,
or ``02-09`` for every year) or ``from``/``to`` (inclusive), e.g. Tết all night at 100 %.
The first exception that covers a night wins.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BeforeValidator, Field, field_validator, model_validator

from rules.models import Real, _Model, parse_duration
from rules.sun import sun_times

__all__ = ["Assignments", "At", "DateException", "Lamps", "Plan", "Profile", "Step", "local_night",
           "nights_of", "parse_at"]

MAX_OFFSET_S = 6 * 3600.0  # dusk+7h is a mistake, not a profile
MAX_STEPS = 24
MAX_EXCEPTIONS = 200
DAY_S = 86400.0
_EPOCH = date(1970, 1, 1)

_AT = re.compile(r"^\s*(?:(?P<sun>dusk|dawn|sunset|sunrise)\s*(?:(?P<sign>[+-])\s*(?P<off>\S.*?))?"
                 r"|(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d))\s*$", re.IGNORECASE)
_SUN_ALIASES = {"sunset": "dusk", "sunrise": "dawn"}
AT_HELP = ("write it as dusk, dusk+10m, dawn-10m (sunset and sunrise at the lamp) or a local time "
           "such as 23:00")


@dataclass(frozen=True, slots=True)
class At:
    """When a step starts: ``anchor`` dusk, dawn or clock; ``seconds`` the offset from the
    sun event, or (clock) the seconds after local midnight."""

    anchor: Literal["dusk", "dawn", "clock"]
    seconds: float

    @property
    def text(self) -> str:
        if self.anchor == "clock":
            m = int(self.seconds // 60)
            return f"{m // 60:02d}:{m % 60:02d}"
        if not self.seconds:
            return self.anchor
        sign = "+" if self.seconds > 0 else "-"
        s = abs(self.seconds)
        if s % 3600 == 0:
            amount = f"{s / 3600:g}h"
        elif s % 60 == 0:
            amount = f"{s / 60:g}m"
        else:
            amount = f"{s:g}s"
        return f"{self.anchor}{sign}{amount}"


def parse_at(value: Any) -> At:
    """``dusk+10m``, ``dawn-10m``, ``sunset``, ``23:00`` → :class:`At`; ValueError says how."""
    if not isinstance(value, str):
        raise ValueError(f"at must be text; {AT_HELP}")
    m = _AT.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a step time; {AT_HELP}")
    if m.group("h") is not None:
        return At("clock", int(m.group("h")) * 3600.0 + int(m.group("m")) * 60.0)
    anchor = m.group("sun").lower()
    anchor = _SUN_ALIASES.get(anchor, anchor)
    offset = 0.0
    if m.group("sign"):
        try:
            offset = parse_duration(m.group("off"))
        except ValueError:
            raise ValueError(f"{value!r}: the offset after {m.group('sign')} is a duration such as "
                             "10m, 90s or 1h") from None
        if offset > MAX_OFFSET_S:
            raise ValueError(f"{value!r}: an offset from {anchor} is at most 6h")
        if m.group("sign") == "-":
            offset = -offset
    return At(anchor, offset)  # type: ignore[arg-type]


def _normalise_at(value: Any) -> str:
    return parse_at(value).text


AtText = Annotated[str, BeforeValidator(_normalise_at),
                   Field(description="dusk±offset, dawn±offset (sunset and sunrise at the lamp) or "
                                     "local HH:MM", examples=["dusk+10m", "23:00", "dawn-10m"])]
Level = Annotated[Real, Field(ge=0, le=100, description="dim level in percent; 0 switches off")]


class Step(_Model):
    at: AtText
    level: Level

    @property
    def when(self) -> At:
        return parse_at(self.at)


def _check_order(steps: Sequence[Step]) -> None:
    """Sun steps in night order: every dusk step before every dawn step."""
    seen_dawn = None
    for i, s in enumerate(steps):
        anchor = s.when.anchor
        if anchor == "dawn":
            seen_dawn = seen_dawn if seen_dawn is not None else i
        elif anchor == "dusk" and seen_dawn is not None:
            raise ValueError(f"steps are in the order of a night: {s.at!r} (step {i + 1}) comes "
                             f"after {steps[seen_dawn].at!r} (step {seen_dawn + 1}); put dusk steps "
                             "before dawn steps")
    sun = [(i, s) for i, s in enumerate(steps) if s.when.anchor != "clock"]
    for (i, a), (j, b) in itertools.pairwise(sun):
        if a.when.anchor == b.when.anchor and b.when.seconds < a.when.seconds:
            raise ValueError(f"step {j + 1} ({b.at}) is earlier than step {i + 1} ({a.at}); "
                             "list steps in the order of the night")
    # Clock steps in night order too: from noon, evening times first, then the morning's.
    clock = [(i, s, s.when.seconds + (0 if s.when.seconds >= 43200 else DAY_S))
             for i, s in enumerate(steps) if s.when.anchor == "clock"]
    for (i, a, ka), (j, b, kb) in itertools.pairwise(clock):
        if kb < ka:
            raise ValueError(f"step {j + 1} ({b.at}) comes before step {i + 1} ({a.at}) in a night "
                             "(a night runs from noon to noon); list steps in the order of the night")


StepList = Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)]
_DATE = re.compile(r"^(\d{4}-)?(\d{2})-(\d{2})$")


def _date_text(value: Any) -> str:
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError(f"{value!r} is not a date; write YYYY-MM-DD, or MM-DD for every year")
    m = _DATE.match(value)
    assert m is not None
    try:
        date(int(m.group(1)[:4]) if m.group(1) else 2000, int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise ValueError(f"{value!r} is not a date of the calendar") from None
    return value


DateText = Annotated[str, BeforeValidator(_date_text)]


class DateException(_Model):
    """Other steps for the nights of a date or a range of dates (holidays such as Tết)."""

    name: str = Field(default="", max_length=200)
    date: DateText | None = Field(default=None, description="YYYY-MM-DD, or MM-DD every year")
    from_: DateText | None = Field(default=None, alias="from", description="first night, YYYY-MM-DD")
    to: DateText | None = Field(default=None, description="last night, YYYY-MM-DD (inclusive)")
    steps: StepList

    @model_validator(mode="after")
    def _dates(self) -> DateException:
        if self.date is not None:
            if self.from_ is not None or self.to is not None:
                raise ValueError("give either date or from and to, not both")
        elif self.from_ is None or self.to is None:
            raise ValueError("an exception needs date, or from and to")
        else:
            if len(self.from_) != 10 or len(self.to) != 10:
                raise ValueError("from and to are full dates, YYYY-MM-DD")
            a, b = date.fromisoformat(self.from_), date.fromisoformat(self.to)
            if b < a:
                raise ValueError(f"to ({self.to}) is before from ({self.from_})")
            if (b - a).days > 366:
                raise ValueError("an exception covers at most a year of nights")
        return self

    _steps_in_order = field_validator("steps")(lambda steps: _check_order(steps) or steps)

    def covers(self, night: date) -> bool:
        if self.date is not None:
            if len(self.date) == 5:
                return night.strftime("%m-%d") == self.date
            return night.isoformat() == self.date
        assert self.from_ is not None and self.to is not None
        return self.from_ <= night.isoformat() <= self.to


class Profile(_Model):
    """The steps of an ordinary night and the exceptions by date."""

    steps: StepList
    exceptions: list[DateException] = Field(default=[], max_length=MAX_EXCEPTIONS)

    _steps_in_order = field_validator("steps")(lambda steps: _check_order(steps) or steps)


@dataclass(frozen=True, slots=True)
class _Night:
    """The steps of one night: their anchors, offsets and levels, as arrays."""

    anchors: tuple[str, ...]
    seconds: np.ndarray
    levels: np.ndarray
    texts: tuple[str, ...]
    exception: int  # -1: the ordinary steps


def _night_of(steps: Sequence[Step], exception: int) -> _Night:
    whens = [s.when for s in steps]
    return _Night(tuple(w.anchor for w in whens), np.array([w.seconds for w in whens]),
                  np.array([float(s.level) for s in steps]), tuple(s.at for s in steps), exception)


class Plan:
    """A profile compiled for one time zone: when each step starts at each lamp.

    Every method takes arrays of times (epoch seconds) and the lamps' latitudes and
    longitudes (broadcast against each other) and works on all of them at once.
    """

    def __init__(self, profile: Profile, tz: str | ZoneInfo, resolution_s: float = 60.0) -> None:
        self.profile = profile
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self.resolution_s = float(resolution_s)
        self._ordinary = _night_of(profile.steps, -1)
        self._exceptions = [_night_of(e.steps, i) for i, e in enumerate(profile.exceptions)]
        self._local_noon = lru_cache(maxsize=4096)(self._noon)
        self._clock = lru_cache(maxsize=8192)(self._clock_time)

    # ------------------------------------------------------------------ calendar
    def night_steps(self, night: int) -> _Night:
        """The steps of night ``night`` (days since 1970-01-01, local)."""
        if self._exceptions:
            d = _EPOCH + timedelta(days=night)
            for e, steps in zip(self.profile.exceptions, self._exceptions, strict=True):
                if e.covers(d):
                    return steps
        return self._ordinary

    def _noon(self, night: int) -> float:
        d = _EPOCH + timedelta(days=night)
        return datetime.combine(d, time(12), tzinfo=self.tz).timestamp()

    def _clock_time(self, night: int, seconds: float) -> float:
        """Epoch seconds of a local clock time in night ``night``: from noon on, that day;
        before noon, the next morning."""
        d = _EPOCH + timedelta(days=night + (0 if seconds >= 43200 else 1))
        s = int(seconds)
        return datetime.combine(d, time(s // 3600, (s // 60) % 60, s % 60), tzinfo=self.tz).timestamp()

    def nights_of(self, t: np.ndarray) -> np.ndarray:
        """The night each time falls in (local noon to noon)."""
        return nights_of(self.tz, t)

    # ------------------------------------------------------------------ step times
    def occurrences(self, night: int, lat, lon) -> tuple[np.ndarray, _Night]:
        """When each step of night ``night`` starts at each lamp: shape (steps, lamps)."""
        lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        steps = self.night_steps(night)
        n = np.broadcast(lat, lon).shape[0]
        need_dusk = "dusk" in steps.anchors
        need_dawn = "dawn" in steps.anchors
        sunset = sunrise = None
        if need_dusk:
            _, sunset = sun_times(self._local_noon(night), lat, lon)
            sunset = np.where(np.isnan(sunset), self._clock(night, 18 * 3600.0), sunset)
        if need_dawn:
            sunrise, _ = sun_times(self._local_noon(night + 1), lat, lon)
            sunrise = np.where(np.isnan(sunrise), self._clock(night, 6 * 3600.0), sunrise)
        k = len(steps.anchors)
        times = np.empty((k, n), dtype=np.float64)
        for i, (anchor, s) in enumerate(zip(steps.anchors, steps.seconds.tolist(), strict=True)):
            if anchor == "dusk":
                times[i] = sunset + s
            elif anchor == "dawn":
                times[i] = sunrise + s
            else:
                times[i] = self._clock(night, s)
        # Clock steps stay between the sun steps around them (see the module's docstring).
        sun_rows = [i for i, a in enumerate(steps.anchors) if a != "clock"]
        if sun_rows and len(sun_rows) < k:
            for i, anchor in enumerate(steps.anchors):
                if anchor != "clock":
                    continue
                before = [j for j in sun_rows if j < i]
                after = [j for j in sun_rows if j > i]
                if before:
                    times[i] = np.maximum(times[i], times[before[-1]])
                if after:
                    times[i] = np.minimum(times[i], times[after[0]])
        times = np.maximum.accumulate(times, axis=0)
        if self.resolution_s > 0:
            times = np.floor(times / self.resolution_s) * self.resolution_s
        return times, steps

    def _scan(self, t, nights_of_rows, shifts: Sequence[int], pick: str):
        """The latest step start at or before ``t`` (``last``) or the earliest after it
        (``first``), per element; ``nights_of_rows(night, rows)`` gives the step starts of
        that night at those elements. Ties go to the later step."""
        n = len(t)
        best_t = np.full(n, -math.inf if pick == "last" else math.inf)
        best_level = np.zeros(n)
        best_step = np.full(n, -1, dtype=np.int64)
        best_exc = np.full(n, -1, dtype=np.int64)
        best_night = np.zeros(n, dtype=np.int64)
        base = self.nights_of(t)
        for shift in shifts:
            nights = base + shift
            for night in np.unique(nights).tolist():
                rows = np.flatnonzero(nights == night)
                times, steps = nights_of_rows(night, rows)
                tr = t[rows]
                for i in range(times.shape[0]):
                    at = times[i]
                    if pick == "last":
                        better = (at <= tr) & (at >= best_t[rows])
                    else:
                        better = (at > tr) & (at <= best_t[rows])
                    if better.any():
                        r = rows[better]
                        best_t[r] = at[better]
                        best_level[r] = steps.levels[i]
                        best_step[r] = i
                        best_exc[r] = steps.exception
                        best_night[r] = night
        return best_t, best_level, best_step, best_exc, best_night

    def lamps(self, lat, lon) -> Lamps:
        """This plan at a fixed set of lamps, the step starts of each night computed once."""
        return Lamps(self, lat, lon)

    def current(self, t, lat, lon):
        """The step in force at ``t``: (its start, level, index, exception index or -1,
        night), each an array over the elements."""
        t, lat, lon = _arrays(t, lat, lon)
        return self._scan(t, lambda night, rows: self.occurrences(night, lat[rows], lon[rows]),
                          CURRENT_SHIFTS, "last")

    def next(self, t, lat, lon):
        """The next step to start after ``t``: (start, level, index, exception, night)."""
        t, lat, lon = _arrays(t, lat, lon)
        return self._scan(t, lambda night, rows: self.occurrences(night, lat[rows], lon[rows]),
                          NEXT_SHIFTS, "first")

    def level_at(self, t, lat, lon) -> np.ndarray:
        return self.current(t, lat, lon)[1]

    # ------------------------------------------------------------------ one night, one place
    def night_plan(self, night: int, lat: float, lon: float) -> dict[str, Any]:
        """Night ``night`` at one place: sunset, sunrise, when each step starts and the
        energy it uses as a share of the night at 100 % from sunset to sunrise."""
        lat_a, lon_a = np.array([lat], dtype=np.float64), np.array([lon], dtype=np.float64)
        _, sunset = sun_times(self._local_noon(night), lat_a, lon_a)
        sunrise, _ = sun_times(self._local_noon(night + 1), lat_a, lon_a)
        times, steps = self.occurrences(night, lat_a, lon_a)
        start, end = float(sunset[0]), float(sunrise[0])
        # The level at sunset is what the previous night left (or an earlier step of this one).
        level0 = float(self.level_at(start, lat_a, lon_a)[0])
        edges = [(start, level0)] + [(float(times[i, 0]), float(steps.levels[i]))
                                     for i in range(times.shape[0]) if start < times[i, 0] < end]
        edges.sort(key=lambda e: e[0])
        used = 0.0
        for (a, level), (b, _) in zip(edges, [*edges[1:], (end, 0.0)], strict=True):
            used += max(0.0, b - a) * level / 100.0
        length = max(end - start, 1.0)
        exc = self.profile.exceptions[steps.exception] if steps.exception >= 0 else None
        return {
            "night": (_EPOCH + timedelta(days=night)).isoformat(),
            "sunset": start, "sunrise": end,
            "exception": exc.name or (exc.date or f"{exc.from_}/{exc.to}") if exc else None,
            "steps": [{"at": steps.texts[i], "level": float(steps.levels[i]),
                       "start": float(times[i, 0])} for i in range(times.shape[0])],
            "energy_share": used / length,
        }


# Which nights may hold the step in force at a time of night N, and the next one: a night's
# steps lie between its noon - 6 h (dusk-6h) and the next noon + 6 h (dawn+6h).
CURRENT_SHIFTS = (-2, -1, 0, 1)
NEXT_SHIFTS = (-1, 0, 1, 2)


def _arrays(t, lat, lon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, lat, lon = (np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (t, lat, lon))
    return tuple(np.broadcast_arrays(t, lat, lon))  # type: ignore[return-value]


class Lamps:
    """A plan at a fixed set of lamps (``lat``, ``lon``): each night's step starts are
    computed once for all of them and kept for a few nights, so the scheduler's wake-ups
    and the rule's readings cost lookups, not sun computations. ``idx`` selects lamps."""

    KEEP_NIGHTS = 8

    def __init__(self, plan: Plan, lat, lon) -> None:
        self.plan = plan
        self.lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        self.lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        self._nights: dict[int, tuple[np.ndarray, _Night]] = {}

    def __len__(self) -> int:
        return len(self.lat)

    def _occ(self, night: int) -> tuple[np.ndarray, _Night]:
        hit = self._nights.get(night)
        if hit is None:
            if len(self._nights) >= self.KEEP_NIGHTS:
                self._nights.pop(max(self._nights, key=lambda k: abs(k - night)))
            hit = self._nights[night] = self.plan.occurrences(night, self.lat, self.lon)
        return hit

    def _rows(self, idx: np.ndarray):
        def of(night: int, rows: np.ndarray):
            times, steps = self._occ(night)
            return times[:, idx[rows]], steps
        return of

    def _prepare(self, t, idx) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(len(self.lat)) if idx is None else np.atleast_1d(np.asarray(idx, dtype=np.int64))
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        t, idx = np.broadcast_arrays(t, idx)
        return t, idx

    def current(self, t, idx=None):
        t, idx = self._prepare(t, idx)
        return self.plan._scan(t, self._rows(idx), CURRENT_SHIFTS, "last")

    def next(self, t, idx=None):
        t, idx = self._prepare(t, idx)
        return self.plan._scan(t, self._rows(idx), NEXT_SHIFTS, "first")

    def level_at(self, t, idx=None) -> np.ndarray:
        return self.current(t, idx)[1]

    def certain(self, t, idx, margin_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(surely off, surely on, level) at ``t``: sure when the schedule says the same
        for ``margin_s`` before and after ``t``; around a switching time both are False."""
        t = np.asarray(t, dtype=np.float64)
        before, now, after = (self.level_at(t + d, idx) for d in (-margin_s, 0.0, margin_s))
        off = (before <= 0) & (now <= 0) & (after <= 0)
        on = (before > 0) & (now > 0) & (after > 0)
        return off, on, now


@dataclass(slots=True)
class Assignments:
    """Which lamp (device key) follows which schedule: what the lighting rule checks them
    against. Built by the server from the schedules' targets; a lamp has at most one."""

    ids: list[str]  # schedule ids
    lamps: list[Lamps]  # per schedule, at its lamps
    key_plan: np.ndarray  # device key -> schedule index, -1: none
    key_pos: np.ndarray  # device key -> the lamp's index in that schedule's Lamps

    @classmethod
    def empty(cls) -> Assignments:
        return cls([], [], np.full(1, -1, dtype=np.int64), np.zeros(1, dtype=np.int64))

    @classmethod
    def build(cls, entries: Sequence[tuple[str, Plan, np.ndarray, np.ndarray, np.ndarray]]) -> Assignments:
        """``entries``: (schedule id, its plan, device keys, latitudes, longitudes)."""
        size = max((int(k.max()) + 1 for _, _, k, _, _ in entries if len(k)), default=1)
        key_plan = np.full(size, -1, dtype=np.int64)
        key_pos = np.zeros(size, dtype=np.int64)
        ids, lamps = [], []
        for i, (sid, plan, keys, lat, lon) in enumerate(entries):
            keys = np.asarray(keys, dtype=np.int64)
            key_plan[keys] = i
            key_pos[keys] = np.arange(len(keys))
            ids.append(sid)
            lamps.append(plan.lamps(lat, lon))
        return cls(ids, lamps, key_plan, key_pos)

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """(schedule index or -1, position in its Lamps) per device key."""
        keys = np.asarray(keys, dtype=np.int64)
        which = np.full(len(keys), -1, dtype=np.int64)
        pos = np.zeros(len(keys), dtype=np.int64)
        inside = (keys >= 0) & (keys < len(self.key_plan))
        which[inside] = self.key_plan[keys[inside]]
        pos[inside] = self.key_pos[keys[inside]]
        return which, pos


def nights_of(tz: ZoneInfo, t) -> np.ndarray:
    """The night (days since 1970-01-01, a night starting at local noon) of each epoch time."""
    t = np.asarray(t, dtype=np.float64)
    hours = np.floor(t / 3600.0)
    uniq, inv = np.unique(hours, return_inverse=True)
    offs = np.array([datetime.fromtimestamp(h * 3600.0, tz).utcoffset().total_seconds()  # type: ignore[union-attr]
                     for h in uniq.tolist()], dtype=np.float64)
    local = t + offs[inv].reshape(t.shape)
    return np.floor(local / DAY_S - 0.5).astype(np.int64)


def local_night(tz: ZoneInfo, at: datetime) -> int:
    """The night (days since 1970-01-01) that local time ``at`` falls in: a night starts at noon."""
    local = at.astimezone(tz) - timedelta(hours=12)
    return (local.date() - _EPOCH).days
