// Alarm history, timeline and KPIs (issue 18): a panel over the map. "History" searches
// every alarm, closed ones included (ward, device kind, rule, severity, state, time range,
// free text), a page at a time; an alarm opens its timeline from /events (raised, acked by
// whom, comments, shelving with its reason, assignment, the crew's start and finish with
// note and photo, cleared, closed; event types it does not know are shown as they come)
// and can be taken out of service or returned to it. "KPIs" draws /alarms/kpis against the
// ISA-18.2 targets: the load per operator over time (uPlot) and each figure beside its target.

import uPlot from "uplot";

import { alarmMessage } from "./alarmtext.js";
import { api, fmtTime, h, listOf, timeTicks, toast } from "./common.js";
import { addStrings, alarmStateLabel, kindLabel, lang, onLangChange, severityLabel, t } from "./i18n.js";

addStrings({
  ah_open: "Alarm history",
  ah_row_label: "{sev} alarm on {device}: {msg} ({state}). Enter opens its timeline",
  ah_title: "Alarm history",
  ah_close: "Close alarm history",
  ah_tab_history: "History",
  ah_tab_kpis: "KPIs",
  ah_ward: "Ward",
  ah_kind: "Device kind",
  ah_rule: "Rule",
  ah_severity: "Severity",
  ah_state: "State",
  ah_from: "From",
  ah_to: "To",
  ah_text: "Text",
  ah_text_hint: "Device, message or rule",
  ah_any: "Any",
  ah_state_open: "Open",
  ah_state_all: "All",
  ah_search: "Search",
  ah_reset: "Reset",
  ah_more: "Older alarms",
  ah_none: "No alarm matches these filters.",
  ah_col_raised: "Raised",
  ah_col_device: "Device",
  ah_col_message: "Message",
  ah_col_closed: "Closed",
  ah_count: "{n} shown",
  ah_timeline: "Timeline",
  ah_back: "Back to the list",
  ah_no_events: "No events recorded.",
  ah_oos: "Out of service",
  ah_oos_on: "Take out of service",
  ah_oos_off: "Return to service",
  ah_oos_reason: "Reason (required)",
  ah_oos_need_reason: "Give a reason: it is kept in the alarm's history.",
  ah_oos_done_on: "Alarm {id} taken out of service",
  ah_oos_done_off: "Alarm {id} returned to service",
  ah_oos_badge: "out of service",
  ah_shelved_badge: "shelved",
  ah_ev_raised: "Raised",
  ah_ev_raised_again: "Raised again",
  ah_ev_severity: "Severity {from} → {to}",
  ah_ev_acknowledged: "Acknowledged by {who}",
  ah_ev_comment: "Comment by {who}",
  ah_ev_shelved: "Shelved for {minutes} min by {who}",
  ah_ev_unshelved: "Unshelved",
  ah_ev_oos_on: "Taken out of service by {who}",
  ah_ev_oos_off: "Returned to service by {who}",
  ah_ev_assigned: "Assigned to {crew}",
  ah_ev_work: "Work: {state}",
  ah_ev_work_started: "Crew started work",
  ah_ev_work_done: "Crew finished work",
  ah_ev_cleared: "Returned to normal",
  ah_ev_closed: "Closed",
  ah_ev_reopened: "Reopened",
  ah_ev_suppressed: "Suppressed (part of an incident)",
  ah_ev_unsuppressed: "No longer suppressed",
  ah_ev_chattering: "Chattering",
  ah_ev_escalated: "Escalated to level {level}",
  ah_why_escalated: "Not acknowledged within {minutes} min",
  ah_why_ward: "Routed by ward: the crew of ward {ward}",
  ah_why_nearest: "Routed to the nearest available crew, {metres} m away",
  ah_by: "by {who}",
  ah_reason: "Reason: {text}",
  ah_note: "Note: {text}",
  ah_photo: "Photo",
  ah_time: "Time",
  ah_period: "Period",
  ah_consoles: "Operator consoles",
  ah_kpi_load: "Alarms per operator per {bucket}",
  ah_kpi_load_aria: "Chart of alarms per operator over time against the ISA-18.2 targets",
  ah_kpi_acceptable: "Acceptable",
  ah_kpi_manageable: "Most manageable",
  ah_kpi_flood: "Flood",
  ah_kpi_target: "target {v}",
  ah_kpi_ok: "within target",
  ah_kpi_bad: "over target",
  ah_kpi_activations: "{n} activations, {hidden} not shown to operators",
  ah_bucket_600: "10 minutes",
  ah_bucket_3600: "hour",
  ah_bucket_86400: "day",
  ah_k_alarms_per_operator_per_10min: "Alarms per operator per 10 min",
  ah_k_alarms_per_operator_per_hour: "Alarms per operator per hour",
  ah_k_peak_alarms_per_10min: "Peak alarms in 10 min",
  ah_k_time_in_flood_pct: "Time in flood",
  ah_k_chattering_alarms: "Chattering alarms",
  ah_k_stale_alarms: "Stale alarms (over 24 h)",
  ah_k_top10_share_pct: "Top 10 alarms' share",
  ah_k_priority_split_pct: "Priority split",
  ah_prio_high: "High",
  ah_prio_medium: "Medium",
  ah_prio_low: "Low",
  ah_last_24h: "Last 24 hours",
  ah_last_7d: "Last 7 days",
  ah_last_30d: "Last 30 days",
}, {
  ah_open: "Lịch sử cảnh báo",
  ah_row_label: "Cảnh báo {sev} tại {device}: {msg} ({state}). Enter để mở diễn biến",
  ah_title: "Lịch sử cảnh báo",
  ah_close: "Đóng lịch sử cảnh báo",
  ah_tab_history: "Lịch sử",
  ah_tab_kpis: "Chỉ số KPI",
  ah_ward: "Phường",
  ah_kind: "Loại thiết bị",
  ah_rule: "Quy tắc",
  ah_severity: "Mức độ",
  ah_state: "Trạng thái",
  ah_from: "Từ",
  ah_to: "Đến",
  ah_text: "Tìm chữ",
  ah_text_hint: "Thiết bị, nội dung hoặc quy tắc",
  ah_any: "Tất cả",
  ah_state_open: "Đang mở",
  ah_state_all: "Tất cả",
  ah_search: "Tìm",
  ah_reset: "Xóa bộ lọc",
  ah_more: "Cảnh báo cũ hơn",
  ah_none: "Không có cảnh báo nào khớp bộ lọc.",
  ah_col_raised: "Phát sinh",
  ah_col_device: "Thiết bị",
  ah_col_message: "Nội dung",
  ah_col_closed: "Đóng lúc",
  ah_count: "Đang hiện {n}",
  ah_timeline: "Diễn biến",
  ah_back: "Quay lại danh sách",
  ah_no_events: "Chưa ghi nhận sự kiện nào.",
  ah_oos: "Ngừng giám sát",
  ah_oos_on: "Ngừng giám sát",
  ah_oos_off: "Giám sát trở lại",
  ah_oos_reason: "Lý do (bắt buộc)",
  ah_oos_need_reason: "Hãy nhập lý do: lý do được lưu trong lịch sử cảnh báo.",
  ah_oos_done_on: "Đã ngừng giám sát cảnh báo {id}",
  ah_oos_done_off: "Đã giám sát trở lại cảnh báo {id}",
  ah_oos_badge: "ngừng giám sát",
  ah_shelved_badge: "tạm ẩn",
  ah_ev_raised: "Phát sinh",
  ah_ev_raised_again: "Phát sinh lại",
  ah_ev_severity: "Mức độ {from} → {to}",
  ah_ev_acknowledged: "{who} đã xác nhận",
  ah_ev_comment: "Ghi chú của {who}",
  ah_ev_shelved: "{who} tạm ẩn {minutes} phút",
  ah_ev_unshelved: "Bỏ tạm ẩn",
  ah_ev_oos_on: "{who} ngừng giám sát",
  ah_ev_oos_off: "{who} cho giám sát trở lại",
  ah_ev_assigned: "Giao cho {crew}",
  ah_ev_work: "Công việc: {state}",
  ah_ev_work_started: "Đội bắt đầu xử lý",
  ah_ev_work_done: "Đội đã xử lý xong",
  ah_ev_cleared: "Trở lại bình thường",
  ah_ev_closed: "Đã đóng",
  ah_ev_reopened: "Mở lại",
  ah_ev_suppressed: "Bị ẩn (thuộc một sự cố)",
  ah_ev_unsuppressed: "Hết ẩn",
  ah_ev_chattering: "Cảnh báo lặp liên tục",
  ah_ev_escalated: "Đã báo lên cấp {level}",
  ah_why_escalated: "Chưa được xác nhận sau {minutes} phút",
  ah_why_ward: "Giao theo phường: tổ phụ trách phường {ward}",
  ah_why_nearest: "Giao cho tổ rảnh gần nhất, cách {metres} m",
  ah_by: "bởi {who}",
  ah_reason: "Lý do: {text}",
  ah_note: "Ghi chú: {text}",
  ah_photo: "Ảnh",
  ah_time: "Thời gian",
  ah_period: "Khoảng thời gian",
  ah_consoles: "Số bàn điều hành",
  ah_kpi_load: "Cảnh báo mỗi điều hành viên mỗi {bucket}",
  ah_kpi_load_aria: "Biểu đồ cảnh báo mỗi điều hành viên theo thời gian so với mục tiêu ISA-18.2",
  ah_kpi_acceptable: "Chấp nhận được",
  ah_kpi_manageable: "Tối đa xử lý được",
  ah_kpi_flood: "Bão cảnh báo",
  ah_kpi_target: "mục tiêu {v}",
  ah_kpi_ok: "đạt mục tiêu",
  ah_kpi_bad: "vượt mục tiêu",
  ah_kpi_activations: "{n} lần phát sinh, {hidden} lần không hiển thị cho điều hành viên",
  ah_bucket_600: "10 phút",
  ah_bucket_3600: "giờ",
  ah_bucket_86400: "ngày",
  ah_k_alarms_per_operator_per_10min: "Cảnh báo / điều hành viên / 10 phút",
  ah_k_alarms_per_operator_per_hour: "Cảnh báo / điều hành viên / giờ",
  ah_k_peak_alarms_per_10min: "Đỉnh cảnh báo trong 10 phút",
  ah_k_time_in_flood_pct: "Thời gian bão cảnh báo",
  ah_k_chattering_alarms: "Cảnh báo lặp liên tục",
  ah_k_stale_alarms: "Cảnh báo tồn đọng (quá 24 giờ)",
  ah_k_top10_share_pct: "Tỷ trọng 10 cảnh báo nhiều nhất",
  ah_k_priority_split_pct: "Phân bố mức ưu tiên",
  ah_prio_high: "Cao",
  ah_prio_medium: "Trung bình",
  ah_prio_low: "Thấp",
  ah_last_24h: "24 giờ qua",
  ah_last_7d: "7 ngày qua",
  ah_last_30d: "30 ngày qua",
});

