// /public: every citizens' report on a map (public fields only: no contact, no description,
// no tracking code) with category and status filters, and the statistics per ward or per
// category over a chosen period, with the open data downloads for the same filters.

import { applyStatic } from "./i18n.js";
import {
  CATEGORIES, CATEGORY_COLOURS, STATUSES, categoryLabel, fmtDateTime, fmtNum, lang, publicApi,
  reportStatusLabel, startLanguage, t,
} from "./citizen.js";
import { openMap } from "./citizenmap.js";

const $ = (sel) => document.querySelector(sel);
const DAY = 86400000;
let map = null;
let popup = null;
let stats = null;
let shown = 0;
window.iocPublic = { ready: false };

// The city's days are UTC+7 (the query below says so): "today" is the city's date, not the
// phone's, or a report made after the city's midnight falls outside the default period.
const CITY_OFFSET_MS = 7 * 3600 * 1000;
function cityDate(ms) {
  return new Date(ms + CITY_OFFSET_MS).toISOString().slice(0, 10);
}

function options(select, values) {
  const chosen = select.value;
  select.replaceChildren(...values.map(([v, label]) => Object.assign(document.createElement("option"),
    { value: v, textContent: label, selected: v === chosen })));
}

function renderControls() {
  options($("#f-category"), [["", t("cz_all")], ...Object.keys(CATEGORIES).map((c) => [c, categoryLabel(c)])]);
  options($("#f-status"), [["", t("cz_all")], ["open", t("cz_open")], ["closed", t("cz_closed")],
    ...STATUSES.map((s) => [s, reportStatusLabel(s)])]);
  options($("#f-by"), [["ward", t("cz_by_ward")], ["category", t("cz_by_category")]]);
  $("#legend").replaceChildren(...Object.keys(CATEGORIES).map((c) => {
    const dot = document.createElement("i");
    dot.style.background = CATEGORY_COLOURS[c];
    const span = document.createElement("span");
    span.append(dot, categoryLabel(c));
    return span;
  }));
  $("#shown").textContent = t("cz_shown", { n: shown });
}

// The period's bounds: from the start of the first day to the end of the last (the city's days).
function query(withMapFilters = true) {
  const q = new URLSearchParams();
  if (withMapFilters && $("#f-category").value) q.set("category", $("#f-category").value);
  if (withMapFilters && $("#f-status").value) q.set("status", $("#f-status").value);
  // The city's days (UTC+7), whatever the phone's time zone; "to" is the next day's start.
  if ($("#f-from").value) q.set("from", `${$("#f-from").value}T00:00:00+07:00`);
  if ($("#f-to").value) {
    const next = new Date(Date.parse(`${$("#f-to").value}T00:00:00Z`) + DAY).toISOString().slice(0, 10);
    q.set("to", `${next}T00:00:00+07:00`);
  }
  return q;
}

async function loadMap() {
  const q = query().toString();
  $("#dl-geojson").href = `/api/v1/public/reports.geojson?${q}`;
  $("#dl-csv").href = `/api/v1/public/reports.csv?${q}`;
  const data = await publicApi(`/api/v1/public/reports.geojson?${q}`);
  shown = data.features.length;
  window.iocPublic.features = data.features;
  $("#shown").textContent = t("cz_shown", { n: shown });
  if (!map) return;
  map.getSource("reports").setData(data);
}

function kpi(label, value) {
  const box = document.createElement("div");
  box.className = "kpi";
  const b = document.createElement("b");
  b.textContent = value;
  const s = document.createElement("span");
  s.textContent = label;
  box.append(b, s);
  return box;
}

const pct = (v) => (v === null || v === undefined ? "–" : `${fmtNum(v)} %`);
const hours = (v) => (v === null || v === undefined ? "–"
  : v < 1 ? t("cz_minutes", { n: fmtNum(v * 60, 0) }) : t("cz_hours", { n: fmtNum(v) }));

