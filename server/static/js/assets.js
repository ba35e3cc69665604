// The device page's asset sections (issue 18): a multi-metric history chart (uPlot; enum and
// boolean metrics drawn as steps of their last value per bucket, never averaged), a cabinet's
// lamps, the device's alarms and commands, and an editor (name, parent, position: typed, or
// dragged on the map) that shows the API's field errors beside the fields.

import uPlot from "uplot";
import { alarmMessage } from "./alarmtext.js"; // issue 18.4: messages in the reader's language
import { api, fmtTime, h, timeTicks, toast } from "./common.js";
import { addStrings, alarmStateLabel, kindName, metricLabel, onLangChange, severityLabel, statusLabel, t, unitOf } from "./i18n.js";
import { maplibregl } from "./livemap.js";

addStrings({
  assets_chart: "Metrics over time",
  assets_chart_metrics: "Metrics to chart",
  assets_range: "Range",
  assets_children: "Connected devices",
  assets_alarms: "Alarms",
  assets_commands: "Commands",
  assets_none: "None",
  assets_edit: "Edit device",
  assets_name: "Name",
  assets_parent: "Parent (cabinet)",
  assets_lon: "Longitude",
  assets_lat: "Latitude",
  assets_drag: "Move on map",
  assets_drag_hint: "Drag the marker, then Save",
  assets_save: "Save",
  assets_cancel: "Cancel",
  assets_saved: "Device saved",
  assets_add: "Add device",
  assets_id: "Id",
  assets_kind: "Kind",
  assets_create: "Create",
  assets_time: "Time",
}, {
  assets_chart: "Chỉ số theo thời gian",
  assets_time: "Thời gian",
  assets_chart_metrics: "Chỉ số trên biểu đồ",
  assets_range: "Khoảng thời gian",
  assets_children: "Thiết bị đấu nối",
  assets_alarms: "Cảnh báo",
  assets_commands: "Lệnh",
  assets_none: "Không có",
  assets_edit: "Sửa thiết bị",
  assets_name: "Tên",
  assets_parent: "Thiết bị cha (tủ điện)",
  assets_lon: "Kinh độ",
  assets_lat: "Vĩ độ",
  assets_drag: "Di chuyển trên bản đồ",
  assets_drag_hint: "Kéo điểm đánh dấu rồi bấm Lưu",
  assets_save: "Lưu",
  assets_cancel: "Hủy",
  assets_saved: "Đã lưu thiết bị",
  assets_add: "Thêm thiết bị",
  assets_id: "Mã",
  assets_kind: "Loại",
  assets_create: "Tạo",
});

const RANGES = { "6h": [6 * 3600e3, "5m"], "24h": [24 * 3600e3, "15m"], "7d": [7 * 86400e3, "2h"] };
const COLOURS = ["#4dabf7", "#ffa94d", "#69db7c", "#f783ac", "#b197fc", "#ffe066"];
const state = { metrics: null, range: "24h" };

// A form's field by name (form.id and form.name are the form's own attributes).
const val = (form, name) => form.elements.namedItem(name)?.value ?? "";

// Enum-like: a string or a boolean now, or a name that is one (mode).
const isStep = (metric, value) => typeof value !== "number" || /^(mode|plan|state|status)$/.test(metric);

export class AssetSections {
  constructor({ live, canEdit, openDevice, onSaved }) {
    this.live = live;
    this.canEdit = canEdit;
    this.openDevice = openDevice;
    this.onSaved = onSaved;
    this.plot = null;
    this.marker = null;
    onLangChange(() => this.plot && this.chartBox && this.loadChart(this.device));
  }

  sections(device) {
    this.device = device;
    this.plot?.destroy();
    this.plot = null;
    const values = device.properties?.values ?? {};
    const keys = Object.keys(values).sort();
    if (!state.metrics || !state.metrics.some((m) => keys.includes(m))) state.metrics = keys.slice(0, 2);
    const out = [];
    if (keys.length) out.push(this.chartSection(device, keys));
    out.push(this.listSection("children", device), this.listSection("alarms", device),
      this.listSection("commands", device));
    if (this.canEdit()) out.push(this.editSection(device));
    return out;
  }

