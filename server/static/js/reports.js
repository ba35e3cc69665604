// Citizens' reports on the IOC console (issue 14, point 6): a live layer on the map (diamonds,
// unlike the devices' and alarms' circles), a panel beside the alarms with filters and the
// operators' actions (verify, assign, merge, reject, comment) and each report's timeline, the
// reports' KPIs in the top bar, and "citizens confirmed" on alarms a lamp-out report joined.
// Kept current by the websocket's "report" messages (subscribe with "reports": true).

import {
  CATEGORIES, CATEGORY_COLOURS, categoryLabel, reportStatusLabel, STATUSES, unitLabel,
} from "./citizen.js";
import { api, fmtNumber, fmtTime, h, listOf, timeAgo, toast } from "./common.js";
import { addStrings, lang, onLangChange, t } from "./i18n.js";

addStrings({
  rp_tab_alarms: "Alarms",
  rp_tab_reports: "Reports",
  rp_title: "Citizens' reports",
  rp_status: "Status",
  rp_category: "Category",
  rp_ward: "Ward",
  rp_open: "Open",
  rp_all: "All",
  rp_any_category: "Every category",
  rp_any_ward: "Every ward",
  rp_none: "No report matches these filters.",
  rp_reporters: "{n} citizens",
  rp_overdue: "Overdue",
  rp_due: "due {t}",
  rp_verify: "Verify",
  rp_assign: "Assign to",
  rp_assign_pick: "Assign…",
  rp_reject: "Reject",
  rp_reject_reason: "Reason the citizen will read",
  rp_merge: "Merge into",
  rp_merge_pick: "Merge into…",
  rp_comment: "Comment",
  rp_comment_ph: "A note on the timeline (the citizen reads it)",
  rp_commented: "Comment",
  rp_citizen: "the citizen",
  rp_due_label: "Due",
  rp_save: "Save",
  rp_send: "Send",
  rp_cancel: "Cancel",
  rp_timeline: "Timeline",
  rp_contact: "Contact",
  rp_photos: "Photos",
  rp_after: "After the work",
  rp_unit: "Unit",
  rp_crew: "Crew",
  rp_device: "Linked device",
  rp_alarm: "Joined alarm #{id}",
  rp_by: "by {who}",
  rp_done_verify: "Report #{id} verified",
  rp_done_assign: "Report #{id} assigned to {crew}",
  rp_done_reject: "Report #{id} rejected",
  rp_done_merge: "Report #{id} merged into #{into}",
  rp_done_comment: "Comment added to report #{id}",
  rp_failed: "Could not {what}: {why}",
  rp_confirmed: "Citizens confirmed ({n})",
  rp_confirmed_title: "A citizen's lamp-out report joined this alarm",
  rp_kpis: "Reports",
  rp_kpi_open: "Open",
  rp_kpi_overdue: "Overdue",
  rp_kpi_sla: "In SLA",
  rp_kpi_median: "Median",
  rp_kpi_satisfied: "Satisfied",
  rp_kpis_label: "Citizens' reports: key figures",
  rp_layer: "Citizens' reports",
  rp_open_report: "Report #{id}: {category}",
}, {
  rp_tab_alarms: "Cảnh báo",
  rp_tab_reports: "Phản ánh",
  rp_title: "Phản ánh của người dân",
  rp_status: "Trạng thái",
  rp_category: "Loại",
  rp_ward: "Phường",
  rp_open: "Đang mở",
  rp_all: "Tất cả",
  rp_any_category: "Mọi loại",
  rp_any_ward: "Mọi phường",
  rp_none: "Không có phản ánh nào khớp bộ lọc.",
  rp_reporters: "{n} người báo",
  rp_overdue: "Quá hạn",
  rp_due: "hạn {t}",
  rp_verify: "Xác minh",
  rp_assign: "Giao cho",
  rp_assign_pick: "Giao cho…",
  rp_reject: "Từ chối",
  rp_reject_reason: "Lý do (người dân sẽ đọc)",
  rp_merge: "Gộp vào",
  rp_merge_pick: "Gộp vào…",
  rp_comment: "Ghi chú",
  rp_comment_ph: "Ghi chú vào tiến trình (người dân đọc được)",
  rp_commented: "Ghi chú",
  rp_citizen: "người dân",
  rp_due_label: "Hạn xử lý",
  rp_save: "Lưu",
  rp_send: "Gửi",
  rp_cancel: "Hủy",
  rp_timeline: "Tiến trình",
  rp_contact: "Liên hệ",
  rp_photos: "Ảnh",
  rp_after: "Sau khi xử lý",
  rp_unit: "Đơn vị",
  rp_crew: "Tổ",
  rp_device: "Thiết bị liên quan",
  rp_alarm: "Đã gộp vào cảnh báo #{id}",
  rp_by: "bởi {who}",
  rp_done_verify: "Đã xác minh phản ánh #{id}",
  rp_done_assign: "Đã giao phản ánh #{id} cho {crew}",
  rp_done_reject: "Đã từ chối phản ánh #{id}",
  rp_done_merge: "Đã gộp phản ánh #{id} vào #{into}",
  rp_done_comment: "Đã thêm ghi chú vào phản ánh #{id}",
  rp_failed: "Không thể {what}: {why}",
  rp_confirmed: "Người dân xác nhận ({n})",
  rp_confirmed_title: "Phản ánh đèn không sáng của người dân đã gộp vào cảnh báo này",
  rp_kpis: "Phản ánh",
  rp_kpi_open: "Đang mở",
  rp_kpi_overdue: "Quá hạn",
  rp_kpi_sla: "Đúng hạn",
  rp_kpi_median: "Trung vị",
  rp_kpi_satisfied: "Hài lòng",
  rp_kpis_label: "Phản ánh của người dân: số liệu chính",
  rp_layer: "Phản ánh của người dân",
  rp_open_report: "Phản ánh #{id}: {category}",
});

