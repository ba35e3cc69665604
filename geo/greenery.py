"""The synthetic city's trees and parks, deterministic from a seed: pure, no I/O.

:func:`plant` works in the city's local metres (see :mod:`geo.city`, which calls it and turns
the result into devices) and returns:

- parks, ``green_area`` polygons of 1-8 ha between the arterials, each inside one ward,
  the most central ones first;
- street trees, ``tree`` points in rows on both sides of some streets (the central ones
  first, as a city plants its avenues), 3.5-5 m off the centreline, every 15-30 m, mostly
  one species per street; none within 3 m of a lamp or another device, of another road's
  centreline, or inside a park;
- park trees, scattered inside the parks, at least 6 m apart, each with its park as parent.

Street trees are about 11 % of the lamps and park trees 4 % (at least 10 a park), so the
city's greenery grows with its size. Species are those Thái Nguyên and northern Vietnam
plant along streets; heights and trunk diameters follow each species' growth from the
planting year, and conditions worsen with age. Ages and pruning dates count back from a
fixed inventory date, not from today, so the same seed gives the same city on any day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon

__all__ = ["INVENTORY_DATE", "SPECIES", "Planted", "Species", "plant"]


@dataclass(frozen=True, slots=True)
class Species:
    latin: str
    vi: str  # the common Vietnamese name
    height_max_m: float
    height_tau_y: float  # years to reach ~63 % of the mature height
    dbh_cm_per_y: float  # trunk diameter (at breast height) gained a year while young
    dbh_max_cm: float
    street: float  # relative frequency along streets
    park: float  # and in parks


SPECIES: tuple[Species, ...] = (
    Species("Dracontomelon duperreanum", "Sấu", 25, 25, 1.2, 90, 0.20, 0.10),
    Species("Lagerstroemia speciosa", "Bằng lăng", 14, 12, 0.8, 45, 0.20, 0.12),
    Species("Delonix regia", "Phượng vĩ", 15, 10, 1.5, 80, 0.14, 0.15),
    Species("Hopea odorata", "Sao đen", 30, 30, 1.0, 100, 0.12, 0.10),
    Species("Khaya senegalensis", "Xà cừ", 30, 20, 1.6, 120, 0.10, 0.08),
    Species("Cassia fistula", "Muồng hoàng yến", 12, 10, 0.8, 40, 0.08, 0.12),
    Species("Chukrasia tabularis", "Lát hoa", 25, 25, 0.9, 70, 0.05, 0.10),
    Species("Cinnamomum camphora", "Long não", 20, 20, 1.1, 80, 0.05, 0.13),
    Species("Alstonia scholaris", "Hoa sữa", 20, 15, 1.3, 80, 0.06, 0.10),
)
_STREET_P = np.array([s.street for s in SPECIES]) / sum(s.street for s in SPECIES)
_PARK_P = np.array([s.park for s in SPECIES]) / sum(s.park for s in SPECIES)

INVENTORY_DATE = date(2026, 11, 1)
CONDITIONS = ("good", "fair", "poor", "dead")

STREET_SHARE, PARK_SHARE = 0.11, 0.04  # trees per lamp
MIN_PARK_TREES = 10
SPACING_M = (15.0, 30.0)  # between street trees in a row
OFFSET_M = (3.5, 5.0)  # from the road's centreline
CLEAR_M = 3.0  # from lamps, other devices and other roads' centrelines
PARK_TREE_GAP_M = 6.0
_STRETCH_M = 500.0  # streets are planted in stretches of at most this length
_PARK_RADIUS_M = (70.0, 150.0)  # before the shape's ±25 % wobble
_CENTRAL_M = 4500.0  # parks are sited within this distance of the centre

PARK_NAMES = ("Công viên Bắc Sơn", "Công viên Hồ Xương Rồng", "Quảng trường Võ Nguyên Giáp",
              "Công viên Túc Duyên", "Công viên Thái Nguyên")


@dataclass(slots=True)
class Planted:
    """A park or a tree, in local metres; :mod:`geo.city` turns it into a device."""

    id: str
    kind: str  # "green_area" or "tree"
    name: str
    geometry: Any
    parent: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


def plant(park_rng: np.random.Generator, street_rng: np.random.Generator, streetlights: int,
          roads: list[tuple[str, str, LineString]], wards: np.ndarray, ward_names: list[str],
          keep_clear: np.ndarray) -> list[Planted]:
    """Parks first (trees name them as parent), then street trees, then park trees.

    ``roads``: (name, class, line) in metres; ``wards``: ward polygons in metres;
    ``keep_clear``: (n, 2) positions of the devices already placed (lamps, cabinets, …).
    """
    parks = _parks(park_rng, roads, wards, ward_names, max(2, min(30, round(streetlights / 1000))))
    obstacles = shapely.STRtree(shapely.points(keep_clear)) if len(keep_clear) else None
    road_tree = shapely.STRtree(np.array([g for *_, g in roads], dtype=object))
    street = _street_trees(street_rng, roads, parks, round(STREET_SHARE * streetlights),
                           obstacles, road_tree)
    in_parks = _park_trees(park_rng, parks, max(round(PARK_SHARE * streetlights),
                                                MIN_PARK_TREES * len(parks)),
                           obstacles, road_tree)
    trees = street + in_parks
    for i, t in enumerate(trees):
        t.id = f"TR-{i + 1:06d}"
        species = t.properties["species_vi"]
        t.name = f"Cây {species[0].lower()}{species[1:]} {t.id} — {t.name}"
    counts = np.bincount([int(t.parent[3:]) - 1 for t in in_parks], minlength=len(parks))
    for p, n in zip(parks, counts.tolist(), strict=True):
        p.properties["trees"] = n
    return parks + trees


# ---------------------------------------------------------------- parks
def _parks(rng: np.random.Generator, roads: list[tuple[str, str, LineString]],
           wards: np.ndarray, ward_names: list[str], count: int) -> list[Planted]:
    """Sites far enough from the arterials and the ward edges, central ones preferred."""
    majors = shapely.multilinestrings([g for _, cls, g in roads if cls != "residential"]
                                      or [LineString([(1e7, 1e7), (1e7 + 1, 1e7)])])
    edges = shapely.multilinestrings(list(shapely.boundary(wards)))
    n = 800
    r = _CENTRAL_M * np.sqrt(rng.uniform(0, 1, n))
    theta = rng.uniform(0, 2 * np.pi, n)
    xy = np.column_stack([r * np.cos(theta), r * np.sin(theta)])
    pts = shapely.points(xy)
    room = np.minimum(shapely.distance(pts, majors) - 20.0, shapely.distance(pts, edges) - 10.0)
    size = rng.uniform(*_PARK_RADIUS_M, n)
    # The shape reaches 1.25 × its radius at most: it must stay clear of arterials and edges.
    radius = np.minimum(size, room / 1.25)
    fits = radius >= _PARK_RADIUS_M[0]
    ward_of = np.full(n, -1)
    for w, ward in enumerate(wards):
        ward_of[(ward_of < 0) & shapely.contains_xy(ward, xy[:, 0], xy[:, 1])] = w
    score = radius * (1.0 - 0.6 * r / _CENTRAL_M) * rng.uniform(0.7, 1.0, n)
    chosen: list[int] = []
    for i in np.argsort(-score, kind="stable").tolist():
        if len(chosen) == count:
            break
        if not fits[i] or ward_of[i] < 0:
            continue
        if all(math.dist(xy[i], xy[j]) > 1.25 * (radius[i] + radius[j]) + 100.0 for j in chosen):
            chosen.append(i)
    parks: list[Planted] = []
    named: dict[int, int] = {}
    for k, i in enumerate(chosen):
        shape = _blob(rng, xy[i], float(radius[i]))
        area = round(shape.area)
        if k < len(PARK_NAMES):
            name, kind = PARK_NAMES[k], "park"
        else:
            w = int(ward_of[i])
            named[w] = named.get(w, 0) + 1
            name = f"Vườn hoa {ward_names[w]}" + (f" {named[w]}" if named[w] > 1 else "")
            kind = "garden"
        parks.append(Planted(f"GA-{k + 1:03d}", "green_area", name, shape,
                             properties={"type": kind, "area_m2": area}))
    return parks


def _blob(rng: np.random.Generator, centre: np.ndarray, radius: float) -> Polygon:
    """A rounded, irregular outline around ``centre``: star-shaped with strictly increasing
    angles, so it never crosses itself; within 1.25 × ``radius`` of the centre."""
    k = 28
    theta = (np.arange(k) + rng.uniform(-0.3, 0.3, k)) * 2 * np.pi / k
    wobble = 1.0 + sum(rng.uniform(0.0, a) * np.cos(m * theta + rng.uniform(0, 2 * np.pi))
                       for m, a in ((2, 0.12), (3, 0.08), (5, 0.05)))
    r = radius * np.clip(wobble, 0.75, 1.25)
    ring = centre + np.column_stack([r * np.cos(theta), r * np.sin(theta)])
    return Polygon(np.round(ring, 2))


# ---------------------------------------------------------------- street trees
def _along(lines: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points ``local`` metres along each of ``lines`` and the unit normal there."""
    length = shapely.length(lines)
    xy = shapely.get_coordinates(shapely.line_interpolate_point(lines, local))
    ahead = shapely.get_coordinates(shapely.line_interpolate_point(lines, np.minimum(local + 1, length)))
    behind = shapely.get_coordinates(shapely.line_interpolate_point(lines, np.maximum(local - 1, 0)))
    tangent = ahead - behind
    norm = np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-9)[:, None]
    tangent = tangent / norm
    return xy, np.column_stack([-tangent[:, 1], tangent[:, 0]])


