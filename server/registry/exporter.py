"""Export of the device registry as GeoJSON or CSV, streamed row by row.

The export is the inventory, not the live state: what an import takes back (id, kind,
name, geometry, parent, external id, adapter binding, free properties) and the ward for
reading. CSV writes points as ``lon``/``lat`` and other geometries as ``wkt`` (one of the
two per row), ``properties`` and ``adapter_config`` as JSON, so an exported file imports
unchanged. Rows come from a server-side cursor, so a million devices never sit in memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from geo.geojson import GeometryError, parse_bbox

CSV_COLUMNS = ("id", "kind", "name", "parent", "external_id", "ward", "lon", "lat", "wkt",
               "adapter", "adapter_config", "properties")
CONTENT_TYPES = {"geojson": "application/geo+json", "csv": "text/csv"}
FETCH = 2000


class ExportFilterError(ValueError):
    """A filter a person must fix; the message says how."""


async def parse_filters(conn: asyncpg.Connection, bbox: str | None, kind: str | None
                        ) -> tuple[tuple[float, float, float, float] | None, list[str]]:
    try:
        box = parse_bbox(bbox)
    except GeometryError as err:
        raise ExportFilterError(str(err)) from None
    kinds = [k for k in (kind or "").split(",") if k]
    if kinds:
        known = {r["kind"] for r in await conn.fetch("select kind from kinds")}
        unknown = [k for k in kinds if k not in known]
        if unknown:
            raise ExportFilterError(
                f"unknown kind {', '.join(unknown)}; known kinds: {', '.join(sorted(known))}")
    return box, kinds


def _query(bbox: Sequence[float] | None, kinds: Sequence[str]) -> tuple[str, list[Any]]:
    where, args = [], []
    if bbox:
        args += list(bbox)
        env = "ST_MakeEnvelope($1, $2, $3, $4, 4326)"
        where.append(f"geom && {env} and ST_Intersects(geom, {env})")
    if kinds:
        args.append(list(kinds))
        where.append(f"kind = any(${len(args)}::text[])")
    sql = """select id, kind, name, parent, external_id, ward, properties::text as properties,
                    adapter, adapter_config::text as adapter_config,
                    ST_AsGeoJSON(geom, 7) as geojson,
                    case when GeometryType(geom) = 'POINT' then ST_X(geom) end as lon,
                    case when GeometryType(geom) = 'POINT' then ST_Y(geom) end as lat,
                    case when GeometryType(geom) <> 'POINT' then ST_AsText(geom, 7) end as wkt
             from devices"""
    if where:
        sql += " where " + " and ".join(where)
    return sql + " order by id", args


async def rows(conn: asyncpg.Connection, bbox, kinds) -> AsyncIterator[Mapping[str, Any]]:
    """The matching devices in id order, from a server-side cursor (needs a transaction)."""
    sql, args = _query(bbox, kinds)
    async for r in conn.cursor(sql, *args, prefetch=FETCH):
        yield r


def geojson_feature(r: Mapping[str, Any]) -> bytes:
    props: dict[str, Any] = {"kind": r["kind"], "name": r["name"], "parent": r["parent"],
                             "external_id": r["external_id"], "ward": r["ward"]}
    if r["adapter"]:
        props["adapter"] = r["adapter"]
        props["adapter_config"] = orjson.Fragment(r["adapter_config"] or "null")
    free = orjson.loads(r["properties"])
    for k, v in free.items():
        props.setdefault(k, v)
    return orjson.dumps({"type": "Feature", "id": r["id"],
                         "geometry": orjson.Fragment(r["geojson"]), "properties": props})


def csv_row(r: Mapping[str, Any]) -> list[Any]:
    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.7f}".rstrip("0").rstrip(".")

    props = r["properties"]
    return [r["id"], r["kind"], r["name"], r["parent"] or "", r["external_id"] or "",
            r["ward"] or "", num(r["lon"]), num(r["lat"]), r["wkt"] or "", r["adapter"] or "",
            r["adapter_config"] or "", "" if props == "{}" else props]


async def chunks(conn: asyncpg.Connection, fmt: str, bbox, kinds,
                 size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """The export as byte chunks of about ``size``; run inside a transaction."""
    buf = bytearray()
    if fmt == "geojson":
        buf += b'{"type":"FeatureCollection","features":['
        first = True
        async for r in rows(conn, bbox, kinds):
            if not first:
                buf += b","
            first = False
            buf += geojson_feature(r)
            if len(buf) >= size:
                yield bytes(buf)
                buf.clear()
        buf += b"]}\n"
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        async for r in rows(conn, bbox, kinds):
            writer.writerow(csv_row(r))
            if out.tell() >= size:
                buf += out.getvalue().encode()
                out.seek(0)
                out.truncate()
                yield bytes(buf)
                buf.clear()
        buf += out.getvalue().encode()
    yield bytes(buf)
