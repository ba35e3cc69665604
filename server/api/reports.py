"""Citizens' reports over HTTP: the public side (no token) and the operators' side.

Public: POST /api/v1/public/reports (multipart), GET .../{code}, POST .../{code}/rating,
GET .../stats, and the photos (metadata-free JPEGs by content hash). Operators: the list,
one report, and the lifecycle actions; a crew token sees and resolves only its crew's.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time

from aiohttp import BodyPartReader, web

from server import keys
from server import reports as domain
from server.errors import Invalid, NotFound
from server.http.auth import require
from server.http.jsonutil import json_response
from server.http.problems import Problem
from server.notify.routing import Recipient
from server.reports import ops

routes = web.RouteTableDef()
_BUCKETS: dict[str, tuple[float, float]] = {}  # client address -> (tokens, at)
MAX_TEXT = 4000


def _bad(field: str, reason: str) -> Invalid:
    return Invalid(f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


# Text here is plain text, shown to the public as text: markup in it is refused, not stored
# (a tag-like "<" before a letter, "/x", "?x" or "!"; "< 5 m" stays fine), as are control
# characters other than tab and line breaks.
_MARKUP = re.compile(r"<\s*(?:[/?]?\s*[A-Za-z]|!)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DECIMAL = re.compile(r"[+-]?[0-9]{1,3}(\.[0-9]{1,15})?")


def _text(value: str | None, field: str, required: bool = True, limit: int = MAX_TEXT) -> str | None:
    if value is None or not value.strip():
        if required:
            raise _bad(field, "is required")
        return None
    if "\x00" in value:
        raise _bad(field, "contains a NUL character")
    if len(value) > limit:
        raise _bad(field, f"is longer than {limit} characters")
    if _CONTROL.search(value):
        raise _bad(field, "contains control characters")
    if _MARKUP.search(value):
        raise _bad(field, "contains HTML markup; send plain text")
    return value.strip()


def _coordinate(value: str | None, field: str, lo: float, hi: float) -> float:
    """A decimal number in [lo, hi]: no exponent, hex, underscores, NaN or infinity."""
    text = _text(value, field, limit=40)
    if not _DECIMAL.fullmatch(text):
        raise _bad(field, "is not a decimal number of degrees")
    number = float(text)
    if not lo <= number <= hi:
        raise _bad(field, f"must be between {lo} and {hi}")
    return number


def _take(request: web.Request) -> None:
    rate = request.app[keys.SETTINGS].reports.rate_per_min / 60.0
    burst, now, who = 5.0, time.monotonic(), request.remote or "?"
    tokens, at = _BUCKETS.get(who, (burst, now))
    tokens = min(burst, tokens + (now - at) * rate)
    if tokens < 1.0:
        raise Problem(429, "too many reports from this address; try again later",
                      headers={"Retry-After": str(math.ceil((1.0 - tokens) / rate))})
    _BUCKETS[who] = (tokens - 1.0, now)


# The Idempotency-Key header (IETF httpapi draft): the report page sends one random key per
# report and sends again, with the same key, when an answer is lost on a slow line; the same
# key within REPLAY_HOURS gets the report the first request made instead of a second one.
_SUBMISSION_KEY = re.compile(r"[A-Za-z0-9_-]{16,100}")
REPLAY_HOURS = 48


def _submission_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip().strip('"')  # the draft writes it as a structured-field string
    if not _SUBMISSION_KEY.fullmatch(key):
        raise _bad("Idempotency-Key", "must be 16 to 100 letters, digits, '-' or '_' (a random UUID)")
    return key


def _fingerprint(fields: dict[str, str], raw_photos: list[bytes]) -> str:
    digest = hashlib.sha256()
    for name in ("category", "lat", "lon", "description", "contact"):
        digest.update(f"{name}\0{fields.get(name, '')}\0".encode())
    for photo in raw_photos:
        digest.update(hashlib.sha256(photo).digest())
    return digest.hexdigest()


async def _replay(conn, key: str, fingerprint: str) -> web.Response | None:
    """The answer a key's first request got, or None when the key is new (or expired)."""
    row = await conn.fetchrow(
        """select s.fingerprint, s.code, r.status from report_submissions s
           join report_codes c on c.code = s.code join reports r on r.id = c.report_id
           where s.key = $1 and s.at > now() - make_interval(hours => $2)""", key, REPLAY_HOURS)
    if row is None:
        return None
    if row["fingerprint"] != fingerprint:
        raise Problem(422, "this Idempotency-Key was sent with a different report; make a new key "
                           "for each report", errors=[{"field": "Idempotency-Key",
                                                      "reason": "already used for another report"}])
    return _made(row["code"], row["status"], {"Idempotent-Replayed": "true"})


