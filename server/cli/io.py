"""``ioc import`` and ``ioc export``: bulk work against IOC_DATABASE_URL.

Like ``ioc simulate``, these run without the web server, so each starts its own event loop
with ``asyncio.run`` (the server's ``web.run_app`` owns the loop everywhere else). Heavy
modules are imported inside the commands so ``ioc --help`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from server.cli.common import connect, load_settings, need_database

IMPORT_HELP = """\
Create or update devices from a GeoJSON FeatureCollection or a CSV file, by device id.
The whole file is checked first; if any row has a problem, every problem is listed
(row or feature, field, reason) and nothing is written. Otherwise it is written in one
transaction.

A GeoJSON Feature replaces the device it names (what it leaves out becomes empty).
A CSV row updates only the columns the file has. CSV columns: id, kind, name, parent,
external_id, adapter, adapter_config (JSON), properties (JSON object), and the geometry
as lon + lat (WGS 84 degrees) or wkt. Other columns become text properties.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import", help="create or update devices from a GeoJSON or CSV file (all or nothing)",
        description=IMPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="a .geojson/.json or .csv file ('-' for stdin)")
    p.add_argument("--format", choices=("geojson", "csv"),
                   help="the file's format (default: from its extension or content)")
    p.add_argument("--dry-run", action="store_true", help="check the file, write nothing")
    p.add_argument("--report", type=Path, metavar="FILE",
                   help="also write every problem found to FILE as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)

    e = subparsers.add_parser("export", help="write the device registry as GeoJSON or CSV")
    e.add_argument("--format", choices=("geojson", "csv"), default="geojson")
    e.add_argument("--bbox", help="minLon,minLat,maxLon,maxLat")
    e.add_argument("--kind", help="one kind or several, comma-separated")
    e.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    e.set_defaults(func=cmd_export)



def _database_url() -> str:
    return need_database(load_settings())



def cmd_import(args: argparse.Namespace) -> int:
    from rich.console import Console

    url = _database_url()
    console = Console(stderr=True)
    if str(args.file) == "-":
        data, name = sys.stdin.buffer.read(), None
    else:
        try:
            data, name = args.file.read_bytes(), args.file.name
        except OSError as err:
            raise SystemExit(f"cannot read {args.file}: {err.strerror}") from None
    return asyncio.run(_import(url, data, name, args, console))


async def _import(url: str, data: bytes, name: str | None, args, console) -> int:
    import orjson
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from server.registry import importer

    fmt = args.format or importer.detect_format(name=name, data=data)
    labels = {"validate": "checking rows", "copy": "staging", "write": "writing"}
    show = not args.no_progress and console.is_terminal
    bar = Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, disable=not show)
    tasks: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(labels.get(phase, phase), total=total or None)
        bar.update(tasks[phase], completed=done, total=max(total, done) or None)

    conn = await connect(url)
    try:
        with bar:
            try:
                plan = await importer.prepare(conn, data, fmt, progress)
            except importer.ImportFileError as err:
                console.print(f"[red]cannot read {name or 'the input'}:[/] {err}")
                console.print("nothing was imported")
                return 2
            if plan.ok and not args.dry_run:
                applied = await importer.apply(conn, plan, "cli", source=name, progress=progress)
                await _tell_broker([d.id for d in plan.items])
        if args.report:
            args.report.write_bytes(orjson.dumps(
                {"format": plan.format, "devices": plan.count,
                 "errors": [i.as_dict() for i in plan.issues]}, option=orjson.OPT_INDENT_2))
        if not plan.ok:
            _print_issues(console, plan)
            return 1
        report = plan.report(dry_run=args.dry_run, applied=None if args.dry_run else applied)
    finally:
        await conn.close()
    verb = "would create" if args.dry_run else "created"
    verb2 = "would update" if args.dry_run else "updated"
    print(f"{report['devices']} device(s) in {name or 'the input'} ({fmt}): "
          f"{verb} {report['created']}, {verb2} {report['updated']}")
    return 0


def _print_issues(console, plan, limit: int = 100) -> None:
    from rich.table import Table

    csv = plan.format == "csv"
    table = Table(title=f"{len(plan.issues)} problem(s); nothing was imported",
                  title_justify="left", show_lines=False)
    table.add_column("row" if csv else "feature", justify="right")
    table.add_column("id")
    table.add_column("field")
    table.add_column("reason", overflow="fold")
    for issue in plan.issues[:limit]:
        where = issue.row if csv else issue.index
        table.add_row(str(where), issue.id or "", issue.field, issue.reason)
    console.print(table)
    if len(plan.issues) > limit:
        console.print(f"… and {len(plan.issues) - limit} more (--report FILE writes them all)")


def cmd_export(args: argparse.Namespace) -> int:
    url = _database_url()
    return asyncio.run(_export(url, args))


async def _export(url: str, args) -> int:
    from server.registry import exporter

    conn = await connect(url)
    out = args.output.open("wb") if args.output else sys.stdout.buffer
    try:
        try:
            bbox, kinds = await exporter.parse_filters(conn, args.bbox, args.kind)
        except exporter.ExportFilterError as err:
            raise SystemExit(f"ioc export: {err}") from None
        async with conn.transaction(readonly=True):
            async for chunk in exporter.chunks(conn, args.format, bbox, kinds):
                out.write(chunk)
    finally:
        await conn.close()
        if args.output:
            out.close()
        else:
            out.flush()
    return 0


async def _tell_broker(ids: list[str]) -> None:
    """Device accounts on the broker at once, when this command may administer it."""
    from server.cli.common import load_settings
    from server.mqtt.dynsec import DynSec

    dyn = DynSec.from_settings(load_settings())
    if dyn is not None:
        await dyn.add_devices(ids)
