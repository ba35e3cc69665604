"""Citizens' reports (issue 14): categories, photos, and the report lifecycle in the DB.

A report gets a random tracking code (96 bits); a second report of the same category within
50 m and 48 h merges into the first (reporters + 1, its code points at the same report). A
streetlight_out report within 30 m of a lamp links to it and joins the lamp's open alarm.
The operators' and crews' side (live messages by role, merging, notifications, the service
level's escalation, KPIs) is in ops.py.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from server.errors import Conflict, Invalid, NotFound, Unavailable

STATUSES = ("received", "verified", "assigned", "in_progress", "resolved", "rejected")
OPEN = ("received", "verified", "assigned", "in_progress")

# service_code -> (English, Vietnamese)
CATEGORIES: dict[str, tuple[str, str]] = {
    "streetlight_out": ("Streetlight out", "Đèn đường không sáng"),
    "water_leak": ("Water leak", "Rò rỉ nước"),
    "fallen_tree": ("Fallen tree", "Cây đổ"),
    "tree_pruning": ("Tree needs pruning", "Cây cần cắt tỉa"),
    "pothole": ("Pothole", "Ổ gà"),
    "flooding": ("Flooding", "Ngập lụt"),
    "traffic_signal": ("Traffic signal fault", "Đèn giao thông hỏng"),
    "other": ("Other", "Khác"),
}
LINKED_KIND = {"streetlight_out": "streetlight", "fallen_tree": "tree", "tree_pruning": "tree"}
MERGE_M, MERGE_H, LINK_M = 50.0, 48, 30.0
MAX_PHOTOS, MAX_PX, MAX_PIXELS = 3, 1600, 40_000_000


def new_code() -> str:
    return secrets.token_urlsafe(12)


# ---------------------------------------------------------------- photos
def _refuse(field: str, detail: str) -> Invalid:
    return Invalid(detail, errors=[{"field": field, "reason": detail.split(": ", 1)[-1]}])


def clean_photo(data: bytes, field: str = "photo") -> bytes:
    """The picture re-encoded as a metadata-free JPEG at most MAX_PX on a side, or Invalid."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # a bomb raises DecompressionBombError, not a MemoryError
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ("JPEG", "PNG", "WEBP"):
                raise _refuse(field, f"{field}: only JPEG, PNG or WebP pictures (this is {probe.format})")
            if probe.width * probe.height > MAX_PIXELS:
                raise _refuse(field, f"{field}: {probe.width}x{probe.height} pixels is too large")
            probe.verify()
        with Image.open(io.BytesIO(data)) as img:
            # A JPEG decodes straight at 1/2, 1/4 or 1/8 of its size when that still covers the
            # output (DCT scaling): a 12-megapixel camera original costs a third as much.
            scale = MAX_PX / max(img.size)
            if scale < 1:
                img.draft("RGB", (int(img.width * scale), int(img.height * scale)))
            img.load()
            img = img.convert("RGB")
            img.thumbnail((MAX_PX, MAX_PX))
            out = io.BytesIO()
            img.save(out, "JPEG", quality=85)  # no exif=, no icc_profile=: nothing carried over
            return out.getvalue()
    except Invalid:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _refuse(field, f"{field}: the picture's dimensions are too large") from None
    except Exception as exc:
        raise _refuse(field, f"{field}: not a readable JPEG, PNG or WebP picture "
                             f"({type(exc).__name__})") from None


# Bytes in each photo directory: counted once by a scan, then kept up to date by put() (one
# process writes there), instead of a stat of every photo on every upload.
_USED: dict[Path, int] = {}
_USED_LOCK = threading.Lock()  # uploads clean and store their photos in worker threads


@dataclass
class PhotoStore:
    root: Path
    quota: int

    def used(self) -> int:
        with _USED_LOCK:
            if self.root not in _USED:
                _USED[self.root] = (sum(p.stat().st_size for p in self.root.glob("*.jpg"))
                                    if self.root.exists() else 0)
            return _USED[self.root]

    def check_room(self, incoming: int) -> None:
        import shutil
        self.root.mkdir(parents=True, exist_ok=True)
        if self.used() + incoming > self.quota or shutil.disk_usage(self.root).free < incoming * 4:
            raise Unavailable("the photo store is full; try again later", retry_after_s=3600)

    def put(self, jpeg: bytes) -> str:
        digest = hashlib.sha256(jpeg).hexdigest()
        path = self.root / f"{digest}.jpg"
        if not path.exists():
            # Two uploads of the same photo at once (a resend, two citizens) must not share
            # a temporary name: the second rename would find the first one's file gone.
            tmp = path.with_suffix(f".{secrets.token_hex(8)}.tmp")
            tmp.write_bytes(jpeg)
            tmp.replace(path)
            with _USED_LOCK:
                if self.root in _USED:
                    _USED[self.root] += len(jpeg)
        return digest

    def path(self, digest: str) -> Path | None:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return None
        p = self.root / f"{digest}.jpg"
        return p if p.exists() else None


# ---------------------------------------------------------------- the DB side
def photo_url(digest: str) -> str:
    return f"/api/v1/public/reports/photos/{digest}.jpg"


