"""The synthetic city: tiling, counts, feeders, spacing, determinism (pure, no database)."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
import shapely

from geo.city import CENTRE_LAT, CENTRE_LON, City, generate_city, to_metres

KINDS = {"streetlight", "lighting_cabinet", "water_meter", "pressure_sensor", "flow_meter",
         "water_pipe", "traffic_controller", "road_segment", "env_sensor", "camera", "tree",
         "green_area"}
ID_FORMAT = {
    "streetlight": r"SL-\d{6}", "lighting_cabinet": r"LC-\d{4}", "water_pipe": r"WP-\d{4}",
    "water_meter": r"WM-\d{6}", "flow_meter": r"FM-\d{4}", "pressure_sensor": r"PS-\d{4}",
    "traffic_controller": r"TC-\d{4}", "road_segment": r"RS-\d{4}", "env_sensor": r"ENV-\d{3}",
    "camera": r"CAM-\d{4}", "tree": r"TR-\d{6}", "green_area": r"GA-\d{3}",
}


@pytest.fixture(scope="module")
def city() -> City:
    return generate_city()


@pytest.fixture(scope="module")
def small() -> City:
    return generate_city(600, seed=7)


def ward_index(city: City, geoms) -> np.ndarray:
    """Like the database trigger: the lowest-coded ward intersecting a point on the geometry."""
    points = shapely.point_on_surface(np.asarray(geoms, dtype=object))
    found = np.full(len(points), -1)
    for i, ward in enumerate(city.wards):
        hit = (found < 0) & shapely.intersects(ward.geometry, points)
        found[hit] = i
    return found


def test_wards_tile_the_boundary_without_gaps_or_overlaps(city: City) -> None:
    polys = [w.geometry for w in city.wards]
    assert [w.code for w in city.wards] == [f"W{i:02d}" for i in range(1, 33)]
    assert len({w.name for w in city.wards}) == 32
    assert all(p.geom_type == "Polygon" for p in polys)
    assert shapely.is_valid(polys).all() and city.boundary.is_valid
    area = city.boundary.area
    assert shapely.union_all(polys).area == pytest.approx(area, rel=1e-9)
    assert sum(shapely.area(polys)) == pytest.approx(area, rel=1e-9)
    overlap = sum(polys[i].intersection(polys[j]).area
                  for i in range(32) for j in range(i + 1, 32))
    assert overlap < 1e-9 * area
    assert shapely.symmetric_difference(shapely.union_all(polys), city.boundary).area < 1e-9 * area


def test_city_is_about_12_km_across_around_thai_nguyen(city: City) -> None:
    minx, miny, maxx, maxy = to_metres(city.boundary).bounds
    assert 10_000 < maxx - minx < 14_000 and 10_000 < maxy - miny < 14_000
    c = city.boundary.centroid
    assert abs(c.x - CENTRE_LON) < 0.02 and abs(c.y - CENTRE_LAT) < 0.02
    assert 120e6 < to_metres(city.boundary).area < 170e6


def test_every_geometry_is_valid_wgs84(city: City) -> None:
    geoms = [d.geometry for d in city.devices] + [r.geometry for r in city.roads]
    assert shapely.is_valid(geoms).all()
    xy = shapely.get_coordinates(geoms)
    assert (abs(xy[:, 0] - CENTRE_LON) < 0.1).all() and (abs(xy[:, 1] - CENTRE_LAT) < 0.1).all()
    assert {r.cls for r in city.roads} == {"primary", "secondary", "residential"}
    assert all(r.geometry.geom_type == "LineString" for r in city.roads)


def test_default_counts(city: City) -> None:
    counts = city.counts()
    assert set(counts) == KINDS
    assert counts["streetlight"] == 5000
    assert 5000 / 60 <= counts["lighting_cabinet"] <= 5000 / 20
    assert counts["camera"] == 200
    assert counts["env_sensor"] == 32
    assert 30 <= counts["traffic_controller"] <= 60
    assert counts["water_meter"] == 500
    assert counts["road_segment"] >= counts["traffic_controller"]
    mains_km = sum(to_metres(d.geometry).length for d in city.by_kind("water_pipe")) / 1000
    assert counts["flow_meter"] == pytest.approx(mains_km / 4, abs=1)
    assert counts["pressure_sensor"] == pytest.approx(mains_km / 1.5, abs=1)


@pytest.mark.parametrize("n", [20, 600, 5000, 12_345])
def test_exact_streetlight_count(n: int) -> None:
    assert generate_city(n, seed=3).counts()["streetlight"] == n


def test_too_few_streetlights_for_a_feeder_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 20"):
        generate_city(5)


@pytest.mark.parametrize("which", ["city", "small"])
def test_feeders_hold_20_to_60_lamps_of_their_cabinets_ward(which: str, request) -> None:
    city: City = request.getfixturevalue(which)
    lamps = city.by_kind("streetlight")
    cabinets = {d.id: i for i, d in enumerate(city.by_kind("lighting_cabinet"))}
    per_cabinet = Counter(d.parent for d in lamps)
    assert set(per_cabinet) == set(cabinets)
    assert all(20 <= n <= 60 for n in per_cabinet.values()), sorted(per_cabinet.values())
    lamp_ward = ward_index(city, [d.geometry for d in lamps])
    cab_ward = ward_index(city, [d.geometry for d in city.by_kind("lighting_cabinet")])
    assert (lamp_ward >= 0).all()
    assert (lamp_ward == cab_ward[[cabinets[d.parent] for d in lamps]]).all()


def test_lamps_are_about_30_m_apart_along_roads(city: City) -> None:
    lamps = city.by_kind("streetlight")
    xy = shapely.get_coordinates(to_metres(np.array([d.geometry for d in lamps])))
    road = np.array([d.properties["road_id"] for d in lamps])
    same_road = road[1:] == road[:-1]
    gaps = np.hypot(*(xy[1:] - xy[:-1]).T)[same_road]
    assert same_road.mean() > 0.5
    assert 20 <= np.median(gaps) <= 40
    assert all(city.roads[d.properties["road_id"] - 1].name == d.properties["road"]
               for d in lamps[::97])


def test_same_seed_same_city_other_seed_other_city() -> None:
    def fingerprint(c: City) -> list:
        return [(d.id, d.kind, d.name, d.parent, d.external_id, d.properties,
                 shapely.to_wkb(d.geometry)) for d in c.devices] + \
               [(w.code, w.name, shapely.to_wkb(w.geometry)) for w in c.wards] + \
               [(r.name, r.cls, shapely.to_wkb(r.geometry)) for r in c.roads] + \
               [(c.id, c.wards, shapely.to_wkb(c.depot)) for c in c.crews]

    a = fingerprint(generate_city(1500, seed=11))
    assert a == fingerprint(generate_city(1500, seed=11))
    assert a != fingerprint(generate_city(1500, seed=12))


def test_every_device_is_inside_the_city_and_a_ward(city: City) -> None:
    geoms = [d.geometry for d in city.devices]
    assert shapely.covered_by(geoms, city.boundary).all()
    assert (ward_index(city, geoms) >= 0).all()


def test_ids_and_external_ids_are_unique_and_well_formed(city: City) -> None:
    ids = [d.id for d in city.devices]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(ID_FORMAT[d.kind], d.id) for d in city.devices)
    euis = [d.external_id for d in city.devices if d.external_id is not None]
    assert len(euis) == len(set(euis)) == len(city.by_kind("water_meter"))
    assert all(re.fullmatch(r"[0-9A-F]{16}", e) for e in euis)


def test_parents_exist_and_have_the_right_kind(city: City) -> None:
    kind = {d.id: d.kind for d in city.devices}
    expected = {"streetlight": {"lighting_cabinet"}, "water_meter": {"water_pipe"},
                "flow_meter": {"water_pipe"}, "pressure_sensor": {"water_pipe"},
                "road_segment": {"traffic_controller", None}, "tree": {"green_area", None}}
    for d in city.devices:
        assert kind.get(d.parent) in expected.get(d.kind, {None}), (d.id, d.parent)
    assert any(d.parent for d in city.by_kind("road_segment"))
    pipes = {d.id: d.geometry for d in city.by_kind("water_pipe")}
    on_main = [to_metres(pipes[d.parent]).distance(to_metres(d.geometry))
               for d in city.devices if d.kind in ("flow_meter", "pressure_sensor")]
    assert max(on_main) < 0.01
    beside = [to_metres(pipes[d.parent]).distance(to_metres(d.geometry))
              for d in city.by_kind("water_meter")]
    assert 5 < min(beside) and max(beside) < 25


def test_properties_are_json(city: City) -> None:
    json.dumps([d.properties for d in city.devices] + [w.properties for w in city.wards])
    assert all(d.name for d in city.devices)


def test_crews_share_the_wards(city: City) -> None:
    assert [c.id for c in city.crews] == [f"CREW-{i:02d}" for i in range(1, 9)]
    assert sorted(code for c in city.crews for code in c.wards) == [w.code for w in city.wards]
    by_code = {w.code: w.geometry for w in city.wards}
    assert all(len(c.wards) == 4 and by_code[c.wards[0]].contains(c.depot) for c in city.crews)
    assert len({c.email for c in city.crews}) == 8


def test_a_100k_city_keeps_the_rules() -> None:
    city = generate_city(100_000)
    lamps = city.by_kind("streetlight")
    assert len(lamps) == 100_000
    per_cabinet = Counter(d.parent for d in lamps)
    assert 20 <= min(per_cabinet.values()) and max(per_cabinet.values()) <= 60
    cab_index = {d.id: i for i, d in enumerate(city.by_kind("lighting_cabinet"))}
    lamp_ward = ward_index(city, [d.geometry for d in lamps])
    cab_ward = ward_index(city, [d.geometry for d in city.by_kind("lighting_cabinet")])
    assert (lamp_ward == cab_ward[[cab_index[d.parent] for d in lamps]]).all()
    small_total = sum(to_metres(r.geometry).length for r in generate_city().roads)
    assert sum(to_metres(r.geometry).length for r in city.roads) > 2 * small_total