const OPEN = ["received", "verified", "assigned", "in_progress"];
const isOpen = (r) => OPEN.includes(r.status);
const overdue = (r) => isOpen(r) && r.sla_due && new Date(r.sla_due) < new Date();
// The diamond's colour: what the report waits for.
const TONES = { received: "#f59f00", verified: "#fab005", assigned: "#4dabf7", in_progress: "#22c3ee",
  overdue: "#ff4d4f", resolved: "#40c057", rejected: "#868e96" };
const toneOf = (r) => (overdue(r) ? "overdue" : r.status);
const KPI_REFRESH_MS = 60000;

export class ReportsPanel {
  constructor({ live, alarms, canAct, crews, wards, aside, kpiSlot }) {
    this.live = live;
    this.alarms = alarms; // the AlarmStore: incidents' children for "citizens confirmed"
    this.canAct = canAct;
    this.crews = crews;
    this.wards = wards; // () => [{code, name}]
    this.reports = new Map();
    this.filters = { status: "open", category: "", ward: "" };
    this.selected = null;
    this.detail = null; // the selected report with its events and photos
    this.rejecting = false;
    this.draft = "";
    this.kpiTimer = null;
    this.mount(aside, kpiSlot);
    onLangChange(() => {
      this.renderHead();
      this.render();
      this.renderKpis();
    });
  }

