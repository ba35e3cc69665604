"""``/api/v1/rules``: the alarm rules (the API's own and, read-only, the rule files'), and a
backtest that runs a rule over stored telemetry before it is enabled.

Integrators (and admins) write; everyone reads. Rules from files (``source`` is
``file:<path>``) are changed by editing the file, which is re-read on its own. Every change
is kept in ``rule_history`` (who, when, before and after), read by operators and up at
``/api/v1/rules/{id}/history``; ``PATCH`` (a JSON merge patch, ``{"enabled": false}``)
enables and disables a rule without sending it whole.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from aiohttp import web

from rules.backtest import Backtest
from rules.models import Rule, RuleError, parse_rule, rule_document
from server import keys
from server.api.models import BacktestIn
from server.errors import Conflict, Invalid, NotFound
from server.http import validate
from server.http.auth import require
from server.http.jsonutil import json_response, read_json
from server.store import rulehistory
from server.store.audit import audit
from server.store.compress import UNIX_OFFSET_US
from server.store.history import count_points, read_points

routes = web.RouteTableDef()

# A rule id, but not "backtest": that path is the backtest's alone, so GET on it is a 405
# that allows POST, not a rule named "backtest".
RULE = "/api/v1/rules/{id:(?!backtest$)[^/]+}"

BACKTEST_MAX_DAYS = 31
BACKTEST_MAX_ROWS = 5_000_000
FETCH_ROWS = 50_000


def _row_json(r, engine) -> dict[str, Any]:
    return {"id": r["id"], "kind": r["kind"], "source": r["source"], "enabled": r["enabled"],
            "evaluated": r["id"] in engine.core.rules, "document": r["document"],
            "created_at": r["created_at"], "updated_at": r["updated_at"]}


# "request: rule 'p-low': select.kind: Input should be ..." → field select.kind
_ERROR_LINE = re.compile(r"rule (?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|#\d+): "
                         r"([^\s:]+): (?:Value error, )?(.*)$")


def field_errors(lines: list[str]) -> list[dict[str, str]]:
    """The rule models' and the engine's error lines as the house's problem errors:
    ``[{"field", "reason", "message"}]``; ``(rule)`` for what concerns the rule as a whole
    (no limit given, an unknown kind). ``message`` is the whole line."""
    out = []
    for line in lines:
        m = _ERROR_LINE.search(line)
        field, reason = (m.group(1), m.group(2)) if m else ("(rule)", line)
        out.append({"field": field, "reason": reason, "message": line})
    return out


def _parse(doc: Any) -> Rule:
    validate.refuse_nul(doc, "the rule")  # the rule models take any text
    try:
        return parse_rule(doc, source="request")
    except RuleError as err:
        raise Invalid(f"the rule is not valid: {err.errors[0]}", errors=field_errors(err.errors)) from None


def _check_with(engine, rule: Rule, replacing: str | None = None) -> None:
    """The rule must work alongside the others (known metrics, existing members)."""
    others = [r for rid, r in engine.core.rules.items() if rid not in (rule.id, replacing)]
    errors = [e for e in engine.core.validate([*others, rule]) if f"rule {rule.id!r}" in e]
    if errors:
        raise Invalid(f"the rule is not valid: {errors[0]}", errors=field_errors(errors))


@routes.get("/api/v1/rules")
async def list_rules(request: web.Request) -> web.Response:
    engine = request.app[keys.ALARMS]
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch("select * from rules order by id")
    return json_response({"rules": [_row_json(r, engine) for r in rows],
                          "errors": engine.rule_errors})


@routes.get(RULE)
async def get_rule(request: web.Request) -> web.Response:
    rule_id = request.match_info["id"]
    async with request.app[keys.DB].acquire() as conn:
        row = await conn.fetchrow("select * from rules where id = $1", rule_id)
    if row is None:
        raise NotFound(f"no rule {rule_id!r}")
    return json_response(_row_json(row, request.app[keys.ALARMS]))


async def _store(request: web.Request, rule: Rule, *, create: bool) -> web.Response:
    who = require(request, "integrator")
    engine = request.app[keys.ALARMS]
    _check_with(engine, rule)
    doc = rule_document(rule)
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        cur = await conn.fetchrow("select source, document from rules where id = $1 for update",
                                  rule.id)
        if cur is not None and cur["source"] != "api":
            raise Conflict(f"rule {rule.id!r} comes from {cur['source'][5:]}; edit that file")
        if cur is not None and create:
            raise Conflict(f"rule {rule.id!r} exists; PUT /api/v1/rules/{rule.id} replaces it")
        await conn.execute(
            """insert into rules (id, kind, document, source, enabled) values ($1, $2, $3, 'api', $4)
               on conflict (id) do update set kind = excluded.kind, document = excluded.document,
                   enabled = excluded.enabled, updated_at = now()""",
            rule.id, rule.kind, doc, rule.enabled)
        await audit(conn, who.actor, "rule.create" if cur is None else "rule.update",
                    target=rule.id, details={"kind": rule.kind})
        await rulehistory.record(conn, rule.id, who.actor, "api",
                                 cur["document"] if cur is not None else None, doc)
        row = await conn.fetchrow("select * from rules where id = $1", rule.id)
    await engine.reload_rules()
    return json_response(_row_json(row, engine), status=201 if cur is None else 200,
                         headers={"Location": f"/api/v1/rules/{rule.id}"})


@routes.post("/api/v1/rules")
async def create_rule(request: web.Request) -> web.Response:
    require(request, "integrator")
    return await _store(request, _parse(await read_json(request)), create=True)


@routes.put(RULE)
async def put_rule(request: web.Request) -> web.Response:
    require(request, "integrator")
    rule_id = request.match_info["id"]
    doc = await read_json(request)
    if not isinstance(doc, dict):
        raise Invalid("send the rule as a JSON object")
    if doc.get("id", rule_id) != rule_id:
        raise Invalid(f"the body's id {doc.get('id')!r} is not {rule_id!r}; a rule cannot be "
                          "renamed (create the new one, delete the old)")
    return await _store(request, _parse({**doc, "id": rule_id}), create=False)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge member by member, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


@routes.patch(RULE)
async def patch_rule(request: web.Request) -> web.Response:
    """A JSON merge patch of the rule's document: ``{"enabled": false}`` disables it."""
    require(request, "integrator")
    rule_id = request.match_info["id"]
    patch = await read_json(request)
    if not isinstance(patch, dict):
        raise Invalid('send a JSON object of the fields to change, e.g. {"enabled": false}')
    if patch.get("id", rule_id) != rule_id:
        raise Invalid(f"the body's id {patch.get('id')!r} is not {rule_id!r}; a rule cannot be "
                      "renamed (create the new one, delete the old)", field="id")
    async with request.app[keys.DB].acquire() as conn:
        cur = await conn.fetchrow("select source, document from rules where id = $1", rule_id)
    if cur is None:
        raise NotFound(f"no rule {rule_id!r}")
    if cur["source"] != "api":
        raise Conflict(f"rule {rule_id!r} comes from {cur['source'][5:]}; edit that file")
    return await _store(request, _parse(merge_patch(cur["document"], patch)), create=False)


