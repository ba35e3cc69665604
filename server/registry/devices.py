"""The device registry: GeoJSON Features in, rows out, and back.

As GeoJSON a device is a Feature whose ``id`` is the device id and whose ``properties``
hold ``kind``, ``name``, ``parent``, ``external_id`` (and optionally ``adapter`` and
``adapter_config``, the adapter binding) beside its free properties.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import shapely
from shapely.geometry.base import BaseGeometry

from geo.geojson import GeometryError, parse_geometry
from rules.vocab import severity_rank_sql

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
RESERVED = ("kind", "name", "parent", "external_id", "adapter", "adapter_config")
# Computed on the way out; never stored as free properties.
COMPUTED = ("ward", "status", "last_seen", "values", "alarm_severity")



@dataclass(slots=True)
class DeviceIn:
    id: str
    kind: str
    name: str
    geom: BaseGeometry
    parent: str | None = None
    external_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = None
    adapter_config: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FieldError:
    index: int | None
    id: str | None
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "field": self.field, "reason": self.reason}


def features_of(doc: Any) -> list[Any]:
    """The features of a Feature or FeatureCollection, or ValueError saying what to send."""
    if not isinstance(doc, Mapping):
        raise ValueError("send a GeoJSON Feature or FeatureCollection (a JSON object)")
    if doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise ValueError("FeatureCollection.features must be an array")
        if not feats:
            raise ValueError("FeatureCollection.features is empty")
        return feats
    if doc.get("type") == "Feature":
        return [doc]
    raise ValueError(f"type must be 'Feature' or 'FeatureCollection', got {doc.get('type')!r}")


def _opt_str(props: Mapping[str, Any], key: str, errors: list[str]) -> str | None:
    v = props.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        errors.append(f"{key}: must be a non-empty string")
        return None
    return v


def parse_feature(
    obj: Any, index: int | None, kinds: frozenset[str]
) -> tuple[DeviceIn | None, list[FieldError]]:
    """Validate one Feature; every problem found is reported, not just the first."""
    errs: list[FieldError] = []

    def err(fieldname: str, reason: str, dev_id: str | None = None) -> None:
        errs.append(FieldError(index, dev_id, fieldname, reason))

    if not isinstance(obj, Mapping) or obj.get("type") != "Feature":
        err("type", "each item must be a GeoJSON Feature")
        return None, errs
    dev_id = obj.get("id")
    props = obj.get("properties") or {}
    if not isinstance(props, Mapping):
        err("properties", "must be an object")
        props = {}
    if dev_id is None:
        dev_id = props.get("id")
    if not isinstance(dev_id, str) or not ID_RE.fullmatch(dev_id):
        err("id", "the Feature id must be a device id: letters, digits and _ . : - "
            "(at most 128), e.g. SL-000123", None)
        dev_id = None
    kind = props.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        err("properties.kind", f"unknown kind {kind!r}; known kinds: {', '.join(sorted(kinds))}",
            dev_id)
    name = props.get("name", "") or ""
    if not isinstance(name, str):
        err("properties.name", "must be a string", dev_id)
    geom = None
    try:
        geom = parse_geometry(obj.get("geometry"), "geometry")
    except GeometryError as e:
        err("geometry", str(e), dev_id)
    problems: list[str] = []
    parent = _opt_str(props, "parent", problems)
    external_id = _opt_str(props, "external_id", problems)
    adapter = _opt_str(props, "adapter", problems)
    adapter_config = props.get("adapter_config")
    if adapter_config is not None and not isinstance(adapter_config, Mapping):
        problems.append("adapter_config: must be an object")
    for p in problems:
        f, _, reason = p.partition(": ")
        err(f"properties.{f}", reason, dev_id)
    if parent is not None and parent == dev_id:
        err("properties.parent", "a device cannot be its own parent", dev_id)
    if errs:
        return None, errs
    free = {k: v for k, v in props.items() if k not in RESERVED and k not in COMPUTED and k != "id"}
    return DeviceIn(dev_id, kind, name, geom, parent, external_id, free, adapter,
                    dict(adapter_config) if adapter_config else None), []


SELECT_FEATURE = f"""
select d.id, d.kind, d.name, d.parent, d.external_id, d.ward, d.properties, d.adapter,
       d.adapter_config, ST_AsGeoJSON(d.geom, 7)::jsonb as geometry,
       coalesce(s.status, 'unknown') as status, s.last_seen,
       coalesce(s.values, '{{}}'::jsonb) as values, a.severity as alarm_severity
from devices d
left join device_state s on s.device_key = d.key
left join lateral (
    select severity from alarms
    where device = d.id and active and state <> 'closed' and not suppressed
      and not out_of_service
    order by {severity_rank_sql()} limit 1
) a on true
"""


def feature(row: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = dict(row["properties"] or {})
    props.update(
        kind=row["kind"], name=row["name"], parent=row["parent"],
        external_id=row["external_id"], ward=row["ward"], status=row["status"],
        last_seen=row["last_seen"], values=row["values"], alarm_severity=row["alarm_severity"],
    )
    if row["adapter"]:
        props["adapter"] = row["adapter"]
        props["adapter_config"] = row["adapter_config"]
    return {"type": "Feature", "id": row["id"], "geometry": row["geometry"], "properties": props}


async def fetch_one(conn: asyncpg.Connection, device_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(SELECT_FEATURE + " where d.id = $1", device_id)
    return feature(row) if row else None


async def insert_many(conn: asyncpg.Connection, items: Sequence[DeviceIn]) -> None:
    await conn.executemany(
        """insert into devices (id, kind, name, geom, parent, external_id, properties, adapter,
                                adapter_config)
           values ($1, $2, $3, ST_GeomFromWKB($4, 4326), $5, $6, $7, $8, $9)""",
        [
            (d.id, d.kind, d.name, shapely.to_wkb(d.geom), d.parent, d.external_id, d.properties,
             d.adapter, d.adapter_config)
            for d in items
        ],
    )


async def known_kinds(conn: asyncpg.Connection) -> frozenset[str]:
    return frozenset(r["kind"] for r in await conn.fetch("select kind from kinds"))
