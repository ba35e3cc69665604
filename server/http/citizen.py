"""The citizens' pages: ``/report`` (file a report from a phone), ``/reports/{code}`` (follow
it) and ``/public`` (the public map and statistics). No account, no token: they use only the
public API (``/api/v1/public/...``) and the public base map tiles, and show nothing personal.

They are served like the operators' pages (:func:`server.http.pages._page`: the config block,
the import map, the strict CSP); ``/report`` loads no map library until the citizen asks for
the map, so a slow phone downloads a few kB before it can send a report.
"""

from __future__ import annotations

from aiohttp import web

from server.http.pages import _page

routes = web.RouteTableDef()


@routes.get("/report")
async def report_page(request: web.Request) -> web.Response:
    return _page(request, "report.html")


@routes.get("/reports/{code}")
async def tracking_page(request: web.Request) -> web.Response:
    return _page(request, "tracking.html")


@routes.get("/public")
async def public_page(request: web.Request) -> web.Response:
    return _page(request, "public.html")
