"""Bulk import of devices from GeoJSON or CSV: validated whole, then applied all or nothing.

An import creates the devices it does not know and updates the ones it does, by device id:

- a GeoJSON Feature is the whole device (as ``GET /api/v1/devices/{id}`` shows it): kind,
  name, geometry, parent, external_id, adapter binding and free properties all come from
  the feature, and what it leaves out becomes empty;
- a CSV row updates only the columns the file has: a file with ``id,kind,lon,lat`` moves
  devices and keeps their names, parents, external ids and properties. Columns other than
  the known ones become text properties, merged into the device's free properties (as is
  a ``properties`` column holding a JSON object).

CSV columns (header names are case-insensitive): ``id``, ``kind``, ``name``, ``parent``,
``external_id``, ``adapter``, ``adapter_config`` (JSON), ``properties`` (JSON), and the
geometry as ``lon``/``lat`` (a point, WGS 84) or ``wkt`` (any geometry). ``ward``,
``status`` and the other computed columns an export writes are ignored.

Every row is checked with the rules of the devices API (:func:`server.registry.devices.parse_feature`,
:func:`geo.geojson.parse_geometry`), then the file as a whole (ids unique, parents in the
file or the database, external ids free). Every problem is reported with the row (CSV, as
a spreadsheet numbers it: the header is row 1) or feature index (GeoJSON, from 0), the
field and the reason; one problem and nothing is written. Writing is one transaction: COPY
into a staging table, then one ``INSERT … ON CONFLICT (id) DO UPDATE``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import orjson
import shapely
from shapely.geometry import mapping

from server.http.jsonutil import flaw, text_flaw
from server.registry.devices import DeviceIn, known_kinds, parse_feature
from server.store.audit import audit

Format = Literal["geojson", "csv"]
FORMATS: tuple[Format, ...] = ("geojson", "csv")
#: Progress callback: (phase, done, total).
Progress = Callable[[str, int, int], None]
MAX_REPORTED = 1000
COPY_CHUNK = 20_000

# CSV header → the device field it fills; anything else is a free property.
_ALIASES = {
    "id": "id", "device_id": "id", "kind": "kind", "name": "name", "parent": "parent",
    "external_id": "external_id", "adapter": "adapter", "adapter_config": "adapter_config",
    "properties": "properties", "lon": "lon", "lng": "lon", "longitude": "lon",
    "lat": "lat", "latitude": "lat", "wkt": "wkt",
}
_IGNORED = {"ward", "status", "last_seen", "values", "alarm_severity"}
# Device fields a file may or may not set; kind and geometry are always required.
OPTIONAL_FIELDS = ("name", "parent", "external_id", "adapter", "adapter_config")


class ImportFileError(ValueError):
    """The file as a whole cannot be read (not JSON, no header, ...); the message says why."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem: where (``row`` for CSV, ``index`` for GeoJSON), which field, why."""

    row: int | None
    index: int | None
    id: str | None
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        where = {"row": self.row} if self.row is not None else {"index": self.index}
        return {**where, "id": self.id, "field": self.field, "reason": self.reason}

    @property
    def where(self) -> str:
        return f"row {self.row}" if self.row is not None else f"feature {self.index}"


@dataclass(slots=True)
class Plan:
    """A validated file: what would be written, or every reason it cannot be."""

    format: Format
    count: int = 0
    items: list[DeviceIn] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    given: frozenset[str] = frozenset(OPTIONAL_FIELDS)
    merge_properties: bool = False
    existing: int = 0
    #: device id → (row, index), to point at the right line when the database says no
    where: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.issues

    def report(self, *, dry_run: bool, applied: tuple[int, int] | None = None) -> dict[str, Any]:
        created, updated = applied or (self.count - self.existing, self.existing)
        return {"dry_run": dry_run, "format": self.format, "devices": self.count,
                "created": created, "updated": updated}


def detect_format(name: str | None = None, content_type: str | None = None,
                  data: bytes = b"") -> Format:
    """From a file name, else a content type, else the first byte."""
    if name:
        low = name.lower()
        if low.endswith((".geojson", ".json")):
            return "geojson"
        if low.endswith((".csv", ".tsv", ".txt")):
            return "csv"
    if content_type:
        if content_type in ("application/geo+json", "application/json"):
            return "geojson"
        if content_type in ("text/csv", "text/tab-separated-values", "application/csv"):
            return "csv"
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "geojson" if head == b"{" else "csv"


# ---------------------------------------------------------------- reading


Candidate = tuple[int | None, int | None, Any, list[Issue]]  # row, index, feature, issues


