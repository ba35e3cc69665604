"""The audit log and the alarm events are hash chains: ``ioc audit verify`` finds the first
row changed, removed or slipped in, and concurrent writers never fork the chain."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from server.cli.main import main
from server.store import chain
from server.store.audit import AuditEntry, audit, audit_many
from server.store.db import create_pool


async def _alarm(conn: asyncpg.Connection, n: int) -> int:
    return await conn.fetchval(
        "insert into alarms (rule, device, severity, priority, state, active, message, dedup_key)"
        " values ('r', $1, 'major', 2, 'active_unacked', true, 'm', $2) returning id", f"D-{n}",
        f"r:D-{n}:{uuid.uuid4().hex}")


async def _fill(url: str) -> None:
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await _write(conn)
    finally:
        await pool.close()


async def _write(conn: asyncpg.Connection) -> None:
    for i in range(5):
        await audit(conn, "alice (operator)", "device.update", device=f"SL-{i}",
                    details={"i": i, "text": "Đèn hỏng \"x\""})
    await audit_many(conn, [AuditEntry("bob (admin)", "command.succeeded", f"SL-{i}")
                            for i in range(5)])
    alarm = await _alarm(conn, uuid.uuid4().int % 10_000)
    for event in ("raised", "acked", "cleared"):
        await conn.execute("insert into alarm_events (alarm_id, event, actor) values ($1, $2, 'x')",
                           alarm, event)


async def _verdicts(url: str) -> dict[str, chain.Verdict]:
    conn = await asyncpg.connect(url)
    try:
        return {v.table: v for v in await chain.verify_all(conn)}
    finally:
        await conn.close()


async def test_every_writer_is_chained_and_verify_names_the_first_broken_link(db_url, capsys,
                                                                          monkeypatch):
    await _fill(db_url)
    ok = await _verdicts(db_url)
    assert ok["audit_log"].ok and ok["audit_log"].rows == 10
    assert ok["alarm_events"].ok and ok["alarm_events"].rows == 3

    monkeypatch.setenv("IOC_DATABASE_URL", db_url)
    assert await asyncio.to_thread(main, ["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert "audit_log: OK, 10 rows chained" in out and "alarm_events: OK, 3 rows chained" in out

    conn = await asyncpg.connect(db_url)
    try:
        ids = [r["id"] for r in await conn.fetch("select id from audit_log order by chain_seq")]
        # An edit that keeps the row looking plausible: the actor rewritten.
        await conn.execute("update audit_log set actor = 'mallory (operator)' where id = $1", ids[3])
        await conn.execute("update audit_log set details = '{}' where id = $1", ids[7])
        event_ids = [r["id"] for r in await conn.fetch("select id from alarm_events order by id")]
        await conn.execute("delete from alarm_events where id = $1", event_ids[1])
    finally:
        await conn.close()

    bad = await _verdicts(db_url)
    assert not bad["audit_log"].ok and bad["audit_log"].broken_id == ids[3]
    assert "changed" in bad["audit_log"].reason
    assert not bad["alarm_events"].ok and bad["alarm_events"].broken_id == event_ids[2]
    assert "missing" in bad["alarm_events"].reason

    assert await asyncio.to_thread(main, ["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert f"audit_log: BROKEN at id {ids[3]}" in out
    assert f"alarm_events: BROKEN at id {event_ids[2]}" in out


async def test_a_row_replaced_with_a_recomputed_hash_breaks_the_next_link(db_url):
    await _fill(db_url)
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("select id, chain_seq from audit_log order by chain_seq")
        victim = rows[4]["id"]
        # The forger recomputes the changed row's own hash, as the trigger would have...
        text = chain.ROW_TEXT["audit_log"].format(p="", seq="chain_seq")
        await conn.execute("update audit_log set actor = 'mallory' where id = $1", victim)
        await conn.execute(f"update audit_log set hash = sha256(prev_hash || convert_to({text}, "
                           "'UTF8')) where id = $1", victim)
    finally:
        await conn.close()
    v = (await _verdicts(db_url))["audit_log"]
    # ...but the next row still links to the old hash.
    assert not v.ok and v.broken_id == rows[5]["id"] and "replaced" in v.reason


async def test_concurrent_writers_extend_one_chain(db_url):
    """Eight connections writing at once, some many rows per transaction, some rolling back
    a savepoint: one chain, no gaps, no fork."""
    pool = await create_pool(db_url, min_size=8, max_size=8)

    async def writer(w: int) -> None:
        for i in range(15):
            async with pool.acquire() as conn, conn.transaction():
                await audit(conn, f"w{w}", "x.y", target=str(i))
                if i % 3 == 0:
                    try:
                        async with conn.transaction():  # a savepoint, rolled back
                            await audit(conn, f"w{w}", "x.undone", target=str(i))
                            raise RuntimeError
                    except RuntimeError:
                        pass
                if i % 5 == 0:
                    await audit_many(conn, [AuditEntry(f"w{w}", "x.many", target=str(j))
                                            for j in range(4)])

    try:
        await asyncio.gather(*(writer(w) for w in range(8)))
    finally:
        await pool.close()
    v = (await _verdicts(db_url))["audit_log"]
    assert v.ok, v
    assert v.rows == 8 * (15 + 3 * 4)
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("select max(chain_seq) from audit_log") == v.rows
    finally:
        await conn.close()


def test_unknown_tables_are_refused():
    with pytest.raises(ValueError, match="chained tables"):
        asyncio.run(chain.verify(None, "devices"))  # type: ignore[arg-type]


async def test_rows_written_before_the_migration_join_the_chain(db_url):
    from server.store import migrate

    await asyncio.to_thread(migrate.downgrade, db_url, "-1")  # to before the chain
    try:
        await _fill(db_url)
    finally:
        await asyncio.to_thread(migrate.upgrade, db_url)
    await _fill(db_url)  # and rows after it continue the same chain
    v = await _verdicts(db_url)
    assert v["audit_log"].ok and v["audit_log"].rows == 20
    assert v["alarm_events"].ok and v["alarm_events"].rows == 6
