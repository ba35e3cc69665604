// The ward roll-up: lamps out and open alarms per ward (a table, refreshed every few
// seconds and after alarm transitions), ward labels on the map, and an optional
// choropleth of the share of lamps out. While the time slider replays the past, the
// roll-up (and the KPIs fed from its totals) is the one of the replayed instant
// (GET /api/v1/wards/summary?at=), refreshed as the replay moves.

import { api, fmtNumber, h } from "./common.js";
import { addStrings, lang, onLangChange, t } from "./i18n.js";
import { COMPOSITE, maplibregl } from "./livemap.js";

addStrings({
  wards_col_cameras: "Cameras",
  wards_cam_title: "{online} of {total} cameras online, {recording} recording, {down} down",
}, {
  wards_col_cameras: "Camera",
  wards_cam_title: "{online}/{total} camera trực tuyến, {recording} đang ghi, {down} hỏng",
});

const REFRESH_MS = 10000;
const REPLAY_REFRESH_MS = 2000; // while replaying: the figures follow the moving instant
const MINUTE = 60_000;

addStrings({ wards_as_of: "As at {t}" }, { wards_as_of: "Vào lúc {t}" });

export class WardRollup {
  // instant(): the replayed moment (epoch ms), or null when live.
  constructor(root, live, { onTotals, instant }) {
    this.root = root;
    this.live = live;
    this.onTotals = onTotals;
    this.instant = instant ?? (() => null);
    this.data = null;
    this.seq = 0; // loads asked for; an answer to an older one is dropped
    this.loadedAt = 0; // when the last load was asked (performance.now())
    this.loadedFor = null; // the replayed minute it was for (null: live)
    this.labels = [];
    this.choropleth = false;
    this.sort = "lamps_out";
    this.pending = null;
    onLangChange(() => this.render());
  }

  async load() {
    const seq = ++this.seq;
    const at = this.instant();
    this.loadedAt = performance.now();
    this.loadedFor = at === null ? null : Math.floor(at / MINUTE);
    const url = at === null ? "/api/v1/wards/summary"
      : `/api/v1/wards/summary?at=${encodeURIComponent(new Date(Math.min(at, Date.now())).toISOString())}`;
    const data = await api(url);
    if (seq !== this.seq) return this.data; // a newer load (another instant, or live) won
    this.data = data;
    this.render();
    this.renderLabels();
    this.paintWards();
    this.onTotals?.(this.data.totals);
    return this.data;
  }

  start() {
    setInterval(() => {
      const at = this.instant();
      if (at === null) {
        if (this.loadedFor !== null || performance.now() - this.loadedAt >= REFRESH_MS) this.refresh();
      } else if (Math.floor(at / MINUTE) !== this.loadedFor
                 && performance.now() - this.loadedAt >= REPLAY_REFRESH_MS) {
        this.refresh(); // the past does not change: only when the replay has moved
      }
    }, 500);
  }

  // Alarm transitions come in bursts: one refresh for a burst.
  refreshSoon() {
    clearTimeout(this.pending);
    this.pending = setTimeout(() => this.refresh(), 1000);
  }

  async refresh() {
    if (document.hidden) return;
    try {
      await this.load();
    } catch (err) {
      console.warn("ward roll-up:", err.message);
    }
  }

  sorted() {
    const key = {
      lamps_out: (w) => w.lamps.out,
      alarms: (w) => w.alarms.open * 100 + w.alarms.unacked,
      offline: (w) => w.devices.offline,
      cameras: (w) => w.cameras?.down ?? 0,
      name: () => 0,
    }[this.sort];
    return this.data.wards.slice().sort((a, b) => key(b) - key(a) || a.name.localeCompare(b.name, "vi"));
  }