function renderStats() {
  if (!stats) return;
  const tot = stats.total;
  $("#kpis").replaceChildren(kpi(t("cz_received_n"), fmtNum(tot.received, 0)),
    kpi(t("cz_resolved_n"), fmtNum(tot.resolved, 0)), kpi(t("cz_within_sla"), pct(tot.within_sla_pct)),
    kpi(t("cz_median"), hours(tot.median_hours_to_resolve)), kpi(t("cz_satisfaction"), pct(tot.satisfaction_pct)));
  const head = document.createElement("tr");
  // Short headings (a phone is 390 px wide); the full wording is their title and the KPIs'.
  const columns = [[stats.by === "ward" ? t("cz_by_ward") : t("cz_by_category")],
    [t("cz_received_n")], [t("cz_resolved_n")], [t("cz_col_sla"), t("cz_within_sla")],
    [t("cz_col_median"), t("cz_median")], [t("cz_col_sat"), t("cz_satisfaction")]];
  for (const [label, title] of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = label;
    if (title) th.title = title;
    head.append(th);
  }
  const rows = stats.rows.map((r) => {
    const tr = document.createElement("tr");
    const name = stats.by === "ward" ? (r.name ?? r.ward ?? "–") : categoryLabel(r.category);
    for (const [i, v] of [name, fmtNum(r.received, 0), fmtNum(r.resolved, 0), pct(r.within_sla_pct),
      hours(r.median_hours_to_resolve), pct(r.satisfaction_pct)].entries()) {
      const td = document.createElement("td");
      td.textContent = v;
      td.dataset.label = columns[i][1] ?? columns[i][0]; // a phone shows each row as a card
      tr.append(td);
    }
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 6;
    td.textContent = t("cz_no_rows");
    tr.append(td);
    rows.push(tr);
  }
  $("#stats-table").replaceChildren(document.createElement("thead"), document.createElement("tbody"));
  $("#stats-table").tHead.append(head);
  $("#stats-table").tBodies[0].append(...rows);
}

async function loadStats() {
  const q = query(false);
  q.set("by", $("#f-by").value || "ward");
  stats = await publicApi(`/api/v1/public/reports/stats/breakdown?${q}`);
  renderStats();
}

function render() {
  renderControls();
  renderStats();
  applyStatic();
}

async function startMap() {
  const opened = await openMap($("#public-map"));
  map = opened.map;
  const colours = ["match", ["get", "category"]];
  for (const [c, colour] of Object.entries(CATEGORY_COLOURS)) colours.push(c, colour);
  colours.push("#868e96");
  map.addSource("reports", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
  map.addLayer({ id: "reports", type: "circle", source: "reports", paint: {
    "circle-color": colours,
    "circle-radius": ["interpolate", ["linear"], ["zoom"], 10, 4, 16, 9],
    "circle-stroke-color": ["match", ["get", "status"], "resolved", "#1f7a3a", "rejected", "#b42318", "#ffffff"],
    "circle-stroke-width": 2,
    "circle-opacity": ["match", ["get", "status"], "resolved", 0.55, "rejected", 0.4, 0.95],
  } });
  map.on("click", "reports", (ev) => {
    const p = ev.features[0].properties;
    const box = document.createElement("div");
    const title = document.createElement("strong");
    title.textContent = categoryLabel(p.category);
    const lines = [reportStatusLabel(p.status), fmtDateTime(p.created_at)];
    box.append(title, ...lines.map((l) => Object.assign(document.createElement("div"), { textContent: l })));
    popup?.remove();
    popup = new opened.maplibregl.Popup({ closeButton: true }).setLngLat(ev.lngLat).setDOMContent(box).addTo(map);
  });
  map.on("mouseenter", "reports", () => (map.getCanvas().style.cursor = "pointer"));
  map.on("mouseleave", "reports", () => (map.getCanvas().style.cursor = ""));
  window.iocPublic.map = map;
}

startLanguage(render);
$("#f-from").value = cityDate(Date.now() - 30 * DAY);
$("#f-to").value = cityDate(Date.now());
render();
for (const id of ["#f-category", "#f-status"]) $(id).addEventListener("change", () => loadMap());
for (const id of ["#f-from", "#f-to"]) $(id).addEventListener("change", () => Promise.all([loadMap(), loadStats()]));
$("#f-by").addEventListener("change", () => loadStats());
await startMap();
await Promise.all([loadMap(), loadStats()]);
window.iocPublic.ready = true;
window.iocPublic.lang = lang;
