"""Which devices a group command reaches: its target (ward, parent, bbox, kind, devices, a
road segment or a drawn geometry with ``within_m``) read
into a :class:`Selection` of the devices that will be commanded and those skipped.

A target's keys narrow each other (all must match). Without ``kind`` or ``devices``, "dim
the ward" means the command's group kinds (its lamps), not every device that takes it.
Unknown wards, parents or device ids are mistakes worth a 400, not an empty group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from geo.geojson import GeometryError, check_bbox, parse_bbox, parse_geometry
from server.commands.catalog import CommandSpec, check_args, spec_of
from server.commands.transports import UNROUTABLE
from server.errors import Invalid
from server.vocab import DeviceStatus

__all__ = ["DEVICE_SQL", "TARGET_KEYS", "Selection", "select"]

TARGET_KEYS = ("ward", "parent", "bbox", "kind", "devices", "road", "geometry", "within_m")

MAX_WITHIN_M = 2000.0  # a buffer wider than a district is a mistake, not a street
# Degrees of longitude per metre at 63 degrees latitude: a generous index prefilter before
# the exact geography distance test, for every city south of Reykjavik.
DEG_PER_M = 1 / 50_000

DEVICE_SQL = f"""
select d.id, d.kind, d.adapter, coalesce(s.status, '{DeviceStatus.UNKNOWN}') as status
from devices d left join device_state s on s.device_key = d.key
"""

# The route a device's command would take (device, its adapter, command), or UNROUTABLE.
Router = Callable[[str, str | None, str], str]


@dataclass(slots=True)
class Selection:
    """What a group target picks: the devices that will be commanded and those that cannot."""

    spec: CommandSpec
    args: dict[str, Any]
    target: dict[str, Any]
    devices: list[dict[str, Any]]  # id, kind, status, route
    skipped: list[dict[str, str]]  # id, reason

    def summary(self) -> dict[str, Any]:
        def count(key: str) -> dict[str, int]:
            out: dict[str, int] = {}
            for d in self.devices:
                out[d[key]] = out.get(d[key], 0) + 1
            return out

        return {
            "name": self.spec.name, "args": self.args, "target": self.target,
            "count": len(self.devices),
            "queued": sum(d["status"] == DeviceStatus.OFFLINE for d in self.devices),
            "by_kind": count("kind"), "by_status": count("status"), "by_route": count("route"),
            "devices": self.devices, "skipped": self.skipped,
        }


async def select(pool: asyncpg.Pool, max_group: int, target: Any, name: Any, args: Any,
                 route: Router) -> Selection:
    """The devices ``target`` picks for command ``name``; raises :class:`Invalid` for a
    target, command or arguments this server will not take."""
    spec = spec_of(name)
    args = check_args(spec, args)
    if not isinstance(target, Mapping) or not target:
        raise Invalid("target must be an object naming at least one of "
                      f"{', '.join(TARGET_KEYS)}, e.g. {{\"parent\": \"LC-0001\"}}")
    unknown = sorted(set(target) - set(TARGET_KEYS))
    if unknown:
        raise Invalid(f"unknown target key(s) {', '.join(unknown)}; use {', '.join(TARGET_KEYS)}")
    where, params = [], []

    def arg(v: Any) -> str:
        params.append(v)
        return f"${len(params)}"

    kinds = _strings(target, "kind")
    if kinds is not None:
        refused = [k for k in kinds if k not in spec.kinds]
        if refused:
            raise Invalid(f"{', '.join(refused)} do(es) not take {spec.name}; it is for "
                          f"{', '.join(sorted(spec.kinds))}")
        where.append(f"d.kind = any({arg(kinds)}::text[])")
    ids = _strings(target, "devices")
    if ids is not None:
        if len(ids) > max_group:
            raise Invalid(f"at most {max_group} devices in one group command")
        where.append(f"d.id = any({arg(ids)}::text[])")
    elif kinds is None:  # "dim the ward" means its lamps: the command's group kinds
        where.append(f"d.kind = any({arg(sorted(spec.group_kinds))}::text[])")
    wards = _strings(target, "ward")
    if wards is not None:
        where.append(f"d.ward = any({arg(wards)}::text[])")
    parents = _strings(target, "parent")
    if parents is not None:
        where.append(f"d.parent = any({arg(parents)}::text[])")
    if "bbox" in target:
        b = _bbox(target["bbox"])
        env = f"ST_MakeEnvelope({arg(b[0])}, {arg(b[1])}, {arg(b[2])}, {arg(b[3])}, 4326)"
        where.append(f"d.geom && {env} and ST_Intersects(d.geom, {env})")
    shape = _shape(target)
    if shape is not None:
        kind_, value, within = shape
        if kind_ == "road":
            geom = f"(select geom from devices where id = {arg(value)} and kind = 'road_segment')"
        else:
            geom = f"ST_GeomFromText({arg(value)}, 4326)"
        if within > 0:
            w = arg(within)
            where.append(f"d.geom && ST_Expand({geom}, {w} * {DEG_PER_M}) and "
                         f"ST_DWithin(d.geom::geography, {geom}::geography, {w})")
        else:
            where.append(f"d.geom && {geom} and ST_Intersects(d.geom, {geom})")
    sql = DEVICE_SQL + " where " + " and ".join(where) + f" order by d.id limit {arg(max_group + 1)}"
    async with pool.acquire() as conn:
        await _check_references(conn, wards, parents, ids)
        if shape is not None and shape[0] == "road" and not await conn.fetchval(
                "select exists(select 1 from devices where id = $1 and kind = 'road_segment')", shape[1]):
            raise Invalid(f"target.road: no road_segment device with id {shape[1]!r}", field="target.road")
        rows = await conn.fetch(sql, *params)
    if len(rows) > max_group:
        raise Invalid(f"the target selects more than {max_group} devices; narrow it "
                      "(commands.max_group)")
    devices, skipped = [], []
    for r in rows:
        if r["kind"] not in spec.kinds:
            skipped.append({"id": r["id"], "reason": f"a {r['kind']} does not take {spec.name}"})
            continue
        try:
            via = route(r["id"], r["adapter"], spec.name)
        except UNROUTABLE as err:
            skipped.append({"id": r["id"], "reason": str(err)})
            continue
        devices.append({"id": r["id"], "kind": r["kind"], "status": r["status"], "route": via})
    return Selection(spec, args, dict(target), devices, skipped)


def _shape(target: Mapping[str, Any]) -> tuple[str, str, float] | None:
    """("road", id, metres) or ("geometry", WKT, metres) from the target, or None."""
    has_road, has_geom = "road" in target, "geometry" in target
    if "within_m" in target and not (has_road or has_geom):
        raise Invalid("target.within_m goes with target.road or target.geometry", field="target.within_m")
    if not (has_road or has_geom):
        return None
    if has_road and has_geom:
        raise Invalid("target takes road or geometry, not both", field="target.geometry")
    within = target.get("within_m", 30.0 if has_road else 0.0)
    if (not isinstance(within, int | float) or isinstance(within, bool)
            or not 0 <= within <= MAX_WITHIN_M):
        raise Invalid(f"target.within_m must be a number of metres from 0 to {MAX_WITHIN_M:g}, "
                      f"got {within!r}", field="target.within_m")
    if has_road:
        road = target["road"]
        if not isinstance(road, str) or not road or "\x00" in road:
            raise Invalid(f"target.road must be a road_segment device id, got {road!r}",
                          field="target.road")
        return "road", road, float(within)
    try:
        geom = parse_geometry(target["geometry"], "target.geometry")
    except GeometryError as err:
        raise Invalid(str(err), field="target.geometry") from None
    if geom.geom_type not in ("Polygon", "MultiPolygon", "LineString", "MultiLineString"):
        raise Invalid(f"target.geometry must be a Polygon or a LineString, got {geom.geom_type}",
                      field="target.geometry")
    if "LineString" in geom.geom_type and within <= 0:
        raise Invalid("target.within_m must be more than 0 metres around a LineString "
                      "(e.g. 30 for the lamps along a street)", field="target.within_m")
    return "geometry", geom.wkt, float(within)


def _strings(target: Mapping[str, Any], key: str) -> list[str] | None:
    if key not in target:
        return None
    value = target[key]
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(dict.fromkeys(value))
    raise Invalid(f"target.{key} must be a non-empty string or array of strings, got {value!r}")


def _bbox(value: Any) -> tuple[float, float, float, float]:
    try:
        if isinstance(value, str):
            bbox = parse_bbox(value)
        elif (isinstance(value, list) and len(value) == 4
              and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
            bbox = check_bbox(tuple(float(v) for v in value))  # type: ignore[arg-type]
        else:
            raise GeometryError("bbox must be [minLon, minLat, maxLon, maxLat] or the same as a "
                                "comma-separated string")
    except GeometryError as err:
        raise Invalid(f"target.{err}" if str(err).startswith("bbox") else str(err)) from None
    assert bbox is not None
    return bbox


async def _check_references(conn: asyncpg.Connection, wards: Sequence[str] | None,
                            parents: Sequence[str] | None, ids: Sequence[str] | None) -> None:
    if wards:
        known = {r["code"] for r in await conn.fetch("select code from wards where code = any($1::text[])",
                                                     list(wards))}
        if missing := [w for w in wards if w not in known]:
            raise Invalid(f"unknown ward(s) {', '.join(missing[:20])}")
    for what, values in (("parent", parents), ("device", ids)):
        if values:
            known = {r["id"] for r in await conn.fetch("select id from devices where id = any($1::text[])",
                                                       list(values))}
            if missing := [v for v in values if v not in known]:
                raise Invalid(f"unknown {what} device(s) {', '.join(missing[:20])}"
                              + (" …" if len(missing) > 20 else ""))