@routes.get(RULE + "/history")
async def rule_history(request: web.Request) -> web.Response:
    """Each change of the rule, newest first: who, when, before, after and the fields changed.
    A deleted rule's history stays readable."""
    require(request, "operator", "integrator")
    rule_id = request.match_info["id"]
    async with request.app[keys.DB].acquire() as conn:
        changes = await rulehistory.read(conn, rule_id)
        exists = await conn.fetchval("select exists(select 1 from rules where id = $1)", rule_id)
    if not changes and not exists:
        raise NotFound(f"no rule {rule_id!r}, and no history of one")
    return json_response({"rule": rule_id, "history": changes})


@routes.delete(RULE)
async def delete_rule(request: web.Request) -> web.Response:
    who = require(request, "integrator")
    rule_id = request.match_info["id"]
    engine = request.app[keys.ALARMS]
    users = [r.id for r in engine.core.rules.values() if rule_id in r.members]
    if users:
        raise Conflict(f"rule {rule_id!r} is the member of {', '.join(users)}; change those first")
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        cur = await conn.fetchrow("select source, document from rules where id = $1 for update",
                                  rule_id)
        if cur is None:
            raise NotFound(f"no rule {rule_id!r}")
        if cur["source"] != "api":
            raise Conflict(f"rule {rule_id!r} comes from {cur['source'][5:]}; edit that file")
        await conn.execute("delete from rules where id = $1", rule_id)
        await audit(conn, who.actor, "rule.delete", target=rule_id)
        await rulehistory.record(conn, rule_id, who.actor, "api", cur["document"], None)
    await engine.reload_rules()
    return web.Response(status=204)


