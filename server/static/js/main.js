// The IOC map page: sign-in, then the live map with its panels. Exposes window.ioc for
// people poking at it from the console (and for the browser tests).

import "./a11y.js"; // the static landmarks' names, in the current language
import { AlarmHistory } from "./alarmhistory.js"; // issue 18: alarm history, timeline, KPIs
import { AlarmPanel, AlarmStore, countsAsOpen } from "./alarms.js";
import {
  api, fmtNumber, h, linkIndicator, listOf, LiveSocket, signIn, signOut, startSession, toast,
  whenUnauthorized,
} from "./common.js";
import { AssetSections } from "./assets.js"; // issue 18: assets
import { cameraSection, stopCamera } from "./camera.js";
import { CommandsPanel } from "./commands.js"; // issue 18: commands from the map
import { DevicePanel } from "./device.js";
import {
  addStrings, applyStatic, kindLabel, lang, onLangChange, setLang, severityLabel, statusLabel, t,
} from "./i18n.js";
import { KIND_COLOURS, LiveMap, SEVERITY_COLOURS, SEVERITY_RING, STATUS_COLOURS } from "./livemap.js";
import { ReplayControl } from "./replay.js";
import { ReportsPanel } from "./reports.js"; // issue 14: citizens' reports
import { RulesPanel } from "./rules.js";
import { SchedulesPanel } from "./schedules.js";
import { SearchBox } from "./search.js";
import { treeSection } from "./trees.js"; // issue 14: trees' attributes and work orders
import { WardRollup } from "./wards.js";

const config = JSON.parse(document.getElementById("config").textContent);
const $ = (sel) => document.querySelector(sel);
const ACTING_ROLES = new Set(["operator", "admin"]);

window.ioc = { ready: false, config };

for (const btn of document.querySelectorAll("[data-lang]")) {
  btn.addEventListener("click", () => setLang(btn.dataset.lang));
}
applyStatic();

// ---------------------------------------------------------------- sign-in

function showLogin(message) {
  $("#login").hidden = false;
  $("#login-error").textContent = message ?? "";
  $("#login-token").focus();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("#login-token").value.trim();
  if (!token) return;
  try {
    await signIn(token);
  } catch (err) {
    $("#login-error").textContent = err.status === 401 || err.status === 409 ? t("bad_token") : err.message;
    return;
  }
  $("#login").hidden = true;
  $("#login-token").value = "";
  if (started) location.reload(); // signed in again after a revoked token: start afresh
  else start();
});

$("#sign-out").addEventListener("click", async () => {
  await signOut();
  location.replace("/");
});

// ---------------------------------------------------------------- the console

let started = false;

