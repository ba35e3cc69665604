"""Seeding the synthetic city into a real, migrated PostGIS database."""

from __future__ import annotations

import time

import psycopg
import pytest

from geo.city import generate_city
from server.registry.seed import is_seeded, seed_city, seed_info


def _one(url: str, sql: str, *args):
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchone()


def _kind_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("select kind, count(*) from devices group by kind").fetchall())


LAMPS_OUTSIDE_THEIR_CABINETS_WARD = """
    select count(*) from devices l join devices c on c.id = l.parent
    where l.kind = 'streetlight' and l.ward is distinct from c.ward"""


def test_seed_loads_the_city(db_url: str) -> None:
    assert not is_seeded(db_url)
    counts = seed_city(db_url, streetlights=2000, seed=5)
    city = generate_city(2000, seed=5)
    assert counts == city.counts() == _kind_counts(db_url)
    assert counts["streetlight"] == 2000
    assert _one(db_url, "select count(*) from wards") == (32,)
    assert _one(db_url, "select count(*), min(id), max(id) from roads") == (
        len(city.roads), 1, len(city.roads))
    # The trigger gave every device a ward, and each lamp the ward of its cabinet.
    assert _one(db_url, "select count(*) from devices where ward is null") == (0,)
    assert _one(db_url, LAMPS_OUTSIDE_THEIR_CABINETS_WARD) == (0,)
    assert _one(db_url, "select count(*) from devices d join wards w on w.code = d.ward "
                        "where not ST_Intersects(w.geom, ST_PointOnSurface(d.geom))") == (0,)
    assert _one(db_url, "select count(distinct ST_SRID(geom)), min(ST_SRID(geom)) from devices") \
        == (1, 4326)
    lamp = _one(db_url, "select parent, properties->>'lamp_type' from devices where id = %s",
                "SL-000001")
    assert lamp == (city.by_kind("streetlight")[0].parent, "LED")
    info = seed_info(db_url)
    assert is_seeded(db_url)
    assert (info["seed"], info["streetlights"], info["devices"]) == (5, 2000, len(city.devices))
    assert info["seeded_at"].endswith("Z")


def test_crews_are_created_at_depots_in_their_wards(db_url: str) -> None:
    seed_city(db_url, streetlights=600, seed=7)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """select c.id, c.contacts->>'email', ST_Intersects(w.geom, c.location)
               from crews c join wards w on w.code = c.ward order by c.id"""
        ).fetchall()
    assert [r[0] for r in rows] == [f"CREW-{i:02d}" for i in range(1, 9)]
    assert rows[0][1] == "crew01@ioc.example"
    assert all(r[2] for r in rows)
    crew_wards = seed_info(db_url)["crew_wards"]
    assert sorted(w for ws in crew_wards.values() for w in ws) == [f"W{i:02d}" for i in
                                                                    range(1, 33)]


def test_seeding_twice_is_refused_unless_replacing(db_url: str) -> None:
    seed_city(db_url, streetlights=600, seed=7)
    before = _kind_counts(db_url)
    with pytest.raises(ValueError, match="already holds"):
        seed_city(db_url, streetlights=600, seed=8)
    assert _kind_counts(db_url) == before
    assert seed_info(db_url)["seed"] == 7

    counts = seed_city(db_url, streetlights=1000, seed=8, replace=True)
    assert counts["streetlight"] == 1000
    assert _kind_counts(db_url) == counts
    assert seed_info(db_url)["seed"] == 8
    assert _one(db_url, "select min(id) from roads") == (1,)
    assert _one(db_url, "select count(*) from crews") == (8,)
    assert _one(db_url, LAMPS_OUTSIDE_THEIR_CABINETS_WARD) == (0,)


def test_is_seeded_is_false_on_an_unmigrated_database(pg_cluster) -> None:
    url = pg_cluster.create_database("seed_unmigrated")
    try:
        assert not is_seeded(url)
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute("drop database seed_unmigrated")


def test_100k_streetlights_seed(db_url: str) -> None:
    start = time.perf_counter()
    counts = seed_city(db_url, streetlights=100_000, seed=42)
    elapsed = time.perf_counter() - start
    print(f"generated and seeded {sum(counts.values()):,} devices "
          f"(100,000 streetlights) in {elapsed:.1f} s")
    assert counts["streetlight"] == 100_000
    assert _kind_counts(db_url) == counts
    assert _one(db_url, "select count(*) from devices where ward is null") == (0,)
    assert _one(db_url, LAMPS_OUTSIDE_THEIR_CABINETS_WARD) == (0,)