  // ---------------------------------------------------------------- the page's parts
  mount(aside, kpiSlot) {
    const alarmParts = [aside.querySelector(".alarms-head"), aside.querySelector("#alarm-list")];
    this.tabs = {
      alarms: h("button.side-tab", { type: "button", role: "tab", "aria-selected": "true",
        dataset: { tab: "alarms" }, onclick: () => this.showTab("alarms") }),
      reports: h("button.side-tab", { type: "button", role: "tab", "aria-selected": "false",
        dataset: { tab: "reports" }, onclick: () => this.showTab("reports") }),
    };
    this.alarmParts = alarmParts;
    aside.prepend(h("div.side-tabs", { role: "tablist" }, this.tabs.alarms, this.tabs.reports));
    this.selects = {
      status: h("select.rp-filter", { dataset: { filter: "status" }, onchange: (e) => this.setFilter("status", e) }),
      category: h("select.rp-filter", { dataset: { filter: "category" },
        onchange: (e) => this.setFilter("category", e) }),
      ward: h("select.rp-filter", { dataset: { filter: "ward" }, onchange: (e) => this.setFilter("ward", e) }),
    };
    this.heading = h("h2");
    this.list = h("div.report-list", { id: "report-list" });
    this.section = h("section.reports-panel", { id: "reports-panel", hidden: true },
      h("div.reports-head", this.heading, h("div.rp-filters", ...Object.values(this.selects))), this.list);
    aside.append(this.section);
    this.kpiBox = h("div.kpi-group.reports-kpis", { role: "group" });
    kpiSlot.append(this.kpiBox);
    this.renderHead();
    this.renderKpis();
  }

  showTab(which) {
    this.tab = which;
    for (const [name, btn] of Object.entries(this.tabs)) btn.setAttribute("aria-selected", String(name === which));
    for (const el of this.alarmParts) if (el) el.hidden = which !== "alarms";
    this.section.hidden = which !== "reports";
  }

  setFilter(name, ev) {
    this.filters[name] = ev.target.value;
    this.render();
  }

  renderHead() {
    const count = [...this.reports.values()].filter(isOpen).length;
    this.tabs.alarms.textContent = t("rp_tab_alarms");
    this.tabs.reports.textContent = `${t("rp_tab_reports")}${count ? ` (${count})` : ""}`;
    this.heading.textContent = t("rp_title");
    const opt = (value, label, current) => h("option", { value, selected: value === current }, label);
    const f = this.filters;
    this.selects.status.setAttribute("aria-label", t("rp_status"));
    this.selects.status.replaceChildren(opt("open", t("rp_open"), f.status), opt("all", t("rp_all"), f.status),
      ...STATUSES.map((s) => opt(s, reportStatusLabel(s), f.status)));
    this.selects.category.setAttribute("aria-label", t("rp_category"));
    this.selects.category.replaceChildren(opt("", t("rp_any_category"), f.category),
      ...Object.keys(CATEGORIES).map((c) => opt(c, categoryLabel(c), f.category)));
    this.selects.ward.setAttribute("aria-label", t("rp_ward"));
    const wards = new Map((this.wards() ?? []).map((w) => [w.code, w.name ?? w.code]));
    for (const r of this.reports.values()) if (r.ward && !wards.has(r.ward)) wards.set(r.ward, r.ward);
    this.selects.ward.replaceChildren(opt("", t("rp_any_ward"), f.ward),
      ...[...wards].sort((a, b) => a[1].localeCompare(b[1])).map(([code, name]) => opt(code, name, f.ward)));
  }

  wardName(code) {
    return (this.wards() ?? []).find((w) => w.code === code)?.name ?? code ?? "";
  }

  crewName(id) {
    return this.crews().find((c) => c.id === id)?.name ?? id;
  }

  // ---------------------------------------------------------------- data
  async load() {
    const data = await api("/api/v1/reports?status=all");
    this.reports.clear();
    for (const r of listOf(data, "reports")) this.reports.set(String(r.id), r);
    this.changed();
    this.refreshKpis();
  }

  // A "report" message, or an action's answer: the newer version wins; a merged one goes.
  apply(r) {
    const id = String(r.id);
    if (r.status === "merged" || r.yours === false) {
      this.reports.delete(id);
      if (this.selected === id) this.select(r.merged_into ? String(r.merged_into) : null);
    } else {
      const prev = this.reports.get(id);
      if (prev && new Date(r.updated_at) < new Date(prev.updated_at)) return;
      this.reports.set(id, { ...prev, ...r });
      this.flash = id;
      if (this.selected === id) this.loadDetail(id);
    }
    this.changed();
    this.refreshKpisSoon();
  }

