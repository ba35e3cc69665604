"""Open311 GeoReport v2 under /open311/v2/, in JSON (``.json``) and XML (``.xml``): services,
and requests read and posted.

A request's ``service_request_id`` is the report's public number, not its tracking code: the
code is the reporter's (it rates the work), so only the POST's ``service_notice`` says it,
to the one who posted; ``requests/{id}`` takes either. ``status`` is
``open`` or ``closed`` (resolved and rejected are closed). The reporter's email, phone and
names are kept as the report's private contact, never shown. Errors come in the Open311
shape: ``[{"code": 400, "description": ...}]`` in JSON, ``<errors><error><code>…`` in XML.

The XML is the spec's: a root element naming the list (``services``, ``service_requests``),
one child per item (``service``, ``request``), one element per field, empty when the field
is null, ``true``/``false`` for booleans.
"""

from __future__ import annotations

from datetime import datetime
from xml.etree import ElementTree as ET

import orjson
from aiohttp import web

from server import keys
from server import reports as domain
from server.api.reports import _coordinate, _take, _text
from server.errors import DomainError, Invalid, Unavailable
from server.http.problems import Problem
from server.reports import ops

routes = web.RouteTableDef()
BASE = "/open311/v2"
XML = "text/xml"


def _is_xml(request: web.Request) -> bool:
    return request.path.endswith(".xml")