def _when(doc: dict, name: str, default: datetime) -> datetime:
    raw = doc.get(name)
    if raw is None:
        return default
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return datetime.fromtimestamp(raw / 1000, UTC)
        t = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise Invalid(f"{name} must be an RFC 3339 time or epoch milliseconds, got {raw!r}",
                      field=name) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@routes.post("/api/v1/rules/backtest")
async def backtest(request: web.Request) -> web.Response:
    """{"rule": {...}, "from": t, "to": t} → what the rule would have raised then."""
    require(request, "integrator", "operator")
    doc = (await validate.body(request, BacktestIn)).model_dump(by_alias=True)
    rule = _parse(doc["rule"])
    now = datetime.now(UTC)
    end = _when(doc, "to", now)
    try:
        start = _when(doc, "from", end - timedelta(days=1))
    except OverflowError:
        raise Invalid("to is too early; give from as well", field="from") from None
    if start >= end:
        raise Invalid("from must be before to", field="from")
    if end - start > timedelta(days=BACKTEST_MAX_DAYS):
        raise Invalid(f"a backtest covers at most {BACKTEST_MAX_DAYS} days; narrow from/to")
    engine = request.app[keys.ALARMS]
    members = []
    for m in rule.members:
        member = engine.core.rules.get(m)
        if member is None:
            async with request.app[keys.DB].acquire() as conn:
                stored = await conn.fetchval("select document from rules where id = $1", m)
            if stored is None:
                raise Invalid(f"rule {rule.id!r}: member: no rule {m!r} to correlate")
            member = _parse(stored)
        members.append(member)
    try:
        bt = Backtest(rule, members, engine.core.table, engine.core.metrics)
    except RuleError as err:
        raise Invalid(f"the rule is not valid: {err.errors[0]}", errors=field_errors(err.errors)) from None
    device_keys = bt.device_keys()
    metric_ids = bt.metric_ids()
    keys_list = device_keys.tolist()
    async with request.app[keys.DB].acquire() as conn:
        # through the history's one read path: compressed days read as the row store does
        total = await count_points(conn, start, end, keys_list, metric_ids)
        if total > BACKTEST_MAX_ROWS:
            raise Invalid(f"{total:,} readings in that range; a backtest reads at most "
                               f"{BACKTEST_MAX_ROWS:,}: narrow from/to or the rule's select")
        p = await read_points(conn, start, end, keys_list, metric_ids)
    p = p.take(np.argsort(p.ts, kind="stable"))
    epoch_s = (p.ts + UNIX_OFFSET_US) / 1e6
    for i in range(0, len(p), FETCH_ROWS):
        part = slice(i, i + FETCH_ROWS)
        bt.feed(p.device[part].astype(np.int64), p.metric[part].astype(np.int64), epoch_s[part],
                p.value[part], p.quality[part].astype(np.int64))
    report = bt.report(min(end, now).timestamp())

    def iso(t: float | None) -> datetime | None:
        return datetime.fromtimestamp(t, UTC) if t is not None else None

    table = engine.core.table
    for a in report["alarms"]:
        a["raised_at"], a["cleared_at"] = iso(a["raised_at"]), iso(a["cleared_at"])
        # where it would have been raised, so the console can mark it on the map
        slot = table.slot_of_id.get(a["device"], -1)
        a["geometry"] = ({"type": "Point", "coordinates": [float(table.lon[slot]),
                                                           float(table.lat[slot])]}
                         if slot >= 0 and np.isfinite(table.lon[slot]) else None)
    report["first"], report["last"] = iso(report["first"]), iso(report["last"])
    return json_response({"from": start, "to": end, **report})
