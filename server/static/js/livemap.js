// The live map: our own vector tiles as base map and device layers, live state applied
// with feature-state (tiles carry geometry, the websocket carries state), the viewport
// subscription moved with the map, and live alarms drawn from the alarm store.

import * as maplibregl from "maplibre-gl";

import { api, h, listOf, pointOf, SEVERITY_RANK } from "./common.js";
import { kindLabel, kindName } from "./i18n.js";
import { KIND_COLOURS, SEVERITY_COLOURS, SEVERITY_RING, STATUS_COLOURS } from "./palette.js";
import { localizeMap, mapLocale } from "./maplocale.js";

export { maplibregl };

const BG = "#070c16";
const UNKNOWN_ALPHA = 0.55;

// One palette for kinds, statuses and alarm severities (palette.js, checked for colour-blind
// readers by tests/web/test_palette.py). Alarms are rings round the device, not a new fill.
export { KIND_COLOURS, SEVERITY_COLOURS, SEVERITY_RING, STATUS_COLOURS };
const DEFAULT_KIND_COLOUR = "#9aa5b1";
const CONGESTION = ["#2f9e44", "#94d82d", "#fcc419", "#fd7e14", "#e03131"];

// Drawing order, bottom to top, for the layers we know; unknown device layers go on top
// of the lines and below the alarms.
const ORDER = [
  "wards", "roads", "water_pipe", "road_segment", "streetlight", "water_meter", "camera",
  "env_sensor", "flow_meter", "pressure_sensor", "traffic_controller", "lighting_cabinet",
];

const SOURCE_ROLES = { kind: "devices", wards: "wards", roads: "roads", alarms: "alarms",
  ward_stats: "ward_stats" };

export function roleOf(layerId, source) {
  if (SOURCE_ROLES[source]) return SOURCE_ROLES[source];
  const id = layerId.toLowerCase();
  if (id === "ward_stats") return "ward_stats";
  if (id.includes("ward")) return "wards";
  if (id === "roads" || id === "road" || id === "streets") return "roads";
  if (id.includes("alarm")) return "alarms";
  if (/agg|summary|cluster|cells?$|grid/.test(id)) return "aggregates";
  return "devices";
}

const fs = (name) => ["feature-state", name];
const sevColour = ["match", fs("sev"), 4, SEVERITY_COLOURS.critical, 3, SEVERITY_COLOURS.major,
  2, SEVERITY_COLOURS.minor, SEVERITY_COLOURS.warning];
const alarmed = [">=", ["coalesce", fs("sev"), 0], 1];
const sevRing = ["match", fs("sev"), 4, SEVERITY_RING.critical, 3, SEVERITY_RING.major,
  2, SEVERITY_RING.minor, 1, SEVERITY_RING.warning, 0];
// Severity by name (tile properties, the live alarm layer) to colour and ring thickness.
const byName = (sev, table, other) => ["match", sev, "critical", table.critical, "major", table.major,
  "minor", table.minor, "warning", table.warning, other];
// The font of the street names, a file we serve (`make web` copies Debian's DejaVu Sans, which
// covers Vietnamese: ă ơ ư đ ệ ...); MapLibre draws its glyphs in the browser, nothing is fetched
// from outside and no glyph server is needed.
export const LABEL_FONT = "DejaVu Sans";
const FONT_FACES = { [LABEL_FONT]: [{ url: new URL("/static/vendor/fonts/DejaVuSans.ttf", location.href).href }] };

function statusColour(kind) {
  const base = KIND_COLOURS[kind] ?? DEFAULT_KIND_COLOUR;
  let online = base;
  if (kind === "streetlight") {
    // A lamp that reports lamp_on=false is drawn dark: a street at night shows its gaps.
    online = ["case", ["==", fs("on"), false], STATUS_COLOURS.lamp_off, base];
  } else if (kind === "road_segment") {
    online = ["match", ["coalesce", fs("cong"), -1], 0, CONGESTION[0], 1, CONGESTION[1],
      2, CONGESTION[2], 3, CONGESTION[3], 4, CONGESTION[4], base];
  }
  // An alarm does not recolour the device: its ring (the ":ring" layer) says the severity.
  return ["case",
    ["==", fs("status"), "offline"], STATUS_COLOURS.offline,
    ["==", fs("status"), "stale"], STATUS_COLOURS.stale,
    online];
}

const statusOpacity = ["case", alarmed, 1, ["==", fs("status"), "online"], 0.95,
  ["==", fs("status"), "offline"], 0.85, ["==", fs("status"), "stale"], 0.85, UNKNOWN_ALPHA];