  changed() {
    this.renderHead();
    this.render();
    this.paintMap();
    this.markConfirmedAlarms();
  }

  visible() {
    const f = this.filters;
    return [...this.reports.values()].filter((r) => (f.status === "all" || (f.status === "open" ? isOpen(r)
      : r.status === f.status)) && (!f.category || r.category === f.category) && (!f.ward || r.ward === f.ward))
      .sort((a, b) => Number(overdue(b)) - Number(overdue(a)) || new Date(b.created_at) - new Date(a.created_at));
  }

  // ---------------------------------------------------------------- the list
  render() {
    const items = this.visible().map((r) => this.item(r));
    this.list.replaceChildren(...(items.length ? items : [h("div.empty", t("rp_none"))]));
    this.flash = null;
  }

  item(r) {
    const id = String(r.id);
    const classes = ["report", `st-${r.status}`];
    if (overdue(r)) classes.push("overdue");
    if (this.selected === id) classes.push("selected");
    if (this.flash === id) classes.push("new");
    const el = h(`div.${classes.join(".")}`, { dataset: { reportId: id, status: r.status } },
      h("button.report-head", { type: "button", "aria-expanded": String(this.selected === id),
        "aria-label": t("rp_open_report", { id, category: categoryLabel(r.category) }),
        onclick: () => this.select(this.selected === id ? null : id, true) },
      h("span.rp-dot", { style: { background: CATEGORY_COLOURS[r.category] ?? "#868e96" } }),
      h("span.rp-cat", categoryLabel(r.category)),
      h("span.rp-id", `#${id}`),
      h("span.rp-time", { title: fmtTime(r.created_at, true) }, timeAgo(r.created_at))),
      h("div.rp-meta",
        h(`span.rp-status.st-${r.status}`, reportStatusLabel(r.status)),
        overdue(r) ? h("span.rp-overdue", t("rp_overdue")) : null,
        r.ward ? h("span", this.wardName(r.ward)) : null,
        r.reporters > 1 ? h("span.rp-reporters", t("rp_reporters", { n: r.reporters })) : null,
        r.crew ? h("span", `${t("rp_crew")}: ${this.crewName(r.crew)}`) : null),
      h("div.rp-desc", r.description ?? ""));
    if (this.selected === id) el.append(this.details(r));
    return el;
  }

  async select(id, fly = false) {
    this.selected = id;
    this.rejecting = false;
    this.detail = null;
    this.render();
    if (!id) return;
    if (this.tab !== "reports") this.showTab("reports");
    const r = this.reports.get(id);
    if (fly && r) this.live.map.easeTo({ center: [r.lon, r.lat], zoom: Math.max(this.live.map.getZoom(), 16) });
    await this.loadDetail(id);
    this.list.querySelector(`[data-report-id="${CSS.escape(id)}"]`)?.scrollIntoView({ block: "nearest" });
  }