_CLASS_PULL = {"primary": 0.5, "secondary": 0.6, "residential": 1.0}


def _street_trees(rng: np.random.Generator, roads: list[tuple[str, str, LineString]],
                  parks: list[Planted], target: int, obstacles: shapely.STRtree | None,
                  road_tree: shapely.STRtree) -> list[Planted]:
    if target <= 0 or not roads:
        return []
    geoms = np.array([g for *_, g in roads], dtype=object)
    lengths = shapely.length(geoms)
    # Each road: its stretches, one species mostly, one planting year, one kerb offset.
    per_road = np.maximum(1, np.ceil(lengths / _STRETCH_M)).astype(int)
    road_pull = np.array([_CLASS_PULL[cls] for _, cls, _ in roads]) * rng.uniform(0.6, 1.4, len(roads))
    road_species = rng.choice(len(SPECIES), len(roads), p=_STREET_P)
    road_year = INVENTORY_DATE.year - rng.integers(4, 56, len(roads))
    road_offset = rng.uniform(*OFFSET_M, len(roads))
    road = np.repeat(np.arange(len(roads)), per_road)
    part = np.arange(len(road)) - np.repeat(np.cumsum(per_road) - per_road, per_road)
    stretch = lengths[road] / per_road[road]
    start = part * stretch
    mid = shapely.get_coordinates(shapely.line_interpolate_point(geoms[road], start + stretch / 2))
    spacing = rng.uniform(*SPACING_M, len(road))
    per_side = np.maximum(0, np.floor((stretch - 6.0) / spacing)).astype(int)
    # Central streets first; a fifth more than wanted, as some trees fall to the clearances.
    order = np.argsort(np.hypot(mid[:, 0], mid[:, 1]) * road_pull[road], kind="stable")
    take = order[: int(np.searchsorted(np.cumsum(2 * per_side[order]), 1.2 * target)) + 1]
    take = take[per_side[take] > 0]
    if not len(take):
        return []
    # Every tree: (stretch, side, place in row); the rows on the two sides are staggered.
    counts = 2 * per_side[take]
    s = np.repeat(take, counts)
    rank = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    side = np.where(rank % 2 == 0, 1.0, -1.0)
    i = rank // 2
    n = len(s)
    local = start[s] + 3.0 + (i + 0.25 + 0.5 * (side < 0)) * spacing[s] + rng.uniform(-1, 1, n)
    on, normal = _along(geoms[road[s]], local)
    xy = on + (side * (road_offset[road[s]] + rng.uniform(-0.3, 0.3, n)))[:, None] * normal
    pts = shapely.points(xy)
    ok = _clear(pts, obstacles, road_tree)
    for p in parks:
        ok &= ~shapely.contains_xy(p.geometry, xy[:, 0], xy[:, 1])
    keep = np.flatnonzero(ok)[:target]
    s, xy = s[keep], xy[keep]
    r = road[s]
    mixed = rng.uniform(0, 1, len(s)) < 0.2  # gaps replanted with whatever the nursery had
    species = np.where(mixed, rng.choice(len(SPECIES), len(s), p=_STREET_P), road_species[r])
    replanted = rng.uniform(0, 1, len(s)) < 0.1
    year = np.where(replanted, INVENTORY_DATE.year - rng.integers(1, 9, len(s)),
                    road_year[r] + rng.integers(-1, 2, len(s)))
    props = _attributes(rng, species, year)
    out = []
    for j, (x, y) in enumerate(xy.tolist()):
        name = roads[r[j]][0]
        out.append(Planted("", "tree", name, shapely.Point(x, y),
                           properties=props[j] | {"site": "street", "road": name}))
    return out