// A point's radius at zooms 11, 15 and 18; an alarmed point grows by ALARM_GROW.
const radii = (kind) => (kind === "streetlight" ? [1.6, 3, 6.5] : [3, 5, 9]);
const ALARM_GROW = 1.4;
const byZoom = (kind, r) => {
  const [a, b, c] = radii(kind);
  return ["interpolate", ["linear"], ["zoom"], 11, r(a), 15, r(b), 18, r(c)];
};

function pointRadius(kind) {
  return byZoom(kind, (r) => ["case", alarmed, r * ALARM_GROW, r]);
}

// The alarm ring: a gap of background, then the severity's colour at the severity's width.
function ringRadius(kind) {
  return byZoom(kind, (r) => ["+", r * ALARM_GROW + 2.5, ["/", sevRing, 2]]);
}

// The style layers drawing one vector layer of one of our tile sources.
function styleLayers(source, sourceLayer, role, kind, minzoom, maxzoom, detailMinzoom = 0) {
  const base = { source, "source-layer": sourceLayer };
  if (minzoom !== undefined) base.minzoom = minzoom;
  if (maxzoom !== undefined) base.maxzoom = maxzoom;
  const id = (suffix) => `${source}:${sourceLayer}:${suffix}`;
  const geom = (type) => ["==", ["geometry-type"], type];
  const polygons = ["any", geom("Polygon"), geom("MultiPolygon")];
  const lines = ["any", geom("LineString"), geom("MultiLineString")];
  const points = ["any", geom("Point"), geom("MultiPoint")];
  if (role === "wards") {
    return [
      { ...base, id: id("fill"), type: "fill", filter: polygons, paint: {
        "fill-color": ["interpolate", ["linear"], ["coalesce", fs("out"), 0],
          0, "#0f1a2c", 0.02, "#2a2238", 0.1, "#5a2236", 0.25, "#8c1c2c"],
        "fill-opacity": 0.9 } },
      { ...base, id: id("line"), type: "line", filter: polygons, paint: {
        "line-color": ["case", ["boolean", fs("hover"), false], "#7fd3ff", "#2d5b88"],
        "line-width": ["interpolate", ["linear"], ["zoom"], 10, 1, 16, 2.5],
        "line-dasharray": [3, 2] } },
    ];
  }
  if (role === "roads") {
    const cls = ["coalesce", ["get", "class"], ["get", "kind"], "residential"];
    const width = (p, s, r) => ["match", cls, "primary", p, "secondary", s, r];
    return [
      { ...base, id: id("casing"), type: "line", filter: lines,
        layout: { "line-cap": "round", "line-join": "round" },
        paint: { "line-color": "#0b111c",
          "line-width": ["interpolate", ["exponential", 1.6], ["zoom"],
            10, width(2.5, 1.6, 0.6), 14, width(7, 5, 2.5), 18, width(30, 22, 12)] } },
      { ...base, id: id("line"), type: "line", filter: lines,
        layout: { "line-cap": "round", "line-join": "round" },
        paint: { "line-color": width("#5b6b84", "#4a586e", "#35425a"),
          "line-width": ["interpolate", ["exponential", 1.6], ["zoom"],
            10, width(1.5, 1, 0.3), 14, width(5, 3.5, 1.5), 18, width(26, 18, 9)] } },
      // Street names along the streets at street zooms, over the devices (a halo of the
      // ground keeps them readable on a lit street) and never over one another.
      { ...base, id: id("name"), type: "symbol", minzoom: 15, filter: ["all", lines, ["has", "name"]],
        layout: { "symbol-placement": "line", "text-field": ["get", "name"], "text-font": [LABEL_FONT],
          "text-size": ["interpolate", ["linear"], ["zoom"], 15, width(12, 11, 10.5), 18, width(15, 14, 13)],
          "text-max-angle": 35, "text-padding": 4, "symbol-spacing": 320,
          "symbol-sort-key": ["match", cls, "primary", 0, "secondary", 1, 2] },
        paint: { "text-color": "#c9d6ea", "text-halo-color": BG, "text-halo-width": 1.6,
          "text-halo-blur": 0.4 } },
    ];
  }
  if (role === "aggregates") {
    const count = ["to-number", ["coalesce", ["get", "count"], ["get", "n"], ["get", "total"], 1]];
    const worst = ["coalesce", ["get", "worst_severity"], ["get", "alarm_severity"],
      ["get", "severity"], ["get", "worst_alarm"], "none"];
    const offline = ["to-number", ["coalesce", ["get", "offline"], 0]];
    return [
      { ...base, id: id("agg"), type: "circle", filter: points, paint: {
        "circle-radius": ["interpolate", ["linear"], ["sqrt", count], 1, 5, 10, 12, 40, 26, 150, 44],
        // The fill says the devices (offline share), the outline the worst alarm.
        "circle-color": ["case", [">", offline, ["*", 0.2, count]], STATUS_COLOURS.offline, "#1c7ed6"],
        "circle-opacity": 0.4, "circle-stroke-color": byName(worst, SEVERITY_COLOURS, "#d0ebff"),
        "circle-stroke-width": byName(worst, SEVERITY_RING, 1),
        "circle-stroke-opacity": 0.85 } },
      { ...base, id: id("aggpoly"), type: "fill", filter: polygons, paint: {
        "fill-color": "#1c7ed6", "fill-opacity": 0.18,
        "fill-outline-color": byName(worst, SEVERITY_COLOURS, "#4dabf7") } },
    ];
  }
  if (role === "ward_stats") {
    const share = ["/", ["to-number", ["coalesce", ["get", "lamps_out"], 0]],
      ["max", 1, ["to-number", ["coalesce", ["get", "lamps"], 0]]]];
    return [
      { ...base, id: id("fill"), type: "fill", filter: polygons, paint: {
        "fill-color": ["interpolate", ["linear"], share, 0, "#12324a", 0.05, "#5a3b18", 0.2, "#a61e2e"],
        "fill-opacity": 0.55 } },
      { ...base, id: id("line"), type: "line", filter: polygons, paint: {
        "line-color": byName(["coalesce", ["get", "alarm_severity"], ""], SEVERITY_COLOURS, "#3d6a99"),
        "line-width": byName(["coalesce", ["get", "alarm_severity"], ""], SEVERITY_RING, 1.5) } },
    ];
  }
  if (role === "alarms") {
    // Active alarms are drawn live from the alarm store (live-alarms); the tile layer
    // stays as a faint marker for alarms outside the websocket's view.
    return [{ ...base, id: id("alarm"), type: "circle", filter: points, paint: {
      "circle-radius": 5, "circle-opacity": 0, "circle-stroke-width": 1.5,
      "circle-stroke-color": byName(["get", "severity"], SEVERITY_COLOURS, SEVERITY_COLOURS.critical),
      "circle-stroke-opacity": 0.4 } }];
  }
  const colour = statusColour(kind);
  const isLamp = kind === "streetlight";
  const isAgg = ["==", ["get", "agg"], "cell"];
  const notAgg = ["!", ["has", "agg"]];
  const only = (f) => ["all", notAgg, f];
  const out = [];
  if (detailMinzoom > 0) {
    // Below the detail zoom the kind's tiles hold grid cells with counts (server-side).
    // Live counts from the websocket (applyCells) win over the tile's, as feature-state.
    const live = (name, fallback) => ["coalesce", ["feature-state", name], ["get", name], fallback];
    const count = ["to-number", live("count", 1)];
    const kc = KIND_COLOURS[kind] ?? DEFAULT_KIND_COLOUR;
    const sevOf = ["coalesce", ["feature-state", "asev"], ["get", "alarm_severity"], "none"];
    // No maxzoom: a detail tile too dense to list its devices holds cells too (server bound).
    out.push({ ...base, id: id("agg"), type: "circle", filter: isAgg, paint: {
      "circle-radius": ["interpolate", ["linear"], ["sqrt", count], 1, 4, 10, 9, 40, 17, 150, 30],
      // The kind's colour fills the cell; an alarm in it is its outline (colour and width).
      "circle-color": kc,
      "circle-opacity": ["case", [">", ["to-number", live("offline", 0)], ["*", 0.3, count]],
        0.15, 0.3],
      "circle-stroke-color": byName(sevOf, SEVERITY_COLOURS, kc),
      "circle-stroke-width": byName(sevOf, SEVERITY_RING, 1.2), "circle-stroke-opacity": 0.9 } });
  }
  out.push(
    // An alarmed line (a road segment, a pipe) gets a casing in the severity's colour.
    { ...base, id: id("linering"), type: "line", filter: only(lines),
      layout: { "line-cap": "round", "line-join": "round" },
      paint: { "line-color": sevColour, "line-opacity": ["case", alarmed, 0.95, 0],
        "line-gap-width": ["interpolate", ["linear"], ["zoom"], 11, kind === "road_segment" ? 2 : 1.2, 16,
          kind === "road_segment" ? 5 : 3],
        "line-width": sevRing } },
    { ...base, id: id("fill"), type: "fill", filter: only(polygons),
      paint: { "fill-color": colour, "fill-opacity": 0.12, "fill-outline-color": colour } },
    { ...base, id: id("line"), type: "line", filter: only(lines),
      layout: { "line-cap": "round", "line-join": "round" },
      paint: { "line-color": colour, "line-opacity": statusOpacity,
        "line-width": ["interpolate", ["linear"], ["zoom"], 11, kind === "road_segment" ? 2 : 1.2, 16,
          kind === "road_segment" ? 5 : 3],
        ...(kind === "water_pipe" ? { "line-dasharray": [2, 1] } : {}) } },
  );
  if (isLamp) {
    // The glow of a lit lamp: what makes a street at night read as a street.
    out.push({ ...base, id: id("glow"), type: "circle", filter: only(points), paint: {
      "circle-radius": ["interpolate", ["linear"], ["zoom"], 11, 3, 15, 8, 18, 18],
      "circle-color": colour, "circle-blur": 1,
      "circle-opacity": ["case", alarmed, 0.5, ["==", fs("on"), false], 0,
        ["==", fs("status"), "offline"], 0, 0.35] } });
  }
  out.push({ ...base, id: id("point"), type: "circle", filter: only(points), paint: {
    "circle-radius": pointRadius(kind), "circle-color": colour, "circle-opacity": statusOpacity,
    "circle-stroke-color": ["case", ["boolean", fs("selected"), false], "#22c3ee", "#050910"],
    "circle-stroke-width": ["case", ["boolean", fs("selected"), false], 2, alarmed, 1, isLamp ? 0.3 : 0.8] } });
  // The alarm: a ring round the device (a dark gap, then the severity's colour and width),
  // so the kind's colour stays and the alarm reads by its shape even without colour vision.
  out.push({ ...base, id: id("ring"), type: "circle", filter: only(points), paint: {
    "circle-radius": ringRadius(kind), "circle-opacity": 0, "circle-stroke-color": sevColour,
    "circle-stroke-width": sevRing, "circle-stroke-opacity": ["case", alarmed, 1, 0] } });
  return out;
}

