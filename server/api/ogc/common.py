"""What every /ogc resource shares: media types, conformance classes, content negotiation,
links (absolute, carrying ``?token=`` when the caller used it) and the query-parameter
checks that answer 400 naming the parameter."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from yarl import URL

from server.errors import Invalid
from server.http.jsonutil import dumps

ROOT = "/ogc"
JSON = "application/json"
GEOJSON = "application/geo+json"
HTML = "text/html"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
MVT = "application/vnd.mapbox-vector-tile"

_FEATURES = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/"
_COMMON = "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/"
_TILES = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/"
CONFORMANCE = (
    _COMMON + "core", _COMMON + "landing-page", _COMMON + "json", _COMMON + "html", _COMMON + "oas30",
    "http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections",
    _FEATURES + "core", _FEATURES + "oas30", _FEATURES + "geojson", _FEATURES + "html",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    _TILES + "core", _TILES + "tileset", _TILES + "tilesets-list", _TILES + "geodata-tilesets",
    _TILES + "dataset-tilesets", _TILES + "oas30", _TILES + "mvt",
    "http://www.opengis.net/spec/tms/2.0/conf/tilematrixset",
    "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset",
)

REL_CONFORMANCE = "conformance"
REL_TILESETS_VECTOR = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
REL_TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
REL_TMS = "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"

FORMATS = {"json": JSON, "html": HTML}


def wants_html(request: web.Request, *, html: bool = True) -> bool:
    """``f=json|html`` first, then the Accept header (HTML only when a browser prefers it);
    JSON by default. ``html=False``: the resource has no HTML form, so only JSON is offered."""
    f = request.query.get("f")
    if f is not None:
        offered = ("json", "html") if html else ("json",)
        if f not in offered:
            raise Invalid(f"f must be {' or '.join(offered)}, got {f!r}", field="f")
        return f == "html"
    if not html:
        return False
    best_html = best_json = 0.0
    for part in request.headers.get("Accept", "").split(","):
        mtype, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        mtype = mtype.strip().lower()
        if mtype in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, q)
        elif mtype in (JSON, GEOJSON, "application/schema+json") or mtype.endswith("+json"):
            best_json = max(best_json, q)
    return best_html > best_json


class Links:
    """Absolute hrefs under the request's origin; ``?token=`` follows when the caller sent
    its token that way (a browser following links), never when it used the header."""

    def __init__(self, request: web.Request) -> None:
        self.origin = str(request.url.origin())
        self.token = request.query.get("token")

    def href(self, path: str, query: Mapping[str, Any] | None = None, *, f: str | None = None) -> str:
        q = {k: str(v) for k, v in (query or {}).items() if v is not None}
        if f:
            q["f"] = f
        if self.token:
            q["token"] = self.token
        url = URL(self.origin + path)
        return str(url.with_query(q)) if q else str(url)

    def template(self, path: str) -> str:
        """An href with ``{placeholders}`` kept literal (yarl would escape the braces)."""
        return self.origin + path + (f"?token={self.token}" if self.token else "")

    def link(self, rel: str, path: str, mtype: str, title: str | None = None,
             query: Mapping[str, Any] | None = None, *, f: str | None = None) -> dict[str, Any]:
        out = {"rel": rel, "type": mtype, "href": self.href(path, query, f=f)}
        if title:
            out["title"] = title
        return out

    def self_and_alternate(self, path: str, json_type: str, title: str,
                           query: Mapping[str, Any] | None = None, *, html: bool) -> list[dict[str, Any]]:
        """``self`` in the format served, ``alternate`` in the other one."""
        js = self.link("alternate" if html else "self", path, json_type, f"{title} as JSON", query,
                       f="json")
        ht = self.link("self" if html else "alternate", path, HTML, f"{title} as HTML", query, f="html")
        return [ht, js] if html else [js, ht]


def check_params(request: web.Request, allowed: Iterable[str]) -> None:
    """OGC API Features /req/core/query-param-unknown: an unknown parameter is a 400."""
    known = {"f", "token", *allowed}
    for name in request.query:
        if name not in known:
            raise Invalid(f"unknown query parameter {name!r}; this resource takes "
                          f"{', '.join(sorted(known - {'token'}))}", field=name)


def json_doc(obj: Any, mtype: str = JSON, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON body with its exact media type (aiohttp's ``content_type=`` refuses parameters,
    and the OpenAPI type carries ``version=3.0``)."""
    return web.Response(body=dumps(obj), headers={"Content-Type": mtype, **(headers or {})})