def _made(code: str, status: str, headers: dict[str, str] | None = None) -> web.Response:
    """The answer to a report made (or, with the replay header, made before)."""
    return json_response({"code": code, "status": status, "url": f"/api/v1/public/reports/{code}"},
                         status=201, headers=headers)


@routes.post("/api/v1/public/reports")
async def create_report(request: web.Request) -> web.Response:
    fields: dict[str, str] = {}
    raw_photos: list[bytes] = []
    if request.content_type == "application/x-www-form-urlencoded":  # a form without photos
        try:
            fields = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        except (UnicodeDecodeError, ValueError):
            raise _bad("(body)", "is not UTF-8 text") from None
    elif not request.content_type.startswith("multipart/"):
        raise _bad("(body)", "send multipart/form-data")
    else:
        try:
            await _read_multipart(request, fields, raw_photos)
        except (Invalid, Problem):
            raise
        except Exception:
            raise _bad("(body)", "is not readable multipart/form-data") from None
    return await _store(request, fields, raw_photos)


async def _read_multipart(request: web.Request, fields: dict[str, str], raw_photos: list[bytes]) -> None:
    # request.multipart() streams past client_max_size, and a gzip-encoded body inflates
    # while it is read: every part is counted against the body limit as it arrives.
    budget = [request.app[keys.SETTINGS].api.max_body_bytes]
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise _bad(part.name or "(body)", "nested multipart is not accepted")
        data = await _read_part(part, budget)
        if part.name == "photo":
            if len(raw_photos) >= domain.MAX_PHOTOS:
                raise _bad("photo", f"at most {domain.MAX_PHOTOS} photos")
            raw_photos.append(data)
        elif part.name:
            try:
                fields[part.name] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise _bad(part.name, "is not UTF-8 text") from None


async def _read_part(part: BodyPartReader, budget: list[int]) -> bytes:
    chunks = []
    while chunk := await part.read_chunk(1 << 16):
        budget[0] -= len(chunk)
        if budget[0] < 0:
            raise Problem(413, "the report is larger than this endpoint accepts; send smaller photos")
        chunks.append(chunk)
    return b"".join(chunks)


async def _store(request: web.Request, fields: dict[str, str], raw_photos: list[bytes]) -> web.Response:
    settings = request.app[keys.SETTINGS].reports
    if fields.get("website"):  # the honeypot: hidden from people, filled by bots
        raise _bad("website", "must be left empty")
    key = _submission_key(request)
    fingerprint = _fingerprint(fields, raw_photos) if key else ""
    if key:  # a resend of a report already made: its answer again, no rate token spent
        async with request.app[keys.DB].acquire() as conn:
            if (replay := await _replay(conn, key, fingerprint)) is not None:
                return replay
    _take(request)
    category = _text(fields.get("category"), "category")
    if category not in domain.CATEGORIES:
        raise _bad("category", f"is not one of {', '.join(domain.CATEGORIES)}")
    coords = {name: _coordinate(fields.get(name), name, lo, hi)
              for name, lo, hi in (("lat", -90, 90), ("lon", -180, 180))}
    description = _text(fields.get("description"), "description")
    contact = _text(fields.get("contact"), "contact", required=False, limit=200)
    store = domain.PhotoStore(settings.photo_dir, settings.photo_quota_bytes)
    digests: list[str] = []
    if raw_photos:
        # Decoding and re-encoding cost ~10 ms of CPU a photo (bench/reports.py): in a thread,
        # where Pillow releases the GIL, so ingest's event loop does not wait for it.
        def clean_and_keep() -> list[str]:
            cleaned = [domain.clean_photo(p) for p in raw_photos]  # all checked before any is kept
            store.check_room(sum(map(len, cleaned)))
            return [store.put(c) for c in cleaned]

        digests = await asyncio.to_thread(clean_and_keep)
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        if key:
            await conn.execute(
                "delete from report_submissions where at <= now() - make_interval(hours => $1)", REPLAY_HOURS)
            # A concurrent request with the same key waits here until the first one commits.
            claimed = await conn.fetchval("insert into report_submissions (key, fingerprint) values ($1, $2) "
                                          "on conflict do nothing returning key", key, fingerprint)
            if claimed is None and (replay := await _replay(conn, key, fingerprint)) is not None:
                return replay
        out = await domain.create(
            conn, category=category, lat=coords["lat"], lon=coords["lon"], description=description,
            contact=contact, photos=digests,
            sla_hours=settings.sla_hours.get(category, settings.default_sla_hours), units=settings.units)
        if key:
            await conn.execute("update report_submissions set code = $2 where key = $1", key, out["code"])
        fresh = await ops.fetch(conn, out["id"])
    if fresh is not None:
        ops.publish(request.app, fresh)  # a new report, or one more reporter: live on the consoles
    return _made(out["code"], out["status"])


