"""The hash chains of ``audit_log`` and ``alarm_events``, and their verification.

A BEFORE INSERT trigger (migration 0011_security_chain) gives every row of both tables
``chain_seq`` (1, 2, 3, … in the order rows were chained), ``prev_hash`` (the hash of the
row before it; 32 zero bytes for the first) and ``hash`` = sha256(prev_hash || the row's
canonical text, :data:`ROW_TEXT`). Changing any chained column of a row breaks its own hash;
deleting or inserting a row in the middle breaks the next row's link; rewriting the whole
chain from some row on changes the head, which :func:`verify` prints so it can be compared
with a copy kept elsewhere (a log, a ticket, a printout).

Verification runs in PostgreSQL with the expressions written here, not with the database's
own trigger functions, so whoever can change a function cannot change the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

GENESIS = bytes(32)
# Canonical text of a row: a JSON array of the chained columns (JSON keeps NULL apart from
# '' and escapes what needs it); times in UTC, whatever the session's TimeZone.
ROW_TEXT = {
    "audit_log": "jsonb_build_array({seq}, {p}id, {p}at at time zone 'UTC', {p}actor, {p}action, "
                 "{p}device, {p}target, {p}details)::text",
    "alarm_events": "jsonb_build_array({seq}, {p}id, {p}alarm_id, {p}at at time zone 'UTC', "
                    "{p}event, {p}actor, {p}reason, {p}details, {p}alarm)::text",
}
TABLES = tuple(ROW_TEXT)


@dataclass(frozen=True, slots=True)
class Verdict:
    table: str
    rows: int
    head: str | None  # hex hash of the last link
    broken_id: int | None = None  # the first row whose link does not hold
    broken_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_id is None

    def __str__(self) -> str:
        if self.ok:
            head = f", head {self.head}" if self.head else ""
            return f"{self.table}: OK, {self.rows:,} rows chained{head}"
        return (f"{self.table}: BROKEN at id {self.broken_id} (chain_seq {self.broken_seq}): "
                f"{self.reason}")


def _check_sql(table: str) -> str:
    text = ROW_TEXT[table].format(p="r.", seq="r.chain_seq")
    return f"""
        select id, chain_seq,
               case
                 when r.chain_seq is null or r.hash is null or r.prev_hash is null
                   then 'the row is not chained (written with the trigger disabled?)'
                 when r.hash <> sha256(r.prev_hash || convert_to({text}, 'UTF8'))
                   then 'the row was changed after it was written'
                 when lag(r.chain_seq) over w is null and r.chain_seq = 1
                      and r.prev_hash <> '\\x{GENESIS.hex()}'::bytea
                   then 'the first row does not start the chain'
                 when lag(r.chain_seq) over w <> r.chain_seq - 1
                   then format('rows are missing before it (after chain_seq %s)',
                               lag(r.chain_seq) over w)
                 when r.prev_hash <> lag(r.hash) over w
                   then 'the row before it was replaced or removed'
               end as reason
        from {table} r
        window w as (order by r.chain_seq nulls first)
    """


async def verify(conn: asyncpg.Connection, table: str) -> Verdict:
    """The first broken link of ``table``'s chain, in chain order, or OK with the count."""
    if table not in ROW_TEXT:
        raise ValueError(f"{table!r} has no hash chain; chained tables: {', '.join(TABLES)}")
    rows = await conn.fetchval(f"select count(*) from {table}")
    bad = await conn.fetchrow(
        f"select id, chain_seq, reason from ({_check_sql(table)}) x where reason is not null "
        "order by chain_seq nulls first limit 1")
    head = await conn.fetchval(
        f"select encode(hash, 'hex') from {table} where chain_seq is not null "
        "order by chain_seq desc limit 1")
    if bad is not None:
        return Verdict(table, rows, head, bad["id"], bad["chain_seq"], bad["reason"])
    return Verdict(table, rows, head)


async def verify_all(conn: asyncpg.Connection) -> list[Verdict]:
    return [await verify(conn, t) for t in TABLES]