def _clear(pts: np.ndarray, obstacles: shapely.STRtree | None,
           road_tree: shapely.STRtree) -> np.ndarray:
    """Which points are at least CLEAR_M from every obstacle and road centreline."""
    ok = np.ones(len(pts), dtype=bool)
    for tree in (obstacles, road_tree):
        if tree is not None and len(pts):
            hit, _ = tree.query(pts, predicate="dwithin", distance=CLEAR_M)
            ok[hit] = False
    return ok


# ---------------------------------------------------------------- park trees
def _park_trees(rng: np.random.Generator, parks: list[Planted], target: int,
                obstacles: shapely.STRtree | None, road_tree: shapely.STRtree) -> list[Planted]:
    if not parks:
        return []
    areas = np.array([p.geometry.area for p in parks])
    share = target * areas / areas.sum()
    want = np.maximum(MIN_PARK_TREES, np.floor(share)).astype(int)
    want[np.argsort(-(share - np.floor(share)), kind="stable")[: max(0, target - want.sum())]] += 1
    out = []
    for p, n in zip(parks, want.tolist(), strict=True):
        minx, miny, maxx, maxy = p.geometry.bounds
        cand = rng.uniform((minx, miny), (maxx, maxy), (8 * n + 64, 2))
        cand = cand[shapely.contains_xy(shapely.buffer(p.geometry, -2.0), cand[:, 0], cand[:, 1])]
        cand = cand[_clear(shapely.points(cand), obstacles, road_tree)]
        placed: list[np.ndarray] = []
        for c in cand:
            if len(placed) == n:
                break
            if not placed or np.hypot(*(np.array(placed) - c).T).min() >= PARK_TREE_GAP_M:
                placed.append(c)
        if not placed:
            continue
        species = rng.choice(len(SPECIES), len(placed), p=_PARK_P)
        year = INVENTORY_DATE.year - rng.integers(2, 61, len(placed))
        props = _attributes(rng, species, year)
        out += [Planted("", "tree", p.name, shapely.Point(*c), parent=p.id,
                        properties=a | {"site": "park"})
                for c, a in zip(placed, props, strict=True)]
    return out


