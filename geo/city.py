"""A synthetic city around Thái Nguyên, deterministic from a seed: pure, no I/O.

``generate_city(streetlights, seed)`` returns 32 wards that tile a ~12 km × 12 km convex
boundary, a road network (arterials, secondary roads, a jittered residential grid whose lit
length grows with the number of lamps), and the devices of the contract's kinds: streetlights
about every 30 m along lit roads fed by lighting cabinets in the same ward, water mains with
meters and sensors, traffic controllers at major intersections with road segments between
them, one environmental station per ward, about 200 cameras, and trees along central streets
and in a few parks (:mod:`geo.greenery`).

Everything is built in metres in a local equirectangular frame around the centre (x east,
y north; cos(latitude) scaling is exact enough over 12 km and far faster than pyproj) and
converted to WGS 84 lon/lat once at the end. Bulk steps use shapely 2 / numpy array
functions, so 100,000 lamps take about a second. Every random draw comes from
``numpy.random.default_rng((seed, stream))`` with one stream per step, so changing one step
does not reshuffle the others.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.affinity import translate
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.ops import substring

from geo.greenery import plant

__all__ = [
    "CENTRE_LAT",
    "CENTRE_LON",
    "City",
    "Crew",
    "Device",
    "Road",
    "Ward",
    "generate_city",
    "to_lonlat",
    "to_metres",
]

CENTRE_LON = 105.84
CENTRE_LAT = 21.59
_EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG_LAT = math.radians(1.0) * _EARTH_RADIUS_M
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(CENTRE_LAT))

LAMP_SPACING_M = 30.0
FEEDER_MIN, FEEDER_MAX = 20, 60
# Roads stay this far inside the boundary, so pipes, meters and cameras placed beside them
# (at most 26 m away) still fall inside it and therefore inside a ward.
_EDGE_MARGIN_M = 30.0

# Ordered from the centre outwards: W01 is the ward nearest the centre.
WARD_NAMES = (
    "Phan Đình Phùng", "Hoàng Văn Thụ", "Trưng Vương", "Quang Trung", "Đồng Quang",
    "Gia Sàng", "Túc Duyên", "Tân Thịnh", "Tân Lập", "Thịnh Đán", "Quán Triều", "Quang Vinh",
    "Tân Long", "Đồng Bẩm", "Cam Giá", "Phú Xá", "Hương Sơn", "Trung Thành", "Tân Thành",
    "Tân Lương", "Trung Vương", "Chùa Hang", "Tích Lương", "Thịnh Đức", "Phúc Hà",
    "Phúc Xuân", "Phúc Trìu", "Quyết Thắng", "Sơn Cẩm", "Cao Ngạn", "Đồng Liên",
    "Huống Thượng",
)
PRIMARY_NAMES = (
    "Quốc lộ 3", "Đường Cách Mạng Tháng Tám", "Đường Hoàng Văn Thụ",
    "Đường Lương Ngọc Quyến", "Đường Dương Tự Minh",
)
RING_NAME = "Đường Vành đai"
SECONDARY_NAMES = (
    "Đường Quang Trung", "Đường Bắc Kạn", "Đường Phan Đình Phùng", "Đường Minh Cầu",
    "Đường Bến Oánh", "Đường Z115", "Đường Việt Bắc", "Đường Tố Hữu",
)
STREET_NAMES = (
    "Phủ Liễn", "Đội Cấn", "Nha Trang", "Hùng Vương", "Nguyễn Du", "Lê Quý Đôn",
    "Hoàng Ngân", "Cột Cờ", "Nguyễn Trãi", "Lê Lợi", "Trần Phú", "Bà Triệu", "Chu Văn An",
    "Gang Thép", "Phan Bội Châu", "Lê Hữu Trác", "Đầm Xanh", "Hoàng Hoa Thám",
    "Trần Hưng Đạo", "Núi Cốc", "Mỏ Bạch", "Đê Nông Lâm", "Tân Thịnh", "Túc Duyên",
)
_CLASS_RANK = {"primary": 0, "secondary": 1, "residential": 2}

_RoadDraft = tuple[str, str, LineString]  # name, class, geometry in local metres


@dataclass(frozen=True, slots=True)
class Ward:
    code: str
    name: str
    geometry: Polygon
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Road:
    name: str
    cls: str  # "primary", "secondary" or "residential"
    geometry: LineString


@dataclass(slots=True)
class Device:
    # Not frozen: 100,000 frozen instances cost a noticeable extra half second.
    id: str
    kind: str
    name: str
    geometry: BaseGeometry
    parent: str | None = None
    external_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = None
    expected_interval_s: int | None = None


@dataclass(frozen=True, slots=True)
class Crew:
    id: str
    name: str
    wards: tuple[str, ...]  # ward codes it is responsible for
    depot: Point  # inside wards[0]
    email: str


@dataclass(slots=True)
class City:
    seed: int
    streetlights: int
    boundary: Polygon
    wards: list[Ward]
    roads: list[Road]
    devices: list[Device]
    crews: list[Crew]

    def counts(self) -> dict[str, int]:
        return dict(Counter(d.kind for d in self.devices))

    def by_kind(self, kind: str) -> list[Device]:
        return [d for d in self.devices if d.kind == kind]


# ---------------------------------------------------------------- coordinates
def to_lonlat(geoms):
    """Local metres → WGS 84 lon/lat, for one geometry or an array of them."""
    return shapely.transform(
        geoms, lambda c: c / (M_PER_DEG_LON, M_PER_DEG_LAT) + (CENTRE_LON, CENTRE_LAT)
    )


def to_metres(geoms):
    """WGS 84 lon/lat → local metres around the city centre."""
    return shapely.transform(
        geoms, lambda c: (c - (CENTRE_LON, CENTRE_LAT)) * (M_PER_DEG_LON, M_PER_DEG_LAT)
    )


def _stream(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng((seed, step))


# ---------------------------------------------------------------- boundary and wards
def _boundary(rng: np.random.Generator) -> Polygon:
    """A rounded square (superellipse, ~144 km²) with gentle low-frequency noise."""
    theta = np.linspace(0.0, 2 * np.pi, 96, endpoint=False)
    c, s = np.cos(theta), np.sin(theta)
    r = 6200.0 / (np.abs(c) ** 4 + np.abs(s) ** 4) ** 0.25
    for k in (2, 3, 5):
        r *= 1 + rng.uniform(0.01, 0.035) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    # Convex, so each ward (a convex Voronoi cell clipped to it) is a single convex polygon
    # and any convex combination of points in a ward lies in that ward.
    return shapely.convex_hull(Polygon(np.column_stack([r * c, r * s])))


def _spread_points(rng: np.random.Generator, region: Polygon, n: int) -> np.ndarray:
    """Mitchell's best-candidate sampling: evenly spread, yet irregular, points."""
    minx, miny, maxx, maxy = region.bounds
    pts: list[np.ndarray] = []
    while len(pts) < n:
        cand = rng.uniform((minx, miny), (maxx, maxy), (24, 2))
        cand = cand[shapely.contains_xy(region, cand[:, 0], cand[:, 1])]
        if not len(cand):
            continue
        if pts:
            dist = np.linalg.norm(cand[:, None, :] - np.array(pts)[None], axis=2).min(axis=1)
            pts.append(cand[np.argmax(dist)])
        else:
            pts.append(cand[0])
    return np.array(pts)


