// Commands from the map: pick devices (click, a drawn polygon, a street drawn with a buffer,
// a ward, a cabinet or a kind filter), preview (count, what cannot take it and why), confirm
// by typing when the command is dangerous at scale, send, and watch each device's result
// arrive on the websocket ({"op": "commands"}); cancel a running group; past groups.

import { TerraDraw, TerraDrawLineStringMode, TerraDrawPolygonMode } from "terra-draw";
import { TerraDrawMapLibreGLAdapter } from "terra-draw-maplibre-gl-adapter";
import { api, fmtTime, h, pointOf, toast } from "./common.js";
import { addStrings, kindName, onLangChange, t } from "./i18n.js";

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
  cmd_pick_ward: "Choose a ward", cmd_pick_parent: "Choose a cabinet", cmd_reset: "Clear",
  cmd_legend_take: "takes the command", cmd_legend_excluded: "cannot take it",
  cmd_show: "Show {id} on the map", cmd_buffer_shown: "the buffer is shaded on the map",
  cmd_arg_level: "Level (%)", cmd_arg_on: "On", cmd_count_one: "1 device will take it",
  cmd_arg_plan: "Plan", cmd_arg_open: "Open",
  cmd_err_cancelled: "cancelled by {who}",
  cmd_name_set_dim: "Dim", cmd_name_switch: "Switch on/off", cmd_name_set_plan: "Timing plan",
  cmd_name_flash: "Flash", cmd_name_set_recording: "Recording", cmd_name_set_valve: "Valve",
  cmd_name_reboot: "Restart", cmd_yes: "yes", cmd_no: "no",
  cmd_reason_kind: "a {kind} does not take {name}",
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
  cmd_pick_ward: "Chọn phường", cmd_pick_parent: "Chọn tủ điện", cmd_reset: "Xóa chọn",
  cmd_legend_take: "sẽ nhận lệnh", cmd_legend_excluded: "không nhận được",
  cmd_show: "Hiện {id} trên bản đồ", cmd_buffer_shown: "vùng đệm được tô trên bản đồ",
  cmd_arg_level: "Mức sáng (%)", cmd_arg_on: "Bật", cmd_count_one: "1 thiết bị sẽ nhận lệnh",
  cmd_arg_plan: "Kế hoạch", cmd_arg_open: "Mở",
  cmd_err_cancelled: "đã hủy bởi {who}",
  cmd_name_set_dim: "Điều chỉnh độ sáng", cmd_name_switch: "Bật/tắt", cmd_name_set_plan: "Kế hoạch pha đèn",
  cmd_name_flash: "Nhấp nháy", cmd_name_set_recording: "Ghi hình", cmd_name_set_valve: "Van",
  cmd_name_reboot: "Khởi động lại", cmd_yes: "có", cmd_no: "không",
  cmd_reason_kind: "{kind} không nhận lệnh {name}",
});

const counted = (counts) => Object.entries(counts).filter(([, n]) => n)
  .map(([s, n]) => `${t(`cmd_st_${s}`)} ${n}`).join(" · ");

// A command and its arguments in the operator's words ("Dim · Level (%) 40"), the name
// itself where this console has no label for it.
const label = (key, raw) => { const s = t(key); return s === key ? raw : s; };
const commandLabel = (name) => label(`cmd_name_${name}`, name);
const argsLabel = (args) => Object.entries(args ?? {}).map(([k, v]) => `${label(`cmd_arg_${k}`, k)} ${
  v === true ? t("cmd_yes") : v === false ? t("cmd_no") : v}`).join(", ");

const MODES = ["click", "polygon", "line", "ward", "parent", "filter"];
const DANGEROUS_COUNT = 100; // switching off or dimming below 30 % more lamps than this
const EMPTY = { type: "FeatureCollection", features: [] };
const POSITIONS_MAX = 50_000; // the devices API's page; a larger preview rings what that page holds