async function start(session = api("/api/v1/me", { quiet: true })) {
  let me;
  try {
    me = await session;
  } catch (err) {
    showLogin(err.status === 401 ? err.message : err.message || t("bad_token"));
    return;
  }
  if (started) return;
  started = true;
  $("#login").hidden = true;
  whenUnauthorized(() => showLogin(t("session_ended")));
  $("#user").textContent = `${me.name} · ${me.role}`;
  document.body.classList.add("signed-in");
  let replay = null; // the time slider, once the socket exists
  // Alarms of the past are shown, not acted on.
  const canAct = () => ACTING_ROLES.has(me.role) && !replay?.active;

  const live = new LiveMap("map", {
    styleUrl: config.styleUrl,
    onDeviceClick: (id) => {
      if (window.ioc.commands?.onDeviceClick(id)) return;
      const commands = window.ioc.commands; // the device page opens where its panel was
      if (commands && !commands.root.hidden) commands.close();
      openDevice(id);
    },
    onAlarmClick: (alarmId, device) => {
      alarmPanel.select(alarmId);
      if (device) openDevice(device);
    },
  });
  const store = new AlarmStore();
  let crews = [];
  const alarmPanel = new AlarmPanel($("#alarm-list"), store, {
    crews: () => crews, canAct, onSelect: (a) => focusAlarm(a),
  });
  // ---- issue 18: assets (search, device sections, camera) ----
  const assets = new AssetSections({
    live, canEdit: () => ["integrator", "admin"].includes(me.role), openDevice: (id) => openDevice(id),
    onSaved: (id) => devicePanel.open(id),
  });
  const search = new SearchBox($("#search-slot"), {
    onDevice: (d) => {
      if (d.center) live.map.easeTo({ center: d.center, zoom: Math.max(live.map.getZoom(), 17) });
      openDevice(d.id);
    },
    onWard: (w) => live.fitTo(w.bbox, { duration: 600 }),
  });
  if (["integrator", "admin"].includes(me.role)) {
    const add = h("button.btn.small.assets-add", { type: "button",
      onclick: () => assets.openAdd(Object.keys(KIND_COLOURS)) }, t("assets_add"));
    $("#search-slot").append(add);
    onLangChange(() => { add.textContent = t("assets_add"); });
  }
  // ---- end issue 18 ----
  const devicePanel = new DevicePanel($("#device-panel"), {
    extras: (d) => [cameraSection(d), treeSection(d, { canAct, crews: () => crews }), ...assets.sections(d)],
    onClose: () => {
      stopCamera();
      live.select(null);
    },
    onZoom: (d) => live.map.easeTo({ center: pointOfFeature(d), zoom: Math.max(live.map.getZoom(), 17) }),
    wardName: (code) => wards.data?.wards.find((w) => w.code === code)?.name ?? code,
  });
  const wards = new WardRollup($("#ward-table"), live, {
    onTotals: (tot) => renderKpis(tot),
    instant: () => (replay?.active ? replay.now() : null), // replaying: the figures of then
  });
  Object.assign(window.ioc, { live, map: live.map, store, alarmPanel, devicePanel, wards, me, search, assets });
  window.ioc.schedules = new SchedulesPanel({ canEdit: ACTING_ROLES.has(me.role) })
    .mount($(".map-tools"), $(".map-wrap"));
  window.ioc.alarmHistory = new AlarmHistory({ // issue 18: alarm history, timeline, KPIs
    canAct, wards: () => wards.data?.wards ?? [], kinds: () => Object.keys(KIND_COLOURS),
    crews: () => crews, onAlarm: (a) => focusAlarm(a), onChanged: (a) => store.upsert(a),
  }).mount($(".alarms-head .filters"), $(".map-wrap"));
  if (me.role !== "crew") { // issue 18: rules on screen
    window.ioc.rules = new RulesPanel({ canEdit: ["integrator", "admin"].includes(me.role),
      canTest: ["operator", "integrator", "admin"].includes(me.role), map: live.map })
      .mount($(".map-tools"), $(".map-wrap"));
  }

  function openDevice(id) {
    live.select(id);
    devicePanel.open(id);
  }

  function focusAlarm(a) {
    const p = a.geometry ? pointOfFeature(a) : null;
    if (p) live.map.easeTo({ center: p, zoom: Math.max(live.map.getZoom(), 16) });
    if (a.device) openDevice(a.device);
  }

  function renderKpis(tot) {
    const pct = tot.devices ? Math.round((100 * tot.online) / tot.devices) : 0;
    $("#kpi-online").textContent = `${pct}%`;
    $("#kpi-lamps-out").textContent = fmtNumber(tot.lamps_out);
    updateAlarmKpis();
  }

  function updateAlarmKpis() {
    const all = store.list().filter(countsAsOpen); // shelved ones are not open on the badges
    $("#kpi-alarms").textContent = fmtNumber(all.length);
    const unacked = all.filter((a) => a.state === "active_unacked" || a.state === "rtn_unacked").length;
    $("#kpi-unacked").textContent = fmtNumber(unacked);
    $("#kpi-unacked").closest(".kpi").classList.toggle("hot", unacked > 0);
    $("#alarm-count").textContent = all.length ? `(${all.length})` : "";
  }

  // Alarm transitions: the panel re-renders itself; here the map and the roll-up follow.
  const touched = new Set();
  store.onChange((changed) => {
    live.setAlarms(store.list());
    if (changed?.device) touched.add(changed.device);
    if (!changed) for (const a of store.alarms.values()) touched.add(a.device);
    for (const dev of touched) {
      const sev = store.severityOf(dev);
      live.applySeverity(dev, sev);
      if (devicePanel.id === dev) devicePanel.setSeverity(sev);
    }
    touched.clear();
    updateAlarmKpis();
    if (changed) wards.refreshSoon();
  });

  // Fit the city first (the roll-up knows its extent), then load layers into that view.
  const summary = wards.load().catch((err) => {
    toast(err.message, "error");
    return null;
  });
  await live.loaded;
  const data = await summary;
  const hashDevice = new URLSearchParams(location.hash.slice(1)).get("device");
  if (!live.hadHash && data?.bbox) live.fitTo(data.bbox);
  try {
    await live.addTileLayers();
  } catch (err) {
    toast(t("tiles_missing", { why: err.message }), "error");
  }
  live.addAlarmLayer();
  const reports = new ReportsPanel({ live, alarms: store, canAct, crews: () => crews,
    wards: () => wards.data?.wards ?? [], aside: $(".side.right"), kpiSlot: $(".kpis") });
  reports.addLayer();
  reports.watchAlarms($("#alarm-list"));
  reports.load().catch((err) => toast(err.message, "error"));
  window.ioc.reports = reports;
  wards.paintWards();
  wards.start();
  renderLayerSwitcher(live);
  renderLegend();
  onLangChange(() => {
    renderLayerSwitcher(live);
    renderLegend();
  });

  try {
    await store.load();
  } catch (err) {
    toast(err.message, "error");
  }
  api("/api/v1/crews").then((d) => {
    crews = listOf(d, "crews");
    alarmPanel.render();
    reports.render();
  }).catch((err) => console.warn("crews:", err.message));

  const showLink = linkIndicator($("#link"));
  const socket = new LiveSocket({
    onStatus: (status, reason) => {
      showLink(status, reason);
      if (status === "live") replay?.refresh(); // reconnected mid-replay: the same moment
      if (status === "live" && socket) reports.load().catch(() => {}); // what changed while away
    },
    onMessage: (msg) => {
      window.ioc.commands?.onMessage(msg);
      switch (msg.type) {
        case "snapshot":
          if (msg.at !== undefined) { // a replay's: the devices and alarms of that moment
            if (!replay?.active) break; // a late one, after going back to live
            replay.onSnapshot(msg);
            store.replaceAll(msg.alarms ?? []);
            wards.refresh(); // the roll-up and the KPIs of that moment
          }
          for (const d of msg.devices ?? []) {
            live.applyDevice(d, (id) => store.severityOf(id));
            devicePanel.update(d);
          }
          if (msg.cells) live.applyCells(msg);
          break;
        case "cells": // a wide view's live counts, on the tiles' own cell features
          live.applyCells(msg);
          break;
        case "state": {
          const d = { ...msg, id: msg.device ?? msg.id };
          live.applyDevice(d, (id) => store.severityOf(id));
          devicePanel.update(d);
          break;
        }
        case "alarm":
          // A replayed one (it has a ts) still in flight after going back to live: not news.
          if (msg.ts !== undefined && !replay?.active) break;
          if (msg.alarm) store.upsert(msg.alarm);
          break;
        case "report":
          if (msg.report) reports.apply(msg.report);
          break;
        case "replay_end":
          replay?.onEnd();
          break;
        case "error":
          console.warn("hub:", msg.message ?? msg.detail ?? msg);
          if (replay?.active) toast(msg.message ?? String(msg), "error");
          break;
        default:
          break;
      }
    },
  });
  // What the live map watches (zoom: a wide view's dense kinds come as the cells of this
  // zoom's aggregate tiles).
  const watched = () => ({ bbox: live.viewportBbox(), layers: live.subscribedLayers(), zoom: live.tileZoom(),
    alarms: true, coalesce: true, reports: true });
  replay = new ReplayControl({
    bar: $("#replay-bar"),
    badge: $("#replay-badge"),
    socket,
    view: () => ({ bbox: live.viewportBbox(), layers: live.subscribedLayers() }),
    onMode: (active) => {
      alarmPanel.render();
      wards.refresh(); // today's figures, or those of the replayed moment
      if (active) socket.subscription = null; // a reconnect resumes the replay, not live
      else {
        socket.subscription = { op: "subscribe", ...watched() };
        store.load().catch((err) => toast(err.message, "error")); // today's alarms again
      }
    },
  });
  const subscribe = () => socket.subscribe(watched());
  let moveTimer = null;
  const follow = () => (replay.active ? replay.refresh() : subscribe());
  live.map.on("moveend", () => {
    clearTimeout(moveTimer);
    moveTimer = setTimeout(follow, 250);
  });
  live.onLayersChanged = follow;
  subscribe();
  socket.connect();
  Object.assign(window.ioc, { socket, replay });
  window.ioc.commands = new CommandsPanel({ live, socket, canSend: () => ACTING_ROLES.has(me.role) })
    .mount($(".map-tools"), $(".map-wrap"));
  // one panel on the map's right side at a time: the commands' panel covers the device's
  $("#cmd-open").addEventListener("click", () => devicePanel.close());
  if (hashDevice) openDevice(hashDevice);
  window.ioc.ready = true;
}