// Every layer of ours comes from one vector source whose tile URL names all the visible layers
// (/tiles/a,b,c/{z}/{x}/{y}.mvt): one request per tile position instead of one per layer.
export const COMPOSITE = "ioc";

export class LiveMap {
  constructor(container, { styleUrl, onDeviceClick, onAlarmClick }) {
    this.sources = new Map(); // layer id -> {role, tilejson, sourceLayers, styleIds, visible}
    this.state = new Map(); // device id -> last state {status, values, sev, kind}
    this.kindOf = new Map(); // device id -> kind (from snapshots or clicked features)
    // Over an external base style our ward polygons become a light tint, not the ground.
    this.overlay = Boolean(styleUrl);
    this.onDeviceClick = onDeviceClick;
    this.onAlarmClick = onAlarmClick;
    this.aggMarkers = [];
    this.selected = null;
    // Read before the map exists: the map writes its own position into the hash at once.
    this.hadHash = /map=/.test(location.hash);
    this.map = new maplibregl.Map({
      container,
      style: styleUrl || { version: 8, sources: {}, "font-faces": FONT_FACES, layers: [
        { id: "background", type: "background", paint: { "background-color": BG } }] },
      center: [105.84, 21.59],
      zoom: 12,
      hash: "map",
      attributionControl: false,
      maxPitch: 60,
      locale: mapLocale(), // the zoom and compass buttons' names, in the page's language
      // Our tiles and TileJSON go with the session cookie (same origin); nothing to add.
    });
    // A tile that fails is logged with its reason (MapLibre alone logs a bare error object).
    this.map.on("error", (e) => console.warn(`map: ${e.error?.message ?? e.error ?? e}`,
      e.sourceId ? `(source ${e.sourceId})` : ""));
    this.map.addControl(new maplibregl.NavigationControl({ visualizePitch: true }), "bottom-right");
    this.map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-left");
    localizeMap(this.map);
    this.loaded = new Promise((resolve) => this.map.once("load", resolve));
  }

