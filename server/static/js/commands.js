// Commands from the map: pick devices (click, a drawn polygon, a street drawn with a buffer,
// a ward, a cabinet or a kind filter), preview (count, what cannot take it and why), confirm
// by typing when the command is dangerous at scale, send, and watch each device's result
// arrive on the websocket ({"op": "commands"}); cancel a running group; past groups.

import { TerraDraw, TerraDrawLineStringMode, TerraDrawPolygonMode } from "terra-draw";
import { TerraDrawMapLibreGLAdapter } from "terra-draw-maplibre-gl-adapter";
import { api, fmtTime, h, toast } from "./common.js";
import { addStrings, onLangChange, t } from "./i18n.js";

addStrings({
  cmd_open: "Commands", cmd_title: "Commands to devices", cmd_close: "Close the commands",
  cmd_by: "Select by", cmd_click: "Click", cmd_polygon: "Polygon", cmd_line: "Street",
  cmd_ward: "Ward", cmd_parent: "Cabinet", cmd_filter: "Filter",
  cmd_click_hint: "Click devices on the map to add or remove them ({n} selected)",
  cmd_draw: "Draw on the map", cmd_drawn: "Shape drawn", cmd_buffer: "Buffer (m)",
  cmd_kind: "Kind", cmd_in_view: "Only in the current view",
  cmd_command: "Command", cmd_preview: "Preview", cmd_send: "Send", cmd_cancel_group: "Cancel group",
  cmd_count: "{n} devices will take it", cmd_excluded: "{n} cannot take it",
  cmd_confirm: "Dangerous at this scale: type {code} to confirm", cmd_confirm_label: "Confirmation",
  cmd_results: "Results", cmd_history: "Past groups", cmd_sent_by: "by {who}",
  cmd_none: "Select devices first", cmd_refresh: "Refresh",
  cmd_st_pending: "pending", cmd_st_sent: "sent", cmd_st_succeeded: "succeeded", cmd_st_failed: "failed",
  cmd_st_expired: "expired",
  cmd_arg_level: "Level (%)", cmd_arg_on: "On", cmd_arg_plan: "Timing plan", cmd_arg_open: "Open",
}, {
  cmd_open: "Lệnh", cmd_title: "Lệnh điều khiển thiết bị", cmd_close: "Đóng bảng lệnh",
  cmd_by: "Chọn theo", cmd_click: "Nhấp chọn", cmd_polygon: "Đa giác", cmd_line: "Tuyến phố",
  cmd_ward: "Phường", cmd_parent: "Tủ điện", cmd_filter: "Bộ lọc",
  cmd_click_hint: "Nhấp vào thiết bị trên bản đồ để thêm hoặc bỏ ({n} đã chọn)",
  cmd_draw: "Vẽ trên bản đồ", cmd_drawn: "Đã vẽ", cmd_buffer: "Vùng đệm (m)",
  cmd_kind: "Loại", cmd_in_view: "Chỉ trong khung nhìn",
  cmd_command: "Lệnh", cmd_preview: "Xem trước", cmd_send: "Gửi", cmd_cancel_group: "Hủy nhóm lệnh",
  cmd_count: "{n} thiết bị sẽ nhận lệnh", cmd_excluded: "{n} không nhận được lệnh",
  cmd_confirm: "Lệnh nguy hiểm ở quy mô này: gõ {code} để xác nhận", cmd_confirm_label: "Xác nhận",
  cmd_results: "Kết quả", cmd_history: "Các nhóm lệnh đã gửi", cmd_sent_by: "bởi {who}",
  cmd_none: "Hãy chọn thiết bị trước", cmd_refresh: "Làm mới",
  cmd_st_pending: "chờ gửi", cmd_st_sent: "đã gửi", cmd_st_succeeded: "thành công", cmd_st_failed: "thất bại",
  cmd_st_expired: "hết hạn",
  cmd_arg_level: "Mức sáng (%)", cmd_arg_on: "Bật", cmd_arg_plan: "Kế hoạch pha", cmd_arg_open: "Mở",
});
// an argument's label in the current language; the catalogue's own name for one we do not know
const argLabel = (k) => { const s = t(`cmd_arg_${k}`); return s === `cmd_arg_${k}` ? k : s; };

const counted = (counts) => Object.entries(counts).filter(([, n]) => n)
  .map(([s, n]) => `${t(`cmd_st_${s}`)} ${n}`).join(" · ");

const MODES = ["click", "polygon", "line", "ward", "parent", "filter"];
const DANGEROUS_COUNT = 100; // switching off or dimming below 30 % more lamps than this