def _voronoi_cells(seeds: np.ndarray, boundary: Polygon) -> np.ndarray:
    diagram = shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=boundary)
    cells = shapely.intersection(shapely.get_parts(diagram), boundary)
    # GEOS does not keep the input order (``ordered=`` needs shapely 2.1 and GEOS 3.12):
    # match each seed to the cell containing it.
    owner = [int(np.argmax(shapely.contains_xy(cells, x, y))) for x, y in seeds]
    return cells[owner]


def _ward_cells(rng: np.random.Generator, boundary: Polygon) -> np.ndarray:
    seeds = _spread_points(rng, boundary, len(WARD_NAMES))
    for _ in range(3):  # Lloyd relaxation: wards of 3-6 km² instead of 2-7.5 km²
        seeds = shapely.get_coordinates(shapely.centroid(_voronoi_cells(seeds, boundary)))
    cells = _voronoi_cells(seeds, boundary)
    centre_dist = np.hypot(*shapely.get_coordinates(shapely.centroid(cells)).T)
    return cells[np.argsort(centre_dist, kind="stable")]


# ---------------------------------------------------------------- roads
def _wobbly(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, amplitude: float,
            step: float = 150.0) -> np.ndarray:
    """Vertices of a gently meandering road from ``a`` to ``b``."""
    length = float(np.hypot(*(b - a)))
    t = np.linspace(0.0, 1.0, max(2, math.ceil(length / step) + 1))
    normal = np.array([-(b - a)[1], (b - a)[0]]) / length
    waves, phase = rng.uniform(0.8, 2.5), rng.uniform(0, 2 * np.pi)
    offset = amplitude * np.sin(2 * np.pi * waves * t + phase) * np.sin(np.pi * t) ** 0.3
    return a + np.outer(t, b - a) + np.outer(offset, normal)


def _clip(lines: list[np.ndarray] | np.ndarray, region: Polygon, names: list[str],
          min_len: float) -> tuple[list[LineString], list[str]]:
    """The pieces of ``lines`` (vertex arrays or LineStrings) inside ``region``.

    A meandering road may leave and re-enter, so one line can give several pieces.
    """
    geoms = np.array([LineString(c) for c in lines] if isinstance(lines, list) else lines,
                     dtype=object)
    parts, idx = shapely.get_parts(shapely.intersection(geoms, region), return_index=True)
    keep = (shapely.get_type_id(parts) == 1) & (shapely.length(parts) >= min_len)
    return list(parts[keep]), [names[i] for i in idx[keep]]