  // ------------------------------------------------------------ layers from the catalogue

  async addTileLayers() {
    await this.loaded;
    const catalogue = await api("/tiles");
    let entries = listOf(catalogue, "layers", "collections", "tilesets");
    if (!entries.length && catalogue && typeof catalogue === "object") {
      entries = Object.keys(catalogue.layers ?? catalogue);
    }
    entries = entries.map((e) => (typeof e === "string" ? { id: e } : { ...e, id: e.id ?? e.name }))
      .filter((e) => e.id);
    const tilejsons = await Promise.all(entries.map((e) => api(`/tiles/${encodeURIComponent(e.id)}.json`)
      .then((tj) => [{ ...tj, ...e, tiles: tj.tiles }, tj]).catch((err) => {
        console.warn(`layer ${e.id}: ${err.message}`);
        return null;
      })));
    const ranked = tilejsons.filter(Boolean).map(([entry, tj]) => ({ entry, tj }))
      .sort((a, b) => this.rank(a.entry) - this.rank(b.entry));
    if (!ranked.length) throw new Error("the tile catalogue lists no layers");
    // Over an external style our street names still draw from our font file (its glyphs URL,
    // if any, keeps serving its own fonts).
    if (this.overlay) this.map.setFontFaces({ ...(this.map.getFontFaces() ?? {}), ...FONT_FACES });
    this.addComposite(ranked.map(({ tj }) => tj));
    for (const { entry, tj } of ranked) this.addSource(entry, tj);
    this.bindInteraction();
    return [...this.sources.keys()];
  }