// A line's buffer as a polygon, for the map only (the server selects with ST_DWithin): each
// side offset by `m` metres in a local flat projection, round on the outer side of each bend
// and at both ends, mitred on the inner side. Good for streets (bends gentler than a U-turn
// shorter than the buffer); no geometry library needed for a shaded outline.
export function corridor(coords, m, steps = 8) {
  if (!coords || coords.length < 2 || !(m > 0)) return null;
  const lat0 = coords.reduce((a, c) => a + c[1], 0) / coords.length;
  const kx = 111_320 * Math.cos((lat0 * Math.PI) / 180);
  const ky = 110_540;
  const pts = coords.map(([x, y]) => [x * kx, y * ky])
    .filter((p, i, a) => i === 0 || Math.hypot(p[0] - a[i - 1][0], p[1] - a[i - 1][1]) > 1e-6);
  if (pts.length < 2) return null;
  const normal = (a, b) => {
    const dx = b[0] - a[0], dy = b[1] - a[1], l = Math.hypot(dx, dy);
    return [-dy / l, dx / l];
  };
  const arc = (c, from, to, out) => { // from one unit normal to another, turning the short way round
    const a0 = Math.atan2(from[1], from[0]);
    const a1 = Math.atan2(to[1], to[0]);
    let d = a1 - a0;
    while (d > Math.PI) d -= 2 * Math.PI;
    while (d < -Math.PI) d += 2 * Math.PI;
    for (let i = 0; i <= steps; i++) {
      const a = a0 + (d * i) / steps;
      out.push([c[0] + m * Math.cos(a), c[1] + m * Math.sin(a)]);
    }
  };
  const cap = (c, n, out) => { // clockwise from n, through the direction of travel, to -n
    const a0 = Math.atan2(n[1], n[0]);
    for (let i = 1; i < steps * 2; i++) {
      const a = a0 - (Math.PI * i) / (steps * 2);
      out.push([c[0] + m * Math.cos(a), c[1] + m * Math.sin(a)]);
    }
  };
  const side = (p) => { // one side (left of travel) from first to last point
    const out = [];
    for (let i = 0; i < p.length - 1; i++) {
      const n = normal(p[i], p[i + 1]);
      if (i === 0) out.push([p[0][0] + m * n[0], p[0][1] + m * n[1]]);
      if (i < p.length - 2) {
        const n2 = normal(p[i + 1], p[i + 2]);
        const c = p[i + 1];
        const cross = n[0] * n2[1] - n[1] * n2[0];
        if (cross > 0) { // a left turn: the left side is the inner side, mitre it
          const bx = n[0] + n2[0], by = n[1] + n2[1];
          const k = m / Math.max((bx * n[0] + by * n[1]), 0.2);
          out.push([c[0] + bx * k, c[1] + by * k]);
        } else {
          arc(c, n, n2, out);
        }
      } else {
        out.push([p[i + 1][0] + m * n[0], p[i + 1][1] + m * n[1]]);
      }
    }
    return out;
  };
  const left = side(pts);
  const right = side([...pts].reverse());
  const last = pts.length - 1;
  const ring = [...left];
  const nEnd = normal(pts[last - 1], pts[last]);
  cap(pts[last], nEnd, ring); // a half circle round the end, from the left side to the right
  ring.push(...right);
  const nStart = normal(pts[0], pts[1]);
  cap(pts[0], [-nStart[0], -nStart[1]], ring);
  ring.push(ring[0]);
  return { type: "Polygon", coordinates: [ring.map(([x, y]) => [x / kx, y / ky])] };
}

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
    this.points = new Map(); // device id -> [lon, lat], of what the panel has selected or previewed
    this.form = { buffer: 30, ward: "", parent: "", args: {} }; // survives re-rendering
    this.wards = null;
    this.cabinets = null;
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
    this.reset();
  }

  // Back to nothing selected: no shape, no preview, nothing drawn over the map.
  reset() {
    this.stopDraw();
    this.shape = null;
    this.picked.clear();
    this.preview = null;
    this.results = new Map();
    this.group = null;
    this.showArea(null);
    this.highlight([]);
    if (!this.root.hidden) this.render();
  }

  // The device layer click, while the panel is open in click mode: toggles the device.
  onDeviceClick(id) {
    if (this.root.hidden) return false;
    // Drawing a shape: its clicks are the shape's, not a device page under this panel.
    if (this.mode === "polygon" || this.mode === "line") return true;
    if (this.mode !== "click") return false;
    if (this.picked.has(id)) this.picked.delete(id); else this.picked.add(id);
    this.preview = null;
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
      this.showBuffer();
      this.render();
    });
    return this.draw;
  }

  startDraw() {
    const draw = this.ensureDraw();
    draw.clear();
    this.shape = null;
    this.preview = null;
    this.showArea(null);
    this.highlight([]);
    draw.setMode(this.mode === "line" ? "linestring" : "polygon");
  }

  stopDraw() {
    if (this.draw) { this.draw.clear(); this.draw.setMode("static"); }
  }

  // ------------------------------------------------------------ drawn over the map

  ensureLayers() {
    const map = this.live.map;
    if (map.getSource("cmd-selected")) return;
    map.addSource("cmd-area", { type: "geojson", data: EMPTY });
    map.addLayer({ id: "cmd-area-fill", type: "fill", source: "cmd-area",
      paint: { "fill-color": "#74c0fc", "fill-opacity": 0.16 } });
    map.addLayer({ id: "cmd-area-line", type: "line", source: "cmd-area",
      paint: { "line-color": "#74c0fc", "line-width": 1.5, "line-dasharray": [3, 2] } });
    map.addSource("cmd-selected", { type: "geojson", data: EMPTY });
    // Above every device layer (added last). Taking it: a hollow blue ring; cannot: a filled red
    // disc with a thick ring, told apart by shape as well as colour; results recolour the ring.
    map.addLayer({ id: "cmd-selected", type: "circle", source: "cmd-selected", paint: {
      "circle-radius": ["interpolate", ["linear"], ["zoom"], 13, 3.5, 18, 10],
      "circle-color": ["match", ["get", "state"], "excluded", "rgba(255,107,107,0.45)", "rgba(0,0,0,0)"],
      "circle-stroke-width": ["match", ["get", "state"], "excluded", 3, 2.5],
      "circle-stroke-color": ["match", ["get", "state"], "excluded", "#ff6b6b", "succeeded", "#51cf66",
        "failed", "#ff6b6b", "expired", "#adb5bd", "#74c0fc"] } });
  }

  showArea(geometry) {
    this.ensureLayers();
    this.root.dataset.area = geometry?.type ?? "";
    this.live.map.getSource("cmd-area").setData(geometry
      ? { type: "FeatureCollection", features: [{ type: "Feature", geometry, properties: {} }] } : EMPTY);
  }

  showBuffer() {
    if (this.mode === "line" && this.shape?.type === "LineString") {
      this.showArea(corridor(this.shape.coordinates, Number(this.form.buffer) || 30));
    }
  }

  highlight(ids) {
    this.ensureLayers();
    this.selectedIds = ids;
    this.paintPoints();
  }

  paintPoints() {
    const states = new Map();
    for (const id of this.selectedIds ?? []) states.set(id, "selected");
    for (const e of this.preview?.excluded ?? []) states.set(e.id, "excluded");
    for (const [id, r] of this.results) states.set(id, r.status);
    const feats = [];
    for (const [id, state] of states) {
      const at = this.points.get(id);
      if (at) feats.push({ type: "Feature", geometry: { type: "Point", coordinates: at }, properties: { id, state } });
    }
    this.live.map.getSource("cmd-selected")?.setData({ type: "FeatureCollection", features: feats });
    this.root.dataset.ringed = String(feats.length); // what a test (or a curious reader) can check
  }

  // Where the preview's devices are: the devices API, asked the narrowest way the target allows.
  async locate(target, ids) {
    const want = new Set(ids.filter((id) => !this.points.has(id)));
    if (!want.size) return;
    const q = new URLSearchParams({ limit: String(POSITIONS_MAX) });
    if (target.ward) q.set("ward", target.ward);
    else if (target.parent) q.set("parent", target.parent);
    else if (target.geometry) q.set("bbox", bboxOf(target.geometry, target.within_m ?? 0).join(","));
    else if (target.bbox) q.set("bbox", target.bbox.join(","));
    else if (target.devices) q.set("bbox", this.live.viewportBbox().join(",")); // clicked: in view
    if (target.kind) q.set("kind", [].concat(target.kind).join(","));
    const feats = target.devices && want.size <= 50
      ? (await Promise.all([...want].map((id) => api(`/api/v1/devices/${encodeURIComponent(id)}`,
        { quiet: true }).then((f) => [f], () => [])))).flat()
      : (await api(`/api/v1/devices?${q}`, { quiet: true })).features;
    for (const f of feats) {
      if (!want.has(f.id) || !f.geometry) continue;
      const c = pointOf(f.geometry);
      if (c) this.points.set(f.id, c);
    }
  }

  fitToPoints(ids) {
    const cs = ids.map((id) => this.points.get(id)).filter(Boolean);
    if (!cs.length) return;
    const xs = cs.map((c) => c[0]), ys = cs.map((c) => c[1]);
    const right = Math.min(this.root.offsetWidth + 40, this.live.map.getContainer().clientWidth / 2);
    this.live.fitTo([Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)],
      { padding: { top: 60, bottom: 60, left: 60, right } });
  }

  // ------------------------------------------------------------ lists to pick from

  async loadWards() {
    if (this.wards) return;
    try {
      const { wards } = await api("/api/v1/wards/summary");
      // A ward without devices takes no command: not worth a line in the list.
      this.wards = wards.filter((w) => (w.devices?.devices ?? 1) > 0)
        .map((w) => ({ code: w.code, name: w.name, bbox: w.bbox }))
        .sort((a, b) => (a.name ?? a.code).localeCompare(b.name ?? b.code));
    } catch (err) {
      this.wards = [];
    }
  }

  async loadCabinets() {
    if (this.cabinets) return;
    try {
      const { features } = await api(`/api/v1/devices?kind=lighting_cabinet&limit=${POSITIONS_MAX}`);
      this.cabinets = features.map((f) => ({ id: f.id, name: f.properties.name, ward: f.properties.ward }))
        .sort((a, b) => a.id.localeCompare(b.id));
    } catch (err) {
      this.cabinets = [];
    }
  }

  wardName(code) {
    return this.wards?.find((w) => w.code === code)?.name ?? code ?? "—";
  }

  // ------------------------------------------------------------ target, preview, send

  target() {
    switch (this.mode) {
      case "click": return this.picked.size ? { devices: [...this.picked] } : null;
      case "polygon": return this.shape ? { geometry: this.shape } : null;
      case "line": return this.shape ? { geometry: this.shape, within_m: Number(this.form.buffer) || 30 } : null;
      case "ward": return this.form.ward ? { ward: this.form.ward } : null;
      case "parent": return this.form.parent ? { parent: this.form.parent } : null;
      case "filter": {
        const tg = { kind: this.root.querySelector("#cmd-kind")?.value };
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
    let preview;
    try {
      preview = await api("/api/v1/commands/preview", { method: "POST",
        body: { target, name: this.name, args: this.args() } });
    } catch (err) {
      toast(err.message, "error");
      return;
    }
    this.preview = preview;
    this.results = new Map();
    this.group = null;
    this.render();
    const all = [...preview.devices, ...preview.excluded.map((e) => e.id)];
    try {
      await this.locate(preview.target ?? target, all);
    } catch (err) {
      toast(err.message, "error"); // the preview stands; only the rings are missing
    }
    if (this.preview !== preview) return; // a newer preview or a reset came first
    this.highlight(preview.devices);
    // A ward, cabinet or filter may lie outside the view: bring it in. A click or a shape is
    // where the operator is looking already.
    if (this.mode === "ward" || this.mode === "parent" || this.mode === "filter") this.fitToPoints(all);
  }

  async doSend() {
    const p = this.preview;
    if (!p) return;
    if (this.dangerous(p) && this.root.querySelector("#cmd-confirm")?.value.trim() !== this.confirmCode(p)) {
      toast(t("cmd_confirm", { code: this.confirmCode(p) }), "error");
      this.root.querySelector("#cmd-confirm")?.focus();
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

  // ------------------------------------------------------------ the panel

  setMode(m) {
    if (m === this.mode) return;
    this.mode = m;
    this.reset();
    if (m === "ward" && !this.wards) this.loadWards().then(() => this.render());
    if (m === "parent" && !this.cabinets) {
      Promise.all([this.loadCabinets(), this.loadWards()]).then(() => this.render());
    }
  }

  targetControls(spec) {
    const box = h("div.cmd-target");
    const changed = (key) => (e) => {
      this.form[key] = e.target.value;
      this.preview = null;
      this.highlight([]);
      if (key === "buffer") this.showBuffer();
      this.render();
      this.root.querySelector(`#cmd-${key}`)?.focus();
    };
    if (this.mode === "click") box.append(h("p.cmd-hint", t("cmd_click_hint", { n: this.picked.size })));
    if (this.mode === "polygon" || this.mode === "line") {
      box.append(h("button.btn.small", { type: "button", onclick: () => this.startDraw() }, t("cmd_draw")),
        this.shape ? h("span.cmd-hint", ` ✓ ${t("cmd_drawn")}`) : "");
      if (this.mode === "line") {
        box.append(h("div.cmd-row.cmd-wide", h("label", { for: "cmd-buffer" }, t("cmd_buffer")),
          h("input", { id: "cmd-buffer", type: "number", min: "1", max: "2000", value: String(this.form.buffer),
            onchange: changed("buffer") }),
          this.shape ? h("span.cmd-hint", t("cmd_buffer_shown")) : ""));
      }
    }
    if (this.mode === "ward") {
      const sel = h("select", { id: "cmd-ward", onchange: changed("ward") },
        h("option", { value: "" }, `— ${t("cmd_pick_ward")} —`),
        ...(this.wards ?? []).map((w) => h("option", { value: w.code, selected: w.code === this.form.ward },
          `${w.name ?? w.code} (${w.code})`)));
      box.append(h("label", { for: "cmd-ward" }, t("cmd_ward")), sel);
    }
    if (this.mode === "parent") {
      // Grouped by ward, so a long list of a large city is still scanned in a few keystrokes.
      const byWard = new Map();
      for (const c of this.cabinets ?? []) {
        if (!byWard.has(c.ward)) byWard.set(c.ward, []);
        byWard.get(c.ward).push(c);
      }
      const groups = [...byWard].sort(([a], [b]) => this.wardName(a).localeCompare(this.wardName(b)))
        .map(([ward, cs]) => h("optgroup", { label: this.wardName(ward) },
          ...cs.map((c) => h("option", { value: c.id, selected: c.id === this.form.parent },
            c.name && c.name !== c.id ? `${c.id} · ${c.name}` : c.id))));
      box.append(h("label", { for: "cmd-parent" }, t("cmd_parent")),
        h("select", { id: "cmd-parent", onchange: changed("parent") },
          h("option", { value: "" }, `— ${t("cmd_pick_parent")} —`), ...groups));
    }
    if (this.mode === "filter") {
      box.append(h("label", { for: "cmd-kind" }, t("cmd_kind")),
        h("select", { id: "cmd-kind" }, ...(spec?.kinds ?? []).map((k) => h("option", { value: k }, k))),
        h("label.cmd-check", h("input", { id: "cmd-in-view", type: "checkbox", checked: true }), t("cmd_in_view")));
    }
    return box;
  }

  render() {
    const spec = this.catalog.find((c) => c.name === this.name);
    const modeButtons = h("div.cmd-modes", { role: "radiogroup", "aria-label": t("cmd_by") },
      ...MODES.map((m) => h(`button.btn.small${m === this.mode ? ".active" : ""}`, { type: "button",
        role: "radio", "aria-checked": String(m === this.mode), onclick: () => this.setMode(m) }, t(`cmd_${m}`))));
    const argVal = (k, a) => this.form.args[`${this.name}.${k}`] ?? (a.type === "boolean" ? false : a.maximum ?? 0);
    const keep = (k) => (e) => {
      this.form.args[`${this.name}.${k}`] = e.target.type === "checkbox" ? e.target.checked : e.target.value;
    };
    const argName = (k) => label(`cmd_arg_${k}`, k);
    const argBox = h("div.cmd-args", ...Object.entries(spec?.args ?? {}).map(([k, a]) => h("label", argName(k),
      a.type === "boolean"
        ? h("input", { type: "checkbox", dataset: { arg: k }, "aria-label": argName(k),
          checked: argVal(k, a) === true, onchange: keep(k) })
        : h("input", { type: "number", min: a.minimum ?? undefined, max: a.maximum ?? undefined,
          value: String(argVal(k, a)), dataset: { arg: k }, "aria-label": argName(k), oninput: keep(k) }))));
    const picker = h("select", { id: "cmd-name", "aria-label": t("cmd_command"), onchange: (e) => {
      this.name = e.target.value; this.preview = null; this.highlight([]); this.render();
    } }, ...this.catalog.map((c) => h("option", { value: c.name, selected: c.name === this.name, title: c.description }, commandLabel(c.name))));
    this.root.setAttribute("aria-label", t("cmd_title"));
    const prev = this.preview ? this.renderPreview(this.preview) : "";
    this.resultsBox = h("div.cmd-results");
    this.historyBox = h("div.cmd-history");
    this.root.replaceChildren(
      h("div.cmd-head", h("h2", t("cmd_title")), h("button.icon", { type: "button", "aria-label": t("cmd_close"),
        onclick: () => this.close() }, "×")),
      h("div.cmd-body", modeButtons, this.targetControls(spec),
        h("div.cmd-row", h("label", { for: "cmd-name" }, t("cmd_command")), picker), argBox,
        h("div.cmd-row",
          h("button.btn.small", { type: "button", disabled: !this.canSend(), onclick: () => this.doPreview() },
            t("cmd_preview")),
          h("button.btn.small", { type: "button", onclick: () => this.reset() }, t("cmd_reset"))),
        prev, this.resultsBox, this.historyBox));
    this.renderResults();
    this.renderHistory();
  }

  renderPreview(p) {
    const show = (id) => () => {
      const at = this.points.get(id);
      if (at) this.live.map.easeTo({ center: at, zoom: Math.max(this.live.map.getZoom(), 17), duration: 0 });
    };
    const box = h("div.cmd-preview", { role: "status" },
      h("p.cmd-count", p.count === 1 ? t("cmd_count_one") : t("cmd_count", { n: p.count })),
      h("p.cmd-legend", h("span.cmd-dot.take", { "aria-hidden": "true" }), t("cmd_legend_take"),
        p.excluded.length ? [h("span.cmd-dot.excluded", { "aria-hidden": "true" }), t("cmd_legend_excluded")] : ""),
      p.excluded.length ? h("details", { open: p.excluded.length <= 8 },
        h("summary", t("cmd_excluded", { n: p.excluded.length })),
        h("ul.cmd-excluded", ...p.excluded.slice(0, 50).map((e) => h("li",
          h("button.linkish", { type: "button", title: t("cmd_show", { id: e.id }),
            "aria-label": t("cmd_show", { id: e.id }), onclick: show(e.id) }, e.id),
          h("span", `: ${reasonText(e.reason)}`))))) : "");
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
      h("ul.cmd-failed", ...[...byError(this.results.values())].slice(0, 10)
        .map(([error, ids]) => h("li", `${errorText(error)} (${ids.length}): ${ids.slice(0, 6).join(", ")}`
          + (ids.length > 6 ? " …" : "")))));
    clearTimeout(this.paintTimer);
    this.paintTimer = setTimeout(() => this.paintPoints(), 300);
  }

  renderHistory() {
    if (!this.historyBox) return;
    this.historyBox.replaceChildren(h("h3", t("cmd_history")),
      h("ul", ...(this.history ?? []).map((g) => {
        const open = (g.counts.pending ?? 0) + (g.counts.sent ?? 0);
        return h("li.cmd-group", { dataset: { group: g.id } },
          h("span", `${fmtTime(g.created_at)} · ${commandLabel(g.name)} (${argsLabel(g.args)}) · ${g.total} · `
            + `${t("cmd_sent_by", { who: g.requested_by ?? "?" })} · `
            + counted(g.counts)),
          open && this.canSend() ? h("button.btn.small.danger", { type: "button",
            "aria-label": `${t("cmd_cancel_group")} ${g.id}`, onclick: () => this.doCancel(g.id) }, t("cmd_cancel_group")) : "");
      })));
  }
}

// The server's reasons are English; the one every preview meets is said in the operator's language.
function reasonText(reason) {
  const m = /^an? (\w+) does not take (\w+)$/.exec(reason ?? "");
  return m ? t("cmd_reason_kind", { kind: kindName(m[1]), name: commandLabel(m[2]) }) : reason;
}

// The server's error for a failed command, in the operator's language where it is one we know.
function errorText(error) {
  const who = /^cancelled by (.+)$/.exec(error ?? "")?.[1];
  return who ? t("cmd_err_cancelled", { who }) : error;
}

// Failures grouped by their reason: a cancelled group is one line, not one per lamp.
function byError(results) {
  const out = new Map();
  for (const r of results) {
    if (!r.error) continue;
    if (!out.has(r.error)) out.set(r.error, []);
    out.get(r.error).push(r.device);
  }
  return out;
}

// A geometry's bounding box widened by `m` metres (for the devices API's bbox).
function bboxOf(g, m) {
  const pts = [];
  const walk = (c) => (typeof c[0] === "number" ? pts.push(c) : c.forEach(walk));
  walk(g.coordinates);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const lat = (Math.min(...ys) + Math.max(...ys)) / 2;
  const dy = (m + 5) / 110_540, dx = (m + 5) / (111_320 * Math.cos((lat * Math.PI) / 180));
  return [Math.min(...xs) - dx, Math.min(...ys) - dy, Math.max(...xs) + dx, Math.max(...ys) + dy];
}
