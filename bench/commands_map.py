"""A group command from the map beside the same group sent by the API, with ingest running.

The whole stack (``bench/common.py``), lamps answering over MQTT after ``--answer-ms`` and
telemetry at ``--rate`` readings/s (bench/commands.py's fleet and feed). Two groups of
``set_dim`` to the same ``--lamps`` lamps, in the same run:

* map: what the commands panel does: a drawn polygon (the ``geometry`` target around the
  lamps), watch ``{"op": "commands"}`` on the websocket, preview, send, until the websocket
  has delivered every lamp's final result;
* API: the lamps' ids (``devices`` target) POSTed, then ``GET /api/v1/command-groups/{id}``
  polled until done.

    .venv/bin/python bench/commands_map.py            # 5,000 lamps, 1,000 readings/s
    .venv/bin/python bench/commands_map.py --quick    # 500 lamps
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from commands import lamp_fleet, stored, telemetry
from common import Stack, console, install_signal_handlers, log, table
from report import record

FINAL = {"succeeded", "failed", "expired"}


async def from_map(s: aiohttp.ClientSession, base: str, hdr: dict, polygon: dict, level: int) -> dict:
    t0 = time.monotonic()
    async with s.ws_connect(base + "/api/v1/ws", headers=hdr) as ws:
        await ws.send_json({"op": "commands", "groups": "all"})
        body = {"target": {"geometry": polygon}, "name": "set_dim", "args": {"level": level}}
        async with s.post(base + "/api/v1/commands/preview", json=body, headers=hdr) as r:
            preview = await r.json()
        t_prev = time.monotonic() - t0
        async with s.post(base + "/api/v1/commands", json=body, headers=hdr) as r:
            group = await r.json()
        final: set[str] = set()
        while len(final) < group["total"]:
            msg = await ws.receive(timeout=120)
            docs = orjson.loads(msg.data)
            for d in docs if isinstance(docs, list) else [docs]:
                if d.get("type") == "command_results" and d["group"] == group["id"]:
                    final.update(r["device"] for r in d["results"] if r["status"] in FINAL)
    return {"total": group["total"], "preview_s": t_prev, "took": time.monotonic() - t0,
            "ids": preview["devices"]}


async def from_api(s: aiohttp.ClientSession, base: str, hdr: dict, ids: list[str], level: int) -> dict:
    t0 = time.monotonic()
    body = {"target": {"devices": ids}, "name": "set_dim", "args": {"level": level}}
    async with s.post(base + "/api/v1/commands", json=body, headers=hdr) as r:
        group, where = await r.json(), r.headers["Location"]
    while True:
        async with s.get(base + where + "?status=pending", headers=hdr) as r:
            g = await r.json()
        if g["done"]:
            break
        await asyncio.sleep(0.2)
    return {"total": group["total"], "took": time.monotonic() - t0, "counts": g["counts"]}


async def run(args: argparse.Namespace) -> None:
    with Stack(keep=args.keep) as stack:
        url = stack.create_database("bench")
        log(f"seeding a city with {args.lamps:,} streetlights")
        stack.seed(url, args.lamps)
        token = stack.token(url, "operator")
        srv = stack.start_server(url)
        with psycopg.connect(url) as conn:
            lamps = [r[0] for r in conn.execute("select id from devices where kind = 'streetlight'")]
            hull = conn.execute("select ST_AsGeoJSON(ST_Buffer(ST_ConvexHull(ST_Collect(geom)), 0.0005)) "
                                "from devices where kind = 'streetlight'").fetchone()[0]
        polygon = orjson.loads(hull)  # what an operator draws around the lamps
        ready, stop, answered = asyncio.Event(), asyncio.Event(), [0]
        fleet = asyncio.create_task(lamp_fleet(stack.mqtt.url, args.answer_ms, ready, answered))
        await ready.wait()
        feed = asyncio.create_task(telemetry(stack.mqtt.url, lamps, args.rate, stop))
        hdr = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as s:
            await asyncio.sleep(2)
            a0, t0 = await stored(s, srv.base_url, token), time.monotonic()
            m = await from_map(s, srv.base_url, hdr, polygon, 40)
            a = await from_api(s, srv.base_url, hdr, m["ids"], 60)
            a1, t1 = await stored(s, srv.base_url, token), time.monotonic()
        stop.set()
        for t in (feed, fleet):
            t.cancel()
        await asyncio.gather(feed, fleet, return_exceptions=True)
    ingest = (a1 - a0) / (t1 - t0)
    console.print(table(
        f"set_dim to {m['total']:,} lamps, telemetry at {args.rate:,.0f}/s "
        f"(committed {ingest:,.0f}/s meanwhile), lamps answer after {args.answer_ms:g} ms",
        ["path", "lamps", "selection → last result (s)", "commands/s"],
        [["map: drawn polygon, preview, send, results on the websocket", f"{m['total']:,}",
          f"{m['took']:.2f} (preview {m['preview_s']:.2f})", f"{m['total'] / m['took']:,.0f}"],
         ["API: devices list, poll the group", f"{a['total']:,}", f"{a['took']:.2f}",
          f"{a['total'] / a['took']:,.0f}"]]))
    record("commands_map", "map polygon group: selection to last result", m["took"], "s",
           baseline="the same group by the API", ratio=m["took"] / a["took"])
    record("commands_map", "API devices group: send to done", a["took"], "s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lamps", type=int, default=5000)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--answer-ms", type=float, default=50.0)
    p.add_argument("--quick", action="store_true", help="500 lamps, 300 readings/s")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.lamps, args.rate = 500, 300.0
    install_signal_handlers()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