  rank(entry) {
    const id = entry.id;
    const role = roleOf(id, entry.source);
    if (role === "ward_stats") return 2;
    if (role === "wards") return 0;
    if (role === "roads") return 1;
    const i = ORDER.indexOf(id);
    if (role === "aggregates") return 90;
    if (role === "alarms") return 95;
    return i >= 0 ? 10 + i : 50;
  }

  // The one vector source of all our layers; its URL follows the visible layers (tileUrl).
  addComposite(tjs) {
    // The token (if the TileJSON carries one) goes on as it came.
    const first = tjs.find((tj) => tj.tiles?.length)?.tiles[0];
    this.tileQuery = first ? new URL(first, location.href).search : "";
    const source = { type: "vector", tiles: [this.tileUrl(tjs.map((tj) => tj.id ?? tj.name))],
      minzoom: Math.min(...tjs.map((tj) => tj.minzoom ?? 0)),
      // The server refuses a zoom beyond any one layer's maxzoom: over-zoom past the lowest.
      maxzoom: Math.min(...tjs.map((tj) => tj.maxzoom ?? 22)), promoteId: "id" };
    const boxes = tjs.map((tj) => tj.bounds).filter((b) => Array.isArray(b) && b.length === 4);
    if (boxes.length) {
      source.bounds = [Math.min(...boxes.map((b) => b[0])), Math.min(...boxes.map((b) => b[1])),
        Math.max(...boxes.map((b) => b[2])), Math.max(...boxes.map((b) => b[3]))];
    }
    this.map.addSource(COMPOSITE, source);
  }

  tileUrl(ids) {
    const path = `/tiles/${ids.map(encodeURIComponent).join(",")}/{z}/{x}/{y}.mvt${this.tileQuery ?? ""}`;
    return new URL(path, location.href).href.replaceAll("%7B", "{").replaceAll("%7D", "}");
  }

  // After visibility changes: the composite URL names only the visible layers (hidden ones
  // cost nothing), batched so a burst of toggles reloads the tiles once.
  retile() {
    if (this.retileQueued) return;
    this.retileQueued = true;
    queueMicrotask(() => {
      this.retileQueued = false;
      const ids = [...this.sources.entries()].filter(([, s]) => s.visible).map(([id]) => id);
      const url = this.tileUrl(ids.length ? ids : [...this.sources.keys()].slice(0, 1));
      const src = this.map.getSource(COMPOSITE);
      if (src && src.tiles?.[0] !== url) src.setTiles([url]);
    });
  }

