"""The hash chain's cost: alarm events and audit rows stored with it, beside without it.

    .venv/bin/python bench/audit_chain.py            # 4,000 events per case
    .venv/bin/python bench/audit_chain.py --quick    # 1,000

Every row of ``alarm_events`` and ``audit_log`` is chained by a trigger (migration
0011_security_chain, server/store/chain.py). On PostgreSQL with fsync on, in one run:

1. **Alarm transitions, the persister's way**: one transaction per transition (update the
   alarm, insert its event), one writer, then four writers at once (the persister, the
   API's operators, the notifier): events/s chained, and with the chain trigger disabled
   on a second database (the baseline).
2. **A group command's outcomes**: 10,000 audit rows in one statement (``audit_many``).

Then ``ioc audit verify``'s speed over what was written. The figures show what the chain
costs the alarm engine's stores; bench/rules.py shows the end-to-end latency.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))

import report
from common import Stack, console, install_signal_handlers, log
from rich.table import Table

from server.store import chain
from server.store.audit import AuditEntry, audit_many
from server.store.db import create_pool

NAME = "audit_chain"


async def _alarms(pool, n: int, rule: str) -> list[int]:
    async with pool.acquire() as conn:
        return [r["id"] for r in await conn.fetch(
            "insert into alarms (rule, device, severity, priority, state, active, message, "
            "dedup_key) select $2, 'D-' || g, 'major', 2, 'active_unacked', true, 'm', "
            "$2 || ':D-' || g from generate_series(1, $1) g returning id", n, rule)]


async def transitions(url: str, events: int, writers: int) -> float:
    """Events per second, ``writers`` connections each storing its share, one per commit."""
    pool = await create_pool(url, min_size=writers, max_size=writers)
    try:
        ids = await _alarms(pool, writers * 10, f"bench-{writers}")

        async def writer(w: int) -> None:
            mine = ids[w * 10:(w + 1) * 10]
            for i in range(events // writers):
                alarm = mine[i % len(mine)]
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute("update alarms set value = $2 where id = $1", alarm, float(i))
                    await conn.execute(
                        "insert into alarm_events (alarm_id, event, actor, details) "
                        "values ($1, 'acknowledged', 'bench (operator)', $2)",
                        alarm, {"i": i, "w": w})

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        return (events // writers * writers) / (time.perf_counter() - t0)
    finally:
        await pool.close()


async def bulk_audit(url: str, rows: int) -> float:
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        entries = [AuditEntry("bench (operator)", "command.succeeded", f"SL-{i:06d}",
                              details={"command": 1}) for i in range(rows)]
        async with pool.acquire() as conn:
            t0 = time.perf_counter()
            async with conn.transaction():
                await audit_many(conn, entries)
            return rows / (time.perf_counter() - t0)
    finally:
        await pool.close()


async def verify_rate(url: str) -> tuple[float, int]:
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            t0 = time.perf_counter()
            verdicts = await chain.verify_all(conn)
            dt = time.perf_counter() - t0
        assert all(v.ok for v in verdicts), verdicts
        rows = sum(v.rows for v in verdicts)
        return rows / dt, rows
    finally:
        await pool.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--events", type=int, default=None)
    args = ap.parse_args()
    events = args.events or (1000 if args.quick else 4000)
    install_signal_handlers()
    report.context(NAME, events=events, fsync="on")
    with Stack() as stack:
        chained = stack.create_database("chained")
        plain = stack.create_database("plain")
        import psycopg

        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("alter table alarm_events disable trigger alarm_events_zz_chain")
            conn.execute("alter table audit_log disable trigger audit_log_zz_chain")
        rows = []
        for writers in (1, 4):
            log(f"{events} alarm transitions, {writers} writer(s), with and without the chain")
            base = asyncio.run(transitions(plain, events, writers))
            with_chain = asyncio.run(transitions(chained, events, writers))
            rows.append((f"alarm transitions/s, {writers} writer(s)", with_chain, base))
        log("10,000 audit rows in one statement")
        base = asyncio.run(bulk_audit(plain, 10_000))
        with_chain = asyncio.run(bulk_audit(chained, 10_000))
        rows.append(("audit rows/s, one 10,000-row statement", with_chain, base))
        rate, verified = asyncio.run(verify_rate(chained))

    table = Table(title=f"Hash chain cost ({events} events per case, fsync on)")
    for col in ("", "chained", "without chain", "ratio"):
        table.add_column(col, justify="right")
    for figure, value, base in rows:
        table.add_row(figure, f"{value:,.0f}", f"{base:,.0f}", f"{value / base:.2f}")
        report.record(NAME, figure, value, "rows/s", baseline="the same without the chain trigger",
                      ratio=value / base)
    table.add_row("ioc audit verify, rows/s", f"{rate:,.0f}", "", "")
    report.record(NAME, "verify rows/s", rate, "rows/s", note=f"{verified:,} rows verified")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
