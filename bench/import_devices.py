"""``ioc import`` of a large inventory: wall time for creating and for updating N devices.

Runs the real command (``python -m server import FILE``) against a private PostgreSQL with
fsync on (bench/common.py), in a city database (wards loaded, so the ward trigger runs for
every row, as in production). Each device is a streetlight with a name, a parent cabinet
that already exists, and two free properties.

    .venv/bin/python bench/import_devices.py                 # 100,000 devices
    .venv/bin/python bench/import_devices.py --devices 20000 # quicker

Prints, per run: the file's size, the wall time of the command (Python start-up, reading,
validation of every row, COPY into the staging table, the one INSERT ... ON CONFLICT,
commit) and devices per second. The target is 100,000 devices in under a minute.

The baseline, measured in the same run: the same rows COPYed straight into a copy of the
``devices`` table (its columns, defaults and indexes; no validation, no ward trigger, no
parent check), in one transaction, through psycopg.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from common import REPO, Stack, console, log
from report import context as record_context
from report import record
from rich.table import Table

GOAL_S = 60.0


def make_files(url: str, n: int, out: Path, seed: int = 1) -> tuple[Path, Path]:
    with psycopg.connect(url) as conn:
        cabinets = [r[0] for r in conn.execute(
            "select id from devices where kind = 'lighting_cabinet' order by id")]
        box = conn.execute("select ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                           "from (select ST_Extent(geom) e from wards) x").fetchone()
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lon = rng.uniform(box[0], box[2])
        lat = rng.uniform(box[1], box[3])
        rows.append((f"SL-IMP-{i:07d}", f"Imported lamp {i}", rng.choice(cabinets),
                     round(lon, 7), round(lat, 7), rng.choice((60, 90, 120, 150))))
    csv_path = out / f"lamps-{n}.csv"
    with csv_path.open("w") as f:
        f.write("id,kind,name,parent,lon,lat,rated_power_w,road\n")
        for dev_id, name, parent, lon, lat, watts in rows:
            f.write(f"{dev_id},streetlight,{name},{parent},{lon},{lat},{watts},Road {watts}\n")
    geo_path = out / f"lamps-{n}.geojson"
    features = [{"type": "Feature", "id": dev_id,
                 "geometry": {"type": "Point", "coordinates": [lon + 1e-5, lat]},
                 "properties": {"kind": "streetlight", "name": name + " (moved)",
                                "parent": parent, "rated_power_w": watts}}
                for dev_id, name, parent, lon, lat, watts in rows]
    geo_path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return csv_path, geo_path


def run_import(url: str, path: Path) -> tuple[float, str]:
    env = {**os.environ, "IOC_DATABASE_URL": url}
    env.pop("IOC_CONFIG", None)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "server", "import", str(path), "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"ioc import failed:\n{done.stdout}\n{done.stderr}")
    return took, done.stdout.strip()


def raw_copy(url: str, csv_path: Path) -> float:
    """Seconds to COPY the CSV's rows into a copy of ``devices`` (the baseline)."""
    with psycopg.connect(url) as conn:
        conn.execute("create table import_baseline (like devices including defaults including identity "
                     "including indexes)")
        conn.commit()
        lines = csv_path.read_text().splitlines()[1:]
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
                "copy import_baseline (id, kind, name, parent, geom, properties) from stdin") as cp:
            for line in lines:
                dev_id, kind, name, parent, lon, lat, watts, road = line.split(",")
                cp.write_row((dev_id, kind, name, parent, f"SRID=4326;POINT({lon} {lat})",
                              json.dumps({"rated_power_w": int(watts), "road": road})))
        conn.commit()
        took = time.perf_counter() - t0
        conn.execute("drop table import_baseline")
        conn.commit()
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = ap.parse_args()
    with Stack(keep=args.keep) as stack:
        url = stack.create_database("bench_import")
        log("seeding the city (wards, cabinets)")
        stack.seed(url, streetlights=2000)
        log(f"writing {args.devices:,} devices as CSV and GeoJSON")
        csv_path, geo_path = make_files(url, args.devices, stack.dir)
        table = Table(title=f"ioc import, {args.devices:,} devices (PostgreSQL fsync on)")
        for col in ("run", "file", "MB", "wall s", "devices/s", "result"):
            table.add_column(col, justify="right" if col in ("MB", "wall s", "devices/s") else "left")
        stack.checkpoint()
        log("baseline: raw COPY of the same rows into a copy of the devices table")
        base = raw_copy(url, csv_path)
        table.add_row("baseline: raw COPY", csv_path.name, f"{csv_path.stat().st_size / 1e6:.1f}",
                      f"{base:.1f}", f"{args.devices / base:,.0f}",
                      "no validation, no trigger, no parent check")
        took_s = {}
        for label, path in (("create (CSV)", csv_path), ("update (GeoJSON)", geo_path)):
            stack.checkpoint()
            log(f"{label}: ioc import {path.name}")
            took, out = run_import(url, path)
            took_s[label] = took
            table.add_row(label, path.name, f"{path.stat().st_size / 1e6:.1f}", f"{took:.1f}",
                          f"{args.devices / took:,.0f}", out)
        with psycopg.connect(url) as conn:
            moved, warded = conn.execute(
                "select count(*) filter (where name like '%(moved)'), count(ward) from devices "
                "where id like 'SL-IMP-%'").fetchone()
        console.print(table)
        # (random points in the wards' bounding box; some fall between ward polygons)
        console.print(f"devices updated by the second run: {moved:,} of {args.devices:,}; "
                      f"given a ward by the trigger: {warded:,}")
    # For bench/REPORT.md (bench/report.py; nothing when run by hand).
    record_context("import_devices", devices=f"{args.devices:,} streetlights",
                   command="python -m server import FILE (ioc import), PostgreSQL fsync on")
    record("import_devices", "raw COPY of the same rows", args.devices / base, "devices/s",
           note="the baseline")
    goal = f"{args.devices:,} in < {GOAL_S * args.devices / 100_000:.0f} s"
    for label, took in took_s.items():
        record("import_devices", f"{label}: wall time", took, "s", goal=goal,
               met=took < GOAL_S * args.devices / 100_000, note=f"{args.devices / took:,.0f} devices/s")
        record("import_devices", f"{label}: devices/s", args.devices / took, "devices/s",
               baseline="raw COPY", ratio=base / took)
    record("import_devices", "devices updated by the second run", moved, "devices",
           goal=f"{args.devices:,}", met=moved == args.devices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
