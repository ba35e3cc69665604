"""The synthetic city's trees and parks (geo/greenery.py): where they grow, what they carry,
and that ``ioc import``'s validation accepts them as they are (pure, no database)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import orjson
import pytest
import shapely
from shapely.geometry import mapping

from geo.city import City, generate_city, to_metres
from geo.greenery import CLEAR_M, CONDITIONS, INVENTORY_DATE, OFFSET_M, SPECIES
from server.registry.importer import read_and_validate
from server.store.catalog import KIND_NAMES


@pytest.fixture(scope="module")
def city() -> City:
    return generate_city(5000, seed=42)


def metres(devices) -> np.ndarray:
    return to_metres(np.array([d.geometry for d in devices], dtype=object))


def test_trees_scale_with_the_city_and_stay_a_modest_share(city: City) -> None:
    small = generate_city(600, seed=7).counts()
    big = city.counts()
    assert 0.10 * 600 <= small["tree"] <= 0.20 * 600 and small["green_area"] >= 2
    assert 0.10 * 5000 <= big["tree"] <= 0.20 * 5000 and big["green_area"] > small["green_area"]


def test_parks_are_valid_polygons_each_inside_one_ward(city: City) -> None:
    parks = city.by_kind("green_area")
    geoms = np.array([p.geometry for p in parks], dtype=object)
    assert set(shapely.get_type_id(geoms).tolist()) == {3}  # Polygon
    assert shapely.is_valid(geoms).all() and shapely.is_simple(shapely.boundary(geoms)).all()
    wards = np.array([w.geometry for w in city.wards], dtype=object)
    for p in parks:
        assert shapely.covered_by(p.geometry, wards).sum() == 1, p.id
    area = shapely.area(metres(parks))
    assert (area > 10_000).all() and (area < 100_000).all()  # 1-10 ha
    assert not any(a.geometry.intersects(b.geometry) for i, a in enumerate(parks)
                   for b in parks[i + 1:])
    assert all(p.properties["area_m2"] == pytest.approx(a, rel=0.05)
               for p, a in zip(parks, area, strict=True))


def test_street_trees_line_streets_clear_of_lamps_and_park_trees_are_in_their_park(city: City
                                                                                   ) -> None:
    trees = city.by_kind("tree")
    street = [t for t in trees if t.parent is None]
    in_park = [t for t in trees if t.parent is not None]
    assert street and in_park
    roads = shapely.STRtree(metres(city.roads))
    # beside a street, neither on its centreline nor in the next block
    _, dist = roads.query_nearest(metres(street), return_distance=True, all_matches=False)
    assert (dist >= CLEAR_M).all() and (dist <= OFFSET_M[1] + 0.5).all()
    assert all(t.properties["site"] == "street" and t.properties["road"] for t in street)
    lamps = shapely.STRtree(metres(city.by_kind("streetlight")))
    _, to_lamp = lamps.query_nearest(metres(trees), return_distance=True, all_matches=False)
    assert to_lamp.min() >= CLEAR_M
    # trees of one row are 15-30 m apart (give or take a metre of jitter)
    xy = shapely.get_coordinates(metres(street))
    gaps = np.hypot(*np.diff(xy, axis=0).T)
    assert 10 < np.median(gaps[gaps < 40]) < 31
    parks = {p.id: p.geometry for p in city.by_kind("green_area")}
    assert all(parks[t.parent].contains(t.geometry) and t.properties["site"] == "park"
               for t in in_park)
    assert Counter(t.parent for t in in_park) == {
        p.id: p.properties["trees"] for p in city.by_kind("green_area")}


def test_tree_attributes_are_plausible(city: City) -> None:
    trees = city.by_kind("tree")
    names = {s.latin: s for s in SPECIES}
    assert len({t.properties["species"] for t in trees}) >= 6
    for t in trees:
        p = t.properties
        s = names[p["species"]]
        assert p["species_vi"] == s.vi and s.vi.lower() in t.name.lower()
        assert 1.5 <= p["height_m"] <= 1.1 * s.height_max_m
        assert 3 <= p["trunk_diameter_cm"] <= 1.5 * s.dbh_max_cm
        assert 1960 <= int(p["planted"]) < INVENTORY_DATE.year
        assert p["condition"] in CONDITIONS
        if "last_pruned" in p:
            assert re.fullmatch(r"\d{4}-\d\d-\d\d", p["last_pruned"])
            assert p["planted"] <= p["last_pruned"] < INVENTORY_DATE.isoformat()
    conditions = Counter(t.properties["condition"] for t in trees)
    assert conditions.most_common(1)[0][0] == "good"


def test_the_city_s_greenery_passes_the_importers_validation(city: City) -> None:
    green = [d for d in city.devices if d.kind in ("tree", "green_area")]
    features = [{"type": "Feature", "id": d.id, "geometry": mapping(d.geometry),
                 "properties": {"kind": d.kind, "name": d.name, "parent": d.parent,
                                **d.properties}} for d in green]
    data = orjson.dumps({"type": "FeatureCollection", "features": features})
    plan = read_and_validate(data, "geojson", KIND_NAMES)
    assert not plan.issues, plan.issues[:3]
    assert len(plan.items) == len(green)
    assert {d.kind for d in plan.items} == {"tree", "green_area"}