const SEVERITIES = ["critical", "major", "minor", "warning"];
const STATES = ["active_unacked", "active_acked", "rtn_unacked", "closed"];
const PAGE = 50;
const PERIODS = { ah_last_24h: 1, ah_last_7d: 7, ah_last_30d: 30 };

let seq = 0;
const uid = (name) => `ah-${name}-${++seq}`;

// A labelled control: the label names it for screen readers and tests alike.
function field(labelKey, control, cls = "") {
  control.id ||= uid(labelKey);
  return h(`div.ah-field${cls}`, h("label", { for: control.id }, t(labelKey)), control);
}

function toLocalInput(date) {
  const d = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

export class AlarmHistory {
  constructor({ canAct, wards, kinds, crews, onAlarm, onChanged }) {
    this.canAct = canAct;
    this.wards = wards; // () => [{code, name}]
    this.kinds = kinds; // () => ["streetlight", ...]
    this.crews = crews; // () => [{id, name}]
    this.onAlarm = onAlarm; // show an alarm on the map
    this.onChanged = onChanged; // an alarm changed here (out of service): the live store follows
    this.tab = "history";
    this.filters = { state: "all" };
    this.rows = [];
    this.next = null;
    this.alarm = null; // the alarm whose timeline is open
    this.events = [];
    this.rules = [];
    this.kpis = null;
    this.kpiDays = 1;
    this.plot = null;
    onLangChange(() => {
      if (this.button) this.button.textContent = t("ah_open");
      if (!this.root?.hidden) this.render();
    });
  }

  mount(head, mapWrap) {
    this.button = h("button.btn.small.ah-open", {
      type: "button", id: "alarm-history-open", "aria-expanded": "false", "aria-controls": "alarm-history",
      onclick: () => (this.root.hidden ? this.open() : this.close()),
    }, t("ah_open"));
    head.append(this.button);
    this.root = h("section.ah-panel", { id: "alarm-history", role: "region", "aria-labelledby": "ah-title",
      hidden: true });
    mapWrap.append(this.root);
    return this;
  }

  show() {
    this.root.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    this.button.classList.add("active");
  }

  async open(tab = this.tab) {
    this.show();
    this.tab = tab;
    this.render();
    if (!this.rules.length) {
      api("/api/v1/rules", { quiet: true }).then((d) => {
        this.rules = listOf(d, "rules").map((r) => r.id).sort();
        // into the open form as it stands: what the operator is choosing stays chosen
        const select = this.root.querySelector(".ah-filters select[name=rule]");
        if (select) {
          const chosen = select.value;
          select.replaceChildren(h("option", { value: "" }, t("ah_any")),
            ...this.rules.map((r) => h("option", { value: r, selected: r === chosen }, r)));
        }
      }).catch(() => {});
    }
    if (tab === "history") await this.search();
    else await this.loadKpis();
  }

  close() {
    this.root.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
    this.button.classList.remove("active");
    this.plot?.destroy();
    this.plot = null;
  }

  // ------------------------------------------------------------ rendering

  render() {
    const tabBtn = (name, key) => h(`button.btn.small${this.tab === name ? ".active" : ""}`, {
      type: "button", role: "tab", "aria-selected": String(this.tab === name), dataset: { ahTab: name },
      onclick: () => this.open(name),
    }, t(key));
    const headEl = h("div.ah-head",
      h("h2", { id: "ah-title" }, t("ah_title")),
      h("div.ah-tabs", { role: "tablist" }, tabBtn("history", "ah_tab_history"), tabBtn("kpis", "ah_tab_kpis")),
      h("button.btn.small", { type: "button", "aria-label": t("ah_close"), onclick: () => this.close() }, "✕"));
    let body;
    if (this.tab === "kpis") body = this.kpiView();
    else if (this.alarm) body = this.timelineView();
    else body = h("div", this.filterForm(), this.listView());
    this.plot?.destroy();
    this.plot = null;
    this.root.replaceChildren(headEl, h("div.ah-body", body));
    if (this.tab === "kpis") this.drawChart();
  }

  filterForm() {
    const f = this.filters;
    const select = (name, options, allKey = "ah_any") => {
      const el = h("select", { name },
        allKey ? h("option", { value: "" }, t(allKey)) : null,
        ...options.map(([value, label]) => h("option", { value, selected: f[name] === value }, label)));
      return el;
    };
    const wards = select("ward", this.wards().map((w) => [w.code, w.name ? `${w.name}` : w.code]));
    const kinds = select("kind", this.kinds().map((k) => [k, kindLabel(k)]));
    const rules = select("rule", this.rules.map((r) => [r, r]));
    const sev = select("severity", SEVERITIES.map((s) => [s, severityLabel(s)]));
    const state = select("state", [["all", t("ah_state_all")], ["open", t("ah_state_open")],
      ...STATES.map((s) => [s, alarmStateLabel(s)])], null);
    const from = h("input", { type: "datetime-local", name: "from", value: f.from ?? "" });
    const to = h("input", { type: "datetime-local", name: "to", value: f.to ?? "" });
    const text = h("input", { type: "search", name: "q", value: f.q ?? "", maxlength: 200,
      placeholder: t("ah_text_hint") });
    const form = h("form.ah-filters", {
      onsubmit: (ev) => {
        ev.preventDefault();
        const data = new FormData(form);
        this.filters = {};
        for (const [k, v] of data.entries()) if (String(v).trim()) this.filters[k] = String(v).trim();
        this.search();
      },
    },
    field("ah_ward", wards), field("ah_kind", kinds), field("ah_rule", rules),
    field("ah_severity", sev), field("ah_state", state),
    field("ah_from", from), field("ah_to", to), field("ah_text", text, ".wide"),
    h("div.ah-buttons",
      h("button.btn.primary", { type: "submit" }, t("ah_search")),
      h("button.btn", { type: "button", onclick: () => {
        this.filters = { state: "all" };
        this.search();
      } }, t("ah_reset"))));
    return form;
  }

  query(before) {
    const p = new URLSearchParams({ limit: String(PAGE) });
    const f = this.filters;
    p.set("state", f.state || "all");
    for (const k of ["ward", "kind", "rule", "severity", "q"]) if (f[k]) p.set(k, f[k]);
    for (const k of ["from", "to"]) {
      if (f[k]) {
        const d = new Date(f[k]);
        if (!Number.isNaN(d.getTime())) p.set(k, d.toISOString());
      }
    }
    if (before) p.set("before", String(before));
    return `/api/v1/alarms?${p}`;
  }

  async search(more = false) {
    this.alarm = null;
    const before = more ? this.rows.at(-1)?.id : null;
    try {
      const data = await api(this.query(before));
      const page = listOf(data, "alarms");
      this.rows = more ? [...this.rows, ...page] : page;
      this.next = Boolean(data?.links?.some((l) => l.rel === "next"));
      this.error = null;
    } catch (err) {
      this.error = err.problem?.errors?.map((e) => `${e.field}: ${e.reason}`).join("; ") || err.message;
      if (!more) this.rows = [];
      this.next = false;
    }
    if (this.root.hidden || this.tab !== "history") return;
    // Only the results: the filters keep whatever is being typed meanwhile.
    const results = this.root.querySelector(".ah-results");
    if (results && !this.alarm) results.replaceWith(this.listView());
    else this.render();
  }

  listView() {
    const box = h("div.ah-results", { "aria-live": "polite" });
    if (this.error) box.append(h("div.ah-error", { role: "alert" }, this.error));
    if (!this.rows.length) {
      if (!this.error) box.append(h("div.empty", t("ah_none")));
      return box;
    }
    const rows = this.rows.map((a) => h("tr.ah-row", {
      dataset: { alarmId: String(a.id), state: a.state, severity: a.severity },
      tabindex: "0",
      // a focusable row needs its own name: what a screen reader says before Enter opens it
      "aria-label": t("ah_row_label", { sev: severityLabel(a.severity), device: a.device,
        msg: alarmMessage(a), state: alarmStateLabel(a.state) }),
      onclick: () => this.openAlarm(a.id),
      onkeydown: (ev) => {
        if (ev.key === "Enter") this.openAlarm(a.id);
      },
    },
    h("td.ah-time", fmtTime(a.raised_at, true)),
    h("td", h(`span.sev-badge.ah-sev.${a.severity}`, severityLabel(a.severity))),
    h("td.ah-dev", a.device),
    h("td.ah-msg", { title: a.message ?? "" }, alarmMessage(a), this.flags(a)),
    h("td", alarmStateLabel(a.state)),
    h("td.ah-time", a.closed_at ? fmtTime(a.closed_at, true) : "")));
    box.append(
      h("div.ah-count", t("ah_count", { n: this.rows.length })),
      h("table.ah-table",
        h("thead", h("tr", ...["ah_col_raised", "ah_severity", "ah_col_device", "ah_col_message", "ah_state",
          "ah_col_closed"].map((k) => h("th", { scope: "col" }, t(k))))),
        h("tbody", ...rows)));
    if (this.next) {
      box.append(h("button.btn.ah-more", { type: "button", onclick: () => this.search(true) }, t("ah_more")));
    }
    return box;
  }

  flags(a) {
    const out = [];
    if (a.out_of_service) out.push(h("span.chip.ah-flag", t("ah_oos_badge")));
    if (a.shelved_until && new Date(a.shelved_until) > new Date()) out.push(h("span.chip.ah-flag", t("ah_shelved_badge")));
    return out;
  }

  // ------------------------------------------------------------ one alarm's timeline

  async openAlarm(id) {
    try {
      const [alarm, ev] = await Promise.all([
        api(`/api/v1/alarms/${encodeURIComponent(id)}`),
        api(`/api/v1/alarms/${encodeURIComponent(id)}/events`),
      ]);
      this.alarm = alarm;
      this.events = listOf(ev, "events");
    } catch (err) {
      toast(err.message, "error");
      return;
    }
    this.show();
    this.tab = "history";
    this.render();
    this.root.querySelector(".ah-timeline-head h3")?.focus();
  }

  timelineView() {
    const a = this.alarm;
    const facts = h("dl.ah-facts",
      h("dt", t("ah_col_device")), h("dd", h("button.link-btn", { type: "button",
        onclick: () => this.onAlarm?.(a) }, a.device)),
      h("dt", t("ah_rule")), h("dd", a.rule),
      h("dt", t("ah_severity")), h("dd", severityLabel(a.severity)),
      h("dt", t("ah_state")), h("dd", alarmStateLabel(a.state), this.flags(a)),
      h("dt", t("ah_col_raised")), h("dd", fmtTime(a.raised_at, true)),
      a.closed_at ? [h("dt", t("ah_col_closed")), h("dd", fmtTime(a.closed_at, true))] : null);
    const items = this.events.map((e) => this.eventItem(e));
    return h("div.ah-detail",
      h("button.btn.small", { type: "button", onclick: () => {
        this.alarm = null;
        this.render();
      } }, `← ${t("ah_back")}`),
      h("div.ah-timeline-head", h("h3", { tabindex: "-1", title: a.message ?? "" }, `#${a.id} · ${alarmMessage(a)}`)),
      facts,
      this.oosForm(a),
      h("h3", t("ah_timeline")),
      items.length ? h("ol.ah-timeline", ...items) : h("div.empty", t("ah_no_events")));
  }

  // The notifier words its reasons in English for the log; the console words them from the
  // event's details in the operator's language (server/notify/outbox.py, escalation.py).
  serverReason(e, d) {
    if (e.actor !== "notifier") return null;
    if (e.event === "escalated" && d.ack_minutes != null) {
      return t("ah_why_escalated", { minutes: Math.round(d.ack_minutes * 10) / 10 });
    }
    if (e.event === "assigned" && d.by === "nearest" && d.distance_m != null) {
      return t("ah_why_nearest", { metres: Math.round(d.distance_m) });
    }
    const ward = /^routed to \S+: ward (\S+)$/.exec(e.reason ?? "")?.[1];
    if (e.event === "assigned" && d.by === "ward" && ward) return t("ah_why_ward", { ward });
    return null;
  }

  eventItem(e) {
    const d = e.details && typeof e.details === "object" ? e.details : {};
    const who = e.actor ?? "";
    const lines = [];
    let title;
    switch (e.event) {
      case "raised":
        title = d.again ? t("ah_ev_raised_again") : d.from && d.to ? t("ah_ev_severity",
          { from: severityLabel(d.from), to: severityLabel(d.to) }) : t("ah_ev_raised");
        break;
      case "severity":
        title = t("ah_ev_severity", { from: severityLabel(d.from), to: severityLabel(d.to) });
        break;
      case "acknowledged":
        title = t("ah_ev_acknowledged", { who });
        break;
      case "comment":
        title = t("ah_ev_comment", { who });
        break;
      case "shelved":
        title = t("ah_ev_shelved", { minutes: d.minutes ?? "?", who });
        break;
      case "unshelved":
        title = t("ah_ev_unshelved");
        break;
      case "out_of_service":
        title = t(d.enabled === false ? "ah_ev_oos_off" : "ah_ev_oos_on", { who });
        break;
      case "assigned":
        title = t("ah_ev_assigned", { crew: this.crewName(d.crew) });
        break;
      case "work":
        title = d.to === "in_progress" ? t("ah_ev_work_started") : d.to === "done" ? t("ah_ev_work_done")
          : t("ah_ev_work", { state: d.to ?? "" });
        break;
      case "escalated":
        title = t("ah_ev_escalated", { level: d.level ?? "?" });
        break;
      case "cleared":
      case "closed":
      case "reopened":
      case "suppressed":
      case "unsuppressed":
      case "chattering":
        title = t(`ah_ev_${e.event}`);
        break;
      default: // an event this console does not know yet: its name, as it comes
        title = String(e.event ?? "").replaceAll("_", " ");
    }
    const known = ["raised", "severity", "acknowledged", "comment", "shelved"];
    if (who && !known.includes(e.event) && e.event !== "out_of_service" && who !== "rules") {
      lines.push(h("span.ah-who", t("ah_by", { who })));
    }
    const note = d.note ?? null;
    const why = this.serverReason(e, d);
    if (why) {
      lines.push(h("div.ah-reason", why));
    } else if (e.reason && e.reason !== note) {
      lines.push(h("div.ah-reason", e.event === "comment" ? e.reason : t("ah_reason", { text: e.reason })));
    }
    if (note) lines.push(h("div.ah-note", t("ah_note", { text: note })));
    if (d.photo) {
      const name = String(d.photo).endsWith(".jpg") ? d.photo : `${d.photo}.jpg`;
      const href = `/api/v1/alarms/${encodeURIComponent(this.alarm.id)}/photos/${encodeURIComponent(name)}`;
      lines.push(h("a.ah-photo", { href, target: "_blank", rel: "noopener" }, `${t("ah_photo")} ↗`));
    }
    if (!known.includes(e.event) && !["out_of_service", "assigned", "work", "cleared", "closed", "reopened",
      "suppressed", "unsuppressed", "chattering", "unshelved", "escalated"].includes(e.event)) {
      const rest = Object.entries(d).filter(([k, v]) => !["note", "photo"].includes(k) && v !== null
        && typeof v !== "object");
      if (rest.length) lines.push(h("div.ah-details", rest.map(([k, v]) => `${k}: ${v}`).join(" · ")));
    }
    return h(`li.ah-event.ev-${String(e.event).replace(/[^a-z_]/gi, "")}`, { dataset: { event: e.event } },
      h("time", { datetime: e.at }, fmtTime(e.at, true)),
      h("div.ah-ev-body", h("strong", title), ...lines));
  }

  crewName(id) {
    return this.crews?.().find((c) => c.id === id)?.name ?? id ?? "";
  }

  oosForm(a) {
    if (a.state === "closed" && !a.out_of_service) return null;
    const enabled = !a.out_of_service;
    const reason = h("input", { type: "text", name: "reason", maxlength: 500, required: true,
      disabled: !this.canAct() });
    const form = h("form.ah-oos", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const text = reason.value.trim();
        if (!text) {
          reason.setAttribute("aria-invalid", "true");
          toast(t("ah_oos_need_reason"), "error");
          return;
        }
        try {
          const updated = await api(`/api/v1/alarms/${encodeURIComponent(a.id)}/out_of_service`,
            { method: "POST", body: { enabled, reason: text } });
          toast(t(enabled ? "ah_oos_done_on" : "ah_oos_done_off", { id: a.id }), "ok");
          if (updated?.id !== undefined) this.onChanged?.(updated);
          await this.openAlarm(a.id);
        } catch (err) {
          toast(err.message, "error");
        }
      },
    },
    field("ah_oos_reason", reason),
    h("button.btn", { type: "submit", disabled: !this.canAct(), dataset: { action: "out_of_service" } },
      t(enabled ? "ah_oos_on" : "ah_oos_off")));
    return form;
  }

  // ------------------------------------------------------------ KPIs

  async loadKpis() {
    const to = new Date();
    const from = new Date(to.getTime() - this.kpiDays * 86400000);
    const p = new URLSearchParams({ from: from.toISOString(), to: to.toISOString() });
    if (this.consoles) p.set("consoles", String(this.consoles));
    try {
      this.kpis = await api(`/api/v1/alarms/kpis?${p}`);
      this.kpiError = null;
    } catch (err) {
      this.kpis = null;
      this.kpiError = err.message;
    }
    if (!this.root.hidden && this.tab === "kpis") this.render();
  }

  kpiView() {
    const period = h("select", { name: "period", onchange: (ev) => {
      this.kpiDays = Number(ev.target.value);
      this.loadKpis();
    } }, ...Object.entries(PERIODS).map(([k, days]) => h("option", { value: days, selected: days === this.kpiDays }, t(k))));
    const consoles = h("input", { type: "number", name: "consoles", min: 1, max: 1000, step: 1,
      value: this.consoles ?? this.kpis?.operator_consoles ?? 1,
      onchange: (ev) => {
        const n = Number(ev.target.value);
        if (Number.isInteger(n) && n >= 1 && n <= 1000) {
          this.consoles = n;
          this.loadKpis();
        }
      } });
    const controls = h("div.ah-kpi-controls", field("ah_period", period), field("ah_consoles", consoles));
    if (!this.kpis) {
      return h("div", controls, this.kpiError ? h("div.ah-error", { role: "alert" }, this.kpiError)
        : h("div.empty", t("loading")));
    }
    const k = this.kpis;
    const bucket = t(`ah_bucket_${k.series?.bucket_s ?? 600}`);
    const cards = Object.entries(k.kpis ?? {}).map(([name, v]) => this.kpiCard(name, v));
    return h("div.ah-kpis", controls,
      h("p.ah-kpi-sub", t("ah_kpi_activations", { n: k.activations ?? 0, hidden: k.not_annunciated ?? 0 })),
      h("figure.ah-chart-box",
        h("figcaption", t("ah_kpi_load", { bucket })),
        h("div.ah-chart", { role: "img", "aria-label": t("ah_kpi_load_aria") })),
      h("div.ah-kpi-grid", ...cards));
  }

  kpiCard(name, v) {
    const label = t(`ah_k_${name}`);
    const status = v.ok ? "ok" : "bad";
    const card = h(`div.ah-kpi-card.${status}`, { dataset: { kpi: name } }, h("div.ah-kpi-name", label));
    if (name === "priority_split_pct" && v.value && typeof v.value === "object") {
      for (const p of ["high", "medium", "low"]) {
        const val = v.value[p] ?? 0;
        const target = v.target?.[p] ?? 0;
        card.append(h("div.ah-split-row",
          h("span.ah-split-name", t(`ah_prio_${p}`)),
          this.bar(val, target, 100),
          h("span.ah-split-val", `${val}% · ${t("ah_kpi_target", { v: `${target}%` })}`)));
      }
    } else {
      const unit = v.unit ?? "";
      const top = Math.max(Number(v.value) || 0, (v.max_manageable ?? v.target ?? 0) * 1.25, 1);
      card.append(
        h("div.ah-kpi-value", `${v.value}${unit}`),
        this.bar(Number(v.value) || 0, v.target, top, v.max_manageable),
        h("div.ah-kpi-target", t("ah_kpi_target", { v: `${v.target}${unit}` }),
          v.max_manageable !== undefined ? ` · ${t("ah_kpi_manageable")} ${v.max_manageable}${unit}` : ""));
    }
    card.append(h("div.ah-kpi-status", v.ok ? `✓ ${t("ah_kpi_ok")}` : `✗ ${t("ah_kpi_bad")}`));
    return card;
  }

  // A bar of the value with the target (and the most manageable level) marked on it.
  bar(value, target, top, manageable) {
    const pct = (x) => `${Math.max(0, Math.min(100, (100 * x) / top))}%`;
    const over = value > target;
    const el = h("div.ah-bar", { "aria-hidden": "true" });
    const fill = h(`span.ah-bar-fill${over ? ".over" : ""}`);
    fill.style.width = pct(value);
    const mark = h("span.ah-bar-target");
    mark.style.left = pct(target);
    el.append(fill, mark);
    if (manageable !== undefined) {
      const m2 = h("span.ah-bar-target.max");
      m2.style.left = pct(manageable);
      el.append(m2);
    }
    return el;
  }

  drawChart() {
    const box = this.root.querySelector(".ah-chart");
    const s = this.kpis?.series;
    if (!box || !s?.t?.length) return;
    const n = s.t.length;
    const flat = (v) => new Array(n).fill(v);
    const series = [{ label: t("ah_time") }, {
      label: t("ah_kpi_load", { bucket: t(`ah_bucket_${s.bucket_s}`) }), stroke: "#22c3ee",
      fill: "rgba(34,195,238,.18)", width: 1.5, paths: uPlot.paths.stepped({ align: 1 }),
    }, { label: t("ah_kpi_acceptable"), stroke: "#40c057", width: 1, dash: [6, 4], points: { show: false } },
    { label: t("ah_kpi_manageable"), stroke: "#ff922b", width: 1, dash: [6, 4], points: { show: false } }];
    const data = [s.t, s.per_operator, flat(s.target), flat(s.max_manageable)];
    if (s.flood_above) {
      series.push({ label: t("ah_kpi_flood"), stroke: "#ff4d4f", width: 1, dash: [2, 3], points: { show: false } });
      data.push(flat(s.flood_above));
    }
    const width = Math.max(320, box.clientWidth || 640);
    this.plot = new uPlot({
      width, height: 220, legend: { show: true },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max, s.max_manageable * 1.2)] } },
      series,
      axes: [
        { stroke: "#9aa7b8", grid: { stroke: "#22324a" }, ticks: { stroke: "#22324a" }, size: 44,
          values: timeTicks },
        { stroke: "#9aa7b8", grid: { stroke: "#22324a" }, ticks: { stroke: "#22324a" }, size: 40 },
      ],
      fmtDate: (tpl) => uPlot.fmtDate(tpl, lang() === "vi" ? VI_NAMES : undefined),
    }, data, box);
  }
}

const VI_NAMES = {
  MMMM: ["Tháng 1", "Tháng 2", "Tháng 3", "Tháng 4", "Tháng 5", "Tháng 6", "Tháng 7", "Tháng 8", "Tháng 9",
    "Tháng 10", "Tháng 11", "Tháng 12"],
  MMM: ["Th1", "Th2", "Th3", "Th4", "Th5", "Th6", "Th7", "Th8", "Th9", "Th10", "Th11", "Th12"],
  WWWW: ["Chủ nhật", "Thứ hai", "Thứ ba", "Thứ tư", "Thứ năm", "Thứ sáu", "Thứ bảy"],
  WWW: ["CN", "T2", "T3", "T4", "T5", "T6", "T7"],
};
