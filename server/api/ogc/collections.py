"""The collections: one per device kind, described from the tile catalogue (the kinds table)
with its spatial extent from the data and its temporal extent from ``last_seen``.

A collection has a ``source``; ``"devices"`` is the only one today. Public report
categories will be a second source (their own items query, no crew-private fields), added
to :func:`catalogue` without changing the routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aiohttp import web

from server import keys
from server.errors import NotFound
from tiles.catalogue import Layer

Source = Literal["devices"]


@dataclass(frozen=True, slots=True)
class Collection:
    id: str
    title: str
    title_vi: str
    source: Source
    layer: Layer  # its vector tiles (server/api/tiles.py's layer of the same name)
    bbox: tuple[float, float, float, float]
    interval: tuple[datetime | None, datetime | None]

    @property
    def kind(self) -> str:
        return self.layer.kind or self.id


_TIMES = """
select d.kind, min(s.last_seen) as first, max(s.last_seen) as last
from devices d join device_state s on s.device_key = d.key
where d.kind = any($1::text[]) group by d.kind"""


def _layers(request: web.Request) -> dict[str, Layer]:
    tiles = request.app[keys.TILES]
    return {layer.id: layer for layer in sorted(tiles.layers.values(), key=lambda layer: layer.id)
            if layer.source == "kind"}


def collection_ids(request: web.Request) -> list[str]:
    return list(_layers(request))


def find(request: web.Request) -> Layer:
    """The collection named in the path (its layer), or a 404 that lists them."""
    wanted = request.match_info["collectionId"]
    layers = _layers(request)
    if wanted not in layers:
        raise NotFound(f"no collection {wanted!r}; the collections are: {', '.join(layers)} "
                       "(GET /ogc/collections lists them)", field="collectionId")
    return layers[wanted]


async def describe(request: web.Request, layers: list[Layer]) -> list[Collection]:
    """The collections of ``layers`` with their extents."""
    tiles = request.app[keys.TILES]
    async with request.app[keys.DB].acquire() as conn:
        rows = await conn.fetch(_TIMES, [layer.kind for layer in layers])
    times = {r["kind"]: (r["first"], r["last"]) for r in rows}
    return [Collection(layer.id, layer.title_en, layer.title_vi, "devices", layer,
                       await tiles.extent(layer), times.get(layer.kind, (None, None)))
            for layer in layers]


async def catalogue(request: web.Request) -> list[Collection]:
    return await describe(request, list(_layers(request).values()))