function pointOfFeature(f) {
  const g = f.geometry;
  if (!g) return undefined;
  if (g.type === "Point") return g.coordinates;
  const flat = JSON.stringify(g.coordinates).match(/-?\d+(\.\d+)?/g).map(Number);
  return [flat[0], flat[1]];
}

// ---------------------------------------------------------------- layer switcher, legend

function renderLayerSwitcher(live) {
  const groups = { wards: "basemap", roads: "basemap", ward_stats: "basemap", devices: "devices",
    aggregates: "devices", alarms: "alarms" };
  const sections = { basemap: [], devices: [], alarms: [] };
  for (const layer of live.layerList()) {
    const colour = KIND_COLOURS[layer.id] ?? (layer.role === "wards" ? "#2d5b88" : layer.role === "roads"
      ? "#56657d" : layer.role === "alarms" ? SEVERITY_COLOURS.critical : "#1c7ed6");
    const input = h("input", { type: "checkbox", checked: layer.visible, dataset: { layer: layer.id },
      onchange: (e) => {
        live.setVisible(layer.id, e.target.checked);
        live.onLayersChanged?.();
      } });
    sections[groups[layer.role] ?? "devices"].push(
      h("label.layer-row", input, layer.role === "alarms" // alarms are rings on the map: here too
        ? h("span.swatch.ring", { style: { borderColor: colour } })
        : h("span.swatch", { style: { background: colour } }),
        h("span", layerTitle(layer))));
  }
  const live_alarms = h("input", { type: "checkbox", checked: true, dataset: { layer: "live-alarms" },
    onchange: (e) => {
      for (const id of ["live-alarms", "live-alarms-halo"]) {
        live.map.setLayoutProperty(id, "visibility", e.target.checked ? "visible" : "none");
      }
    } });
  sections.alarms.unshift(h("label.layer-row", live_alarms,
    h("span.swatch.ring", { style: { borderColor: SEVERITY_COLOURS.critical } }), h("span", t("alarms"))));
  $("#layer-list").replaceChildren(
    h("h3", t("basemap")), ...sections.basemap,
    h("h3", t("devices")), ...sections.devices,
    h("h3", t("alarms")), ...sections.alarms);
}