@routes.get("/api/v1/public/reports/stats")
async def stats(request: web.Request) -> web.Response:
    q = request.query
    async with request.app[keys.DB].acquire() as conn:
        row = await conn.fetchrow(
            """select count(*) as received,
                      count(*) filter (where status = 'resolved') as resolved,
                      count(*) filter (where status = 'resolved' and resolved_at <= sla_due) as in_sla,
                      percentile_cont(0.5) within group (
                          order by extract(epoch from resolved_at - created_at))
                          filter (where status = 'resolved') as median_s,
                      (select count(*) filter (where stars >= 4)::float / nullif(count(*), 0)
                         from report_ratings t where t.report_id = any(array_agg(r.id))) as sat
               from reports r
               where ($1::timestamptz is null or created_at >= $1)
                 and ($2::timestamptz is null or created_at < $2)
                 and ($3::text is null or ward = $3) and ($4::text is null or category = $4)""",
            _when(q.get("from"), "from"), _when(q.get("to"), "to"), q.get("ward"), q.get("category"))
    resolved = row["resolved"]
    return json_response({
        "received": row["received"], "resolved": resolved,
        "within_sla_pct": round(100.0 * row["in_sla"] / resolved, 1) if resolved else None,
        "median_hours_to_resolve": (round(row["median_s"] / 3600.0, 2)
                                    if row["median_s"] is not None else None),
        "satisfaction_pct": round(100.0 * row["sat"], 1) if row["sat"] is not None else None})


def _when(value: str | None, field: str):
    if value is None:
        return None
    from datetime import datetime
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(field, "is not an RFC 3339 date-time") from None


@routes.get("/api/v1/public/reports/photos/{name}")
async def photo(request: web.Request) -> web.StreamResponse:
    settings = request.app[keys.SETTINGS].reports
    name = request.match_info["name"]
    path = domain.PhotoStore(settings.photo_dir, 0).path(name.removesuffix(".jpg"))
    if path is None or not name.endswith(".jpg"):
        raise NotFound("no such photo")
    return web.Response(body=path.read_bytes(), content_type="image/jpeg",
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "public, max-age=31536000, immutable"})


@routes.get("/api/v1/public/reports/{code}")
async def public_report(request: web.Request) -> web.Response:
    async with request.app[keys.DB].acquire() as conn:
        return json_response(await domain.public_view(conn, request.match_info["code"]))


@routes.post("/api/v1/public/reports/{code}/rating")
async def rating(request: web.Request) -> web.Response:
    try:
        doc = await request.json()
    except ValueError:
        raise _bad("(body)", "is not JSON") from None
    stars = doc.get("stars") if isinstance(doc, dict) else None
    if isinstance(stars, float) and stars.is_integer():
        stars = int(stars)
    if not isinstance(stars, int) or isinstance(stars, bool) or not 1 <= stars <= 5:
        raise _bad("stars", "must be an integer from 1 to 5")
    comment = doc.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise _bad("comment", "must be text")
    comment = _text(comment, "comment", required=False)
    async with request.app[keys.DB].acquire() as conn:
        await domain.rate(conn, request.match_info["code"], stars, comment)
    return json_response({"code": request.match_info["code"], "stars": stars}, status=201)


# ---------------------------------------------------------------- operators
_OP_SQL = ops.OP_SQL
_op_view = ops.view


def _shown(who, row) -> dict:
    """A report for this caller: the reporter's contact only to operators, admins and the
    crew it is assigned to (server/reports/ops.py)."""
    doc = ops.for_role(_op_view(row), who.role, who.crew)
    return doc if doc is not None else {}


@routes.get("/api/v1/reports/kpis")
async def report_kpis(request: web.Request) -> web.Response:
    """The reports' KPIs beside the alarm KPIs: open, overdue, resolved within the service
    level, median time to resolve, satisfaction."""
    require(request, "operator", "integrator", "viewer")
    async with request.app[keys.DB].acquire() as conn:
        return json_response(await ops.kpis(conn))