def _major_roads(rng: np.random.Generator, inner: Polygon) -> list[_RoadDraft]:
    """Arterials crossing the city, a ring road and secondary streets."""
    roads: list[_RoadDraft] = []
    primaries = []
    for k in range(len(PRIMARY_NAMES)):
        angle = k * np.pi / len(PRIMARY_NAMES) + rng.uniform(-0.15, 0.15)
        d = np.array([np.cos(angle), np.sin(angle)])
        through = rng.normal(0.0, 500.0, 2)
        primaries.append(_wobbly(rng, through - 9500 * d, through + 9500 * d,
                                 rng.uniform(80, 220)))
    roads += [(n, "primary", g) for g, n in zip(*_clip(primaries, inner, PRIMARY_NAMES, 200.0),
                                                 strict=True)]
    theta = np.linspace(0.0, 2 * np.pi, 121)
    r = 3000.0 * (1 + 0.06 * np.cos(2 * theta + rng.uniform(0, 6.3))
                  + 0.04 * np.cos(3 * theta + rng.uniform(0, 6.3)))
    secondaries = [np.column_stack([r * np.cos(theta), r * np.sin(theta)])]
    for _ in SECONDARY_NAMES:
        centre = np.sqrt(rng.uniform(0, 1)) * 4000.0 * _unit(rng.uniform(0, 2 * np.pi))
        d = _unit(rng.uniform(0, np.pi)) * rng.uniform(1500.0, 3000.0)
        secondaries.append(_wobbly(rng, centre - d, centre + d, rng.uniform(20, 80)))
    names = [RING_NAME, *SECONDARY_NAMES]
    roads += [(n, "secondary", g) for g, n in zip(*_clip(secondaries, inner, names, 200.0),
                                                   strict=True)]
    return roads


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _residential_grid(rng: np.random.Generator, inner: Polygon,
                      spacing: float) -> list[_RoadDraft]:
    """A slightly rotated grid with jittered nodes, cut into streets of 6 blocks."""
    blocks = 6
    half = 1.25 * max(abs(v) for v in inner.bounds)  # covers the city at any rotation
    per_side = blocks * math.ceil(2 * half / spacing / blocks) + 1
    axis = (np.arange(per_side) - (per_side - 1) / 2) * spacing
    gx, gy = np.meshgrid(axis, axis)
    jitter = rng.uniform(-0.18, 0.18, (per_side, per_side, 2)) * spacing
    nodes = np.stack([gx, gy], axis=-1) + jitter
    rot = rng.uniform(-0.25, 0.25)
    nodes = nodes @ np.array([[np.cos(rot), np.sin(rot)], [-np.sin(rot), np.cos(rot)]])
    chains = []
    for grid in (nodes, nodes.transpose(1, 0, 2)):  # rows, then columns
        for start in range(0, per_side - 1, blocks):
            chains.append(grid[:, start:start + blocks + 1])
    coords = np.concatenate(chains)  # (streets, blocks + 1, 2)
    # Lanes take odd numbers off a named street, Vietnamese style ("Ngõ 17 Phủ Liễn").
    names = [f"Ngõ {(i % 200) * 2 + 1} {STREET_NAMES[i // 200 % len(STREET_NAMES)]}"
             for i in range(len(coords))]
    parts, part_names = _clip(shapely.linestrings(coords), inner, names, spacing / 3)
    return [(n, "residential", g) for g, n in zip(parts, part_names, strict=True)]


def _grid_spacing(area_m2: float, residential_m: float) -> float:
    """Grid spacing giving ~5 % more residential road than the lamps need (trimmed later).

    A square grid of spacing d has 2/d metres of road per m²; 250 m (a suburban block) is
    the widest used, 40 m the narrowest (beyond it lamps are spaced more than 30 m apart).
    """
    if residential_m <= 0:
        return 250.0
    return float(np.clip(2 * area_m2 / (1.05 * residential_m), 40.0, 250.0))