def _xml_value(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _xml(root: str, item: str | None, doc) -> bytes:
    """``doc``: a list of flat dicts (each an ``item`` element) or one dict (the root's fields)."""
    top = ET.Element(root)

    def fill(parent: ET.Element, fields: dict) -> None:
        for key, value in fields.items():
            child = ET.SubElement(parent, key)
            if isinstance(value, list):  # a service definition's attributes
                for entry in value:
                    fill(ET.SubElement(child, "attribute"), entry)
            else:
                child.text = _xml_value(value)

    if isinstance(doc, list):
        for entry in doc:
            fill(ET.SubElement(top, item), entry)
    else:
        fill(top, doc)
    return ET.tostring(top, encoding="utf-8", xml_declaration=True)


def _out(request: web.Request, doc, root: str, item: str | None, status: int = 200) -> web.Response:
    if _is_xml(request):
        return web.Response(body=_xml(root, item, doc), status=status, content_type=XML, charset="utf-8")
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def _error(request: web.Request, status: int, description: str, headers=None) -> web.Response:
    resp = _out(request, [{"code": status, "description": description}], "errors", "error", status)
    resp.headers.update(headers or {})
    return resp


@web.middleware
async def open311_errors(request: web.Request, handler):
    """Errors under /open311/ in the spec's shape, not problem+json."""
    if not request.path.startswith(BASE + "/"):
        return await handler(request)
    try:
        return await handler(request)
    except Problem as p:
        return _error(request, p.status, p.detail, p.headers)
    except DomainError as e:
        name = type(e).__name__
        status = 404 if name == "NotFound" else 409 if name == "Conflict" else 503 if name == "Unavailable" \
            else 400
        retry = getattr(e, "retry_after_s", None) if isinstance(e, Unavailable) else None
        return _error(request, status, e.detail, {"Retry-After": str(retry)} if retry else None)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(request, e.status, e.reason or "error")


def _service(code: str) -> dict:
    en, vi = domain.CATEGORIES[code]
    return {"service_code": code, "service_name": en, "description": f"{en} / {vi}", "metadata": False,
            "type": "realtime", "keywords": code.replace("_", ", "), "group": "city"}


@routes.get(BASE + "/services.json")
@routes.get(BASE + "/services.xml")
async def services(request: web.Request) -> web.Response:
    return _out(request, [_service(c) for c in domain.CATEGORIES], "services", "service")


@routes.get(BASE + "/services/{code}.json")
@routes.get(BASE + "/services/{code}.xml")
async def service_definition(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    if code not in domain.CATEGORIES:
        return _error(request, 404, f"no service {code!r}")
    return _out(request, {"service_code": code, "attributes": []}, "service_definition", None)


_SQL = """select r.*, ST_X(r.geom) as lon, ST_Y(r.geom) as lat,
                 (select note from report_events e where e.report_id = r.id and e.note is not null
                  order by at desc, id desc limit 1) as last_note,
                 (select sha256 from report_photos p where p.report_id = r.id order by id limit 1) as photo
          from reports r"""


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _request_doc(request: web.Request, r) -> dict:
    settings = request.app[keys.SETTINGS].reports
    name = domain.CATEGORIES.get(r["category"], (r["category"],))[0]
    del settings
    return {
        "service_request_id": str(r["id"]), "status": "closed" if r["status"] in ("resolved", "rejected")
        else "open", "status_notes": r["last_note"], "service_name": name, "service_code": r["category"],
        "description": r["description"], "agency_responsible": r["unit"], "service_notice": None,
        "requested_datetime": _iso(r["created_at"]), "updated_datetime": _iso(r["updated_at"]),
        "expected_datetime": _iso(r["sla_due"]), "address": r["ward"], "address_id": None,
        "zipcode": None, "lat": r["lat"], "long": r["lon"],
        "media_url": (f"{request.scheme}://{request.host}{domain.photo_url(r['photo'])}"
                      if r["photo"] else None)}


def _ids(value: str | None) -> list[int] | None:
    """``service_request_id``: the reports' public numbers, comma-separated."""
    if not value:
        return None
    parts = value.split(",")
    if not all(p.isascii() and p.isdigit() and len(p) < 19 for p in parts):
        raise Invalid("service_request_id must be request ids (numbers), comma-separated")
    return [int(p) for p in parts]


def _when(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"{field} is not a W3C date-time") from None


@routes.get(BASE + "/requests.json")
@routes.get(BASE + "/requests.xml")
async def list_requests(request: web.Request) -> web.Response:
    q = request.query
    status = q.get("status")
    if status is not None and status not in ("open", "closed"):
        raise Invalid("status must be open or closed")
    codes = q.get("service_code")
    codes = [c for c in codes.split(",")] if codes else None
    start, end = _when(q.get("start_date"), "start_date"), _when(q.get("end_date"), "end_date")
    ids = q.get("service_request_id")
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(
            _SQL + """ where ($1::text[] is null or r.category = any($1))
                and ($2::timestamptz is null or r.created_at >= $2)
                and ($3::timestamptz is null or r.created_at <= $3)
                and ($4::text is null or (r.status in ('resolved', 'rejected')) = ($4 = 'closed'))
                and ($5::bigint[] is null or r.id = any($5))
                order by r.created_at desc limit 1000""",
            codes, start, end, status, _ids(ids))
    return _out(request, [_request_doc(request, r) for r in rows], "service_requests", "request")


@routes.get(BASE + "/requests/{id}.json")
@routes.get(BASE + "/requests/{id}.xml")
async def get_request(request: web.Request) -> web.Response:
    async with request.app[keys.DB].acquire() as conn:
        asked = request.match_info["id"]
        # the public number, or the poster's own tracking code (said in the POST's service_notice)
        if asked.isascii() and asked.isdigit() and len(asked) < 19:
            row = await conn.fetchrow(_SQL + " where r.id = $1", int(asked))
        else:
            row = await conn.fetchrow(
                _SQL + " where r.id = (select report_id from report_codes where code = $1)", asked)
    if row is None:
        return _error(request, 404, "no such service request")
    return _out(request, [_request_doc(request, row)], "service_requests", "request")


@routes.post(BASE + "/requests.json")
@routes.post(BASE + "/requests.xml")
async def post_request(request: web.Request) -> web.Response:
    if request.content_type == "application/json":
        try:
            doc = await request.json()
        except ValueError:
            raise Invalid("the body is not JSON") from None
        if not isinstance(doc, dict):
            raise Invalid("the body must be a JSON object")
        fields = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in doc.items()
                  if v is not None}
    else:
        try:
            fields = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        except (UnicodeDecodeError, ValueError):
            raise Invalid("the body is not a readable form") from None
    code = _text(fields.get("service_code"), "service_code", limit=100)
    if code not in domain.CATEGORIES:
        raise Invalid(f"service_code {code!r} is not one of {', '.join(domain.CATEGORIES)}")
    coords = {name: _coordinate(fields.get(name), name, lo, hi)
              for name, lo, hi in (("lat", -90, 90), ("long", -180, 180))}
    description = _text(fields.get("description"), "description")
    who = [_text(fields.get(k), k, required=False, limit=200)
           for k in ("first_name", "last_name", "email", "phone")]
    contact = " ".join(w for w in who if w) or None
    _take(request)
    settings = request.app[keys.SETTINGS].reports
    async with request.app[keys.DB].acquire() as conn:
        out = await domain.create(
            conn, category=code, lat=coords["lat"], lon=coords["long"], description=description,
            contact=contact, photos=[], sla_hours=settings.sla_hours.get(code, settings.default_sla_hours),
            units=settings.units)
        fresh = await ops.fetch(conn, out["id"])
    if fresh is not None:
        ops.publish(request.app, fresh)  # live on the operators' consoles, as the form's reports
    notice = (f"Tracking code {out['code']}: {request.scheme}://{request.host}/reports/{out['code']} "
              f"(keep it: it rates the work once it is done) / Mã theo dõi {out['code']}")
    return _out(request, [{"service_request_id": str(out["id"]), "service_notice": notice, "account_id": None,
                           "token": None}], "service_requests", "request", 201)