  addSource(entry, tj) {
    const id = entry.id;
    const role = roleOf(id, entry.source);
    const detailMinzoom = entry.detail_minzoom ?? 0;
    const vlayers = tj.vector_layers?.length ? tj.vector_layers : [{ id }];
    const styleIds = [];
    for (const vl of vlayers) {
      const kind = entry.kind ?? (KIND_COLOURS[vl.id] ? vl.id : id);
      // Zoom limits come from the source; repeating them on style layers would hide
      // over-zoomed tiles past the source's maxzoom.
      for (const layer of styleLayers(id, vl.id, role, kind, undefined, undefined, detailMinzoom)) {
        layer.source = COMPOSITE; // style ids keep the layer's name: `${id}:${vl.id}:…`
        if (layer.minzoom === undefined) delete layer.minzoom;
        if (layer.maxzoom === undefined) delete layer.maxzoom;
        if (this.overlay && role === "wards" && layer.type === "fill") layer.paint["fill-opacity"] = 0.15;
        this.map.addLayer(layer, this.map.getLayer("live-alarms-halo") ? "live-alarms-halo" : undefined);
        styleIds.push(layer.id);
      }
    }
    this.sources.set(id, {
      role, tilejson: tj, styleIds, visible: true, title: entry.title, titleVi: entry.title_vi,
      live: !entry.source || entry.source === "kind", // a device kind: the websocket has it
      sourceLayers: vlayers.map((v) => v.id),
      // Subscribed from the layer's minzoom: where a dense kind is drawn as cells, the hub
      // sends a wide view's counts as cells too (applyCells), not device by device.
      minzoom: tj.minzoom ?? 0,
    });
    if (this.cellsMsg) this.applyCells(this.cellsMsg); // a snapshot that came before the layer
    // The alarm tiles are covered by the live alarm layer and the ward roll-up tiles by
    // the ward view: both off unless asked for.
    if (role === "alarms" || role === "ward_stats") this.setVisible(id, false);
  }

  layerList() {
    return [...this.sources.entries()].map(([id, s]) => ({ id, role: s.role, visible: s.visible,
      title: s.title, titleVi: s.titleVi }));
  }

  setVisible(id, visible) {
    const s = this.sources.get(id);
    if (!s) return;
    s.visible = visible;
    for (const lid of s.styleIds) this.map.setLayoutProperty(lid, "visibility", visible ? "visible" : "none");
    this.retile();
    this.updateAggregateLabels();
  }

  deviceLayers() {
    return [...this.sources.entries()].filter(([, s]) => s.role === "devices").map(([id]) => id);
  }

  // Device layers worth live state at this zoom: visible, and drawn at this zoom.
  subscribedLayers() {
    const z = this.map.getZoom();
    return [...this.sources.entries()]
      .filter(([, s]) => s.role === "devices" && s.live && s.visible && z >= s.minzoom - 0.5)
      .map(([id]) => id);
  }

  viewportBbox() {
    const b = this.map.getBounds();
    const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
    return [clamp(b.getWest(), -180, 180), clamp(b.getSouth(), -85, 85),
      clamp(b.getEast(), -180, 180), clamp(b.getNorth(), -85, 85)].map((v) => +v.toFixed(6));
  }

  fitTo(bbox, opts = {}) {
    if (!bbox || bbox.some((v) => v === null || Number.isNaN(v))) return;
    this.map.fitBounds([[bbox[0], bbox[1]], [bbox[2], bbox[3]]],
      { padding: 40, maxZoom: 17, duration: 0, ...opts });
  }

  // ------------------------------------------------------------ live state

  sourcesFor(id) {
    const kind = this.kindOf.get(id);
    if (kind && this.sources.has(kind)) return [kind];
    return this.deviceLayers();
  }

  setState(id, patch) {
    for (const src of this.sourcesFor(id)) {
      for (const sl of this.sources.get(src).sourceLayers) {
        this.map.setFeatureState({ source: COMPOSITE, sourceLayer: sl, id }, patch);
      }
    }
  }

  // {id, status, values, alarm_severity, kind?} from a snapshot or a state delta.
  applyDevice(d, alarmSeverity) {
    const id = d.id ?? d.device;
    if (!id) return;
    if (d.kind) this.kindOf.set(id, d.kind);
    const prev = this.state.get(id) ?? { values: {} };
    const values = d.values ? { ...prev.values, ...d.values } : prev.values;
    const next = { ...prev, values, status: d.status ?? prev.status };
    if (d.ts) next.ts = d.ts;
    if ("alarm_severity" in d) next.snapshotSev = d.alarm_severity;
    this.state.set(id, next);
    const patch = { status: next.status ?? null };
    if (typeof values.lamp_on === "boolean") patch.on = values.lamp_on;
    if (typeof values.congestion_level === "number") patch.cong = values.congestion_level;
    const sev = alarmSeverity(id) ?? next.snapshotSev ?? null;
    patch.sev = SEVERITY_RANK[sev] ?? 0;
    this.setState(id, patch);
  }

  // The zoom of the vector tiles drawn now (512 px tiles: the map's zoom, floored).
  tileZoom() {
    return Math.max(0, Math.min(24, Math.floor(this.map.getZoom())));
  }