@routes.get("/api/v1/reports")
async def list_reports(request: web.Request) -> web.Response:
    who = require(request, "operator", "integrator", "viewer", "crew")
    q = request.query
    status = q.get("status")
    if status is not None and status not in (*domain.STATUSES, "open", "all"):
        raise _bad("status", f"is not one of {', '.join(domain.STATUSES)}, open, all")
    bbox = None
    if q.get("bbox") is not None:
        try:
            bbox = [float(v) for v in q["bbox"].split(",")]
        except ValueError:
            raise _bad("bbox", "is not minLon,minLat,maxLon,maxLat") from None
        if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
            raise _bad("bbox", "is not minLon,minLat,maxLon,maxLat")
    statuses = (list(domain.OPEN) if status == "open" else None if status in (None, "all")
                else [status])
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(
            _OP_SQL + """ where ($1::text[] is null or r.status = any($1))
               and ($2::text is null or r.ward = $2)
               and ($3::text is null or r.category = $3) and ($4::text is null or r.crew = $4)
               and ($5::float8[] is null or r.geom && ST_MakeEnvelope($5[1], $5[2], $5[3], $5[4], 4326))
               order by r.created_at desc, r.id desc limit 1000""",
            statuses, q.get("ward") or None, q.get("category") or None,
            who.crew if who.role == "crew" else None, bbox)
    return json_response({"reports": [_shown(who, r) for r in rows]})


async def _load(conn, request: web.Request, *, lock: bool = False):
    who = require(request, "operator", "integrator", "viewer", "crew")
    rid = request.match_info["id"]
    row = None
    if rid.isdigit() and len(rid) < 19:
        row = await conn.fetchrow(_OP_SQL + " where r.id = $1" + (" for update of r" if lock else ""),
                                  int(rid))
    if who.role == "crew" and (row is None or row["crew"] != who.crew):
        raise Problem(403, "a crew token sees only the reports assigned to its crew")
    if row is None:
        raise NotFound(f"no report {rid!r}")
    return who, row


@routes.get("/api/v1/reports/{id}")
async def get_report(request: web.Request) -> web.Response:
    async with request.app[keys.DB].acquire() as conn:
        who, row = await _load(conn, request)
        doc = _shown(who, row)
        doc["events"] = [{"at": e["at"].isoformat(), "status": e["status"], "note": e["note"], "by": e["by"]}
                         for e in await conn.fetch("select * from report_events where report_id = $1 "
                                                   "order by at, id", row["id"])]
        photos = await conn.fetch("select sha256, role from report_photos where report_id = $1 order by id",
                                  row["id"])
        doc["photos"] = [domain.photo_url(p["sha256"]) for p in photos]
        doc["after"] = [domain.photo_url(p["sha256"]) for p in photos if p["role"] == "after"]
        doc["devices"] = [dict(d) for d in await conn.fetch(
            "select id, kind, name from devices where id = $1", row["device"])] if row["device"] else []
        if row["alarm_id"]:
            a = await conn.fetchrow("select id, state, severity, message, assigned_crew from alarms "
                                    "where id = $1", row["alarm_id"])
            doc["alarm"] = dict(a) if a else None
        rating = await conn.fetchrow("select stars, comment from report_ratings where report_id = $1",
                                     row["id"])
        doc["rating"] = dict(rating) if rating else None
    return json_response(doc)


# action -> (roles besides admin, statuses it may start from, the status it leads to)
ACTIONS = {
    "verify": (("operator",), ("received",), "verified"),
    "assign": (("operator",), ("received", "verified", "assigned", "in_progress"), "assigned"),
    "start": (("operator", "crew"), ("assigned",), "in_progress"),
    "reject": (("operator",), ("received", "verified", "assigned", "in_progress"), "rejected"),
    "resolve": (("operator", "crew"), ("received", "verified", "assigned", "in_progress"), "resolved"),
    "comment": (("operator", "crew"), domain.STATUSES, None),
}


async def _action_body(request: web.Request, name: str) -> tuple[dict, list[bytes]]:
    """The action's JSON object, or (resolve only) multipart/form-data with ``note`` and up to
    three ``photo`` files: the after-photos a crew takes of the work done."""
    photos: list[bytes] = []
    if name == "resolve" and request.content_type.startswith("multipart/"):
        fields: dict[str, str] = {}
        try:
            await _read_multipart(request, fields, photos)
        except (Invalid, Problem):
            raise
        except Exception:
            raise _bad("(body)", "is not readable multipart/form-data") from None
        return fields, photos
    try:
        doc = await request.json() if request.can_read_body else {}
    except ValueError:
        raise _bad("(body)", "is not JSON") from None
    if not isinstance(doc, dict):
        raise _bad("(body)", "must be a JSON object")
    return doc, photos


