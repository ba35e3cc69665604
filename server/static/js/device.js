// The device panel: identity, live status, latest values (kept current by the websocket)
// and a history chart of one metric (bucketed averages with the min-max band).

import { api, fmtNumber, fmtTime, h, timeAgo, toast } from "./common.js";
import { kindName, metricLabel, onLangChange, severityLabel, statusLabel, t, unitOf } from "./i18n.js";

const RANGES = { "6h": [6 * 3600e3, "5m"], "24h": [24 * 3600e3, "15m"], "7d": [7 * 86400e3, "2h"] };

export class DevicePanel {
  constructor(root, { onClose, onZoom, wardName, extras }) {
    this.root = root;
    this.extras = extras ?? (() => []); // more sections (issue 18: camera, chart, tree, editor)
    this.wardName = wardName ?? ((code) => code);
    this.onClose = onClose;
    this.onZoom = onZoom;
    this.device = null;
    this.metric = null;
    this.range = "24h";
    this.abort = null;
    onLangChange(() => this.device && this.render());
  }

  async open(id) {
    this.abort?.abort();
    this.abort = new AbortController();
    this.root.hidden = false;
    this.root.replaceChildren(h("div.panel-body", h("div.empty", t("loading"))));
    try {
      this.device = await api(`/api/v1/devices/${encodeURIComponent(id)}`, { signal: this.abort.signal });
    } catch (err) {
      if (err.name === "AbortError") return;
      this.root.replaceChildren(h("div.panel-body", h("div.empty.error", err.message)));
      return;
    }
    const values = this.device.properties?.values ?? {};
    const numeric = Object.keys(values).filter((k) => typeof values[k] === "number");
    if (!numeric.includes(this.metric)) this.metric = numeric[0] ?? null;
    this.render();
    this.loadHistory();
  }

  close() {
    this.abort?.abort();
    this.device = null;
    this.root.hidden = true;
    this.onClose?.();
  }

  get id() {
    return this.device?.id ?? null;
  }

  // A live update for the open device.
  update(state) {
    if (!this.device || (state.id ?? state.device) !== this.device.id) return;
    const p = this.device.properties;
    if (state.values) p.values = { ...p.values, ...state.values };
    if (state.status) p.status = state.status;
    if (state.ts) p.last_seen = state.ts;
    this.renderValues();
    this.root.querySelector(".dev-status")?.replaceWith(this.statusChip());
  }

  setSeverity(severity) {
    if (!this.device) return;
    this.device.properties.alarm_severity = severity;
    this.root.querySelector(".dev-sev")?.replaceWith(this.sevChip());
  }

  statusChip() {
    const s = this.device.properties.status ?? "unknown";
    return h(`span.chip.dev-status.status-${s}`, statusLabel(s));
  }

  sevChip() {
    const sev = this.device.properties.alarm_severity;
    return sev ? h(`span.chip.dev-sev.sev-${sev}`, `⚠ ${severityLabel(sev)}`) : h("span.dev-sev");
  }

  render() {
    const d = this.device;
    const p = d.properties ?? {};
    const facts = [
      [t("kind"), kindName(p.kind ?? "")],
      [t("ward"), p.ward && this.wardName(p.ward)],
      [t("parent"), p.parent],
      [t("last_seen"), p.last_seen ? `${timeAgo(p.last_seen)} (${fmtTime(p.last_seen, true)})` : t("never")],
    ].filter(([, v]) => v);
    this.root.replaceChildren(
      h("div.panel-head",
        h("div",
          h("div.dev-name", p.name || d.id),
          h("div.dev-id", d.id, " ", this.statusChip(), " ", this.sevChip())),
        h("div.head-buttons",
          h("button.icon", { title: t("zoom_to"), "aria-label": t("zoom_to"),
            onclick: () => this.onZoom?.(d) }, "◎"),
          h("button.icon.close", { title: t("close"), "aria-label": t("close"), onclick: () => this.close() }, "×"))),
      h("div.panel-body",
        h("dl.facts", ...facts.flatMap(([k, v]) => [h("dt", k), h("dd", v)])),
        h("h3", t("latest_values")),
        h("div.values"),
        // issue 18: the asset sections' multi-metric chart (js/assets.js) replaces the
        // one-metric history, which averaged enum metrics such as `mode`
        ...this.extras(d).filter(Boolean)));
    this.renderValues();
  }