  async loadDetail(id) {
    try {
      const doc = await api(`/api/v1/reports/${encodeURIComponent(id)}`);
      if (this.selected !== id) return;
      this.detail = doc;
      this.render();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  details(r) {
    const d = this.detail && String(this.detail.id) === String(r.id) ? this.detail : null;
    const box = h("div.rp-detail");
    const facts = [];
    if (r.unit) facts.push([t("rp_unit"), unitLabel(r.unit)]);
    if (r.contact) facts.push([t("rp_contact"), r.contact]);
    if (r.sla_due && isOpen(r)) facts.push([t("rp_due_label"), fmtTime(r.sla_due, true)]);
    if (r.device) facts.push([t("rp_device"), r.device]);
    if (r.alarm) facts.push(["⚠", t("rp_alarm", { id: r.alarm })]);
    box.append(h("dl.rp-facts", ...facts.flatMap(([k, v]) => [h("dt", k), h("dd", v)])));
    if (d) {
      const before = (d.photos ?? []).filter((p) => !(d.after ?? []).includes(p));
      const gallery = (title, urls) => (urls.length ? h("div.rp-photos", h("h4", title),
        ...urls.map((u, i) => h("a", { href: u, target: "_blank", rel: "noopener" },
          h("img", { src: u, alt: `${title} ${i + 1}`, loading: "lazy" })))) : null);
      box.append(gallery(t("rp_photos"), before) ?? "", gallery(t("rp_after"), d.after ?? []) ?? "");
      // A step that does not change the status is a comment (or one more citizen, a merge); a
      // step of a report merged into this one (its note starts "[#id]") is labelled as such.
      let status = null;
      const label = (e) => {
        const merged = /^\[#(\d+)\]/.exec(e.note ?? "");
        if (merged) return `#${merged[1]} · ${reportStatusLabel(e.status)}`;
        const text = status === e.status ? t("rp_commented") : reportStatusLabel(e.status);
        status = e.status;
        return text;
      };
      box.append(h("h4", t("rp_timeline")), h("ol.rp-timeline", ...(d.events ?? []).map((e) => h("li",
        h("span.rp-ev-status", label(e)),
        h("time", { datetime: e.at }, fmtTime(e.at, true)),
        e.by ? h("span.rp-ev-by", t("rp_by", { who: e.by === "public" ? t("rp_citizen") : e.by })) : null,
        e.note ? h("div.rp-ev-note", e.note) : null))));
    }
    if (this.canAct()) box.append(this.actions(r));
    return box;
  }

  actions(r) {
    const id = String(r.id);
    const row = h("div.rp-actions");
    if (r.status === "received") {
      row.append(h("button.btn.primary", { type: "button", dataset: { action: "verify" },
        onclick: () => this.act(r, "verify", {}, t("rp_done_verify", { id })) }, t("rp_verify")));
    }
    if (isOpen(r)) {
      const crews = this.crews();
      row.append(h("select.crew-select", { dataset: { action: "assign" }, "aria-label": t("rp_assign"),
        onchange: (ev) => {
          const crew = ev.target.value;
          if (crew) this.act(r, "assign", { crew }, t("rp_done_assign", { id, crew: this.crewName(crew) }));
        } },
      h("option", { value: "" }, t("rp_assign_pick")),
      ...crews.map((c) => h("option", { value: c.id, selected: c.id === r.crew },
        `${c.name ?? c.id}${c.ward ? ` · ${c.ward}` : ""}`))));
      const others = [...this.reports.values()].filter((o) => isOpen(o) && String(o.id) !== id)
        .sort((a, b) => Number(b.category === r.category) - Number(a.category === r.category)
          || dist(a, r) - dist(b, r)).slice(0, 30);
      if (others.length) {
        row.append(h("select.crew-select", { dataset: { action: "merge" }, "aria-label": t("rp_merge"),
          onchange: (ev) => {
            const into = Number(ev.target.value);
            if (into) this.merge(r, into);
          } },
        h("option", { value: "" }, t("rp_merge_pick")),
        ...others.map((o) => h("option", { value: o.id },
          `#${o.id} ${categoryLabel(o.category)} · ${Math.round(dist(o, r))} m`))));
      }
      row.append(h("button.btn", { type: "button", dataset: { action: "reject" }, "aria-expanded": String(this.rejecting),
        onclick: () => {
          this.rejecting = !this.rejecting;
          this.render();
          this.list.querySelector(".rp-reject input")?.focus();
        } }, t("rp_reject")));
    }
    const out = h("div", row);
    if (this.rejecting) {
      // the reason typed so far survives re-renders (report messages keep arriving)
      const input = h("input", { type: "text", required: true, maxlength: 2000, "aria-label": t("rp_reject_reason"),
        placeholder: t("rp_reject_reason"), value: this.reason ?? "",
        oninput: (ev) => { this.reason = ev.target.value; } });
      out.append(h("form.rp-form.rp-reject", { onsubmit: (ev) => {
        ev.preventDefault();
        if (!input.value.trim()) return;
        this.rejecting = false;
        this.reason = "";
        this.act(r, "reject", { note: input.value.trim() }, t("rp_done_reject", { id }));
      } }, input, h("button.btn.small.primary", { type: "submit", dataset: { action: "reject-send" } }, t("rp_send"))));
    }
    const note = h("input", { type: "text", maxlength: 2000, value: this.draft, "aria-label": t("rp_comment"),
      placeholder: t("rp_comment_ph"), oninput: (ev) => { this.draft = ev.target.value; } });
    out.append(h("form.rp-form.rp-comment", { onsubmit: (ev) => {
      ev.preventDefault();
      const text = note.value.trim();
      if (!text) return;
      this.draft = "";
      this.act(r, "comment", { note: text }, t("rp_done_comment", { id }));
    } }, note, h("button.btn.small", { type: "submit", dataset: { action: "comment" } }, t("rp_save"))));
    return out;
  }

  async act(r, action, body, done) {
    try {
      const answer = await api(`/api/v1/reports/${encodeURIComponent(r.id)}/${action}`, { method: "POST", body });
      if (answer?.id !== undefined) this.apply(answer);
      await this.loadDetail(String(r.id));
      toast(done, "ok");
    } catch (err) {
      toast(t("rp_failed", { what: t(`rp_${action}`).toLowerCase(), why: err.message }), "error");
    }
  }

  async merge(r, into) {
    try {
      const kept = await api(`/api/v1/reports/${encodeURIComponent(r.id)}/merge`, { method: "POST", body: { into } });
      this.apply({ id: r.id, status: "merged", merged_into: into });
      this.apply(kept);
      await this.select(String(into));
      toast(t("rp_done_merge", { id: r.id, into }), "ok");
    } catch (err) {
      toast(t("rp_failed", { what: t("rp_merge").toLowerCase(), why: err.message }), "error");
    }
  }

  // ---------------------------------------------------------------- the map
  addLayer() {
    const map = this.live.map;
    for (const [tone, colour] of Object.entries(TONES)) map.addImage(`report-${tone}`, diamond(colour), { pixelRatio: 2 });
    map.addSource("live-reports", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
    map.addLayer({ id: "live-reports", type: "symbol", source: "live-reports", layout: {
      "icon-image": ["concat", "report-", ["get", "tone"]], "icon-allow-overlap": true,
      "icon-size": ["interpolate", ["linear"], ["zoom"], 10, 0.7, 16, 1.3] } });
    // The catalogue's "reports" tiles are a cached picture of the same reports: this live layer
    // replaces their drawing, and the layer switcher's checkbox for "reports" now toggles it.
    const tiles = this.live.sources.get("reports");
    if (tiles) {
      for (const lid of tiles.styleIds) if (map.getLayer(lid)) map.removeLayer(lid);
      tiles.styleIds = ["live-reports"];
      tiles.title = t("rp_layer");
    }
    map.on("click", "live-reports", (e) => {
      const f = e.features?.[0];
      if (f) this.select(String(f.properties.id));
    });
    map.on("mouseenter", "live-reports", () => { map.getCanvas().style.cursor = "pointer"; });
    map.on("mouseleave", "live-reports", () => { map.getCanvas().style.cursor = ""; });
    this.paintMap();
  }

  paintMap() {
    const src = this.live.map.getSource?.("live-reports");
    if (!src) return;
    src.setData({ type: "FeatureCollection", features: [...this.reports.values()].filter(isOpen).map((r) => ({
      type: "Feature", id: r.id, geometry: { type: "Point", coordinates: [r.lon, r.lat] },
      properties: { id: r.id, category: r.category, status: r.status, tone: toneOf(r) } })) });
  }

  // ---------------------------------------------------------------- alarms citizens confirmed
  confirmations() {
    const n = new Map();
    for (const r of this.reports.values()) {
      if (r.alarm && isOpen(r)) n.set(String(r.alarm), (n.get(String(r.alarm)) ?? 0) + (r.reporters ?? 1));
    }
    return n;
  }

  watchAlarms(list) {
    new MutationObserver(() => this.markConfirmedAlarms()).observe(list, { childList: true });
    this.alarmList = list;
  }

  markConfirmedAlarms() {
    if (!this.alarmList) return;
    const n = this.confirmations();
    for (const el of this.alarmList.querySelectorAll(".alarm[data-alarm-id]")) {
      const id = el.dataset.alarmId;
      const kids = this.alarms.alarms.get(id)?.children ?? [];
      const count = [id, ...kids.map(String)].reduce((s, a) => s + (n.get(a) ?? 0), 0);
      el.querySelector(".citizens-confirmed")?.remove();
      if (count) {
        el.querySelector(".alarm-meta")?.append(h("span.citizens-confirmed", { title: t("rp_confirmed_title") },
          t("rp_confirmed", { n: count })));
      }
    }
  }

  // ---------------------------------------------------------------- KPIs
  refreshKpisSoon() {
    clearTimeout(this.kpiSoon);
    this.kpiSoon = setTimeout(() => this.refreshKpis(), 400);
  }

  async refreshKpis() {
    clearTimeout(this.kpiTimer);
    try {
      this.kpis = await api("/api/v1/reports/kpis");
    } catch (err) {
      if (err.status === 403) { // a crew's token on the console: no city-wide figures
        this.kpiBox.hidden = true;
        return;
      }
      console.warn("report KPIs:", err.message);
    }
    this.renderKpis();
    this.kpiTimer = setTimeout(() => this.refreshKpis(), KPI_REFRESH_MS);
  }

  renderKpis() {
    const k = this.kpis ?? {};
    const pct = (v) => (v === null || v === undefined ? "–" : `${fmtNumber(v, 0)}%`);
    const hours = (v) => (v === null || v === undefined ? "–" : v < 48 ? `${fmtNumber(v, 1)} h`
      : `${fmtNumber(v / 24, 1)} ${lang() === "vi" ? "ngày" : "d"}`);
    const cell = (key, value, hot = false) => h(`span.kpi-mini${hot ? ".hot" : ""}`, { dataset: { kpi: key } },
      h("span.kpi-num", value), " ", h("span.kpi-label", t(`rp_kpi_${key}`)));
    this.kpiBox.setAttribute("aria-label", t("rp_kpis_label"));
    // Two short lines, so the five figures fit beside the alarm KPIs.
    this.kpiBox.replaceChildren(h("span.kpi-group-title", t("rp_kpis")),
      h("span.kpi-line", cell("open", fmtNumber(k.open ?? null)),
        cell("overdue", fmtNumber(k.overdue ?? null), (k.overdue ?? 0) > 0)),
      h("span.kpi-line.small", cell("sla", pct(k.within_sla_pct)), cell("median", hours(k.median_hours_to_resolve)),
        cell("satisfied", pct(k.satisfaction_pct))));
  }
}

// Metres between two reports (an equirectangular approximation: fine across a city).
function dist(a, b) {
  const rad = Math.PI / 180;
  const x = (a.lon - b.lon) * rad * Math.cos(((a.lat + b.lat) / 2) * rad);
  const y = (a.lat - b.lat) * rad;
  return Math.sqrt(x * x + y * y) * 6371000;
}

// A diamond marker (reports are drawn unlike the devices' and alarms' circles), 2x for sharpness.
function diamond(colour) {
  const size = 36;
  const c = document.createElement("canvas");
  c.width = size;
  c.height = size;
  const g = c.getContext("2d");
  g.beginPath();
  g.moveTo(size / 2, 2);
  g.lineTo(size - 2, size / 2);
  g.lineTo(size / 2, size - 2);
  g.lineTo(2, size / 2);
  g.closePath();
  g.fillStyle = colour;
  g.fill();
  g.lineWidth = 3;
  g.strokeStyle = "#0b1220";
  g.stroke();
  g.beginPath();
  g.arc(size / 2, size / 2, 3.5, 0, 2 * Math.PI);
  g.fillStyle = "#ffffff";
  g.fill();
  return g.getImageData(0, 0, size, size);
}