export class CommandsPanel {
  constructor({ live, socket, canSend }) {
    this.live = live;
    this.socket = socket;
    this.canSend = canSend;
    this.mode = "click";
    this.picked = new Set();
    this.shape = null;
    this.catalog = [];
    this.preview = null;
    this.group = null;
    this.results = new Map();
    this.draw = null;
  }

  mount(bar, mapWrap) {
    this.button = h("button.btn.small", { id: "cmd-open", type: "button", "aria-controls": "commands-panel",
      onclick: () => (this.root.hidden ? this.open() : this.close()) }, t("cmd_open"));
    bar.prepend(this.button);
    this.root = h("section.cmd-panel", { id: "commands-panel", role: "region", "aria-label": t("cmd_title"),
      hidden: true });
    mapWrap.append(this.root);
    onLangChange(() => { this.button.textContent = t("cmd_open"); if (!this.root.hidden) this.render(); });
    return this;
  }

  async open() {
    this.root.hidden = false;
    // Watch every group while open: results of a group sent from here cannot come before it.
    this.socket.send({ op: "commands", groups: "all" });
    if (!this.catalog.length) this.catalog = (await api("/api/v1/command-catalog")).commands;
    this.name = this.name ?? "set_dim";
    await this.loadHistory();
    this.render();
  }

  close() {
    this.root.hidden = true;
    this.socket.send({ op: "commands", groups: [] });
    this.stopDraw();
    this.highlight([]);
  }

  // The device layer click, while the panel is open in click mode: toggles the device.
  onDeviceClick(id) {
    if (this.root.hidden || this.mode !== "click") return false;
    if (this.picked.has(id)) this.picked.delete(id); else this.picked.add(id);
    this.highlight([...this.picked]);
    this.render();
    return true;
  }

  onMessage(msg) {
    // A snapshot follows every (re)connect: the watch is per connection, so ask again.
    if (msg.type === "snapshot" && !this.root.hidden) this.socket.send({ op: "commands", groups: "all" });
    if (msg.type !== "command_results") return;
    if (this.group && msg.group === this.group.id) {
      for (const r of msg.results) {
        const prev = this.results.get(r.device);
        if (!prev || prev.status === "pending" || prev.status === "sent") this.results.set(r.device, r);
      }
      this.renderResults();
    }
    clearTimeout(this.histTimer);
    this.histTimer = setTimeout(() => this.loadHistory().then(() => this.renderHistory()), 1000);
  }

  ensureDraw() {
    if (this.draw) return this.draw;
    this.draw = new TerraDraw({
      adapter: new TerraDrawMapLibreGLAdapter({ map: this.live.map }),
      modes: [new TerraDrawPolygonMode(), new TerraDrawLineStringMode()],
    });
    this.draw.start();
    this.draw.on("finish", (id) => {
      const f = this.draw.getSnapshot().find((x) => x.id === id);
      if (f) this.shape = f.geometry;
      this.draw.setMode("static");
      this.render();
    });
    return this.draw;
  }

  startDraw() {
    const draw = this.ensureDraw();
    draw.clear();
    this.shape = null;
    draw.setMode(this.mode === "line" ? "linestring" : "polygon");
  }

  stopDraw() {
    if (this.draw) { this.draw.clear(); this.draw.setMode("static"); }
  }

