"""TileJSON 3.0 documents and the layer list (pure: no I/O)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tiles.catalogue import AGGREGATE_FIELDS, Layer

TILEJSON_VERSION = "3.0.0"
DEFAULT_CENTER_ZOOM = 13


def _name(layers: list[Layer]) -> str:
    return ",".join(layer.id for layer in layers)


def tile_url(base: str, layers: list[Layer], token: str | None) -> str:
    url = f"{base}/tiles/{_name(layers)}/{{z}}/{{x}}/{{y}}.mvt"
    # MapLibre cannot add a header to tile requests without transformRequest: a TileJSON
    # fetched with ?token= hands out tile URLs that carry it.
    return url + "?" + urlencode({"token": token}) if token else url


def tilejson_url(base: str, layers: list[Layer], token: str | None) -> str:
    url = f"{base}/tiles/{_name(layers)}.json"
    return url + "?" + urlencode({"token": token}) if token else url


def _fields(layer: Layer) -> dict[str, str]:
    fields = dict(layer.fields)
    if layer.detail_minzoom > layer.minzoom:
        for k, v in AGGREGATE_FIELDS.items():
            fields.setdefault(k, v)
    return fields


def describe(layer: Layer) -> dict[str, Any]:
    """What a map client needs to know about a layer beyond TileJSON."""
    return {
        "id": layer.id,
        "title": layer.title_en,
        "title_vi": layer.title_vi,
        "source": layer.source,
        "kind": layer.kind,
        "geometry": layer.geometry,
        "minzoom": layer.minzoom,
        "maxzoom": layer.maxzoom,
        # Below this zoom the layer's tiles hold grid aggregates (agg = "cell"), not devices.
        "detail_minzoom": layer.detail_minzoom,
        "live": layer.live,
    }


def tilejson(layers: list[Layer], base: str, token: str | None,
             bounds: tuple[float, float, float, float], max_age_s: int, live_max_age_s: int
             ) -> dict[str, Any]:
    """TileJSON of one layer, or of a composite source (several layers in one tile)."""
    w, s, e, n = bounds
    minzoom = min(layer.minzoom for layer in layers)
    maxzoom = min(layer.maxzoom for layer in layers)
    doc: dict[str, Any] = {
        "tilejson": TILEJSON_VERSION,
        "name": _name(layers),
        "description": "; ".join(f"{layer.title_en} / {layer.title_vi}" for layer in layers),
        "version": "1.0.0",
        "attribution": "ioc-server",
        "scheme": "xyz",
        "tiles": [tile_url(base, layers, token)],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": [w, s, e, n],
        "center": [(w + e) / 2, (s + n) / 2, max(minzoom, min(DEFAULT_CENTER_ZOOM, maxzoom))],
        "vector_layers": [{
            "id": layer.id,
            "description": layer.title_en,
            "minzoom": layer.minzoom,
            "maxzoom": layer.maxzoom,
            "fields": _fields(layer),
            **{k: v for k, v in describe(layer).items() if k not in ("id", "minzoom", "maxzoom")},
        } for layer in layers],
        "max_age_s": live_max_age_s if any(layer.live for layer in layers) else max_age_s,
        "aggregate_max_age_s": live_max_age_s,
    }
    if len(layers) == 1:
        doc.update({k: v for k, v in describe(layers[0]).items() if k not in ("id", "minzoom", "maxzoom")})
    return doc


def layer_list(layers: list[Layer], base: str, token: str | None, max_age_s: int,
               live_max_age_s: int) -> dict[str, Any]:
    return {
        "tilejson": TILEJSON_VERSION,
        "tile_matrix_set": "WebMercatorQuad",
        "layers": [
            {
                **describe(layer),
                "max_age_s": live_max_age_s if layer.live else max_age_s,
                "tilejson": tilejson_url(base, [layer], token),
                "tiles": tile_url(base, [layer], token),
            }
            for layer in layers
        ],
    }
