"""Reading entities: one entity set's rows by its compiled filter and order (Observations
through :mod:`.observations`), and the rows of a navigation property for many parents at
once (``$expand``). Every value the caller wrote is a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from server.api.sta import observations as obs
from server.api.sta.filter import Path
from server.api.sta.model import DS_ID, OBS_ID, SEP, EntitySet
from server.api.sta.query import Options
from server.api.sta.sql import Compiler, canonical

TIME_PATHS = ("phenomenonTime", "resultTime")


@dataclass(frozen=True, slots=True)
class Link:
    """Rows of a set whose ``sql`` (over that set) is one of ``values``: the parent of a
    navigation."""

    sql: str
    values: tuple[str, ...]


@dataclass(slots=True)
class Rows:
    rows: list[Any]
    total: int | None  # with $count
    more: bool  # a next page exists


def _conditions(links: list[Link], params: list[Any]) -> list[str]:
    out = []
    for link in links:
        params.append(list(link.values))
        out.append(f"{link.sql} = any(${len(params)}::text[])")
        if link.sql == DS_ID:  # the device's part lets the planner use the devices' index
            params.append(sorted({v.rsplit(SEP, 1)[0] for v in link.values}))
            out.append(f"d.id = any(${len(params)}::text[])")
        elif link.sql == OBS_ID:
            params.append(sorted({v.split(SEP, 1)[0] for v in link.values}))
            out.append(f"d.id = any(${len(params)}::text[])")
    return out


def _compiled(es: EntitySet, opts: Options, params: list[Any]) -> tuple[str, str]:
    """(where, order by) of ``opts`` over ``es``; the set's own order breaks ties, so pages
    never overlap."""
    where = "true"
    if opts.filter is not None:
        where = Compiler(es.props, params, es.name, "$filter").where(opts.filter)
    order = Compiler(es.props, params, es.name, "$orderby").order(opts.orderby) if opts.orderby else []
    order += [f"{col} asc" for col in es.order]
    return where, ", ".join(order)


def _time_order(opts: Options) -> bool | None:
    """Observations ordered by time first: True newest first, False oldest first, None when
    the order starts with something else."""
    if not opts.orderby:
        return False
    node, desc = opts.orderby[0]
    if isinstance(node, Path) and canonical(node.parts) in TIME_PATHS:
        return desc
    return None


async def collection(conn: asyncpg.Connection, es: EntitySet, links: list[Link],
                     opts: Options) -> Rows:
    """A page of ``es`` under ``links`` by ``opts`` ($filter, $orderby, $skip, $top, $count)."""
    if es.telemetry:
        return await _observations(conn, links, opts)
    params: list[Any] = []
    where, order = _compiled(es, opts, params)
    conds = " and ".join([*_conditions(links, params), where])
    n = len(params)
    rows = await conn.fetch(
        f"select {es.columns} from {es.source} where {conds} order by {order} "
        f"offset ${n + 1}::bigint limit ${n + 2}::bigint", *params, opts.skip, opts.top + 1)
    total = None
    if opts.count:
        total = await conn.fetchval(f"select count(*) from {es.source} where {conds}", *params)
    return Rows(list(rows[:opts.top]), total, len(rows) > opts.top)


async def _observations(conn: asyncpg.Connection, links: list[Link], opts: Options) -> Rows:
    params: list[Any] = [None] * obs.POINT_PARAMS  # the points' arrays, bound per read
    where, order = _compiled(obs.OBSERVATIONS, opts, params)
    conds = " and ".join([*_conditions(links, params), where])
    scope = obs.Scope()
    for link in links:
        if link.sql == "d.id":
            scope.only_devices(set(link.values))
        elif link.sql == DS_ID:
            scope.only_datastreams(set(link.values))
        elif link.sql == OBS_ID:
            for value in link.values:
                scope.only_observation(value)
    scope = obs.narrow(scope, opts.filter)
    page = await obs.page(conn, scope, conds, params, order, _time_order(opts), opts.skip,
                          opts.top, opts.count)
    return Rows(page.rows, page.total, page.more)


async def one(conn: asyncpg.Connection, es: EntitySet, key: str, links: list[Link]) -> Any | None:
    """The entity of ``es`` with id ``key`` (under ``links``), or None."""
    got = await collection(conn, es, [*links, Link(es.id_sql, (key,))], Options(top=1))
    return got.rows[0] if got.rows else None


async def expand_many(conn: asyncpg.Connection, target: EntitySet, link_sql: str,
                      parents: list[str], opts: Options) -> dict[str, Rows]:
    """For each parent value, a page of ``target``'s rows linked to it (one statement with
    a window per parent; Observations are read per parent)."""
    if not parents:
        return {}
    if target.telemetry:
        return {p: await _observations(conn, [Link(link_sql, (p,))], opts) for p in parents}
    params: list[Any] = []
    where, order = _compiled(target, opts, params)
    conds = " and ".join([*_conditions([Link(link_sql, tuple(parents))], params), where])
    n = len(params)
    rows = await conn.fetch(
        f"select * from (select {target.columns}, ({link_sql})::text as nav_parent, "
        f"row_number() over (partition by {link_sql} order by {order}) as nav_rn, "
        f"count(*) over (partition by {link_sql}) as nav_n "
        f"from {target.source} where {conds}) x "
        f"where nav_rn > ${n + 1}::bigint and nav_rn <= ${n + 2}::bigint order by nav_parent, nav_rn",
        *params, opts.skip, opts.skip + opts.top + 1)
    out: dict[str, Rows] = {p: Rows([], 0 if opts.count else None, False) for p in parents}
    for r in rows:
        page = out[r["nav_parent"]]
        if opts.count:
            page.total = r["nav_n"]
        if len(page.rows) < opts.top:
            page.rows.append(r)
        else:
            page.more = True
    if opts.count:  # parents whose page is empty past $skip still have a count
        missing = [p for p, page in out.items() if not page.rows]
        if missing:
            params2: list[Any] = []
            where2, _ = _compiled(target, opts, params2)
            conds2 = " and ".join([*_conditions([Link(link_sql, tuple(missing))], params2), where2])
            for r in await conn.fetch(f"select ({link_sql})::text as p, count(*) as n from "
                                      f"{target.source} where {conds2} group by 1", *params2):
                out[r["p"]].total = r["n"]
    return out


async def expand_one(conn: asyncpg.Connection, target: EntitySet, link_sql: str,
                     parents: list[str], opts: Options) -> dict[str, Any]:
    """For each parent value, the one ``target`` row linked to it (a to-one navigation)."""
    if not parents:
        return {}
    if target.telemetry:  # no to-one navigation leads to an observation
        return {}
    params: list[Any] = []
    where, _ = _compiled(target, opts, params)
    conds = " and ".join([*_conditions([Link(link_sql, tuple(parents))], params), where])
    rows = await conn.fetch(f"select {target.columns}, ({link_sql})::text as nav_parent "
                            f"from {target.source} where {conds}", *params)
    return {r["nav_parent"]: r for r in rows}
