"""The public report intake against hostile input: files that lie about being pictures,
decompression and zip bombs, huge dimensions, gzip-inflated bodies, bad coordinates, markup
and control characters in the text, the honeypot. Each is refused with a status and a
reason naming the field, and nothing is stored: no report, no photo row, no file. A
polyglot (a real JPEG with a ZIP appended) is accepted as the picture it is, and what was
appended does not survive the re-encoding."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from server.settings import ReportsSettings
from tests.helpers import aq, running

GOOD = {"category": "pothole", "lat": "21.5901", "lon": "105.8402", "description": "a hole in the road"}


def _img(fmt: str, size=(64, 48), mode="RGB", **kw) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 128 if mode in ("1", "L") else (120, 60, 30)).save(out, fmt, **kw)
    return out.getvalue()


def _png_text_bomb() -> bytes:
    """A valid PNG with a zTXt chunk that inflates to 64 MB."""
    png = _img("PNG")
    payload = b"Comment\x00\x00" + zlib.compress(b"\x00" * (64 << 20), 9)
    chunk = struct.pack(">I", len(payload)) + b"zTXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"zTXt" + payload) & 0xFFFFFFFF)
    return png[:33] + chunk + png[33:]  # after the IHDR chunk


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height``."""
    real = _img("JPEG", (8, 8))
    sof = real.index(b"\xff\xc0")
    return real[:sof + 5] + struct.pack(">HH", height, width) + real[sof + 9:]


def _zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("photo.jpg", b"\x00" * (32 << 20))
    return out.getvalue()


# (name, photo bytes, the field the refusal must name, words the reason must contain)
PHOTOS = [
    ("html as jpeg", b"<html><script>alert(1)</script></html>", "photo", "not a readable"),
    ("svg with script", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "photo",
     "not a readable"),
    ("gif as jpeg", _img("GIF"), "photo", "only JPEG, PNG or WebP"),
    ("tiff as jpeg", _img("TIFF"), "photo", "only JPEG, PNG or WebP"),
    ("bmp as jpeg", _img("BMP"), "photo", "only JPEG, PNG or WebP"),
    ("pdf as jpeg", b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "photo", "not a readable"),
    ("elf as jpeg", b"\x7fELF\x02\x01\x01" + b"\x00" * 200, "photo", "not a readable"),
    ("truncated jpeg", _img("JPEG", (400, 300))[:300], "photo", "not a readable"),
    ("jpeg magic then garbage", b"\xff\xd8\xff\xe0" + b"\x13\x37" * 500, "photo", "not a readable"),
    ("zip bomb as jpeg", _zip_bomb(), "photo", "not a readable"),
    ("png bomb 400 MP", _img("PNG", (20000, 20000), mode="1"), "photo", "too large"),
    ("huge 9000x9000", _img("PNG", (9000, 9000), mode="1"), "photo", "too large"),
    ("jpeg claiming 65000x65000", _jpeg_claiming(65000, 65000), "photo", "too large"),
    ("png text chunk bomb", _png_text_bomb(), "photo", "not a readable"),
    ("empty file", b"", "photo", "not a readable"),
]

# (name, fields over GOOD, the field named)
FIELDS = [
    ("lat above 90", {"lat": "90.0001"}, "lat"), ("lat below -90", {"lat": "-91"}, "lat"),
    ("lon above 180", {"lon": "180.5"}, "lon"), ("lat nan", {"lat": "nan"}, "lat"),
    ("lat inf", {"lat": "inf"}, "lat"), ("lon -inf", {"lon": "-Infinity"}, "lon"),
    ("lat overflow", {"lat": "1e999"}, "lat"), ("lat exponent", {"lat": "2.15e1"}, "lat"),
    ("lat hex", {"lat": "0x15"}, "lat"), ("lat underscores", {"lat": "2_1.5"}, "lat"),
    ("lat empty", {"lat": ""}, "lat"), ("lon blank", {"lon": "   "}, "lon"),
    ("lat sql", {"lat": "21.5; drop table reports"}, "lat"), ("lat long", {"lat": "1" * 60}, "lat"),
    ("lat two numbers", {"lat": "21.5,105.8"}, "lat"),
    ("script", {"description": "<script>alert(1)</script>"}, "description"),
    ("img onerror", {"description": "look <img src=x onerror=alert(1)>"}, "description"),
    ("closing tag", {"description": "</textarea><b>hi"}, "description"),
    ("comment markup", {"description": "<!-- x --> hole"}, "description"),
    ("spaced tag", {"description": "< script >alert(1)"}, "description"),
    ("NUL", {"description": "a\x00b"}, "description"),
    ("control chars", {"description": "bell\x07 escape\x1b[31m"}, "description"),
    ("too long", {"description": "x" * 4001}, "description"),
    ("only spaces", {"description": " \n\t "}, "description"),
    ("script in contact", {"contact": "<script>steal()</script>"}, "contact"),
    ("contact too long", {"contact": "9" * 201}, "contact"),
    ("category upper", {"category": "POTHOLE"}, "category"),
    ("category path", {"category": "../../etc/passwd"}, "category"),
    ("category empty", {"category": ""}, "category"),
    ("honeypot", {"website": "http://spam.example"}, "website"),
]