  // A wide view's cells from the websocket ({cell_zoom, cells: [{cell, kind, count, ...}]}):
  // each cell's "cell" is the id property of the same cell in the kind's aggregate tile (our
  // promoteId), so its live counts go onto the feature the tile drew (feature-state wins over
  // the tile's properties).
  applyCells(msg) {
    if (msg.cell_zoom !== this.tileZoom()) return; // zoomed since: the next subscribe sends them
    this.cellsMsg = msg;
    if (!this.map.getSource(COMPOSITE)) return;
    for (const c of msg.cells ?? []) {
      const src = this.sources.get(c.kind);
      if (!src) continue;
      const patch = { count: c.count, offline: c.offline, online: c.online,
        asev: c.alarm_severity ?? "none" };
      for (const sl of src.sourceLayers) {
        this.map.setFeatureState({ source: COMPOSITE, sourceLayer: sl, id: c.cell }, patch);
      }
    }
    this.updateAggregateLabels();
  }

  // After an alarm transition: the device's colour follows its worst open alarm.
  applySeverity(id, severity) {
    const st = this.state.get(id);
    if (st) st.snapshotSev = undefined;
    this.setState(id, { sev: SEVERITY_RANK[severity] ?? 0 });
  }

  select(id) {
    if (this.selected) this.setState(this.selected, { selected: false });
    this.selected = id;
    if (id) this.setState(id, { selected: true });
  }

  // ------------------------------------------------------------ live alarms layer