def _geojson_candidates(data: bytes) -> Iterator[Candidate]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise ImportFileError(f"the file is not valid JSON: {err}") from None
    if not isinstance(doc, Mapping):
        raise ImportFileError("a GeoJSON import is a FeatureCollection (a JSON object)")
    if doc.get("type") == "Feature":
        feats = [doc]
    elif doc.get("type") == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise ImportFileError("FeatureCollection.features must be an array")
    else:
        raise ImportFileError(
            f"type must be 'FeatureCollection' (or 'Feature'), got {doc.get('type')!r}")
    if not feats:
        raise ImportFileError("the FeatureCollection has no features")
    for i, f in enumerate(feats):
        yield None, i, f, []


def _delimiter(text: str) -> str:
    """The header's most frequent of , ; tab | (spreadsheets in many locales write ;)."""
    header = text[:8192].split("\n", 1)[0]
    counts = {d: header.count(d) for d in ",;\t|"}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_candidates(data: bytes) -> tuple[Iterator[Candidate], frozenset[str], bool]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ImportFileError(
            f"the CSV file is not UTF-8 (byte {err.start}); save it as 'CSV UTF-8'") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("the CSV file is empty; its first row names the columns") from None
    except csv.Error as err:
        raise ImportFileError(f"row 1: {err}") from None
    cols = [h.strip() for h in header]
    fields = [_ALIASES.get(c.lower(), "" if c.lower() in _IGNORED else "extra") for c in cols]
    seen = Counter(f for f in fields if f not in ("", "extra"))
    twice = sorted(f for f, n in seen.items() if n > 1)
    if twice:
        raise ImportFileError(f"the header names these columns more than once: {', '.join(twice)}")
    missing = [c for c in ("id", "kind") if c not in seen]
    if missing:
        raise ImportFileError(
            f"the header has no {' or '.join(missing)} column; found: {', '.join(cols)}")
    has_point = "lon" in seen and "lat" in seen
    if not has_point and "wkt" not in seen:
        raise ImportFileError("the header has no geometry: give lon and lat columns (WGS 84), "
                              "or a wkt column")
    if ("lon" in seen) != ("lat" in seen):
        raise ImportFileError("lon and lat come together: the header has only one of them")
    extras = [(i, c) for i, (c, f) in enumerate(zip(cols, fields, strict=True)) if f == "extra"]
    known = [(i, f) for i, f in enumerate(fields) if f not in ("", "extra")]
    given = frozenset(f for f in OPTIONAL_FIELDS if f in seen)
    merge = bool(extras) or "properties" in seen

    def rows() -> Iterator[Candidate]:
        n = 0
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise ImportFileError(f"row {reader.line_num}: {err}") from None
            if not any(v.strip() for v in values):
                continue  # blank lines, a trailing newline
            n += 1
            row = reader.line_num
            if len(values) > len(cols):
                yield row, None, None, [Issue(row, None, None, "row", (
                    f"{len(values)} cells but the header has {len(cols)} columns "
                    "(an unquoted delimiter inside a value?)"))]
                continue
            values += [""] * (len(cols) - len(values))
            yield _csv_feature(row, values, known, extras, cols)

    return rows(), given, merge


def _csv_feature(row: int, values: list[str], known: list[tuple[int, str]],
                 extras: list[tuple[int, str]], cols: list[str]) -> Candidate:
    issues: list[Issue] = []
    cell = {f: values[i].strip() for i, f in known}
    dev_id = cell.get("id") or None

    def bad(fieldname: str, reason: str) -> None:
        issues.append(Issue(row, None, dev_id, fieldname, reason))

    props: dict[str, Any] = {}
    if cell.get("properties"):
        try:
            loaded = json.loads(cell["properties"])
        except ValueError as err:
            bad("properties", f"not valid JSON: {err}")
        else:
            if isinstance(loaded, dict):
                props.update(loaded)
            else:
                bad("properties", "must be a JSON object such as {\"road\": \"Hoàng Văn Thụ\"}")
    for i, c in extras:
        if values[i].strip():
            props[c] = values[i].strip()
    props["kind"] = cell.get("kind") or None
    for f in ("name", "parent", "external_id", "adapter"):
        if f in cell:
            props[f] = cell[f] or None
    if props.get("name") is None:
        props.pop("name", None)
    if cell.get("adapter_config"):
        try:
            props["adapter_config"] = json.loads(cell["adapter_config"])
        except ValueError as err:
            bad("adapter_config", f"not valid JSON: {err}")
    geometry = _csv_geometry(cell, bad)
    feature = {"type": "Feature", "id": dev_id, "geometry": geometry, "properties": props}
    return row, None, feature, issues


