"""Load the synthetic city of :mod:`geo.city` into a migrated database.

Everything (wards, roads, devices, crews and the ``ioc_meta`` row ``city``) goes in with one
transaction, so a failed or interrupted seed leaves the database as it was. Rows travel by
``COPY`` with geometries as hex EWKB, which PostGIS parses on input: no per-row statements,
so 100,000 lamps load in seconds, most of it spent in the ``devices_ward`` trigger that
gives each device its ward (hence wards are loaded before devices).

Synchronous (psycopg 3), like :mod:`server.store.migrate`: it runs before the event loop starts.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import numpy as np
import orjson
import psycopg
import shapely
from psycopg.types.json import Jsonb

from geo.city import City, Device, generate_city

logger = logging.getLogger(__name__)

META_KEY = "city"


def _ewkb(geoms: Iterable) -> list[str]:
    arr = shapely.set_srid(np.array(list(geoms), dtype=object), 4326)
    return shapely.to_wkb(arr, hex=True, include_srid=True).tolist()


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


class _Progress:
    """Step timings, printed to stderr when asked for (``ioc demo``, ``ioc seed``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = self.last = time.perf_counter()

    def step(self, what: str) -> None:
        now = time.perf_counter()
        msg = f"seed: {what} ({now - self.last:.1f} s, {now - self.start:.1f} s total)"
        self.last = now
        logger.debug(msg)
        if self.enabled:
            print(msg, file=sys.stderr, flush=True)


def seed_city(url: str, streetlights: int = 5000, seed: int = 42, *, replace: bool = False,
              progress: bool = False) -> dict[str, int]:
    """Generate the city and load it; returns the number of devices per kind.

    Raises ValueError if the database already holds devices or wards, unless ``replace``:
    then devices (with their ``device_state``), wards and roads are deleted first, in the
    same transaction. Telemetry and alarms are history and are kept; crews are updated in
    place so tokens bound to them stay valid.
    """
    steps = _Progress(progress)
    city = generate_city(streetlights, seed)
    counts = city.counts()
    steps.step(f"generated {len(city.devices):,} devices, {len(city.roads):,} roads")
    with psycopg.connect(url) as conn:
        with conn.transaction():
            _clear(conn, replace)
            _copy_wards(conn, city)
            _copy_roads(conn, city)
            steps.step(f"loaded {len(city.wards)} wards and {len(city.roads):,} roads")
            _copy_devices(conn, city.devices)
            steps.step(f"loaded {len(city.devices):,} devices")
            _upsert_crews(conn, city)
            _record(conn, city, counts)
        # Fresh statistics, so the first tile and API queries plan with real row counts.
        conn.execute("analyze wards, roads, devices")
        conn.commit()
    steps.step("committed and analysed")
    return counts


def _clear(conn: psycopg.Connection, replace: bool) -> None:
    devices, wards = conn.execute(
        "select (select count(*) from devices), (select count(*) from wards)"
    ).fetchone()
    if not (devices or wards):
        return
    if not replace:
        raise ValueError(
            f"the database already holds {devices:,} devices and {wards} wards; seeding the "
            "synthetic city on top would mix two cities. Seed an empty database, or pass "
            "replace=True (`ioc seed --replace`) to delete devices, wards and roads first."
        )
    conn.execute("delete from devices")
    conn.execute("delete from wards")
    # Nothing refers to roads by id, and lamps' road_id property is the road's position in
    # the generated list + 1, so numbering restarts at 1.
    conn.execute("truncate roads restart identity")


def _copy_wards(conn: psycopg.Connection, city: City) -> None:
    geoms = _ewkb(w.geometry for w in city.wards)
    with conn.cursor().copy("copy wards (code, name, properties, geom) from stdin") as copy:
        for w, g in zip(city.wards, geoms, strict=True):
            copy.write_row((w.code, w.name, _json(w.properties), g))


def _copy_roads(conn: psycopg.Connection, city: City) -> None:
    geoms = _ewkb(r.geometry for r in city.roads)
    # Rows arrive in list order, so a fresh table numbers them 1, 2, … as road_id expects.
    with conn.cursor().copy('copy roads (name, "class", geom) from stdin') as copy:
        for r, g in zip(city.roads, geoms, strict=True):
            copy.write_row((r.name, r.cls, g))


_DEVICE_COLUMNS = "id, kind, name, geom, parent, external_id, properties, adapter, " \
                  "expected_interval_s"


def _device_rows(devices: list[Device]) -> Iterator[tuple]:
    for d, g in zip(devices, _ewkb(d.geometry for d in devices), strict=True):
        yield (d.id, d.kind, d.name, g, d.parent, d.external_id, _json(d.properties),
               d.adapter, d.expected_interval_s)


def _copy_devices(conn: psycopg.Connection, devices: list[Device]) -> None:
    # parent is a deferred foreign key, so lamps may arrive before their cabinet; the
    # generator lists parents first anyway.
    with conn.cursor().copy(f"copy devices ({_DEVICE_COLUMNS}) from stdin") as copy:
        for row in _device_rows(devices):
            copy.write_row(row)


def _upsert_crews(conn: psycopg.Connection, city: City) -> None:
    depots = _ewkb(c.depot for c in city.crews)
    with conn.cursor() as cur:
        cur.executemany(
            """insert into crews (id, name, ward, location, contacts)
               values (%s, %s, %s, %s::geometry, %s)
               on conflict (id) do update
               set name = excluded.name, ward = excluded.ward, location = excluded.location,
                   contacts = excluded.contacts, updated_at = now()""",
            [(c.id, c.name, c.wards[0], depot, Jsonb({"email": c.email}))
             for c, depot in zip(city.crews, depots, strict=True)],
        )


def _record(conn: psycopg.Connection, city: City, counts: dict[str, int]) -> None:
    value = {
        "seed": city.seed,
        "streetlights": city.streetlights,
        "devices": len(city.devices),
        "counts": counts,
        # crews.ward holds a crew's home ward (its depot); the full responsibility is here
        # until the schema has a place for it.
        "crew_wards": {c.id: list(c.wards) for c in city.crews},
        "seeded_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    conn.execute(
        """insert into ioc_meta (key, value) values (%s, %s)
           on conflict (key) do update set value = excluded.value, updated_at = now()""",
        (META_KEY, Jsonb(value)),
    )


def seed_info(url: str) -> dict | None:
    """The ``ioc_meta`` record of the seeded city, or None (also before migrations)."""
    with psycopg.connect(url) as conn:
        try:
            row = conn.execute("select value from ioc_meta where key = %s", (META_KEY,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


def is_seeded(url: str) -> bool:
    return seed_info(url) is not None
