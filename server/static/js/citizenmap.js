// A light street map for the citizens' pages, drawn from our own public base map tiles
// (wards and roads: /api/v1/public/basemap): no outside service, no token. MapLibre (about
// 800 kB) is imported only when a page calls openMap, so /report costs nothing until the
// citizen asks for the map.

import { localizeMap, mapLocale } from "./maplocale.js";

let loading = null;

function loadMapLibre() {
  if (!loading) {
    const css = document.createElement("link");
    css.rel = "stylesheet";
    const v = JSON.parse(document.getElementById("config").textContent).version;
    css.href = `/static/vendor/maplibre-gl/maplibre-gl.css?v=${v}`;
    // The map measures its container when it starts: its stylesheet must be in force first.
    const styled = new Promise((resolve) => {
      css.onload = resolve;
      css.onerror = resolve;
    });
    document.head.append(css);
    loading = Promise.all([import("maplibre-gl"), styled]).then(([lib]) => lib);
  }
  return loading;
}

function lightStyle(tilejson) {
  const src = "base";
  const cls = ["coalesce", ["get", "class"], "residential"];
  const width = (p, s, r) => ["match", cls, "primary", p, "secondary", s, r];
  return {
    version: 8,
    sources: { [src]: { type: "vector", tiles: tilejson.tiles, minzoom: 0, maxzoom: tilejson.maxzoom,
      bounds: tilejson.bounds } },
    layers: [
      { id: "bg", type: "background", paint: { "background-color": "#eef0ea" } },
      { id: "wards-fill", type: "fill", source: src, "source-layer": "wards",
        paint: { "fill-color": "#f7f7f2", "fill-opacity": 1 } },
      { id: "wards-line", type: "line", source: src, "source-layer": "wards",
        paint: { "line-color": "#9aa7b5", "line-width": 1.2, "line-dasharray": [3, 2] } },
      { id: "roads-casing", type: "line", source: src, "source-layer": "roads",
        layout: { "line-cap": "round", "line-join": "round" },
        paint: { "line-color": "#c9ced6", "line-width": ["interpolate", ["exponential", 1.6], ["zoom"],
          10, width(3, 2, 0.8), 14, width(9, 7, 4), 18, width(34, 26, 16)] } },
      { id: "roads", type: "line", source: src, "source-layer": "roads",
        layout: { "line-cap": "round", "line-join": "round" },
        paint: { "line-color": width("#ffe8a8", "#ffffff", "#ffffff"),
          "line-width": ["interpolate", ["exponential", 1.6], ["zoom"],
            10, width(2, 1.3, 0.5), 14, width(7, 5, 2.5), 18, width(30, 22, 13)] } },
    ],
  };
}

// A map in `container` over the city; resolves to {maplibregl, map} once the style is loaded.
export async function openMap(container, { center, zoom } = {}) {
  const [maplibregl, tilejson] = await Promise.all([
    loadMapLibre(), fetch("/api/v1/public/basemap.json").then((r) => r.json()),
  ]);
  const [w, s, e, n] = tilejson.bounds;
  const map = new maplibregl.Map({
    container, style: lightStyle(tilejson), attributionControl: false,
    center: center ?? tilejson.center.slice(0, 2), zoom: zoom ?? (center ? 16 : 12),
    maxBounds: [[w - 0.2, s - 0.2], [e + 0.2, n + 0.2]], dragRotate: false, pitchWithRotate: false,
    locale: mapLocale(),
  });
  map.touchZoomRotate.disableRotation();
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  localizeMap(map);
  await new Promise((resolve) => (map.loaded() ? resolve() : map.once("load", resolve)));
  return { maplibregl, map };
}
