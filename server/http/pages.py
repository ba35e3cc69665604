"""The browser pages: the IOC map at ``/``, the crews' page at ``/crew`` and the HTTP API's
reference at ``/api/docs`` (Swagger UI over ``/api/v1/openapi.json``).

The pages are static files under ``server/static/``; a line ``{{> name.html}}`` includes
``static/partials/name.html`` (the citizens' pages share their <head> so), and the server fills
in the client configuration (the optional external basemap style, the build version that busts
browser caches of the scripts) so one set of files serves every deployment. The pages are
public: they ask for a token themselves (a login form, or ``?token=`` from the link
``ioc demo`` prints) and send it with every API, tile and websocket request.

``GET /api/v1/me`` tells a page who its token belongs to (the crew page needs its crew id).

Headers (:func:`install`): every response is ``nosniff`` with ``Referrer-Policy: same-origin``
(no address, with whatever it holds, goes to another site); the pages carry a strict
Content-Security-Policy: scripts only from this origin plus the one inline import map, by its
hash (the ``application/json`` config block is data, which CSP does not govern); MapLibre's
workers from this origin or blob: URLs; no framing. Everything else (the API, tiles, error
pages) gets ``default-src 'none'``: nothing in it may run or load anything. Static files get
none, as a module worker takes its policy from its script's response.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from pathlib import Path

import orjson
from aiohttp import web
from yarl import URL

from server import keys
from server.http.auth import principal
from server.http.jsonutil import json_response

routes = web.RouteTableDef()

STATIC_DIR = Path(__file__).parent.parent / "static"
VENDOR_HINT = (
    "the map library is not installed: run `make setup` (npm ci copies maplibre-gl into "
    "server/static/vendor/)"
)
DOCS_VENDOR_HINT = (
    "Swagger UI is not installed: run `make web` (npm ci copies swagger-ui-dist into "
    "server/static/vendor/)"
)
_NO_STORE = {"Cache-Control": "no-store"}
# ``{{> name.html}}`` on a line of its own: that line becomes static/partials/name.html, so
# what several pages share (the citizens' pages' <head>) is written once. The name is one
# plain file name, never a path.
_INCLUDE = re.compile(r"^[ \t]*\{\{> ([\w.-]+\.html)\}\}[ \t]*\n?", re.M)


def _static_dir(request: web.Request) -> Path:
    return request.app[keys.SETTINGS].static_dir or STATIC_DIR


def _version(static: Path) -> str:
    """Changes whenever a page's script or style changes, so browsers fetch the new ones."""
    mtimes = [p.stat().st_mtime_ns for p in static.rglob("*") if p.is_file()]
    return format(max(mtimes, default=0) // 1_000_000, "x")


def _import_map(static: Path, version: str) -> dict:
    """Versioned URLs for every module, so an upgrade never mixes old and new scripts.

    The pages import ``maplibre-gl`` by name and each other by relative path; both resolve
    through this map to URLs carrying the version.
    """
    imports = {"maplibre-gl": f"/static/vendor/maplibre-gl/maplibre-gl.mjs?v={version}",
               "uplot": f"/static/vendor/uplot/uPlot.esm.js?v={version}",
               "hls.js": f"/static/vendor/hls.js/hls.mjs?v={version}",
               # the commands panel draws its polygons and streets with terra-draw
               "terra-draw": f"/static/vendor/terra-draw/terra-draw.module.js?v={version}",
               "terra-draw-maplibre-gl-adapter":
                   f"/static/vendor/terra-draw/terra-draw-maplibre-gl-adapter.module.js?v={version}"}
    for js in sorted((static / "js").glob("*.js")):
        imports[f"/static/js/{js.name}"] = f"/static/js/{js.name}?v={version}"
    return {"imports": imports}


def _script_json(obj: dict) -> str:
    # "</" inside a <script> would end it early; JSON allows the escaped form.
    return orjson.dumps(obj).decode().replace("</", "<\\/")


def _source(url: str | None) -> str:
    """The origin of a configured URL, as a CSP source ('' when there is none)."""
    if not url:
        return ""
    u = URL(url)
    if u.scheme not in ("http", "https") or not u.host:
        return ""
    return f" {u.scheme}://{u.host}" + ("" if u.is_default_port() else f":{u.port}")


def page_csp(request: web.Request, import_map: str) -> str:
    """The pages' policy; ``import_map`` is the inline import map's exact text."""
    digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
    # An external basemap style (settings.web_style_url) loads its style, sprites, glyphs and
    # tiles from its own origin.
    style = _source(request.app[keys.SETTINGS].web_style_url)
    host = request.host
    return "; ".join([
        "default-src 'none'",
        f"script-src 'self' 'sha256-{digest}'",
        "style-src 'self'",
        f"img-src 'self' data: blob:{style}",
        "media-src 'self' blob:",  # a camera's stream (hls.js feeds the video from a blob)
        "font-src 'self'",
        f"connect-src 'self' ws://{host} wss://{host}{style}",
        "worker-src 'self' blob:",
        "child-src 'self' blob:",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        h.setdefault("X-Frame-Options", "DENY")  # frame-ancestors for browsers before CSP 2


def install(app: web.Application) -> None:
    """The security headers on every response (static files, errors and websockets too)."""
    app.on_response_prepare.append(_security_headers)


def _page(request: web.Request, name: str, vendor: str = "maplibre-gl",
          hint: str = VENDOR_HINT) -> web.Response:
    static = _static_dir(request)
    settings = request.app[keys.SETTINGS]
    try:
        text = (static / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise web.HTTPNotFound(text=f"{name} is missing from {static}") from None
    text = _INCLUDE.sub(lambda m: _partial(static, m.group(1)), text)
    version = _version(static)
    config = {
        "styleUrl": settings.web_style_url,
        "version": version,
        "vendorMissing": None if (static / "vendor" / vendor).is_dir() else hint,
    }
    import_map = _script_json(_import_map(static, version))
    text = (text.replace("{{CONFIG}}", _script_json(config))
            .replace("{{IMPORTMAP}}", import_map)
            .replace("{{VERSION}}", html.escape(version)))
    headers = {**_NO_STORE, "Content-Security-Policy": page_csp(request, import_map)}
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)


def _partial(static: Path, name: str) -> str:
    try:
        return (static / "partials" / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise web.HTTPNotFound(text=f"partials/{name} is missing from {static}") from None


@routes.get("/")
async def map_page(request: web.Request) -> web.Response:
    return _page(request, "index.html")


@routes.get("/crew")
async def crew_page(request: web.Request) -> web.Response:
    return _page(request, "crew.html")


@routes.get("/api/docs")
async def api_docs_page(request: web.Request) -> web.Response:
    """Public like the other pages; the OpenAPI document it shows needs a token."""
    return _page(request, "api-docs.html", vendor="swagger-ui", hint=DOCS_VENDOR_HINT)


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(_static_dir(request) / "favicon.svg",
                            headers={"Content-Type": "image/svg+xml"})


@routes.get("/api/v1/me")
async def me(request: web.Request) -> web.Response:
    """The caller's token: name, role and crew (null unless a crew token)."""
    p = principal(request)
    return json_response({"name": p.name, "role": p.role, "crew": p.crew}, headers=_NO_STORE)