function layerTitle(layer) {
  const known = kindLabel(layer.id);
  if (known !== layer.id.replaceAll("_", " ")) return known;
  return (lang() === "vi" ? layer.titleVi : layer.title) ?? known;
}

// The legend draws what the map draws (palette.js): fills for kinds and statuses, rings of the
// severity's colour and thickness for alarms.
addStrings({ legend_alarm_ring: "Alarm: a ring round the device", legend_kinds: "Devices" },
  { legend_alarm_ring: "Cảnh báo: vòng tròn quanh thiết bị", legend_kinds: "Thiết bị" });

function renderLegend() {
  const dot = (c) => h("span.dot", { style: { background: c } });
  const ring = (s) => h("span.legend-ring", { dataset: { severity: s }, style: {
    borderColor: SEVERITY_COLOURS[s], borderWidth: `${SEVERITY_RING[s]}px` } },
  h("span.dot", { style: { background: KIND_COLOURS.streetlight } }));
  $("#legend").replaceChildren(
    h("h3", t("legend")),
    h("div.legend-row", dot(KIND_COLOURS.streetlight), h("span", statusLabel("lamp_on"))),
    h("div.legend-row", dot(STATUS_COLOURS.lamp_off), h("span", statusLabel("lamp_off"))),
    ...["stale", "offline", "unknown"].map((s) => h("div.legend-row",
      dot(STATUS_COLOURS[s]), h("span", statusLabel(s)))),
    h("p.legend-note", t("legend_alarm_ring")),
    ...["critical", "major", "minor", "warning"].map((s) => h("div.legend-row", ring(s),
      h("span", severityLabel(s)))));
}

// ---------------------------------------------------------------- clock, boot

setInterval(() => {
  $("#clock").textContent = new Date().toLocaleTimeString(lang() === "vi" ? "vi-VN" : "en-GB");
}, 1000);

if (config.vendorMissing) {
  document.body.append(h("div.fatal", config.vendorMissing));
} else {
  start(startSession());
}