  highlight(ids) {
    const map = this.live.map;
    if (!map.getSource("cmd-selected")) {
      map.addSource("cmd-selected", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
      map.addLayer({ id: "cmd-selected", type: "circle", source: "cmd-selected", paint: {
        "circle-radius": 7, "circle-color": "rgba(0,0,0,0)", "circle-stroke-width": 2,
        "circle-stroke-color": ["match", ["get", "state"], "excluded", "#ff6b6b", "succeeded", "#51cf66",
          "failed", "#ff6b6b", "#74c0fc"] } });
    }
    this.selectedIds = ids;
    this.paintPoints();
  }

  async paintPoints() {
    // The preview's devices and exclusions with their positions (from the map's own features).
    const feats = [];
    const states = new Map();
    for (const id of this.selectedIds ?? []) states.set(id, "selected");
    for (const e of this.preview?.excluded ?? []) states.set(e.id, "excluded");
    for (const [id, r] of this.results) states.set(id, r.status);
    for (const f of this.live.map.queryRenderedFeatures({ layers: this.live.clickableLayers() })) {
      const id = f.properties?.id;
      if (id && states.has(id) && f.geometry.type === "Point") {
        feats.push({ type: "Feature", geometry: f.geometry, properties: { id, state: states.get(id) } });
      }
    }
    this.live.map.getSource("cmd-selected")?.setData({ type: "FeatureCollection", features: feats });
  }

  target() {
    const v = (sel) => this.root.querySelector(sel)?.value;
    switch (this.mode) {
      case "click": return this.picked.size ? { devices: [...this.picked] } : null;
      case "polygon": return this.shape ? { geometry: this.shape } : null;
      case "line": return this.shape ? { geometry: this.shape, within_m: Number(v("#cmd-buffer") || 30) } : null;
      case "ward": return v("#cmd-ward") ? { ward: v("#cmd-ward").trim() } : null;
      case "parent": return v("#cmd-parent") ? { parent: v("#cmd-parent").trim() } : null;
      case "filter": {
        const tg = { kind: v("#cmd-kind") };
        if (this.root.querySelector("#cmd-in-view")?.checked) tg.bbox = this.live.viewportBbox();
        return tg;
      }
      default: return null;
    }
  }

  args() {
    const spec = this.catalog.find((c) => c.name === this.name);
    const out = {};
    for (const [k, a] of Object.entries(spec?.args ?? {})) {
      const el = this.root.querySelector(`[data-arg="${k}"]`);
      out[k] = a.type === "boolean" ? el.checked : Number(el.value);
    }
    return out;
  }

  dangerous(p) {
    const a = p.args ?? {};
    const dark = (p.name === "switch" && a.on === false) || (p.name === "set_dim" && a.level < 30);
    return dark && (p.count > DANGEROUS_COUNT || "ward" in (p.target ?? {}));
  }

  confirmCode(p) {
    return p.target?.ward ? String(p.target.ward) : String(p.count);
  }

  async doPreview() {
    const target = this.target();
    if (!target) { toast(t("cmd_none"), "error"); return; }
    try {
      this.preview = await api("/api/v1/commands/preview", { method: "POST",
        body: { target, name: this.name, args: this.args() } });
    } catch (err) {
      toast(err.message, "error");
      return;
    }
    this.results = new Map();
    this.highlight(this.preview.devices);
    this.render();
  }

  async doSend() {
    const p = this.preview;
    if (!p) return;
    if (this.dangerous(p) && this.root.querySelector("#cmd-confirm")?.value.trim() !== this.confirmCode(p)) {
      toast(t("cmd_confirm", { code: this.confirmCode(p) }), "error");
      return;
    }
    try {
      const g = await api("/api/v1/commands", { method: "POST",
        body: { target: p.target, name: p.name, args: p.args } });
      this.group = { ...g, total: g.total };
      this.results = new Map(p.devices.map((id) => [id, { device: id, status: "pending" }]));
    } catch (err) {
      toast(err.message, "error");
      return;
    }
    this.preview = null;
    this.render();
  }

  async doCancel(id) {
    try {
      const r = await api(`/api/v1/command-groups/${id}/cancel`, { method: "POST" });
      toast(`${t("cmd_cancel_group")}: ${r.cancelled}`);
    } catch (err) {
      toast(err.message, "error");
    }
    await this.loadHistory();
    this.renderHistory();
  }

  async loadHistory() {
    try {
      this.history = (await api("/api/v1/command-groups?limit=20")).groups;
    } catch (err) {
      this.history = [];
    }
  }

  render() {
    const spec = this.catalog.find((c) => c.name === this.name);
    const modeButtons = h("div.cmd-modes", { role: "radiogroup", "aria-label": t("cmd_by") },
      ...MODES.map((m) => h(`button.btn.small${m === this.mode ? ".active" : ""}`, { type: "button",
        role: "radio", "aria-checked": String(m === this.mode), onclick: () => {
          this.mode = m; this.shape = null; this.stopDraw(); this.render();
        } }, t(`cmd_${m}`))));
    const targetBox = h("div.cmd-target");
    if (this.mode === "click") targetBox.append(h("p.cmd-hint", t("cmd_click_hint", { n: this.picked.size })));
    if (this.mode === "polygon" || this.mode === "line") {
      targetBox.append(h("button.btn.small", { type: "button", onclick: () => this.startDraw() }, t("cmd_draw")),
        this.shape ? h("span.cmd-hint", ` ✓ ${t("cmd_drawn")}`) : "");
      if (this.mode === "line") {
        targetBox.append(h("label", { for: "cmd-buffer" }, t("cmd_buffer")),
          h("input", { id: "cmd-buffer", type: "number", min: "1", max: "2000", value: "30" }));
      }
    }
    if (this.mode === "ward") targetBox.append(h("label", { for: "cmd-ward" }, t("cmd_ward")), h("input", { id: "cmd-ward" }));
    if (this.mode === "parent") targetBox.append(h("label", { for: "cmd-parent" }, t("cmd_parent")), h("input", { id: "cmd-parent" }));
    if (this.mode === "filter") {
      targetBox.append(h("label", { for: "cmd-kind" }, t("cmd_kind")),
        h("select", { id: "cmd-kind" }, ...(spec?.kinds ?? []).map((k) => h("option", { value: k }, k))),
        h("label.cmd-check", h("input", { id: "cmd-in-view", type: "checkbox", checked: true }), t("cmd_in_view")));
    }
    const argBox = h("div.cmd-args", ...Object.entries(spec?.args ?? {}).map(([k, a]) => h("label", argLabel(k),
      a.type === "boolean"
        ? h("input", { type: "checkbox", dataset: { arg: k }, "aria-label": argLabel(k) })
        : h("input", { type: "number", min: a.minimum ?? undefined, max: a.maximum ?? undefined,
          value: a.maximum ?? 0, dataset: { arg: k }, "aria-label": argLabel(k) }))));
    const picker = h("select", { id: "cmd-name", "aria-label": t("cmd_command"), onchange: (e) => {
      this.name = e.target.value; this.preview = null; this.render();
    } }, ...this.catalog.map((c) => h("option", { value: c.name, selected: c.name === this.name, title: c.description }, c.name)));
    this.root.setAttribute("aria-label", t("cmd_title"));
    const prev = this.preview ? this.renderPreview(this.preview) : "";
    this.resultsBox = h("div.cmd-results");
    this.historyBox = h("div.cmd-history");
    this.root.replaceChildren(
      h("div.cmd-head", h("h2", t("cmd_title")), h("button.icon", { type: "button", "aria-label": t("cmd_close"),
        onclick: () => this.close() }, "×")),
      h("div.cmd-body", modeButtons, targetBox,
        h("div.cmd-row", h("label", { for: "cmd-name" }, t("cmd_command")), picker), argBox,
        h("button.btn.small", { type: "button", disabled: !this.canSend(), onclick: () => this.doPreview() }, t("cmd_preview")),
        prev, this.resultsBox, this.historyBox));
    this.renderResults();
    this.renderHistory();
  }

  renderPreview(p) {
    const box = h("div.cmd-preview", { role: "status" },
      h("p.cmd-count", t("cmd_count", { n: p.count })),
      p.excluded.length ? h("details", h("summary", t("cmd_excluded", { n: p.excluded.length })),
        h("ul", ...p.excluded.slice(0, 50).map((e) => h("li", `${e.id}: ${e.reason}`)))) : "");
    if (this.dangerous(p)) {
      box.append(h("label.cmd-danger", { for: "cmd-confirm" }, t("cmd_confirm", { code: this.confirmCode(p) })),
        h("input", { id: "cmd-confirm", autocomplete: "off", "aria-label": t("cmd_confirm_label") }));
    }
    box.append(h("button.btn.small.primary", { type: "button", disabled: !p.count || !this.canSend(),
      onclick: () => this.doSend() }, t("cmd_send")));
    return box;
  }

  renderResults() {
    if (!this.resultsBox || !this.group) return;
    const counts = {};
    for (const r of this.results.values()) counts[r.status] = (counts[r.status] ?? 0) + 1;
    const done = (counts.pending ?? 0) + (counts.sent ?? 0) === 0;
    this.resultsBox.replaceChildren(h("h3", t("cmd_results")),
      h("p.cmd-counts", { role: "status", "aria-live": "polite", dataset: { group: this.group.id } },
        counted(counts)),
      done ? "" : h("button.btn.small.danger", { type: "button", onclick: () => this.doCancel(this.group.id) },
        t("cmd_cancel_group")),
      h("ul.cmd-failed", ...[...this.results.values()].filter((r) => r.error).slice(0, 20)
        .map((r) => h("li", `${r.device}: ${r.error}`))));
    clearTimeout(this.paintTimer);
    this.paintTimer = setTimeout(() => this.paintPoints(), 300);
  }

  renderHistory() {
    if (!this.historyBox) return;
    this.historyBox.replaceChildren(h("h3", t("cmd_history")),
      h("ul", ...(this.history ?? []).map((g) => {
        const open = (g.counts.pending ?? 0) + (g.counts.sent ?? 0);
        return h("li.cmd-group", { dataset: { group: g.id } },
          h("span", `${fmtTime(g.created_at)} · ${g.name} ${JSON.stringify(g.args)} · ${g.total} · `
            + `${t("cmd_sent_by", { who: g.requested_by ?? "?" })} · `
            + counted(g.counts)),
          open && this.canSend() ? h("button.btn.small.danger", { type: "button",
            "aria-label": `${t("cmd_cancel_group")} ${g.id}`, onclick: () => this.doCancel(g.id) }, t("cmd_cancel_group")) : "");
      })));
  }
}