# ---------------------------------------------------------------- attributes
def _attributes(rng: np.random.Generator, species: np.ndarray, year: np.ndarray
                ) -> list[dict[str, Any]]:
    """Height and trunk from each species' growth since planting, condition, last pruning."""
    n = len(species)
    age = np.maximum(1, INVENTORY_DATE.year - year)
    hmax = np.array([s.height_max_m for s in SPECIES])[species]
    tau = np.array([s.height_tau_y for s in SPECIES])[species]
    height = hmax * (1 - np.exp(-(age + 1.5) / tau)) * rng.lognormal(0, 0.12, n)
    height = np.clip(np.round(height * 2) / 2, 1.5, 1.1 * hmax)
    grow = np.array([s.dbh_cm_per_y for s in SPECIES])[species]
    dbh_max = np.array([s.dbh_max_cm for s in SPECIES])[species]
    dbh = np.round(np.minimum(dbh_max, 2.0 + grow * age) * rng.lognormal(0, 0.15, n))
    dbh = np.maximum(dbh, 3).astype(int)
    good = np.clip(0.85 - 0.006 * age, 0.4, 1)
    fair = 0.12 + 0.003 * age
    u = rng.uniform(0, 1, n)
    condition = np.where(u < good, 0, np.where(u < good + fair, 1, np.where(u < 0.99, 2, 3)))
    pruned_days_ago = rng.integers(14, 3 * 365, n)
    out = []
    for j in range(n):
        s = SPECIES[species[j]]
        a: dict[str, Any] = {
            "species": s.latin, "species_vi": s.vi, "height_m": float(height[j]),
            "trunk_diameter_cm": int(dbh[j]), "planted": str(int(year[j])),
            "condition": CONDITIONS[condition[j]],
        }
        if age[j] >= 3:  # saplings are not pruned yet
            a["last_pruned"] = (INVENTORY_DATE - timedelta(days=int(pruned_days_ago[j]))).isoformat()
        out.append(a)
    return out
