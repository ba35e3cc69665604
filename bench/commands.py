"""Group command benchmark: dim N lamps over MQTT while telemetry keeps flowing.

The whole stack (``bench/common.py``): PostgreSQL (fsync on), mosquitto, the seeded city
and ``ioc serve``. One MQTT client plays every lamp: it answers each command on its result
topic after ``--answer-ms``. Meanwhile a publisher sends ``--rate`` readings/s of telemetry.
Figures:

* the group: time from ``POST /api/v1/commands`` (202) to every lamp's result stored, and
  commands per second;
* ingest beside it: readings committed per second in the seconds before the group and while
  it runs (``ioc_readings_stored_total``), so a group that stalls ingest shows as a drop.

    .venv/bin/python bench/commands.py                  # 5,000 lamps, 1,000 readings/s
    .venv/bin/python bench/commands.py --quick          # 500 lamps, a short run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import aiomqtt
import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Stack, console, install_signal_handlers, log, parse_metrics, table
from report import context as record_context
from report import record

from server.mqtt.link import parse_mqtt_url  # common put the repository root on the path


async def lamp_fleet(url: str, answer_ms: float, ready: asyncio.Event, answered: list[int]) -> None:
    async with aiomqtt.Client(**parse_mqtt_url(url), identifier="bench-lamps-" + uuid.uuid4().hex[:6],
                              max_inflight_messages=1000) as client:
        client.pending_calls_threshold = 100_000  # thousands of answers in flight is the point
        await client.subscribe("ioc/v1/+/commands", qos=1)
        ready.set()
        pending: set[asyncio.Task] = set()

        async def reply(dev: str, cid: str) -> None:
            await asyncio.sleep(answer_ms / 1000)
            await client.publish(f"ioc/v1/{dev}/commands/{cid}/result", b'{"ok": true}', qos=1)
            answered[0] += 1

        async for msg in client.messages:
            cmd = orjson.loads(msg.payload)
            t = asyncio.create_task(reply(msg.topic.value.split("/")[2], cmd["id"]))
            pending.add(t)
            t.add_done_callback(pending.discard)


async def telemetry(url: str, ids: list[str], rate: float, stop: asyncio.Event) -> None:
    async with aiomqtt.Client(**parse_mqtt_url(url), identifier="bench-tm-" + uuid.uuid4().hex[:6],
                              max_inflight_messages=1000) as client:
        client.pending_calls_threshold = 100_000
        step, i, nxt = 0.02, 0, time.monotonic()
        per_step = max(1, round(rate * step))
        while not stop.is_set():
            for _ in range(per_step):
                dev = ids[i % len(ids)]
                i += 1
                body = orjson.dumps({"values": {"power_w": 40.0 + i % 7}})
                await client.publish(f"ioc/v1/{dev}/telemetry", body, qos=1)
            nxt += step
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))


async def stored(session: aiohttp.ClientSession, base: str, token: str) -> float:
    async with session.get(base + "/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        m = parse_metrics(await r.text())
    return m.get("ioc_readings_stored_total", 0.0)


async def run(args: argparse.Namespace) -> None:
    with Stack(keep=args.keep) as stack:
        url = stack.create_database("bench")
        log(f"seeding a city with {args.lamps:,} streetlights")
        stack.seed(url, args.lamps)
        token = stack.token(url, "operator")
        srv = stack.start_server(url)
        with psycopg.connect(url) as conn:
            lamps = [r[0] for r in conn.execute("select id from devices where kind = 'streetlight'")]
        ready, stop, answered = asyncio.Event(), asyncio.Event(), [0]
        fleet = asyncio.create_task(lamp_fleet(stack.mqtt.url, args.answer_ms, ready, answered))
        await ready.wait()
        feed = asyncio.create_task(telemetry(stack.mqtt.url, lamps, args.rate, stop))
        hdr = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as s:
            await asyncio.sleep(2)  # steady state
            a0, t0 = await stored(s, srv.base_url, token), time.monotonic()
            await asyncio.sleep(args.baseline_s)
            a1, t1 = await stored(s, srv.base_url, token), time.monotonic()
            body = {"target": {"kind": "streetlight"}, "name": "set_dim", "args": {"level": 40}}
            async with s.post(srv.base_url + "/api/v1/commands/preview", json=body, headers=hdr) as r:
                preview = await r.json()
            g0 = time.monotonic()
            async with s.post(srv.base_url + "/api/v1/commands", json=body, headers=hdr) as r:
                if r.status != 202:
                    raise RuntimeError(f"group command refused: {r.status} {await r.text()}")
                group, where = await r.json(), r.headers["Location"]
            accepted = time.monotonic() - g0
            while True:
                async with s.get(srv.base_url + where, headers=hdr) as r:
                    g = await r.json()
                if g["done"]:
                    break
                await asyncio.sleep(0.2)
            took = time.monotonic() - g0
            b1 = await stored(s, srv.base_url, token)
        stop.set()
        for t in (feed, fleet):
            t.cancel()
        await asyncio.gather(feed, fleet, return_exceptions=True)
    before = (a1 - a0) / (t1 - t0)
    during = (b1 - a1) / (g0 + took - t1)  # from the end of the baseline to the last result
    console.print(table(
        f"group set_dim over {group['total']:,} lamps (preview said {preview['count']:,}), "
        f"telemetry at {args.rate:,.0f}/s, lamps answer after {args.answer_ms:g} ms",
        ["figure", "value"],
        [["POST /api/v1/commands answered (s)", f"{accepted:.2f}"],
         ["every result stored (s)", f"{took:.2f}"],
         ["commands per second", f"{group['total'] / took:,.0f}"],
         ["outcomes", ", ".join(f"{k} {v}" for k, v in g["counts"].items() if v)],
         ["readings committed/s before", f"{before:,.0f}"],
         ["readings committed/s during the group", f"{during:,.0f}"],
         ["ratio during / before", f"{during / before:.2f}" if before else "n/a"]]))
    # For bench/REPORT.md (bench/report.py; nothing when run by hand).
    record_context("commands", lamps=f"{group['total']:,}", telemetry=f"{args.rate:,.0f} readings/s",
                   answer=f"each lamp answers after {args.answer_ms:g} ms over MQTT")
    ok = g["counts"].get("succeeded", 0)
    record("commands", "group set_dim: every result stored", took, "s",
           note=f"{ok:,} of {group['total']:,} succeeded")
    record("commands", "group set_dim: commands/s", group["total"] / took, "commands/s")
    record("commands", "lamps that answered and succeeded", ok, "lamps", goal=f"{group['total']:,}",
           met=ok == group["total"])
    record("commands", "readings committed/s during the group", during, "readings/s",
           baseline="the same before the group", ratio=during / before if before else None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lamps", type=int, default=5000)
    p.add_argument("--rate", type=float, default=1000.0, help="telemetry readings per second")
    p.add_argument("--answer-ms", type=float, default=50.0, help="each lamp's answer delay")
    p.add_argument("--baseline-s", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="500 lamps, 300 readings/s")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = p.parse_args()
    if args.quick:
        args.lamps, args.rate, args.baseline_s = 500, 300.0, 3.0
    install_signal_handlers()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