  chartSection(device, keys) {
    this.chartBox = h("div.assets-chart");
    const picks = h("fieldset.assets-metrics", h("legend", t("assets_chart_metrics")),
      ...keys.map((k) => h("label", h("input", { type: "checkbox", checked: state.metrics.includes(k),
        onchange: (e) => {
          state.metrics = e.target.checked ? [...state.metrics, k] : state.metrics.filter((m) => m !== k);
          this.loadChart(device);
        } }), " ", metricLabel(k))));
    const range = h("select", { "aria-label": t("assets_range"), onchange: (e) => {
      state.range = e.target.value;
      this.loadChart(device);
    } }, ...Object.keys(RANGES).map((r) => h("option", { value: r, selected: r === state.range }, t(`range_${r}`))));
    setTimeout(() => this.loadChart(device), 0);
    return h("section.assets-section.assets-chart-section", { "aria-label": t("assets_chart") },
      h("h3", t("assets_chart"), " ", range), picks, this.chartBox);
  }

  async loadChart(device) {
    const box = this.chartBox;
    if (!box || !state.metrics.length) {
      box?.replaceChildren();
      return;
    }
    const [span, bucket] = RANGES[state.range];
    const to = new Date();
    const from = new Date(to.getTime() - span);
    const values = device.properties?.values ?? {};
    const metrics = state.metrics.slice();
    let answers;
    try {
      answers = await Promise.all(metrics.map((m) => api(
        `/api/v1/devices/${encodeURIComponent(device.id)}/telemetry?metric=${encodeURIComponent(m)}`
        + `&from=${from.toISOString()}&to=${to.toISOString()}&bucket=${bucket}`
        + `&agg=${isStep(m, values[m]) ? "last" : "avg"}`)));
    } catch (err) {
      box.replaceChildren(h("div.empty.error", err.message));
      return;
    }
    if (device !== this.device) return;
    // One x axis: the union of the buckets; each series null where it has no bucket.
    const xs = [...new Set(answers.flatMap((a) => (a.points ?? []).map(([ts]) => Date.parse(ts) / 1000)))]
      .sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const cats = {};
    const series = answers.map((a, i) => {
      const m = metrics[i];
      const col = new Array(xs.length).fill(null);
      for (const [ts, v] of a.points ?? []) {
        let y = v;
        if (typeof v === "boolean") y = v ? 1 : 0;
        else if (typeof v === "string") {
          cats[m] ??= [];
          if (!cats[m].includes(v)) cats[m].push(v);
          y = cats[m].indexOf(v);
        }
        col[index.get(Date.parse(ts) / 1000)] = y;
      }
      return col;
    });
    if (!xs.length) {
      box.replaceChildren(h("div.empty", t("no_history")));
      return;
    }
    const scaleOf = (m) => (isStep(m, values[m]) ? `s_${m}` : unitOf(m) || m);
    const axesScales = [...new Set(metrics.map(scaleOf))].slice(0, 2);
    this.plot?.destroy();
    box.replaceChildren();
    const width = Math.max(280, box.clientWidth || 340);
    this.plot = new uPlot({
      width, height: 190, legend: { show: true },
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true } },
      series: [{ label: t("assets_time") }, ...metrics.map((m, i) => ({
        label: `${metricLabel(m)}${unitOf(m) ? ` (${unitOf(m)})` : ""}`,
        stroke: COLOURS[i % COLOURS.length], width: 1.5, scale: scaleOf(m), spanGaps: false,
        paths: isStep(m, values[m]) ? uPlot.paths.stepped({ align: 1 }) : undefined,
        value: (u, v) => (v == null ? "–" : cats[m] ? cats[m][v] ?? v : +v.toFixed(2)),
      }))],
      axes: [
        { stroke: "#9aa7b8", grid: { stroke: "#22324a" }, ticks: { stroke: "#22324a" }, size: 44,
          values: timeTicks },
        ...axesScales.map((sc, i) => ({
          scale: sc, side: i === 0 ? 3 : 1, stroke: "#9aa7b8", size: 46,
          grid: { show: i === 0, stroke: "#22324a" }, ticks: { stroke: "#22324a" },
          values: (u, splits) => {
            const m = metrics.find((mm) => scaleOf(mm) === sc);
            // a stepped (enum) metric has no values between its codes: no "7.5" tick
            const whole = (v) => (isStep(m, values[m]) && !Number.isInteger(v) ? "" : v);
            return splits.map((v) => (cats[m] ? cats[m][v] ?? "" : whole(v)));
          },
        })),
      ],
    }, [xs, ...series], box);
  }

  listSection(which, device) {
    const body = h("div.assets-list", h("div.empty", t("loading")));
    const title = { children: "assets_children", alarms: "assets_alarms", commands: "assets_commands" }[which];
    const section = h(`section.assets-section.assets-${which}`, h("h3", t(title)), body);
    const id = encodeURIComponent(device.id);
    const url = {
      children: `/api/v1/devices?parent=${id}&limit=200`,
      alarms: `/api/v1/alarms?device=${id}&state=all&limit=10`,
      commands: `/api/v1/devices/${id}/commands?limit=10`,
    }[which];
    api(url, { quiet: true }).then((data) => {
      let rows = [];
      if (which === "children") {
        rows = (data.features ?? []).map((f) => h("li", h("button.link-btn", { type: "button",
          onclick: () => this.openDevice(f.id) }, f.id), ` ${f.properties?.name ?? ""}`,
        f.properties?.status ? h(`span.chip.status-${f.properties.status}`, statusLabel(f.properties.status)) : ""));
        if (!rows.length) {
          section.remove(); // only cabinets (and other parents) have connected devices
          return;
        }
      } else if (which === "alarms") {
        rows = (data.alarms ?? data.items ?? []).map((a) => h("li",
          h(`span.chip.sev-${a.severity}`, severityLabel(a.severity)), ` ${alarmMessage(a)} · `,
          h("small", `${alarmStateLabel(a.state)} · ${fmtTime(a.raised_at, true)}`)));
      } else {
        rows = (data.commands ?? []).map((c) => h("li", h("b", c.name), ` ${JSON.stringify(c.args ?? {})} · `,
          h("small", `${c.status} · ${fmtTime(c.created_at, true)}${c.created_by ? ` · ${c.created_by}` : ""}`)));
      }
      body.replaceChildren(rows.length ? h("ul.assets-rows", ...rows) : h("div.empty", t("assets_none")));
    }).catch((err) => {
      body.replaceChildren(h("div.empty.error", err.message));
    });
    return section;
  }

  editSection(device) {
    const p = device.properties ?? {};
    const [lon, lat] = device.geometry?.type === "Point" ? device.geometry.coordinates : [null, null];
    const field = (name, label, value, attrs = {}) => h("label.assets-field", h("span", label),
      h("input", { name, value: value ?? "", ...attrs }), h("span.field-error", { dataset: { field: name } }));
    const form = h("form.assets-edit", { "aria-label": t("assets_edit") },
      field("name", t("assets_name"), p.name),
      field("parent", t("assets_parent"), p.parent),
      ...(lon !== null ? [field("lon", t("assets_lon"), lon, { inputmode: "decimal" }),
        field("lat", t("assets_lat"), lat, { inputmode: "decimal" })] : []),
      h("div.form-error", { role: "alert" }),
      h("div.assets-buttons",
        lon !== null ? h("button.btn.small", { type: "button", onclick: () => this.drag(form, [lon, lat]) },
          t("assets_drag")) : "",
        h("button.btn.small.primary", { type: "submit" }, t("assets_save"))));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.save(device, form);
    });
    const details = h("details.assets-section.assets-editor", h("summary", t("assets_edit")), form);
    return details;
  }

  drag(form, start) {
    this.marker?.remove();
    this.marker = new maplibregl.Marker({ draggable: true, color: "#ff6b6b", className: "assets-move-marker" })
      .setLngLat([Number(val(form, "lon")) || start[0], Number(val(form, "lat")) || start[1]]).addTo(this.live.map);
    this.live.map.easeTo({ center: this.marker.getLngLat(), zoom: Math.max(this.live.map.getZoom(), 17) });
    form.querySelector(".form-error").textContent = t("assets_drag_hint");
    this.marker.on("dragend", () => {
      const ll = this.marker.getLngLat();
      form.elements.namedItem("lon").value = ll.lng.toFixed(7);
      form.elements.namedItem("lat").value = ll.lat.toFixed(7);
    });
  }

  // "Add device": a dialog with the import's fields; the position starts at the map's centre
  // and follows the marker when it is dragged. The API's field errors go beside the fields.
  openAdd(kinds) {
    this.dialog?.remove();
    const c = this.live.map.getCenter();
    const field = (name, label, value, attrs = {}) => h("label.assets-field", h("span", label),
      h("input", { name, value: value ?? "", ...attrs }), h("span.field-error", { dataset: { field: name } }));
    const kind = h("label.assets-field", h("span", t("assets_kind")),
      h("select", { name: "kind" }, ...kinds.map((k) => h("option", { value: k }, kindName(k)))),
      h("span.field-error", { dataset: { field: "kind" } }));
    const form = h("form.assets-edit", { method: "dialog", "aria-label": t("assets_add") },
      h("h3", t("assets_add")),
      field("id", t("assets_id"), "", { required: true, autocomplete: "off" }), kind,
      field("name", t("assets_name"), ""), field("parent", t("assets_parent"), ""),
      field("lon", t("assets_lon"), c.lng.toFixed(7), { inputmode: "decimal" }),
      field("lat", t("assets_lat"), c.lat.toFixed(7), { inputmode: "decimal" }),
      h("div.form-error", { role: "alert" }),
      h("div.assets-buttons",
        h("button.btn.small", { type: "button", onclick: () => this.drag(form, [c.lng, c.lat]) }, t("assets_drag")),
        h("button.btn.small", { type: "button", onclick: () => this.closeAdd() }, t("assets_cancel")),
        h("button.btn.small.primary", { type: "submit" }, t("assets_create"))));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.create(form);
    });
    // a non-modal dialog gets no Escape from the browser: give it the one a modal would have
    this.dialog = h("dialog.assets-dialog", { "aria-label": t("assets_add"),
      onkeydown: (ev) => { if (ev.key === "Escape") this.closeAdd(); } }, form);
    document.body.append(this.dialog);
    this.dialog.show(); // not modal: the map stays usable to drag the marker
    form.elements.namedItem("id").focus();
  }

  closeAdd() {
    this.marker?.remove();
    this.marker = null;
    this.dialog?.remove();
    this.dialog = null;
  }

  async create(form) {
    const num = (v) => (v.trim() === "" || Number.isNaN(Number(v)) ? v : Number(v));
    const body = { type: "Feature", id: val(form, "id").trim(),
      geometry: { type: "Point", coordinates: [num(val(form, "lon")), num(val(form, "lat"))] },
      properties: { kind: val(form, "kind"), name: val(form, "name"), ...(val(form, "parent").trim()
        ? { parent: val(form, "parent").trim() } : {}) } };
    if (!(await this.send(form, "/api/v1/devices", "POST", body))) return;
    const id = body.id;
    this.closeAdd();
    toast(t("assets_saved"));
    this.onSaved?.(id);
  }

  // Sends, or shows the problem's field errors beside the fields; true when it went through.
  async send(form, url, method, body) {
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    const general = form.querySelector(".form-error");
    general.textContent = "";
    try {
      await api(url, { method, body });
      return true;
    } catch (err) {
      const errors = err.problem?.errors ?? [];
      const rest = [];
      for (const e of errors) {
        const f = String(e.field ?? "");
        const key = f.startsWith("geometry") ? (/\.1$|\[1\]$/.test(f) ? "lat" : "lon")
          : f.replace(/^(features\.\d+\.|\d+\.)?(properties\.)?/, "");
        const slot = form.querySelector(`.field-error[data-field="${key}"]`);
        if (slot) slot.textContent = `${f}: ${e.reason}`;
        else rest.push(`${f}: ${e.reason}`);
      }
      general.textContent = rest.length ? rest.join("; ") : (errors.length ? "" : err.message);
      return false;
    }
  }

  async save(device, form) {
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    form.querySelector(".form-error").textContent = "";
    const body = { properties: { name: val(form, "name"), parent: val(form, "parent").trim() || null } };
    if (form.elements.namedItem("lon")) {
      const num = (v) => (v.trim() === "" || Number.isNaN(Number(v)) ? v : Number(v));
      body.geometry = { type: "Point", coordinates: [num(val(form, "lon")), num(val(form, "lat"))] };
    }
    try {
      await api(`/api/v1/devices/${encodeURIComponent(device.id)}`, { method: "PATCH", body });
    } catch (err) {
      const errors = err.problem?.errors ?? [];
      let shown = false;
      for (const e of errors) {
        const f = String(e.field ?? "");
        const key = f.startsWith("geometry") ? (f.endsWith("1") ? "lat" : "lon")
          : f.replace(/^properties\./, "");
        const slot = form.querySelector(`.field-error[data-field="${key}"]`);
        if (slot) {
          slot.textContent = `${f}: ${e.reason}`;
          shown = true;
        }
      }
      form.querySelector(".form-error").textContent = shown ? "" : err.message;
      if (!shown && errors.length) {
        form.querySelector(".form-error").textContent = errors.map((e) => `${e.field}: ${e.reason}`).join("; ");
      }
      return;
    }
    this.marker?.remove();
    this.marker = null;
    toast(t("assets_saved"));
    this.onSaved?.(device.id);
  }
}