def _form(fields: dict, photos: list[bytes] = ()) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for k, v in {**GOOD, **fields}.items():
        form.add_field(k, v)
    for i, data in enumerate(photos):
        form.add_field("photo", data, filename=f"p{i}.jpg", content_type="image/jpeg")
    return form


@pytest.fixture
def settings_(city_db_url, make_settings, tmp_path):
    # a rate no burst of cases reaches: each case gets its 400, not a 429
    return make_settings(city_db_url, mqtt_url=None,
                         reports=ReportsSettings(photo_dir=tmp_path / "photos", rate_per_min=6_000_000))


async def _stored(url: str, photo_dir) -> tuple:
    counts = (await aq(url, "select (select count(*) from reports), (select count(*) from report_photos)"))[0]
    return counts, sorted(p.name for p in photo_dir.glob("*")) if photo_dir.exists() else []


async def test_hostile_intake_is_refused_with_a_reason_and_nothing_is_stored(settings_, city_db_url):
    photo_dir = settings_.reports.photo_dir
    before = await _stored(city_db_url, photo_dir)
    refused = []
    async with running(settings_) as client:
        for name, data, field, words in PHOTOS:
            resp = await client.post("/api/v1/public/reports", data=_form({}, [data]))
            body = await resp.json()
            assert resp.status == 400, (name, resp.status, body)
            assert body["errors"][0]["field"] == field and words in body["detail"], (name, body)
            refused.append(name)
        for name, fields, field in FIELDS:
            resp = await client.post("/api/v1/public/reports", data=_form(fields))
            body = await resp.json()
            assert resp.status == 400, (name, resp.status, body)
            assert body["errors"][0]["field"] == field, (name, body)
            assert body["errors"][0]["reason"], name
            refused.append(name)
        # a good photo beside a bad one: the whole report is refused, the good photo not kept
        resp = await client.post("/api/v1/public/reports", data=_form({}, [_img("JPEG"), _img("GIF")]))
        assert resp.status == 400
        resp = await client.post("/api/v1/public/reports", data=_form({}, [_img("JPEG")] * 4))
        assert resp.status == 400 and (await resp.json())["errors"][0]["field"] == "photo"

        # A multipart body gzip-encoded to slip under the Content-Length check: it inflates
        # to 64 MB while it is read, and is cut off at the body limit.
        boundary = "b0undary"
        raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"z.jpg\"\r\n"
               f"Content-Type: image/jpeg\r\n\r\n").encode() + b"\xff\xd8" + b"\x00" * (64 << 20) \
            + f"\r\n--{boundary}--\r\n".encode()
        packed = gzip.compress(raw, 9)
        assert len(packed) < 1 << 20
        resp = await client.post("/api/v1/public/reports", data=packed, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Encoding": "gzip"})
        assert resp.status == 413, await resp.text()
        # over the limit said up front: refused before it is read
        big = b"\xff\xd8" + b"\x00" * (5 << 20)
        resp = await client.post("/api/v1/public/reports", data=_form({}, [big]))
        assert resp.status == 413

    assert await _stored(city_db_url, photo_dir) == before, "a refused report left something behind"
    assert len(refused) == len(PHOTOS) + len(FIELDS)


async def test_a_polyglot_keeps_the_picture_and_drops_the_rest(settings_, city_db_url):
    payload = b"PK\x03\x04SECRET-ARCHIVE-PAYLOAD" + b"\x00" * 100
    async with running(settings_) as client:
        photo = _img("JPEG", (300, 200)) + payload
        resp = await client.post("/api/v1/public/reports", data=_form({}, [photo]))
        assert resp.status == 201, await resp.text()
        doc = await (await client.get((await resp.json())["url"])).json()
        raw = await (await client.get(doc["photos"][0])).read()
    assert raw.startswith(b"\xff\xd8") and b"SECRET-ARCHIVE-PAYLOAD" not in raw and b"PK\x03\x04" not in raw


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=60), st.text(max_size=60), st.text(max_size=300))
def test_coordinates_and_text_never_crash_the_checks(lat, lon, description):
    """Whatever the text, the intake's own checks give a value or a 400 naming the field."""
    from server.api.reports import _coordinate, _text
    from server.errors import Invalid

    for value, field, lo, hi in ((lat, "lat", -90, 90), (lon, "lon", -180, 180)):
        try:
            got = _coordinate(value, field, lo, hi)
        except Invalid as e:
            assert e.extra["errors"][0]["field"] == field and e.extra["errors"][0]["reason"]
        else:
            assert lo <= got <= hi
    try:
        got = _text(description, "description")
    except Invalid as e:
        assert e.extra["errors"][0]["field"] == "description"
    else:
        assert got and "<script" not in got.lower() and "\x00" not in got