  renderValues() {
    const box = this.root.querySelector(".values");
    if (!box) return;
    const values = this.device.properties.values ?? {};
    const keys = Object.keys(values).sort();
    if (!keys.length) {
      box.replaceChildren(h("div.empty", t("no_values")));
      return;
    }
    box.replaceChildren(...keys.map((k) => {
      const v = values[k];
      const numeric = typeof v === "number";
      return h(`button.value${k === this.metric ? ".active" : ""}${typeof v === "boolean" && v && /fault|tripped|open/.test(k) ? ".bad" : ""}`, {
        disabled: !numeric, dataset: { metric: k },
        onclick: () => {
          this.metric = k;
          this.renderValues();
          this.loadHistory();
        },
      }, h("span.v-label", metricLabel(k)),
      h("span.v-num", fmtNumber(v), h("small", numeric ? ` ${unitOf(k)}` : "")));
    }));
  }

  async loadHistory() {
    const box = this.root.querySelector(".chart");
    if (!box || !this.device) return;
    if (!this.metric) {
      box.replaceChildren(h("div.empty", t("no_history")));
      return;
    }
    const [span, bucket] = RANGES[this.range];
    const to = new Date();
    const from = new Date(to.getTime() - span);
    const base = `/api/v1/devices/${encodeURIComponent(this.device.id)}/telemetry?metric=${encodeURIComponent(this.metric)}`
      + `&from=${from.toISOString()}&to=${to.toISOString()}&bucket=${bucket}`;
    const metric = this.metric;
    try {
      const [avg, lo, hi] = await Promise.all(["avg", "min", "max"].map((agg) =>
        api(`${base}&agg=${agg}`, { signal: this.abort.signal })));
      if (metric !== this.metric) return;
      box.replaceChildren(chart(avg.points ?? [], lo.points ?? [], hi.points ?? [], from, to, unitOf(metric)));
    } catch (err) {
      if (err.name === "AbortError") return;
      box.replaceChildren(h("div.empty.error", err.message));
      toast(err.message, "error");
    }
  }
}

// ------------------------------------------------------------------ SVG chart

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

function niceTicks(lo, hi, count = 4) {
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) ?? raw;
  const ticks = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step / 2; v += step) ticks.push(+v.toFixed(10));
  return ticks;
}

export function chart(points, lows, highs, from, to, unit) {
  const W = 340, H = 170, L = 40, R = 8, T = 10, B = 22;
  const pts = points.filter((p) => p[1] !== null).map(([ts, v]) => [new Date(ts).getTime(), v]);
  if (!pts.length) return h("div.empty", t("no_history"));
  const band = lows.map(([ts, v], i) => [new Date(ts).getTime(), v, highs[i]?.[1]])
    .filter((b) => b[1] !== null && b[2] !== null && b[2] !== undefined);
  const vals = [...pts.map((p) => p[1]), ...band.flatMap((b) => [b[1], b[2]])];
  const ticks = niceTicks(Math.min(...vals), Math.max(...vals));
  const y0 = ticks[0], y1 = ticks[ticks.length - 1];
  const t0 = from.getTime(), t1 = to.getTime();
  const x = (ts) => L + ((ts - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - y0) / (y1 - y0 || 1)) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "history-chart", role: "img" });
  for (const v of ticks) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: L - 4, y: y(v) + 3, class: "tick", "text-anchor": "end" }, fmtNumber(v)));
  }
  for (let i = 0; i <= 4; i++) {
    const ts = t0 + ((t1 - t0) * i) / 4;
    const d = new Date(ts);
    const label = t1 - t0 > 2 * 86400e3
      ? `${d.getDate()}/${d.getMonth() + 1}`
      : `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    svg.append(s("text", { x: x(ts), y: H - 6, class: "tick", "text-anchor": "middle" }, label));
  }
  if (band.length > 1) {
    const top = band.map((b) => `${x(b[0]).toFixed(1)},${y(b[2]).toFixed(1)}`);
    const bottom = band.slice().reverse().map((b) => `${x(b[0]).toFixed(1)},${y(b[1]).toFixed(1)}`);
    svg.append(s("polygon", { points: [...top, ...bottom].join(" "), class: "band" }));
  }
  // A gap longer than three buckets is drawn as a gap, not a straight line across it.
  const step = pts.length > 1 ? Math.min(...pts.slice(1).map((p, i) => p[0] - pts[i][0])) : 0;
  let d = "";
  pts.forEach(([ts, v], i) => {
    const jump = i === 0 || (step && ts - pts[i - 1][0] > 3 * step);
    d += `${jump ? "M" : "L"}${x(ts).toFixed(1)},${y(v).toFixed(1)}`;
  });
  svg.append(s("path", { d, class: "line" }));
  const last = pts[pts.length - 1];
  svg.append(s("circle", { cx: x(last[0]), cy: y(last[1]), r: 3, class: "last" }));
  if (unit) svg.append(s("text", { x: 4, y: T + 2, class: "tick unit" }, unit));
  return svg;
}
