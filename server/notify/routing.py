"""Who is told: the crew for an alarm's place, and the people one escalation level up.

A raised alarm goes to the available first-line crew (``escalation_level`` 1) whose ward is
the device's ward; failing that, to the nearest available first-line crew by PostGIS
nearest-neighbour ordering (``<->`` on ``crews.location``, index-assisted), and failing
that to the nearest available crew of any level, so an alarm is never left unassigned
while anybody is on duty. Escalation level *n* is the crew of level *n* found the same way
plus the escalation contacts configured for level *n*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from server.settings import EscalationContact, NotifySettings

FIRST_LINE = 1

# The alarm's place: its own geometry (an incident's estimated point) or its device's, and
# the device's ward, or the ward under that place for a device the ward trigger missed.
_PLACE = """
    with place as (
        select coalesce(ST_SetSRID(ST_GeomFromGeoJSON($1::text), 4326), d.geom) as geom, d.ward
        from (select 1) one left join devices d on d.id = $2
    )
"""

_WARD = _PLACE + """
    select p.geom is not null as found,
           coalesce(p.ward, (select w.code from wards w
                             where ST_Intersects(w.geom, ST_PointOnSurface(p.geom)) limit 1)) as ward
    from place p
"""

_WARD_CREW = """
    select id from crews
    where ward = $1 and available and ($2::int is null or escalation_level = $2)
    order by escalation_level, id limit 1
"""

# ORDER BY location <-> (scalar subquery) is what lets the GiST index answer
# nearest-neighbour: the subquery runs once, as a constant for the index scan.
_NEAREST_CREW = _PLACE + """
    select id, ST_Distance(location::geography, (select geom from place)::geography) as metres
    from crews
    where available and location is not null and ($3::int is null or escalation_level = $3)
    order by location <-> (select geom from place), id limit 1
"""


@dataclass(frozen=True, slots=True)
class Route:
    crew: str
    why: str  # "ward W05" or "nearest available crew, 1234 m away"
    by: str  # "ward" | "nearest"
    metres: float | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    kind: str  # "crew" | "webhook" (a configured integration) | "contact" (an escalation contact)
    key: str  # crew id, webhook name, contact name

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Recipient:
        return cls(d["kind"], d["key"])

    def __str__(self) -> str:
        return f"{self.kind} {self.key}"


def _geojson(alarm: dict[str, Any]) -> str | None:
    geometry = alarm.get("geometry")
    return orjson.dumps(geometry).decode() if geometry else None


async def route(conn: asyncpg.Connection, alarm: dict[str, Any], level: int | None = FIRST_LINE,
                *, any_level_fallback: bool = True) -> Route | None:
    """The crew for this alarm at ``level`` (None: any level), or None if nobody is available."""
    args = (_geojson(alarm), alarm.get("device"))
    place = await conn.fetchrow(_WARD, *args)
    if place is None or not place["found"]:
        return None
    if place["ward"] is not None:
        crew = await conn.fetchval(_WARD_CREW, place["ward"], level)
        if crew is not None:
            return Route(crew, f"ward {place['ward']}", "ward")
    levels = [level, None] if (any_level_fallback and level is not None) else [level]
    for lvl in levels:
        row = await conn.fetchrow(_NEAREST_CREW, *args, lvl)
        if row is not None:
            return Route(row["id"], f"nearest available crew, {row['metres']:.0f} m away", "nearest",
                         row["metres"])
    return None


def contacts_at(settings: NotifySettings, level: int) -> list[EscalationContact]:
    return [c for c in settings.escalation.contacts if c.level == level]


async def escalation_targets(conn: asyncpg.Connection, settings: NotifySettings,
                             alarm: dict[str, Any], level: int) -> tuple[list[Recipient], list[str]]:
    """Recipients at one escalation level, and why each was chosen."""
    recipients: list[Recipient] = []
    why: list[str] = []
    found = await route(conn, alarm, level, any_level_fallback=False)
    if found is not None and found.crew != alarm.get("assigned_crew"):
        recipients.append(Recipient("crew", found.crew))
        why.append(f"crew {found.crew} ({found.why})")
    for c in contacts_at(settings, level):
        recipients.append(Recipient("contact", c.name))
        why.append(f"contact {c.name}")
    return recipients, why


async def chain(conn: asyncpg.Connection, settings: NotifySettings, r: Recipient,
                event: str) -> list[tuple[str, str]]:
    """The (channel, target) pairs to try for one recipient, best first."""
    if r.kind == "webhook":
        hook = next((w for w in settings.webhooks if w.name == r.key), None)
        return [("webhook", hook.url)] if hook else []
    if r.kind == "contact":
        c = next((c for c in settings.escalation.contacts if c.name == r.key), None)
        if c is None:
            return []
        have = {"webhook": c.webhook, "email": c.email if settings.smtp else None}
    else:
        contacts = await conn.fetchval("select contacts from crews where id = $1", r.key)
        if contacts is None:
            return []
        have = {
            "webhook": contacts.get("webhook"),
            "email": contacts.get("email") if settings.smtp else None,
            "crew": r.key,
        }
    return [(ch, have[ch]) for ch in settings.channel_order if have.get(ch)]