def _action(name: str):
    roles, sources, target = ACTIONS[name]

    async def handler(request: web.Request) -> web.Response:
        require(request, *roles)
        doc, raw_photos = await _action_body(request, name)
        digests: list[str] = []
        async with request.app[keys.DB].acquire() as conn:
            who, row = await _load(conn, request)  # whose report it is, before the body's faults
            unknown = set(doc) - {"note", "crew"}
            if unknown:
                raise _bad(sorted(unknown)[0], "is not a field of this action")
            note = doc.get("note")
            if note is not None and not isinstance(note, str):
                raise _bad("note", "must be text")
            note = _text(note, "note", required=name in ("reject", "resolve", "comment"))
            if raw_photos:  # checked and cleaned as the citizens' are, before anything changes
                settings = request.app[keys.SETTINGS].reports
                store = domain.PhotoStore(settings.photo_dir, settings.photo_quota_bytes)

                def clean_and_keep() -> list[str]:
                    cleaned = [domain.clean_photo(p) for p in raw_photos]
                    store.check_room(sum(map(len, cleaned)))
                    return [store.put(c) for c in cleaned]

                digests = await asyncio.to_thread(clean_and_keep)
            async with conn.transaction():
                who, row = await _load(conn, request, lock=True)
                crew = None
                if name == "assign":
                    crew = doc.get("crew")
                    known = isinstance(crew, str) and await conn.fetchval(
                        "select 1 from crews where id = $1", crew)
                    if not known:
                        raise _bad("crew", "is not a known crew id")
                if row["status"] not in sources:
                    raise Problem(409, f"the report is {row['status']}: it cannot be {name} now")
                status = target or row["status"]
                await conn.execute(
                    "update reports set status = $2, updated_at = now(), crew = coalesce($3, crew), "
                    "resolved_at = case when $2 = 'resolved' then now() else resolved_at end where id = $1",
                    row["id"], status, crew)
                await conn.execute("insert into report_events (report_id, status, note, by) "
                                   "values ($1, $2, $3, $4)", row["id"], status,
                                   note if name != "assign" else (note or f"crew {crew}"), who.actor)
                for digest in digests:
                    await conn.execute("insert into report_photos (report_id, sha256, role, bytes) "
                                       "values ($1, $2, 'after', 0)", row["id"], digest)
                fresh = await ops.fetch(conn, row["id"])
                if name == "assign":
                    await ops.notify(conn, request.app[keys.SETTINGS].notify, fresh, "assigned",
                                     [Recipient("crew", crew)], {"by": who.actor})
        ops.publish(request.app, fresh, previous_crew=row["crew"])
        return json_response(ops.for_role(fresh, who.role, who.crew) or {})

    handler.__name__ = f"report_{name}"
    return handler


for _name in ACTIONS:
    routes.post(f"/api/v1/reports/{{id}}/{_name}")(_action(_name))


@routes.post("/api/v1/reports/{id}/merge")
async def merge_report(request: web.Request) -> web.Response:
    """Fold this report into another (``{"into": id}``, the one kept): the same problem
    reported twice farther apart or later than intake merges by itself."""
    require(request, "operator")
    try:
        doc = await request.json()
    except ValueError:
        raise _bad("(body)", "is not JSON") from None
    if not isinstance(doc, dict):
        raise _bad("(body)", "must be a JSON object")
    async with request.app[keys.DB].acquire() as conn, conn.transaction():
        who, row = await _load(conn, request, lock=True)  # whose and which, before the body's faults
        unknown = set(doc) - {"into", "note"}
        if unknown:
            raise _bad(sorted(unknown)[0], "is not a field of this action")
        into = doc.get("into")
        if isinstance(into, float) and into.is_integer():  # JSON's 567.0 is the integer 567
            into = int(into)
        if not isinstance(into, int) or isinstance(into, bool) or not 0 < into < 2**63:
            raise _bad("into", "must be the id (an integer) of the report to keep")
        note = doc.get("note")
        if note is not None and not isinstance(note, str):
            raise _bad("note", "must be text")
        note = _text(note, "note", required=False)
        if into == row["id"]:
            raise _bad("into", "is this report itself; name the other report to keep")
        kept = await conn.fetchrow("select status from reports where id = $1 for update", into)
        if kept is None:
            raise _bad("into", f"is not a report (no report {into})")
        for status, which in ((row["status"], "this report"), (kept["status"], "the report to keep")):
            if status not in domain.OPEN:
                raise Problem(409, f"{which} is {status}: only open reports are merged")
        source = _op_view(row)
        fresh = await ops.merge(conn, source, into, who.actor, note)
    ops.publish(request.app, {"id": source["id"], "status": "merged", "merged_into": into,
                              "crew": source["crew"]}, previous_crew=source["crew"])
    ops.publish(request.app, fresh)
    return json_response(fresh)