def _number(text: str) -> float | None:
    try:
        v = float(text.replace(",", ".") if text.count(",") == 1 and "." not in text else text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _csv_geometry(cell: Mapping[str, str], bad: Callable[[str, str], None]) -> Any:
    wkt, lon_s, lat_s = cell.get("wkt", ""), cell.get("lon", ""), cell.get("lat", "")
    point = None
    if lon_s or lat_s:
        lon, lat = _number(lon_s), _number(lat_s)
        if lon is None:
            bad("lon", f"must be a number (decimal degrees, WGS 84), got {lon_s!r}")
        if lat is None:
            bad("lat", f"must be a number (decimal degrees, WGS 84), got {lat_s!r}")
        if lon is None or lat is None:
            return None
        point = {"type": "Point", "coordinates": [lon, lat]}
    if wkt:
        try:
            geom = shapely.from_wkt(wkt)
        except shapely.errors.ShapelyError as err:
            bad("wkt", f"not valid WKT: {err}")
            return None
        if point is not None:
            x, y = point["coordinates"]
            if geom.geom_type != "Point" or abs(geom.x - x) > 1e-6 or abs(geom.y - y) > 1e-6:
                bad("wkt", "lon/lat and wkt are both given and disagree; leave one empty")
                return None
        return mapping(geom)
    if point is None:
        bad("geometry", "no geometry: fill lon and lat, or wkt")
    return point


# ---------------------------------------------------------------- validation


def validate_rows(candidates: Iterator[Candidate], kinds: frozenset[str], plan: Plan,
                  progress: Progress | None = None, total: int = 0) -> None:
    """Check each row on its own and the file's ids; fills ``plan.items``/``plan.issues``."""
    first_seen: dict[str, int | None] = {}
    ext_seen: dict[str, str] = {}
    for n, (row, index, feat, issues) in enumerate(candidates, 1):
        plan.count += 1
        if progress and n % 5000 == 0:
            progress("validate", n, total)
        if issues:
            plan.issues.extend(issues)
        if feat is None:
            continue
        found = flaw(feat)
        if found:
            # What PostgreSQL would refuse on writing (a NUL, text too long for an index,
            # nesting orjson cannot write back): found here, so a dry run finds it too.
            fieldname, reason = found
            if row is not None:
                fieldname = fieldname.removeprefix("properties.")
            dev_id = feat.get("id") if isinstance(feat, Mapping) else None
            plan.issues.append(Issue(row, index, dev_id if isinstance(dev_id, str)
                                     and not text_flaw(dev_id) else None, fieldname, reason))
            continue
        item, errs = parse_feature(feat, index, kinds)
        for e in errs:
            fieldname = e.field
            if row is not None:  # CSV: name the column, not the GeoJSON path
                fieldname = fieldname.removeprefix("properties.")
                if fieldname == "geometry":
                    fieldname = "wkt" if feat["geometry"] and feat["geometry"]["type"] != "Point" \
                        else "lon/lat"
            if not (row is not None and feat["geometry"] is None and fieldname == "lon/lat"):
                # (a CSV row without a usable geometry has said why already)
                plan.issues.append(Issue(row, index, e.id, fieldname, e.reason))
        if item is None or issues:
            continue
        where = row if row is not None else index
        if item.id in first_seen:
            label = "row" if row is not None else "feature"
            plan.issues.append(Issue(row, index, item.id, "id",
                                     f"{item.id} is already in {label} {first_seen[item.id]}"))
            continue
        first_seen[item.id] = where
        if item.external_id is not None:
            other = ext_seen.setdefault(item.external_id, item.id)
            if other != item.id:
                plan.issues.append(Issue(row, index, item.id, "external_id",
                                         f"{item.external_id!r} is also given to {other}"))
                continue
        plan.items.append(item)
        plan.where[item.id] = (row, index)
    if progress:
        progress("validate", plan.count, plan.count)


def read_and_validate(data: bytes, fmt: Format, kinds: frozenset[str],
                      progress: Progress | None = None) -> Plan:
    """The pure part: parse the file and check every row (no database). CPU-bound."""
    plan = Plan(fmt)
    if fmt == "geojson":
        candidates = _geojson_candidates(data)
        total = 0
    else:
        candidates, plan.given, plan.merge_properties = _csv_candidates(data)
        total = data.count(b"\n")
    validate_rows(candidates, kinds, plan, progress, total)
    if plan.count == 0:
        raise ImportFileError("the file holds no devices")
    return plan


async def check_references(conn: asyncpg.Connection, plan: Plan) -> None:
    """Parents in the file or the database; external ids not held by another device."""
    where = plan.where
    ids = [d.id for d in plan.items]
    in_file = set(ids)
    parents = sorted({d.parent for d in plan.items if d.parent and d.parent not in in_file})
    found = set()
    if parents:
        found = {r["id"] for r in await conn.fetch(
            "select id from devices where id = any($1::text[])", parents)}
    for d in plan.items:
        if d.parent and d.parent not in in_file and d.parent not in found:
            row, index = where[d.id]
            plan.issues.append(Issue(row, index, d.id, "parent",
                                     f"no device {d.parent!r} in the file or the database"))
    if "external_id" in plan.given:
        exts = {d.external_id: d.id for d in plan.items if d.external_id}
        new_ext = {d.id: d.external_id for d in plan.items}
        if exts:
            for r in await conn.fetch("select id, external_id from devices "
                                      "where external_id = any($1::text[])", list(exts)):
                mine = exts[r["external_id"]]
                # Free if it is this device's already, or the file moves it off its holder.
                if r["id"] != mine and (r["id"] not in new_ext
                                        or new_ext[r["id"]] == r["external_id"]):
                    row, index = where[mine]
                    plan.issues.append(Issue(row, index, mine, "external_id",
                                             f"{r['external_id']!r} already belongs to {r['id']}"))
    plan.existing = await conn.fetchval(
        "select count(*) from devices where id = any($1::text[])", ids) if ids else 0
    plan.issues.sort(key=lambda i: (i.row if i.row is not None else i.index or 0))


async def prepare(conn: asyncpg.Connection, data: bytes, fmt: Format,
                  progress: Progress | None = None, run=None) -> Plan:
    """Validate the whole file. ``run(fn, *args)`` runs the CPU-bound part (an executor)."""
    kinds = await known_kinds(conn)
    if run is None:
        plan = read_and_validate(data, fmt, kinds, progress)
    else:
        plan = await run(read_and_validate, data, fmt, kinds, progress)
    if plan.items:
        await check_references(conn, plan)
    return plan


# ---------------------------------------------------------------- writing

_STAGE_COLS = ("id", "kind", "name", "wkb", "parent", "external_id", "properties", "adapter",
               "adapter_config")


def _upsert_sql(plan: Plan) -> str:
    sets = ["kind = excluded.kind", "geom = excluded.geom"]
    sets += [f"{f} = excluded.{f}" for f in OPTIONAL_FIELDS if f in plan.given]
    if plan.format == "geojson":
        sets.append("properties = excluded.properties")
    elif plan.merge_properties:
        sets.append("properties = devices.properties || excluded.properties")
    sets.append("updated_at = now()")
    return f"""
        with up as (
            insert into devices (id, kind, name, geom, parent, external_id, properties, adapter,
                                 adapter_config)
            select id, kind, name, ST_GeomFromWKB(wkb, 4326), parent, external_id,
                   properties::jsonb, adapter, adapter_config::jsonb
            from ioc_import
            on conflict (id) do update set {', '.join(sets)}
            returning (xmax = 0) as created
        )
        select count(*) filter (where created) as created, count(*) as total from up"""


def _records(plan: Plan) -> Iterator[tuple]:
    wkbs = shapely.to_wkb([d.geom for d in plan.items])
    for d, wkb in zip(plan.items, wkbs, strict=True):
        yield (d.id, d.kind, d.name, wkb, d.parent, d.external_id,
               orjson.dumps(d.properties).decode(), d.adapter,
               orjson.dumps(d.adapter_config).decode() if d.adapter_config is not None else None)


async def apply(conn: asyncpg.Connection, plan: Plan, actor: str, *, source: str | None = None,
                progress: Progress | None = None) -> tuple[int, int]:
    """Write a valid plan in one transaction; (created, updated)."""
    if not plan.ok:
        raise ValueError("cannot apply an import with problems")
    total = len(plan.items)
    async with conn.transaction():
        await conn.execute(
            "create temp table ioc_import (id text, kind text, name text, wkb bytea, parent text, "
            "external_id text, properties text, adapter text, adapter_config text) on commit drop")
        chunk: list[tuple] = []
        done = 0
        for rec in _records(plan):
            chunk.append(rec)
            if len(chunk) >= COPY_CHUNK:
                await conn.copy_records_to_table("ioc_import", records=chunk, columns=_STAGE_COLS)
                done += len(chunk)
                chunk = []
                if progress:
                    progress("copy", done, total)
        if chunk:
            await conn.copy_records_to_table("ioc_import", records=chunk, columns=_STAGE_COLS)
        if progress:
            progress("copy", total, total)
            progress("write", 0, 1)
        row = await conn.fetchrow(_upsert_sql(plan))
        created, updated = row["created"], row["total"] - row["created"]
        ids = [d.id for d in plan.items]
        await audit(conn, actor, "device.import", target=source or f"{total} device(s)",
                    device=ids[0] if total == 1 else None,
                    details={"format": plan.format, "created": created, "updated": updated,
                             "ids": ids[:100]})
        if progress:
            progress("write", 1, 1)
    return created, updated


def issues_problem(plan: Plan) -> dict[str, Any]:
    """The problem+json extras for a rejected import."""
    return {"error_count": len(plan.issues),
            "errors": [i.as_dict() for i in plan.issues[:MAX_REPORTED]]}