async def create(conn, *, category: str, lat: float, lon: float, description: str,
                 contact: str | None, photos: list[str], sla_hours: float, units: dict[str, str]) -> dict:
    """Store a report (or merge it into a near one); returns {"code", "status", "id"}."""
    code = new_code()
    async with conn.transaction():
        near = await conn.fetchrow(
            """select id, status from reports where category = $1 and status = any($4::text[])
               and created_at > now() - make_interval(hours => $5)
               and ST_DWithin(geom::geography, ST_SetSRID(ST_MakePoint($2, $3), 4326)::geography, $6)
               order by created_at limit 1 for update""",
            category, lon, lat, list(OPEN), MERGE_H, MERGE_M)
        if near is not None:
            rid, status = near["id"], near["status"]
            await conn.execute("update reports set reporters = reporters + 1, updated_at = now() "
                               "where id = $1", rid)
            await conn.execute("insert into report_events (report_id, status, note, by) values "
                               "($1, $2, 'another citizen reported it', 'public')", rid, status)
        else:
            ward = await conn.fetchval(
                "select code from wards where ST_Intersects(geom, ST_SetSRID(ST_MakePoint($1, $2), 4326)) "
                "limit 1", lon, lat)
            unit = units.get(f"{category}/{ward}") or units.get(category) or "crews"
            device = alarm = None
            kind = LINKED_KIND.get(category)
            if kind:
                device = await conn.fetchval(
                    """select id from devices where kind = $1 and ST_DWithin(geom::geography,
                       ST_SetSRID(ST_MakePoint($2, $3), 4326)::geography, $4)
                       order by geom::geography <-> ST_SetSRID(ST_MakePoint($2, $3), 4326)::geography
                       limit 1""", kind, lon, lat, LINK_M)
                if device:
                    alarm = await conn.fetchval("select id from alarms where device = $1 and state <> "
                                                "'closed' order by raised_at desc limit 1", device)
            status = "received"
            rid = await conn.fetchval(
                """insert into reports (code, category, geom, ward, description, contact, unit, device,
                   alarm_id, sla_due) values ($1, $2, ST_SetSRID(ST_MakePoint($3, $4), 4326), $5, $6,
                   $7, $8, $9, $10, now() + make_interval(secs => $11)) returning id""",
                code, category, lon, lat, ward, description, contact, unit, device, alarm,
                sla_hours * 3600.0)
            await conn.execute("insert into report_events (report_id, status, note, by) values "
                               "($1, 'received', null, 'public')", rid)
            if alarm:
                await conn.execute(
                    "insert into alarm_events (alarm_id, event, actor, reason, details) values "
                    "($1, 'comment', 'citizens', 'citizens confirmed it: report ' || $2, "
                    "jsonb_build_object('report', $3::bigint))", alarm, code, rid)
        await conn.execute("insert into report_codes (code, report_id) values ($1, $2)", code, rid)
        for digest in photos:
            await conn.execute("insert into report_photos (report_id, sha256, bytes) values ($1, $2, 0)",
                               rid, digest)
    return {"code": code, "status": status, "id": rid}


async def public_view(conn, code: str) -> dict:
    r = await conn.fetchrow("select r.* from report_codes c join reports r on r.id = c.report_id "
                            "where c.code = $1", code)
    if r is None:
        raise NotFound(f"no report with the code {code!r}")
    events = await conn.fetch("select at, status, note from report_events where report_id = $1 "
                              "order by at, id", r["id"])
    photos = await conn.fetch("select sha256, role from report_photos where report_id = $1 order by id",
                              r["id"])
    extra = await conn.fetchrow(
        "select (select name from wards where code = $2) as ward_name, ST_X(geom) as lon, ST_Y(geom) as lat, "
        "(select stars from report_ratings where report_id = $1) as stars from reports where id = $1",
        r["id"], r["ward"])
    return {"code": code, "status": r["status"], "category": r["category"], "ward": r["ward"],
            "unit": r["unit"], "reporters": r["reporters"],
            "events": [{"at": e["at"].isoformat(), "status": e["status"], "note": e["note"]} for e in events],
            "photos": [photo_url(p["sha256"]) for p in photos],
            # for the tracking page: which photos show the problem, which the work done
            "before": [photo_url(p["sha256"]) for p in photos if p["role"] != "after"],
            "after": [photo_url(p["sha256"]) for p in photos if p["role"] == "after"],
            "ward_name": extra["ward_name"], "lon": extra["lon"], "lat": extra["lat"],
            "created_at": r["created_at"].isoformat(), "sla_due": r["sla_due"].isoformat(),
            "rated": extra["stars"] is not None, "stars": extra["stars"]}


async def rate(conn, code: str, stars: int, comment: str | None) -> None:
    rid, status = (await conn.fetchrow(
        "select r.id, r.status from report_codes c join reports r on r.id = c.report_id "
        "where c.code = $1", code)) or (None, None)
    if rid is None:
        raise NotFound(f"no report with the code {code!r}")
    if status != "resolved":
        raise Conflict(f"the report is {status}: it can be rated once it is resolved")
    done = await conn.fetchval("insert into report_ratings (report_id, stars, comment) values ($1, $2, $3) "
                               "on conflict do nothing returning report_id", rid, stars, comment)
    if done is None:
        raise Conflict("this report has already been rated")