  render() {
    if (!this.data) return;
    const th = (key, label) => h(`th.num${this.sort === key ? ".sorted" : ""}`, {
      onclick: () => {
        this.sort = key;
        this.render();
      },
    }, label);
    const tot = this.data.totals;
    const asOf = this.data.at ? h("p.wards-as-of", t("wards_as_of", { t: new Date(this.data.at)
      .toLocaleTimeString(lang() === "vi" ? "vi-VN" : "en-GB", { hour: "2-digit", minute: "2-digit" }) }))
      : "";
    const rows = this.sorted().map((w) => {
      const sev = Object.entries(w.alarms.by_severity).find(([, n]) => n > 0)?.[0];
      const outShare = w.lamps.total ? w.lamps.out / w.lamps.total : 0;
      return h("tr", { dataset: { ward: w.code }, onclick: () => this.live.fitTo(w.bbox, { duration: 600 }) },
        h("td.ward-name", w.name),
        h("td.num", { title: `${w.lamps.out} / ${w.lamps.total}` },
          h("span.bar", { style: { "--share": `${Math.min(100, outShare * 400)}%` } }),
          h("span", fmtNumber(w.lamps.out)), h("small", `/${fmtNumber(w.lamps.total)}`)),
        h("td.num", w.alarms.open ? h(`span.count.sev-${sev ?? "warning"}`, w.alarms.open) : "·",
          w.alarms.unacked ? h("small", ` (${w.alarms.unacked})`) : ""),
        h("td.num", w.devices.offline || "·"),
        // cameras: online / total, red when one is down (issue 18)
        h(`td.num${w.cameras?.down ? ".cam-down" : ""}`, { title: t("wards_cam_title", w.cameras ?? {}) },
          w.cameras?.total ? [h("span", fmtNumber(w.cameras.online)), h("small", `/${fmtNumber(w.cameras.total)}`)] : "·"));
    });
    this.root.replaceChildren(
      asOf,
      h("label.toggle-row",
        h("input", { type: "checkbox", checked: this.choropleth, onchange: (e) => {
          this.choropleth = e.target.checked;
          this.paintWards();
        } }),
        h("span", t("colour_wards"))),
      h("table.wards-table",
        h("thead", h("tr",
          h("th", { onclick: () => {
            this.sort = "name";
            this.render();
          } }, t("ward")),
          th("lamps_out", t("col_lamps_out")),
          th("alarms", t("col_alarms")),
          th("offline", t("col_offline")),
          // short: the narrow tab has no room for the word (an emoji needs a font a
          // control-room PC may lack); the full name is the label
          h(`th.num${this.sort === "cameras" ? ".sorted" : ""}`, { "aria-label": t("wards_col_cameras"),
            title: t("wards_col_cameras"), onclick: () => {
              this.sort = "cameras";
              this.render();
            } }, "Cam"))),
        h("tbody", ...rows),
        h("tfoot", h("tr", h("td", t("city_total")),
          h("td.num", fmtNumber(tot.lamps_out), h("small", ` / ${fmtNumber(tot.lamps)}`)),
          h("td.num", fmtNumber(tot.alarms), tot.unacked ? h("small", ` (${tot.unacked})`) : ""),
          h("td.num", fmtNumber(tot.offline)),
          h("td.num", fmtNumber((tot.cameras ?? 0) - (tot.cameras_down ?? 0)),
            h("small", `/${fmtNumber(tot.cameras ?? 0)}`))))));
  }

  renderLabels() {
    for (const m of this.labels) m.remove();
    this.labels = this.data.wards.map((w) => {
      const badges = [];
      if (w.lamps.out) badges.push(h("span.badge.lamps", { title: t("kpi_lamps_out") }, `● ${w.lamps.out}`));
      if (w.alarms.open) {
        const sev = Object.entries(w.alarms.by_severity).find(([, n]) => n > 0)?.[0] ?? "warning";
        badges.push(h(`span.badge.sev-${sev}`, { title: t("open_alarms") }, `⚠ ${w.alarms.open}`));
      }
      const el = h("div.ward-label", { dataset: { ward: w.code } }, h("span.name", w.name), ...badges);
      return new maplibregl.Marker({ element: el }).setLngLat(w.label).addTo(this.live.map);
    });
    this.updateLabelVisibility();
    if (!this.zoomBound) {
      this.zoomBound = true;
      this.live.map.on("zoom", () => this.updateLabelVisibility());
    }
  }

  updateLabelVisibility() {
    const z = this.live.map.getZoom();
    for (const m of this.labels) {
      const el = m.getElement();
      el.classList.toggle("hidden", z > 15.5);
      el.classList.toggle("compact", z < 12);
    }
  }

  // The share of lamps out per ward, as feature-state on the ward polygons.
  paintWards() {
    const wardSources = [...this.live.sources.entries()].filter(([, s]) => s.role === "wards");
    for (const w of this.data?.wards ?? []) {
      const out = this.choropleth && w.lamps.total ? w.lamps.out / w.lamps.total : 0;
      for (const [, s] of wardSources) {
        for (const sl of s.sourceLayers) {
          this.live.map.setFeatureState({ source: COMPOSITE, sourceLayer: sl, id: w.code }, { out });
        }
      }
    }
  }
}