  addAlarmLayer() {
    this.map.addSource("live-alarms", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
    const sev = ["get", "severity"];
    const colour = byName(sev, SEVERITY_COLOURS, SEVERITY_COLOURS.warning);
    const ring = byName(sev, SEVERITY_RING, SEVERITY_RING.warning);
    // Rings, not discs: the device inside keeps its own colour (palette.js).
    this.map.addLayer({ id: "live-alarms-halo", type: "circle", source: "live-alarms", paint: {
      "circle-radius": ["interpolate", ["linear"], ["zoom"], 10, 10, 16, 22],
      "circle-opacity": 0, "circle-stroke-color": colour, "circle-stroke-width": 1.5,
      "circle-stroke-opacity": ["case", ["get", "shelved"], 0, ["get", "unacked"], 0.7, 0.3] } });
    this.map.addLayer({ id: "live-alarms", type: "circle", source: "live-alarms", paint: {
      "circle-radius": ["interpolate", ["linear"], ["zoom"], 10, 6, 16, 12],
      // nearly transparent, so a click inside the ring still finds the alarm
      "circle-color": colour, "circle-opacity": 0.01,
      "circle-stroke-color": colour, "circle-stroke-width": ring,
      "circle-stroke-opacity": ["case", ["get", "shelved"], 0.35, 1] } });
    this.pulse();
  }

  setAlarms(alarms) {
    const features = [];
    for (const a of alarms) {
      const p = pointOf(a.geometry);
      if (!p) continue;
      features.push({ type: "Feature", id: Number(a.id) || undefined,
        geometry: { type: "Point", coordinates: p },
        properties: { id: String(a.id), device: a.device, severity: a.severity,
          unacked: a.state === "active_unacked" || a.state === "rtn_unacked",
          shelved: !!(a.shelved_until && new Date(a.shelved_until) > new Date()) } });
    }
    this.unackedShown = features.some((f) => f.properties.unacked && !f.properties.shelved);
    this.map.getSource("live-alarms")?.setData({ type: "FeatureCollection", features });
  }

  // Unacknowledged alarms breathe, at 5 frames a second and only while there are some:
  // visible, and cheap on a control-room PC that shows the map all day.
  pulse() {
    let phase = 0;
    setInterval(() => {
      if (document.hidden || !this.unackedShown || !this.map.getLayer("live-alarms-halo")) return;
      phase = (phase + 1) % 16;
      const k = 1 + 0.5 * Math.sin((phase / 16) * 2 * Math.PI);
      this.map.setPaintProperty("live-alarms-halo", "circle-radius",
        ["interpolate", ["linear"], ["zoom"], 10, 10 * k, 16, 22 * k]);
    }, 200);
  }

  // ------------------------------------------------------------ interaction

  clickableLayers() {
    const ids = ["live-alarms"];
    for (const s of this.sources.values()) {
      if (s.role === "devices" || s.role === "aggregates") {
        ids.push(...s.styleIds.filter((l) => !l.endsWith(":glow") && !l.endsWith(":fill") && !/ring$/.test(l)));
      } else if (s.role === "alarms" && s.visible) {
        ids.push(...s.styleIds);
      }
    }
    return ids.filter((l) => this.map.getLayer(l));
  }

  featuresAt(point) {
    const box = [[point.x - 6, point.y - 6], [point.x + 6, point.y + 6]];
    return this.map.queryRenderedFeatures(box, { layers: this.clickableLayers() });
  }

  bindInteraction() {
    const popup = new maplibregl.Popup({ closeButton: false, closeOnClick: false, className: "hover-tip",
      offset: 10 });
    this.map.on("mousemove", (e) => {
      const f = this.featuresAt(e.point)[0];
      this.map.getCanvas().style.cursor = f ? "pointer" : "";
      if (!f) {
        popup.remove();
        return;
      }
      const p = f.properties ?? {};
      const src = this.sources.get(f.sourceLayer);
      let text;
      if (f.layer.id === "live-alarms") text = `⚠ ${p.device ?? ""} · ${p.severity}`;
      else if (src?.role === "aggregates" || p.agg) {
        text = `${p.count ?? p.n ?? ""} × ${kindLabel(p.kind ?? f.sourceLayer)}`
          + (p.offline ? ` · ${p.offline} offline` : "") + (p.alarms ? ` · ⚠ ${p.alarms}` : "");
      }
      else text = `${p.name || p.id} · ${kindName(p.kind ?? f.sourceLayer)}`;
      popup.setLngLat(e.lngLat).setDOMContent(h("div", text)).addTo(this.map);
    });
    this.map.on("mouseout", () => popup.remove());
    this.map.on("click", (e) => {
      const f = this.featuresAt(e.point)[0];
      if (!f) return;
      const src = this.sources.get(f.sourceLayer);
      if (f.layer.id === "live-alarms") {
        this.onAlarmClick?.(f.properties.id, f.properties.device);
      } else if (src?.role === "aggregates" || f.properties?.agg) {
        this.map.easeTo({ center: e.lngLat, zoom: Math.min(this.map.getZoom() + 2.5, 18) });
      } else if (f.properties?.id) {
        this.kindOf.set(f.properties.id, f.sourceLayer);
        this.onDeviceClick?.(f.properties.id, f);
      }
    });
    this.map.on("idle", () => this.updateAggregateLabels());
    // While unacknowledged alarms pulse, the map repaints five times a second and "idle"
    // never fires: the counts then follow the view and the tiles as they arrive instead.
    const soon = () => {
      clearTimeout(this.labelTimer);
      this.labelTimer = setTimeout(() => this.updateAggregateLabels(), 300);
    };
    this.map.on("moveend", soon);
    this.map.on("sourcedata", (e) => {
      if (e.tile && e.sourceId === COMPOSITE) soon();
    });
  }

  // Counts on the low-zoom aggregate bubbles. The map has no glyph server (everything is
  // served by us, offline), so the numbers are small HTML labels over the bubbles.
  updateAggregateLabels() {
    for (const m of this.aggMarkers) m.remove();
    this.aggMarkers = [];
    const layers = [];
    for (const s of this.sources.values()) {
      if (s.visible) layers.push(...s.styleIds.filter((l) => l.endsWith(":agg")));
    }
    const z = this.map.getZoom();
    if (!layers.length || z < 11) return;
    if (!layers.length) return;
    const cells = new Map();
    for (const f of this.map.queryRenderedFeatures({ layers })) {
      if (f.geometry.type !== "Point") continue;
      const key = f.geometry.coordinates.map((v) => v.toFixed(5)).join(",");
      const cell = cells.get(key) ?? { at: f.geometry.coordinates, kinds: new Map() };
      const kind = f.properties.kind ?? f.sourceLayer;
      cell.kinds.set(kind, Number(f.state?.count ?? f.properties.count ?? 0));
      cells.set(key, cell);
    }
    for (const { at, kinds } of [...cells.values()].slice(0, 400)) {
      const parts = [...kinds.entries()].filter(([, n]) => n > 0)
        .map(([k, n]) => h("span", { style: { color: KIND_COLOURS[k] ?? "#fff" } },
          n >= 10000 ? `${Math.round(n / 1000)}k` : String(n)));
      if (!parts.length) continue;
      const el = h("div.agg-label", ...parts);
      this.aggMarkers.push(new maplibregl.Marker({ element: el }).setLngLat(at).addTo(this.map));
    }
  }
}