# ---------------------------------------------------------------- placing points on lines
def _on_lines(lines: np.ndarray, idx: np.ndarray, local: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Points at ``local`` metres along ``lines[idx]`` and the unit tangent there."""
    chosen = lines[idx]
    xy = shapely.get_coordinates(shapely.line_interpolate_point(chosen, local))
    length = shapely.length(chosen)
    # A negative distance counts from the end in GEOS, hence the clipping.
    ahead = shapely.line_interpolate_point(chosen, np.minimum(local + 1, length))
    behind = shapely.line_interpolate_point(chosen, np.maximum(local - 1, 0))
    tangent = shapely.get_coordinates(ahead) - shapely.get_coordinates(behind)
    norm = np.hypot(tangent[:, 0], tangent[:, 1])
    tangent = np.where(norm[:, None] > 1e-9, tangent / np.maximum(norm, 1e-9)[:, None], (1.0, 0.0))
    return xy, tangent


def _evenly_along(lines: np.ndarray, count: int, phase: float = 0.5
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` points evenly spaced along ``lines`` laid end to end: (xy, tangent, line)."""
    if count <= 0 or not len(lines):
        return np.empty((0, 2)), np.empty((0, 2)), np.empty(0, dtype=int)
    lengths = shapely.length(lines)
    ends = np.cumsum(lengths)
    pos = (np.arange(count) + phase) * ends[-1] / count
    idx = np.minimum(np.searchsorted(ends, pos, side="right"), len(lines) - 1)
    xy, tangent = _on_lines(lines, idx, pos - (ends - lengths)[idx])
    return xy, tangent, idx


def _normal(tangent: np.ndarray) -> np.ndarray:
    return np.column_stack([-tangent[:, 1], tangent[:, 0]])


# ---------------------------------------------------------------- lighting
def _lit_pieces(lines: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """The parts of ``lines`` inside the disc around the centre that holds ``target`` m of them.

    Streets are lit from the centre outwards. The radius comes from 20 m slices of every
    line sorted by distance from the centre, which is exact to a slice and needs no search.
    """
    if target <= 0 or not len(lines):
        return np.empty(0, dtype=object), np.empty(0, dtype=int)
    if target >= shapely.length(lines).sum():
        return lines, np.arange(len(lines))
    coords, owner = shapely.get_coordinates(shapely.segmentize(lines, 20.0), return_index=True)
    same = owner[1:] == owner[:-1]
    a, b = coords[:-1][same], coords[1:][same]
    radius = np.hypot(*((a + b) / 2).T)
    order = np.argsort(radius, kind="stable")
    cum = np.cumsum(np.hypot(*(b - a).T)[order])
    r = radius[order][min(int(np.searchsorted(cum, target)), len(cum) - 1)]
    disc = shapely.buffer(Point(0, 0), r, quad_segs=64)
    parts, idx = shapely.get_parts(shapely.intersection(lines, disc), return_index=True)
    keep = (shapely.get_type_id(parts) == 1) & (shapely.length(parts) > 1.0)
    return parts[keep], idx[keep]


def _split_by_ward(lines: np.ndarray, road: np.ndarray, wards: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    line_i, ward_i = shapely.STRtree(wards).query(lines, predicate="intersects")
    inter = shapely.intersection(lines[line_i], wards[ward_i])
    parts, idx = shapely.get_parts(inter, return_index=True)
    keep = (shapely.get_type_id(parts) == 1) & (shapely.length(parts) > 1.0)
    return parts[keep], road[line_i[idx[keep]]], ward_i[idx[keep]]


def _allocate(ward_len: np.ndarray, total: int) -> np.ndarray:
    """Lamps per ward, proportional to its lit length, each either 0 or ≥ FEEDER_MIN.

    A ward whose share would be under one feeder's minimum is left dark (its cabinet would
    otherwise have to sit in another ward); the others share its lamps.
    """
    active = ward_len > 0
    while True:
        share = total * np.where(active, ward_len, 0) / np.where(active, ward_len, 0).sum()
        low = active & (share < FEEDER_MIN)
        if not low.any() or low.sum() == active.sum():
            break
        active &= ~low
    if not active.any() or (share[active] < FEEDER_MIN).all():
        share = np.zeros_like(ward_len)
        share[np.argmax(ward_len)] = total
    counts = np.floor(share).astype(int)
    short = total - counts.sum()  # largest remainders get the rounding leftovers
    counts[np.argsort(-(share - counts), kind="stable")[:short]] += 1
    return counts


def _feeder_sizes(rng: np.random.Generator, n: int) -> list[int]:
    """Split ``n`` ≥ 20 lamps into feeders of 20-60, about 40 each, not all equal."""
    k = max(1, round(n / 40))
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    for i, delta in enumerate(rng.integers(-6, 7, k - 1)):
        a, b = sizes[i] - delta, sizes[i + 1] + delta
        if FEEDER_MIN <= a <= FEEDER_MAX and FEEDER_MIN <= b <= FEEDER_MAX:
            sizes[i], sizes[i + 1] = a, b
    return sizes


@dataclass(slots=True)
class _Lamps:
    xy: np.ndarray
    tangent: np.ndarray
    road: np.ndarray  # index into the road list
    ward: np.ndarray  # index into the ward list
    feeders: list[int]  # sizes, in lamp order


def _place_lamps(rng: np.random.Generator, n: int, lit: np.ndarray, lit_road: np.ndarray,
                 wards: np.ndarray) -> _Lamps:
    parts, road, ward = _split_by_ward(lit, lit_road, wards)
    lengths = shapely.length(parts)
    per_ward = _allocate(np.bincount(ward, lengths, minlength=len(wards)), n)
    # Order parts by ward, then by 400 m cell in serpentine order, then by road: feeders cut
    # from this sequence hold neighbouring lamps.
    mid = shapely.get_coordinates(shapely.line_interpolate_point(parts, 0.5, normalized=True))
    cx, cy = np.floor(mid / 400.0).astype(int).T
    cell = cy * 10_000 + np.where(cy % 2 == 0, cx, -cx)
    order = np.lexsort((road, cell, ward))
    parts, road, ward, lengths = parts[order], road[order], ward[order], lengths[order]
    ends = np.cumsum(lengths)
    ward_len = np.bincount(ward, lengths, minlength=len(wards))
    ward_start = np.cumsum(ward_len) - ward_len
    lamp_ward = np.repeat(np.arange(len(wards)), per_ward)
    rank = np.arange(n) - np.repeat(np.cumsum(per_ward) - per_ward, per_ward)
    spacing = ward_len / np.maximum(per_ward, 1)  # ≈ 30 m; exact count per ward
    pos = ward_start[lamp_ward] + (rank + 0.5) * spacing[lamp_ward]
    idx = np.minimum(np.searchsorted(ends, pos, side="right"), len(parts) - 1)
    xy, tangent = _on_lines(parts, idx, pos - (ends - lengths)[idx])
    feeders = [s for count in per_ward if count for s in _feeder_sizes(rng, int(count))]
    return _Lamps(xy, tangent, road[idx], lamp_ward, feeders)


def _cabinet_sites(lamps: _Lamps, wards: np.ndarray) -> np.ndarray:
    """Each feeder's cabinet: 8 m off the road beside its most central lamp, in its ward."""
    inner = shapely.buffer(wards, -1.0)  # keep cabinets off the ward edges
    shapely.prepare(inner)
    sites = []
    start = 0
    for size in lamps.feeders:
        xy = lamps.xy[start:start + size]
        centre = xy.mean(axis=0)
        i = start + int(np.argmin(np.hypot(*(xy - centre).T)))
        normal = np.array([-lamps.tangent[i, 1], lamps.tangent[i, 0]])
        side = 1.0 if np.dot(centre - lamps.xy[i], normal) >= 0 else -1.0
        ward = inner[lamps.ward[i]]
        for cand in (lamps.xy[i] + 8 * side * normal, lamps.xy[i] - 8 * side * normal):
            if shapely.contains_xy(ward, *cand):
                break
        else:
            cand = lamps.xy[i]
        sites.append(cand)
        start += size
    return np.array(sites).reshape(-1, 2)


_LAMP_POWER_W = {"primary": (150,), "secondary": (120,), "residential": (60, 80, 100)}
_POLE_HEIGHT_M = {"primary": 11, "secondary": 10, "residential": 8}


def _lit_lines(geoms: np.ndarray, n_major: int, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Arterials are lit first (all of them if the lamps suffice), then lanes from the centre."""
    major_len = float(shapely.length(geoms[:n_major]).sum())
    if target <= major_len:
        return _lit_pieces(geoms[:n_major], target)
    lanes, idx = _lit_pieces(geoms[n_major:], target - major_len)
    return np.concatenate([geoms[:n_major], lanes]), np.concatenate([np.arange(n_major),
                                                                      idx + n_major])


def _lighting(rng: np.random.Generator, n: int, roads: list[_RoadDraft], n_major: int,
              wards_m: np.ndarray, wards: list[Ward]) -> list[Device]:
    if n == 0:
        return []
    geoms = np.array([g for *_, g in roads], dtype=object)
    lit, lit_road = _lit_lines(geoms, n_major, n * LAMP_SPACING_M)
    lamps = _place_lamps(rng, n, lit, lit_road, wards_m)
    road_power = [int(rng.choice(_LAMP_POWER_W[cls])) for _, cls, _ in roads]
    sizes = np.array(lamps.feeders)
    feeder_of = np.repeat(np.arange(len(sizes)), sizes).tolist()
    power = [road_power[r] for r in lamps.road.tolist()]
    load = np.bincount(feeder_of, power).tolist()
    cab_ids = [f"LC-{f + 1:04d}" for f in range(len(sizes))]
    cab_ward = lamps.ward[np.cumsum(sizes) - sizes].tolist()
    cab_pts = to_lonlat(shapely.points(_cabinet_sites(lamps, wards_m)))
    devices = [
        Device(cid, "lighting_cabinet", f"Tủ điện {cid} — {wards[w].name}", pt,
               properties={"lamps": int(size), "rated_load_w": int(kw), "phases": 3,
                           "meter": "eastron_sdm630"})
        for cid, w, pt, size, kw in zip(cab_ids, cab_ward, cab_pts, sizes, load, strict=True)
    ]
    lamp_pts = to_lonlat(shapely.points(lamps.xy))
    for i, (r, pt) in enumerate(zip(lamps.road.tolist(), lamp_pts, strict=True)):
        name, cls, _ = roads[r]
        lid = f"SL-{i + 1:06d}"
        devices.append(Device(
            lid, "streetlight", f"Đèn {lid} — {name}", pt, parent=cab_ids[feeder_of[i]],
            properties={"road": name, "road_id": r + 1, "lamp_type": "LED",
                        "rated_power_w": power[i], "pole_height_m": _POLE_HEIGHT_M[cls]},
        ))
    return devices


# ---------------------------------------------------------------- water
_PIPE_DIAMETER_MM = {"primary": 400, "secondary": 250, "residential": 150}
_PIPE_SECTION_M = 1500.0
# Dragino's IEEE OUI; the rest of each DevEUI is an odd-multiplier permutation of the meter
# number modulo 2^40, so DevEUIs look random yet can never collide.
_DEVEUI_OUI = "A84041"
_DEVEUI_MULT = 0x9E3779B97F


def _mains(roads: list[_RoadDraft], target: float) -> list[tuple[LineString, int]]:
    """Pipe sections of ≤ 1.5 km laid 6 m beside roads: arterials first, then central lanes."""
    geoms = np.array([g for *_, g in roads], dtype=object)
    lengths = shapely.length(geoms)
    mid = shapely.get_coordinates(shapely.line_interpolate_point(geoms, 0.5, normalized=True))
    rank = [_CLASS_RANK[cls] for _, cls, _ in roads]
    order = np.lexsort((np.hypot(*mid.T), rank))
    take = order[: int(np.searchsorted(np.cumsum(lengths[order]), target)) + 1]
    sections = []
    for r in take.tolist():
        line, length = geoms[r], float(lengths[r])
        k = max(1, math.ceil(length / _PIPE_SECTION_M))
        for i in range(k):
            piece = substring(line, i * length / k, (i + 1) * length / k)
            (x0, y0), (x1, y1) = piece.coords[0], piece.coords[-1]
            chord = math.hypot(x1 - x0, y1 - y0)
            dx, dy = ((y0 - y1) / chord * 6, (x1 - x0) / chord * 6) if chord > 1 else (0, 6)
            sections.append((translate(piece, dx, dy), r))
    return sections


def _water(rng: np.random.Generator, roads: list[_RoadDraft], boundary: Polygon,
           target: float, n_meters: int) -> list[Device]:
    sections = _mains(roads, target)
    pipes = np.array([s for s, _ in sections], dtype=object)
    pipe_ids = [f"WP-{i + 1:04d}" for i in range(len(pipes))]
    devices = []
    for pid, (geom, r), g in zip(pipe_ids, sections, to_lonlat(pipes), strict=True):
        name, cls, _ = roads[r]
        dia = _PIPE_DIAMETER_MM[cls]
        devices.append(Device(pid, "water_pipe", f"Ống cấp nước {name}", g, properties={
            "road": name, "diameter_mm": dia, "material": "HDPE" if dia < 250 else "ductile iron",
            "length_m": round(geom.length)}))
    total = float(shapely.length(pipes).sum())
    for kind, prefix, label, every, phase in (
        ("flow_meter", "FM", "Lưu lượng kế", 4000.0, 0.5),
        ("pressure_sensor", "PS", "Cảm biến áp lực", 1500.0, 0.25),
    ):
        xy, _, idx = _evenly_along(pipes, max(1, round(total / every)), phase)
        pts = to_lonlat(shapely.points(xy))
        for i, (pt, p) in enumerate(zip(pts, idx.tolist(), strict=True)):
            did = f"{prefix}-{i + 1:04d}"
            dia = _PIPE_DIAMETER_MM[roads[sections[p][1]][1]]
            devices.append(Device(did, kind, f"{label} {did}", pt, parent=pipe_ids[p],
                                  properties={"diameter_mm": dia}))
    devices += _meters(rng, pipes, pipe_ids, boundary, n_meters)
    return devices


def _meters(rng: np.random.Generator, pipes: np.ndarray, pipe_ids: list[str],
            boundary: Polygon, n: int) -> list[Device]:
    """Customer meters 8-20 m beside the mains, numbered along each pipe."""
    lengths = shapely.length(pipes)
    pipe = rng.choice(len(pipes), n, p=lengths / lengths.sum())
    local = rng.uniform(0.02, 0.98, n) * lengths[pipe]
    offset = rng.choice((-1.0, 1.0), n) * rng.uniform(8.0, 20.0, n)
    order = np.lexsort((local, pipe))
    pipe, local, offset = pipe[order], local[order], offset[order]
    on, tangent = _on_lines(pipes, pipe, local)
    xy = on + offset[:, None] * _normal(tangent)
    outside = ~shapely.contains_xy(boundary, xy[:, 0], xy[:, 1])
    xy[outside] = on[outside] - offset[outside, None] * _normal(tangent[outside])
    salt = int(rng.integers(0, 2**40))
    devices = []
    for i, (pt, p) in enumerate(zip(to_lonlat(shapely.points(xy)), pipe.tolist(), strict=True)):
        did = f"WM-{i + 1:06d}"
        eui = f"{_DEVEUI_OUI}{(i * _DEVEUI_MULT + salt) % 2**40:010X}"
        devices.append(Device(did, "water_meter", f"Đồng hồ nước {did}", pt, parent=pipe_ids[p],
                              external_id=eui,
                              properties={"diameter_mm": 15, "network": "lorawan"}))
    return devices


# ---------------------------------------------------------------- traffic
_Junction = tuple[np.ndarray, set[int]]  # location, indices of the major roads meeting there


def _junctions(majors: list[_RoadDraft]) -> list[_Junction]:
    """Crossings of major roads; crossings under 80 m apart are one junction."""
    found: list[_Junction] = []
    for i in range(len(majors)):
        for j in range(i + 1, len(majors)):
            for p in shapely.get_parts(shapely.intersection(majors[i][2], majors[j][2])):
                if p.geom_type == "Point":
                    found.append((np.array(p.coords[0]), {i, j}))
    merged: list[_Junction] = []
    for xy, owners in found:
        for other_xy, other in merged:
            if math.dist(xy, other_xy) < 80.0:
                other.update(owners)
                break
        else:
            merged.append((xy, set(owners)))
    return merged


def _segments(majors: list[_RoadDraft], junctions: list[_Junction]
              ) -> list[tuple[LineString, int]]:
    """Major roads cut at their junctions, and again so no segment exceeds 1.5 km."""
    out = []
    for r, (_, _, line) in enumerate(majors):
        length = line.length
        stops = [0.0]
        for cut in sorted(line.project(Point(xy)) for xy, owners in junctions if r in owners):
            if cut - stops[-1] >= 60.0 and length - cut >= 60.0:
                stops.append(cut)
        stops.append(length)
        for a, b in itertools.pairwise(stops):
            k = math.ceil((b - a) / 1500.0)
            out += [(substring(line, a + (b - a) * t / k, a + (b - a) * (t + 1) / k), r)
                    for t in range(k)]
    return out


def _traffic(majors: list[_RoadDraft]) -> tuple[list[Device], list[_Junction]]:
    junctions = _junctions(majors)
    # The controller cabinet stands on a corner, 7 m from the crossing.
    tc_m = np.add(np.array([xy for xy, _ in junctions]).reshape(-1, 2), (5.0, 5.0))
    tc_pts = shapely.points(tc_m)
    devices = []
    for i, ((_, owners), pt) in enumerate(zip(junctions, to_lonlat(tc_pts), strict=True)):
        names = sorted({majors[o][0] for o in owners})
        devices.append(Device(f"TC-{i + 1:04d}", "traffic_controller",
                              f"Nút giao {' × '.join(names)}", pt,
                              properties={"roads": names, "phases": min(4, 1 + len(owners))}))
    for i, (seg, r) in enumerate(_segments(majors, junctions)):
        name, cls, _ = majors[r]
        parent = None
        if len(tc_m):
            dist = shapely.distance(tc_pts, seg)
            parent = devices[int(np.argmin(dist))].id if dist.min() <= 150.0 else None
        devices.append(Device(f"RS-{i + 1:04d}", "road_segment", f"Đoạn {name}",
                              to_lonlat(seg), parent=parent, properties={
                                  "road": name, "class": cls, "length_m": round(seg.length),
                                  "speed_limit_kmh": 60 if cls == "primary" else 50}))
    return devices, junctions


def _cameras(count: int, majors: list[_RoadDraft], junctions: list[_Junction]) -> list[Device]:
    """One camera per junction (the corner opposite the controller), the rest along arterials."""
    at_junction = junctions[:count]
    xy = list(np.add(np.array([j_xy for j_xy, _ in at_junction]).reshape(-1, 2), (-6.0, 6.0)))
    roads = [" × ".join(sorted({majors[o][0] for o in owners})) for _, owners in at_junction]
    kinds = ["PTZ"] * len(xy)
    primary = [r for r, (_, cls, _) in enumerate(majors) if cls == "primary"]
    lines = np.array([majors[r][2] for r in primary], dtype=object)
    along, tangent, idx = _evenly_along(lines, count - len(xy))
    side = np.where(np.arange(len(along)) % 2 == 0, 12.0, -12.0)
    xy += list(along + side[:, None] * _normal(tangent))
    roads += [majors[primary[i]][0] for i in idx.tolist()]
    kinds += ["fixed"] * len(along)
    pts = to_lonlat(shapely.points(np.array(xy).reshape(-1, 2)))
    return [
        Device(f"CAM-{i + 1:04d}", "camera", f"Camera {road}", pt, properties={
            "road": road, "type": kind, "stream_url": f"rtsp://video.ioc.example/CAM-{i + 1:04d}"})
        for i, (pt, road, kind) in enumerate(zip(pts, roads, kinds, strict=True))
    ]


# ---------------------------------------------------------------- wards' own devices, crews
def _env_stations(wards_m: np.ndarray, wards: list[Ward]) -> list[Device]:
    # Wards are convex, so the centroid lies inside.
    pts = to_lonlat(shapely.centroid(wards_m))
    return [
        Device(f"ENV-{i + 1:03d}", "env_sensor", f"Trạm quan trắc {w.name}", pt,
               properties={"model": "vaisala_aqt530"})
        for i, (w, pt) in enumerate(zip(wards, pts, strict=True))
    ]


def _crews(wards_m: np.ndarray, wards: list[Ward], per_crew: int = 4) -> list[Crew]:
    """Wards grouped by bearing from the centre; the depot is in the group's central ward."""
    centroids = shapely.get_coordinates(shapely.centroid(wards_m))
    order = np.argsort(np.arctan2(centroids[:, 1], centroids[:, 0]), kind="stable")
    crews = []
    for g, members in enumerate(np.array_split(order, max(1, len(wards) // per_crew))):
        home = int(members[np.argmin(np.hypot(*centroids[members].T))])
        # A point between the centroid and the ward's point nearest the city centre: inside
        # the (convex) ward, and on the side of it facing the city.
        near = shapely.get_coordinates(shapely.shortest_line(wards_m[home], Point(0, 0)))[0]
        depot = to_lonlat(Point(0.6 * centroids[home] + 0.4 * near))
        codes = (wards[home].code, *sorted(wards[m].code for m in members if m != home))
        crews.append(Crew(f"CREW-{g + 1:02d}", f"Đội kỹ thuật {g + 1:02d} — {wards[home].name}",
                          codes, depot, f"crew{g + 1:02d}@ioc.example"))
    return crews


def _greenery(seed: int, streetlights: int, roads: list[_RoadDraft], wards_m: np.ndarray,
              wards: list[Ward], devices: list[Device]) -> list[Device]:
    """Parks and trees, clear of the point devices already placed."""
    points = np.array([d.geometry for d in devices if d.geometry.geom_type == "Point"],
                      dtype=object)
    placed = (shapely.get_coordinates(points) - (CENTRE_LON, CENTRE_LAT)) * (M_PER_DEG_LON,
                                                                             M_PER_DEG_LAT)
    green = plant(_stream(seed, 7), _stream(seed, 8), streetlights, roads, wards_m,
                  [w.name for w in wards], placed)
    geoms = to_lonlat(np.array([g.geometry for g in green], dtype=object))
    return [Device(g.id, g.kind, g.name, geom, parent=g.parent, properties=g.properties)
            for g, geom in zip(green, geoms, strict=True)]


# ---------------------------------------------------------------- the city
def generate_city(streetlights: int = 5000, seed: int = 42) -> City:
    """The synthetic city with exactly ``streetlights`` lamps; same arguments, same city."""
    if streetlights < 0 or 0 < streetlights < FEEDER_MIN:
        raise ValueError(f"streetlights must be 0 or at least {FEEDER_MIN} (one feeder), "
                         f"got {streetlights}")
    boundary = _boundary(_stream(seed, 1))
    inner = shapely.buffer(boundary, -_EDGE_MARGIN_M)
    wards_m = _ward_cells(_stream(seed, 2), boundary)
    wards = [
        Ward(f"W{i + 1:02d}", name, g, {"area_km2": round(float(area) / 1e6, 2)})
        for i, (name, g, area) in enumerate(
            zip(WARD_NAMES, to_lonlat(wards_m), shapely.area(wards_m), strict=True))
    ]
    majors = _major_roads(_stream(seed, 3), inner)
    major_len = sum(g.length for *_, g in majors)
    spacing = _grid_spacing(inner.area, streetlights * LAMP_SPACING_M - major_len)
    roads_m = majors + _residential_grid(_stream(seed, 4), inner, spacing)
    devices = _lighting(_stream(seed, 5), streetlights, roads_m, len(majors), wards_m, wards)
    # Mains: a quarter of the lit length, at least 30 km; one meter per 10 lamps, ≥ 200.
    devices += _water(_stream(seed, 6), roads_m, boundary,
                      max(30_000.0, 0.25 * streetlights * LAMP_SPACING_M),
                      max(200, streetlights // 10))
    traffic, junctions = _traffic(majors)
    devices += traffic
    devices += _env_stations(wards_m, wards)
    # ~200 cameras as in Thái Nguyên; a bigger city gets a few more (fourth root of size).
    devices += _cameras(round(200 * (max(streetlights, 1) / 5000) ** 0.25), majors, junctions)
    devices += _greenery(seed, streetlights, roads_m, wards_m, wards, devices)
    roads = [Road(name, cls, g) for (name, cls, _), g in
             zip(roads_m, to_lonlat(np.array([g for *_, g in roads_m], dtype=object)),
                 strict=True)]
    return City(seed, streetlights, to_lonlat(boundary), wards, roads, devices,
                _crews(wards_m, wards))
