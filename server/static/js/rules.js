// Alarm rules on screen: the list (enable/disable), a form for each rule kind generated from
// the rule documents' JSON Schema (the OpenAPI document's components, which come from the
// pydantic models that parse rules), a backtest over the last days before saving (a timeline
// and markers on the map), and each rule's history of changes (who, when, what).
// The server checks every rule; its errors (problem+json errors[].field) go next to the field.

import uPlot from "uplot";
import { api, fmtNumber, fmtTime, h, timeTicks, toast } from "./common.js";
import { addStrings, kindLabel, metricLabel, onLangChange, severityLabel, t } from "./i18n.js";
import { KIND_COLOURS } from "./livemap.js";

// Labels and help for every field of every kind, in both languages; a field the server adds
// later falls back to its schema's description and title.
const FIELDS_EN = {
  kind: ["Rule kind", "What the rule looks for."],
  id: ["Rule id", "A short unique name: letters, digits and . _ : - (it cannot be renamed later)."],
  description: ["Description", "What the rule is for, for the people who read the alarms."],
  select: ["Devices watched", "Which devices the rule watches; every condition given must hold. Leave all empty to watch every device."],
  "select.kind": ["Device kind", "Only devices of this kind (several: separate with commas)."],
  "select.devices": ["Device ids", "Only these devices, by id, separated by commas."],
  "select.ward": ["Ward codes", "Only devices in these wards (codes, separated by commas)."],
  "select.parent": ["Parent (cabinet)", "Only devices connected to these parents (e.g. a lighting cabinet)."],
  "select.bbox": ["Area (bbox)", "Only devices inside minLon, minLat, maxLon, maxLat (WGS 84)."],
  metric: ["Metric", "The reading the rule looks at."],
  above: ["Above", "Alarm when the value rises above this limit."],
  below: ["Below", "Alarm when the value falls below this limit."],
  high_high: ["High-high", "A second, worse upper limit (needs Above lower than it): raises with its own severity."],
  low_low: ["Low-low", "A second, worse lower limit (needs Below higher than it)."],
  high_high_severity: ["High-high/low-low severity", "Severity of the high-high and low-low alarms."],
  deadband: ["Deadband", "How far back past the limit the value must go before the alarm clears; stops chattering."],
  on_delay: ["On delay", "The condition must last this long before the alarm is raised: 30s, 5m, 2h."],
  off_delay: ["Off delay", "The condition must be gone this long before the alarm clears: 30s, 5m, 2h."],
  severity: ["Severity", "How bad it is: critical, major, minor or warning."],
  priority: ["Priority", "How soon to act; empty: high for critical, medium for major, else low."],
  enabled: ["Enabled", "Only enabled rules raise alarms."],
  message: ["Message", "Text shown with the alarm; {device}, {value}, {rule} and {text} are filled in."],
  window: ["Window", "The time over which the change per minute is measured: 5m, 1h."],
  min_span: ["Minimum coverage", "Fraction of the window the readings must cover (0–1) before a rate counts."],
  missed_intervals: ["Missed intervals", "Alarm after this many of the device's expected reporting intervals without data."],
  interval: ["Interval", "Overrides the device's expected reporting interval: 15m, 1h."],
  bad_quality: ["Bad readings", "A reading of bad quality (NaN, out of range, Modbus exception) counts as a fault."],
  offline: ["Offline", "The device's link reporting it offline counts as a fault."],
  in: ["Alarm values", "Alarm while the metric is one of these values, separated by commas (e.g. 1, 3, 4)."],
  check: ["Check", "Lamps on in daylight (day burner), off at night (outage), or both."],
  margin: ["Margin", "Time kept clear around sunrise and sunset (or the schedule's switching): 20m."],
  schedules: ["Follow schedules", "Check lamps that follow a lighting schedule against it, not only the sun."],
  member: ["Member rule", "The rule whose alarms are correlated (a rule that watches devices)."],
  min_count: ["Minimum count", "How many member alarms make one incident."],
  within: ["Within", "The member alarms must be raised within this time of each other: 5m."],
  clear_below: ["Clear below", "The incident clears when fewer than this many members are in alarm."],
  suppress_children: ["Suppress members", "Hide the members' own alarms while the incident is open."],
  radius_m: ["Radius (m)", "Member alarms within this many metres of each other make one incident."],
};
const FIELDS_VI = {
  kind: ["Loại quy tắc", "Quy tắc tìm điều gì."],
  id: ["Mã quy tắc", "Tên ngắn, duy nhất: chữ, số và . _ : - (không đổi tên được về sau)."],
  description: ["Mô tả", "Quy tắc dùng để làm gì, cho người đọc cảnh báo."],
  select: ["Thiết bị theo dõi", "Quy tắc theo dõi thiết bị nào; mọi điều kiện đã nhập đều phải đúng. Để trống tất cả: mọi thiết bị."],
  "select.kind": ["Loại thiết bị", "Chỉ thiết bị loại này (nhiều loại: cách nhau bằng dấu phẩy)."],
  "select.devices": ["Mã thiết bị", "Chỉ các thiết bị này, theo mã, cách nhau bằng dấu phẩy."],
  "select.ward": ["Mã phường", "Chỉ thiết bị trong các phường này (mã, cách nhau bằng dấu phẩy)."],
  "select.parent": ["Thiết bị cha (tủ điện)", "Chỉ thiết bị đấu nối vào các thiết bị cha này (ví dụ tủ điện chiếu sáng)."],
  "select.bbox": ["Vùng (bbox)", "Chỉ thiết bị trong minLon, minLat, maxLon, maxLat (WGS 84)."],
  metric: ["Chỉ số", "Số đo mà quy tắc theo dõi."],
  above: ["Trên ngưỡng", "Cảnh báo khi giá trị vượt lên trên ngưỡng này."],
  below: ["Dưới ngưỡng", "Cảnh báo khi giá trị xuống dưới ngưỡng này."],
  high_high: ["Ngưỡng rất cao", "Ngưỡng trên thứ hai, nặng hơn (cần “Trên ngưỡng” thấp hơn): cảnh báo với mức riêng."],
  low_low: ["Ngưỡng rất thấp", "Ngưỡng dưới thứ hai, nặng hơn (cần “Dưới ngưỡng” cao hơn)."],
  high_high_severity: ["Mức độ rất cao/rất thấp", "Mức độ của cảnh báo rất cao và rất thấp."],
  deadband: ["Vùng chết", "Giá trị phải quay lại quá ngưỡng bao nhiêu thì cảnh báo mới hết; chống bật tắt liên tục."],
  on_delay: ["Trễ bật", "Điều kiện phải kéo dài chừng này mới phát cảnh báo: 30s, 5m, 2h."],
  off_delay: ["Trễ tắt", "Điều kiện phải hết chừng này thì cảnh báo mới hết: 30s, 5m, 2h."],
  severity: ["Mức độ", "Mức nghiêm trọng: nghiêm trọng, lớn, nhỏ hoặc lưu ý."],
  priority: ["Ưu tiên", "Cần xử lý gấp đến đâu; để trống: cao cho nghiêm trọng, trung bình cho lớn, còn lại thấp."],
  enabled: ["Đang bật", "Chỉ quy tắc đang bật mới phát cảnh báo."],
  message: ["Nội dung", "Nội dung kèm cảnh báo; {device}, {value}, {rule} và {text} được điền tự động."],
  window: ["Cửa sổ", "Khoảng thời gian để đo mức thay đổi mỗi phút: 5m, 1h."],
  min_span: ["Độ phủ tối thiểu", "Tỷ lệ cửa sổ mà số đo phải phủ (0–1) thì tốc độ mới được tính."],
  missed_intervals: ["Số chu kỳ bị lỡ", "Cảnh báo sau chừng này chu kỳ gửi số liệu dự kiến mà không có dữ liệu."],
  interval: ["Chu kỳ", "Thay chu kỳ gửi số liệu dự kiến của thiết bị: 15m, 1h."],
  bad_quality: ["Số đo lỗi", "Số đo chất lượng kém (NaN, ngoài dải, lỗi Modbus) được tính là sự cố."],
  offline: ["Mất kết nối", "Thiết bị báo mất kết nối được tính là sự cố."],
  in: ["Giá trị cảnh báo", "Cảnh báo khi chỉ số bằng một trong các giá trị này, cách nhau bằng dấu phẩy (ví dụ 1, 3, 4)."],
  check: ["Kiểm tra", "Đèn sáng ban ngày, tắt ban đêm, hoặc cả hai."],
  margin: ["Khoảng đệm", "Thời gian bỏ qua quanh lúc mặt trời mọc, lặn (hoặc giờ chuyển của lịch): 20m."],
  schedules: ["Theo lịch chiếu sáng", "Đèn có lịch chiếu sáng được kiểm tra theo lịch, không chỉ theo mặt trời."],
  member: ["Quy tắc thành phần", "Quy tắc có cảnh báo được gom lại (một quy tắc theo dõi thiết bị)."],
  min_count: ["Số lượng tối thiểu", "Bao nhiêu cảnh báo thành phần thì thành một sự cố."],
  within: ["Trong vòng", "Các cảnh báo thành phần phải phát trong khoảng thời gian này: 5m."],
  clear_below: ["Hết khi dưới", "Sự cố hết khi số thành phần đang cảnh báo ít hơn số này."],
  suppress_children: ["Ẩn cảnh báo thành phần", "Ẩn cảnh báo riêng của các thành phần khi sự cố đang mở."],
  radius_m: ["Bán kính (m)", "Các cảnh báo thành phần cách nhau trong chừng này mét thành một sự cố."],
};
const KINDS_EN = {
  threshold: ["Threshold", "High/low limits with a deadband and on/off delays."],
  rate_of_change: ["Rate of change", "Change per minute over a window: a drop or a rise too fast."],
  stale: ["No data", "A device that stops reporting for a number of its reporting intervals."],
  fault: ["Fault", "A fault the device reports: a fault flag, a bad reading, or offline."],
  state: ["State", "A metric in one of some values (e.g. a traffic controller flashing)."],
  lighting_schedule: ["Lighting schedule", "Lamps on in daylight or off at night, from the sun or their schedule."],
  topology: ["Topology", "Several devices of one parent in alarm: one incident on the parent."],
  neighbourhood: ["Neighbourhood", "Several alarms close together: one incident at the estimated point."],
};
const KINDS_VI = {
  threshold: ["Ngưỡng", "Ngưỡng cao/thấp với vùng chết và trễ bật/tắt."],
  rate_of_change: ["Tốc độ thay đổi", "Mức thay đổi mỗi phút trong một cửa sổ: giảm hoặc tăng quá nhanh."],
  stale: ["Mất dữ liệu", "Thiết bị ngừng gửi số liệu trong một số chu kỳ."],
  fault: ["Sự cố", "Sự cố thiết bị tự báo: cờ lỗi, số đo lỗi hoặc mất kết nối."],
  state: ["Trạng thái", "Chỉ số ở một trong các giá trị (ví dụ đèn tín hiệu nhấp nháy)."],
  lighting_schedule: ["Lịch chiếu sáng", "Đèn sáng ban ngày hoặc tắt ban đêm, theo mặt trời hoặc lịch."],
  topology: ["Cấu trúc lưới", "Nhiều thiết bị của một thiết bị cha cùng cảnh báo: một sự cố ở thiết bị cha."],
  neighbourhood: ["Lân cận", "Nhiều cảnh báo gần nhau: một sự cố tại vị trí ước tính."],
};
const flat = (table, prefix, i) => Object.fromEntries(
  Object.entries(table).map(([k, v]) => [`${prefix}${k}`, v[i]]));

addStrings({
  rules_open: "Rules",
  rules_title: "Alarm rules",
  rules_close: "Close the rules",
  rules_new: "New rule",
  rules_none: "No rules yet.",
  rules_errors: "Rule files with errors:",
  rules_enabled_of: "Enabled: {id}",
  rules_edit_of: "Edit {id}",
  rules_edit: "Edit",
  rules_view: "View",
  rules_view_of: "View {id}",
  rules_delete: "Delete",
  rules_history_of: "History of {id}",
  rules_delete_of: "Delete {id}",
  rules_delete_confirm: "Delete the rule {id}? Its open alarms are closed.",
  rules_deleted: "Rule {id} deleted",
  rules_from_file: "from {file}",
  rules_from_api: "from the console/API",
  rules_file_readonly: "Rules from files are changed in their file.",
  rules_not_evaluated: "not running",
  rules_turned_on: "Rule {id} enabled",
  rules_turned_off: "Rule {id} disabled",
  rules_new_title: "New rule",
  rules_edit_title: "Edit rule {id}",
  rules_view_title: "Rule {id}",
  rules_kind: "Rule kind",
  rules_kind_help: "What the rule looks for; the fields below follow it.",
  rules_optional: "optional",
  rules_required: "required",
  rules_default: "default: {v}",
  rules_none_option: "(none)",
  rules_default_option: "(default)",
  rules_save: "Save rule",
  rules_cancel: "Cancel",
  rules_back: "Back to the list",
  rules_saved: "Rule {id} saved",
  rules_fix: "The server refused the rule:",
  rules_backtest: "Backtest",
  rules_backtest_title: "Backtest: what it would have raised",
  rules_days: "Days",
  rules_days_n: "Last {n} days",
  rules_day_1: "Last day",
  rules_bt_running: "Running the rule over the stored readings…",
  rules_bt_result: "Would have raised {n} alarms on {d} devices over {days} ({r} readings).",
  rules_bt_none: "Would have raised no alarm over {days} ({r} readings).",
  rules_bt_active: "Alarms active",
  rules_bt_time: "Time",
  rules_bt_raised: "Raised",
  rules_bt_top: "Most alarms",
  rules_bt_on_map: "{n} devices marked on the map",
  rules_bt_truncated: "(only the first 1,000 listed)",
  rules_bt_stale: "The form changed since: run the backtest again.",
  rules_history_title: "History of {id}",
  rules_history_none: "No change recorded.",
  rules_by: "by {who}",
  rules_act_create: "created",
  rules_act_update: "changed",
  rules_act_delete: "deleted",
  rules_act_enable: "enabled",
  rules_act_disable: "disabled",
  rules_field: "Field",
  rules_before: "Before",
  rules_after: "After",
  rules_yes: "yes",
  rules_no: "no",
  ...flat(FIELDS_EN, "rules_f_", 0),
  ...flat(FIELDS_EN, "rules_help_", 1),
  ...flat(KINDS_EN, "rules_k_", 0),
  ...flat(KINDS_EN, "rules_kd_", 1),
}, {
  rules_open: "Quy tắc",
  rules_title: "Quy tắc cảnh báo",
  rules_close: "Đóng quy tắc",
  rules_new: "Tạo quy tắc",
  rules_none: "Chưa có quy tắc nào.",
  rules_errors: "Tệp quy tắc có lỗi:",
  rules_enabled_of: "Bật: {id}",
  rules_edit_of: "Sửa {id}",
  rules_edit: "Sửa",
  rules_view: "Xem",
  rules_view_of: "Xem {id}",
  rules_delete: "Xóa",
  rules_history_of: "Lịch sử {id}",
  rules_delete_of: "Xóa {id}",
  rules_delete_confirm: "Xóa quy tắc {id}? Các cảnh báo đang mở của nó sẽ được đóng.",
  rules_deleted: "Đã xóa quy tắc {id}",
  rules_from_file: "từ tệp {file}",
  rules_from_api: "từ bảng điều khiển/API",
  rules_file_readonly: "Quy tắc từ tệp được sửa trong tệp của nó.",
  rules_not_evaluated: "không chạy",
  rules_turned_on: "Đã bật quy tắc {id}",
  rules_turned_off: "Đã tắt quy tắc {id}",
  rules_new_title: "Quy tắc mới",
  rules_edit_title: "Sửa quy tắc {id}",
  rules_view_title: "Quy tắc {id}",
  rules_kind: "Loại quy tắc",
  rules_kind_help: "Quy tắc tìm điều gì; các trường bên dưới thay đổi theo loại.",
  rules_optional: "không bắt buộc",
  rules_required: "bắt buộc",
  rules_default: "mặc định: {v}",
  rules_none_option: "(không)",
  rules_default_option: "(mặc định)",
  rules_save: "Lưu quy tắc",
  rules_cancel: "Hủy",
  rules_back: "Về danh sách",
  rules_saved: "Đã lưu quy tắc {id}",
  rules_fix: "Máy chủ không nhận quy tắc:",
  rules_backtest: "Chạy thử",
  rules_backtest_title: "Chạy thử: quy tắc sẽ phát những cảnh báo nào",
  rules_days: "Số ngày",
  rules_days_n: "{n} ngày qua",
  rules_day_1: "1 ngày qua",
  rules_bt_running: "Đang chạy quy tắc trên số liệu đã lưu…",
  rules_bt_result: "Sẽ phát {n} cảnh báo trên {d} thiết bị trong {days} ({r} số đo).",
  rules_bt_none: "Không phát cảnh báo nào trong {days} ({r} số đo).",
  rules_bt_active: "Cảnh báo đang mở",
  rules_bt_time: "Thời gian",
  rules_bt_raised: "Phát mới",
  rules_bt_top: "Nhiều cảnh báo nhất",
  rules_bt_on_map: "{n} thiết bị được đánh dấu trên bản đồ",
  rules_bt_truncated: "(chỉ liệt kê 1.000 đầu tiên)",
  rules_bt_stale: "Biểu mẫu đã thay đổi: hãy chạy thử lại.",
  rules_history_title: "Lịch sử {id}",
  rules_history_none: "Chưa có thay đổi nào.",
  rules_by: "bởi {who}",
  rules_act_create: "tạo mới",
  rules_act_update: "sửa",
  rules_act_delete: "xóa",
  rules_act_enable: "bật",
  rules_act_disable: "tắt",
  rules_field: "Trường",
  rules_before: "Trước",
  rules_after: "Sau",
  rules_yes: "có",
  rules_no: "không",
  ...flat(FIELDS_VI, "rules_f_", 0),
  ...flat(FIELDS_VI, "rules_help_", 1),
  ...flat(KINDS_VI, "rules_k_", 0),
  ...flat(KINDS_VI, "rules_kd_", 1),
});

const KINDS = Object.keys(KINDS_EN);
// The form's order: what the rule is, what it watches, when it fires, how bad, then the rest.
const ORDER = ["id", "description", "select", "member", "metric", "above", "below", "high_high", "low_low",
  "in", "window", "missed_intervals", "interval", "check", "margin", "schedules", "bad_quality", "offline",
  "min_count", "radius_m", "within", "clear_below", "deadband", "min_span", "on_delay", "off_delay",
  "severity", "high_high_severity", "priority", "suppress_children", "message", "enabled"];
const SELECT_KEYS = ["kind", "devices", "ward", "parent", "bbox"];
const MAX_DURATION = 31622400; // rules/models.py's MAX_DURATION_S: a number with it is a duration
const DAYS = [1, 3, 7, 14, 30];
const DURATIONS = new Set(["on_delay", "off_delay", "window", "interval", "margin", "within"]);
const SOURCE = "rules-backtest";
const has = (key) => t(key) !== key;

const label = (name, schema) => (has(`rules_f_${name}`) ? t(`rules_f_${name}`) : schema?.title ?? name);
const help = (name, schema) => (has(`rules_help_${name}`) ? t(`rules_help_${name}`) : schema?.description ?? "");
const inputId = (name) => `rules-f-${name.replaceAll(".", "-")}`;

// "300" seconds → "5m": durations read as they are written in rule files.
export function fmtDuration(s) {
  if (s === null || s === undefined || s === "") return "";
  const n = Number(s);
  if (!Number.isFinite(n)) return String(s);
  if (n === 0) return "0s";
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (n % size === 0) return `${n / size}${unit}`;
  }
  return `${n}s`;
}

const list = (v) => v.split(",").map((x) => x.trim()).filter(Boolean);
const asNumber = (v) => (v.trim() !== "" && Number.isFinite(Number(v)) ? Number(v) : v.trim());

export class RulesPanel {
  constructor({ canEdit, canTest, map }) {
    this.canEdit = canEdit; // integrators and admins write rules
    this.canTest = canTest; // operators too may backtest and read the history
    this.map = map;
    this.root = null;
    this.button = null;
    this.rules = [];
    this.fileErrors = [];
    this.schemas = null;
    this.view = { name: "list" };
    this.plot = null;
    onLangChange(() => {
      if (this.button) this.button.textContent = t("rules_open");
      if (this.root && !this.root.hidden) this.rerender();
    });
  }

  mount(bar, mapWrap) {
    this.button = h("button.btn.small", {
      id: "rules-open", type: "button", "aria-expanded": "false", "aria-controls": "rules-panel",
      onclick: () => (this.root.hidden ? this.open() : this.close()),
    }, t("rules_open"));
    bar.prepend(this.button);
    this.root = h("section.rules-panel", { id: "rules-panel", role: "region", "aria-labelledby": "rules-title", hidden: true });
    mapWrap.append(this.root);
    // one panel over the map's left side at a time: the schedules' button closes this one
    document.getElementById("sched-open")?.addEventListener("click", () => !this.root.hidden && this.close());
    this.map.on("style.load", () => this.lastBacktest && this.showOnMap(this.lastBacktest));
    return this;
  }

  async open() {
    window.ioc?.schedules?.root && !window.ioc.schedules.root.hidden && window.ioc.schedules.close();
    this.root.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    this.button.classList.add("active");
    await this.showList();
  }

  close() {
    this.root.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
    this.button.classList.remove("active");
    this.clearMap();
  }

  rerender() {
    if (this.view.name === "list") this.renderList();
    else if (this.view.name === "history") this.renderHistory();
    else this.renderEditor(this.readForm());
  }

  shell(title, ...body) {
    const head = h("div.rules-head",
      h("h2", { id: "rules-title" }, title),
      h("div.rules-head-buttons",
        this.view.name === "list" && this.canEdit ? h("button.btn.primary.small", {
          type: "button", onclick: () => this.edit(null) }, t("rules_new")) : null,
        this.view.name !== "list" ? h("button.btn.small", { type: "button", onclick: () => this.showList() },
          t("rules_back")) : null,
        h("button.icon", { type: "button", "aria-label": t("rules_close"), title: t("rules_close"),
          onclick: () => this.close() }, "×")));
    this.root.replaceChildren(head, h("div.rules-body", ...body));
  }

  // ------------------------------------------------------------ the list
  async showList() {
    this.view = { name: "list" };
    this.clearMap();
    this.shell(t("rules_title"), h("div.empty", t("loading")));
    try {
      const data = await api("/api/v1/rules");
      this.rules = data.rules ?? [];
      this.fileErrors = data.errors ?? [];
    } catch (err) {
      this.shell(t("rules_title"), h("div.empty.error", err.message));
      return;
    }
    if (this.view.name === "list") this.renderList();
  }

  renderList() {
    const errors = this.fileErrors.length ? h("div.rules-problems", { role: "status" },
      t("rules_errors"), h("ul", ...this.fileErrors.map((e) => h("li", e)))) : null;
    const cards = this.rules.map((r) => this.card(r));
    this.shell(t("rules_title"), errors, cards.length ? cards : h("p.empty", t("rules_none")));
  }

  card(r) {
    const doc = r.document ?? {};
    const fromFile = r.source?.startsWith("file:");
    const toggle = h("input", {
      type: "checkbox", checked: r.enabled, "aria-label": t("rules_enabled_of", { id: r.id }),
      disabled: !this.canEdit || fromFile, title: fromFile ? t("rules_file_readonly") : undefined,
      onchange: (e) => this.setEnabled(r, e.target.checked, e.target),
    });
    return h("article.rules-card", { dataset: { rule: r.id }, "aria-label": r.id },
      h("div.rules-card-head",
        h("label.rules-switch", toggle, h("span.rules-slider", { "aria-hidden": "true" })),
        h("h3.rules-name", r.id),
        h(`span.chip.sev-${doc.severity}`, severityLabel(doc.severity)),
        h("span.chip", t(`rules_k_${r.kind}`)),
        r.enabled && !r.evaluated ? h("span.chip.rules-off", t("rules_not_evaluated")) : null,
        h("div.rules-actions",
          this.canTest ? h("button.btn.small", { type: "button", "aria-label": t("rules_history_of", { id: r.id }),
            onclick: () => this.showHistory(r.id) }, t("history")) : null,
          h("button.btn.small", { type: "button",
            "aria-label": t(this.canEdit && !fromFile ? "rules_edit_of" : "rules_view_of", { id: r.id }),
            onclick: () => this.edit(r) }, t(this.canEdit && !fromFile ? "rules_edit" : "rules_view")),
          this.canEdit && !fromFile ? h("button.btn.small.danger", { type: "button",
            "aria-label": t("rules_delete_of", { id: r.id }), onclick: () => this.remove(r) }, t("rules_delete")) : null)),
      h("div.rules-summary", this.summary(doc)),
      doc.description ? h("div.rules-desc", doc.description) : null,
      h("div.rules-source", fromFile ? t("rules_from_file", { file: r.source.slice(5) }) : t("rules_from_api")));
  }

  // One line a person reads: "pressure (bar) < 1.5 · pressure sensor · on delay 15s".
  summary(doc) {
    const parts = [];
    const m = doc.metric ? metricLabel(doc.metric) : null;
    if (doc.kind === "threshold" || doc.kind === "rate_of_change") {
      if (doc.below !== null && doc.below !== undefined) parts.push(`${m} < ${fmtNumber(doc.below)}`);
      if (doc.above !== null && doc.above !== undefined) parts.push(`${m} > ${fmtNumber(doc.above)}`);
      if (doc.window) parts.push(`/ ${fmtDuration(doc.window)}`);
    } else if (doc.kind === "state") parts.push(`${m} ∈ {${(doc.in ?? []).join(", ")}}`);
    else if (m) parts.push(m);
    if (doc.member) parts.push(`⊂ ${doc.member} × ${doc.min_count}`);
    const sel = doc.select ?? {};
    for (const k of SELECT_KEYS) {
      if (sel[k] !== null && sel[k] !== undefined) {
        const v = [].concat(sel[k]);
        parts.push(k === "kind" ? v.map(kindLabel).join(", ") : `${label(`select.${k}`)}: ${v.join(", ")}`);
      }
    }
    if (doc.on_delay) parts.push(`${label("on_delay")} ${fmtDuration(doc.on_delay)}`);
    return parts.join(" · ");
  }

  async setEnabled(r, on, box) {
    box.disabled = true;
    try {
      const row = await api(`/api/v1/rules/${encodeURIComponent(r.id)}`, { method: "PATCH", body: { enabled: on } });
      Object.assign(r, row);
      toast(t(on ? "rules_turned_on" : "rules_turned_off", { id: r.id }));
    } catch (err) {
      box.checked = !on;
      toast(err.message, "error");
    } finally {
      box.disabled = false;
    }
  }

  async remove(r) {
    if (!window.confirm(t("rules_delete_confirm", { id: r.id }))) return;
    try {
      await api(`/api/v1/rules/${encodeURIComponent(r.id)}`, { method: "DELETE" });
      toast(t("rules_deleted", { id: r.id }));
      await this.showList();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  // ------------------------------------------------------------ the form
  async loadSchemas() {
    if (this.schemas) return this.schemas;
    const doc = await api("/api/v1/openapi.json");
    const all = doc.components.schemas;
    const mapping = all.RuleDocument.discriminator.mapping;
    this.schemas = { all, kinds: Object.fromEntries(Object.entries(mapping).map(
      ([kind, ref]) => [kind, all[ref.split("/").pop()]])) };
    return this.schemas;
  }

  resolve(schema) {
    if (schema?.$ref) return { ...this.schemas.all[schema.$ref.split("/").pop()], ...schema, $ref: undefined };
    return schema ?? {};
  }

  async edit(rule) {
    try {
      await this.loadSchemas();
    } catch (err) {
      toast(err.message, "error");
      return;
    }
    this.view = { name: "edit", rule, backtest: null };
    const doc = rule ? structuredClone(rule.document) : { kind: "threshold", severity: "major" };
    this.renderEditor(doc);
    this.root.querySelector(rule ? "#rules-f-description" : "#rules-kind")?.focus();
  }

  fieldsOf(kind) {
    const props = this.schemas.kinds[kind]?.properties ?? {};
    const names = Object.keys(props).filter((n) => n !== "kind");
    const rank = (n) => (ORDER.includes(n) ? ORDER.indexOf(n) : ORDER.length);
    return names.sort((a, b) => rank(a) - rank(b)).map((n) => [n, props[n]]);
  }

  renderEditor(doc, problems = []) {
    const rule = this.view.rule;
    const fromFile = rule?.source?.startsWith("file:");
    const readOnly = !this.canEdit || fromFile;
    const kindSchema = this.schemas.kinds[doc.kind];
    const required = new Set(kindSchema?.required ?? []);
    const kind = h("select", { id: "rules-kind", name: "kind", disabled: Boolean(rule), "aria-describedby": "rules-kind-help",
      onchange: (e) => this.renderEditor({ ...this.readForm(), kind: e.target.value }) },
    ...KINDS.filter((k) => this.schemas.kinds[k]).map((k) => h("option", { value: k, selected: k === doc.kind }, t(`rules_k_${k}`))));
    const fields = [];
    for (const [name, raw] of this.fieldsOf(doc.kind)) {
      if (name === "select") {
        fields.push(this.selectGroup(doc.select ?? {}, this.resolve(raw), readOnly));
        continue;
      }
      fields.push(this.field(name, this.resolve(raw), doc[name], required.has(name), readOnly || (name === "id" && rule)));
    }
    const form = h("form.rules-form", { novalidate: true, onsubmit: (e) => { e.preventDefault(); this.save(); },
      oninput: () => this.markStale() },
      h("div.rules-field.wide",
        h("label", { for: "rules-kind" }, t("rules_kind")), kind,
        h("div.rules-help", { id: "rules-kind-help" }, t(`rules_kd_${doc.kind}`), " ", t("rules_kind_help"))),
      h("div.rules-grid", ...fields),
      this.backtestBlock(),
      h("div.rules-form-buttons",
        this.canEdit && !fromFile ? h("button.btn.primary", { type: "submit" }, t("rules_save")) : null,
        h("button.btn", { type: "button", onclick: () => this.showList() }, t("rules_cancel")),
        fromFile ? h("span.rules-help", t("rules_file_readonly")) : null));
    this.shell(rule ? t(readOnly ? "rules_view_title" : "rules_edit_title", { id: rule.id }) : t("rules_new_title"),
      h("div.rules-problems", { role: "alert", id: "rules-problems", hidden: true }), form);
    this.showProblems(problems);
    if (this.view.backtest) this.renderBacktest(this.view.backtest);
  }

  field(name, schema, value, required, readOnly) {
    const id = inputId(name);
    const opts = (schema.anyOf ?? [schema]).filter((s) => s.type !== "null");
    const main = this.resolve(opts[0]);
    const describedBy = `${id}-help ${id}-err`;
    const common = { id, name, "aria-describedby": describedBy, disabled: readOnly || undefined,
      "aria-required": required ? "true" : undefined };
    let input;
    const def = schema.default;
    if (main.type === "boolean") {
      input = h("input", { ...common, type: "checkbox", checked: value ?? def ?? false });
      return h("div.rules-field.rules-check",
        h("label", { for: id }, input, " ", label(name, schema)),
        h("div.rules-help", { id: `${id}-help` }, help(name, schema)),
        h("div.rules-error", { id: `${id}-err`, hidden: true }));
    }
    if (main.enum) {
      const emptyText = def !== undefined && def !== null ? t("rules_default_option") : t("rules_none_option");
      const empty = !required ? [h("option", { value: "" }, emptyText)] : [];
      input = h("select", common, ...empty, ...main.enum.map((v) => h("option", {
        value: v, selected: v === (value ?? (required ? def : undefined)) },
      name === "metric" ? `${metricLabel(v)} (${v})` : /severity/.test(name) ? severityLabel(v) : v)));
      if (!required && (value === null || value === undefined)) input.value = "";
      if (/severity/.test(name) && value === undefined && def) input.value = def;
    } else {
      let text = value ?? "";
      const duration = main.maximum === MAX_DURATION;
      if (duration) text = fmtDuration(value);
      else if (Array.isArray(value)) text = value.join(", ");
      const placeholder = def !== undefined && def !== null && def !== ""
        ? t("rules_default", { v: duration ? fmtDuration(def) : Array.isArray(def) ? def.join(", ") : def }) : "";
      input = h("input", { ...common, type: "text", value: String(text), placeholder,
        inputmode: main.type === "number" || main.type === "integer" ? (duration ? undefined : "decimal") : undefined,
        dataset: { type: main.type === "array" ? "numbers" : duration ? "duration" : main.type ?? "string" } });
    }
    return h(`div.rules-field${name === "description" || name === "message" ? ".wide" : ""}`,
      h("div.rules-label-row", h("label", { for: id }, label(name, schema)),
        required ? h("span.rules-req", { "aria-hidden": "true", title: t("rules_required") }, "*") : null),
      input,
      h("div.rules-help", { id: `${id}-help` }, help(name, schema)),
      h("div.rules-error", { id: `${id}-err`, hidden: true }));
  }

  selectGroup(sel, schema, readOnly) {
    const props = schema.properties ?? {};
    const inputs = SELECT_KEYS.filter((k) => props[k]).map((k) => {
      const name = `select.${k}`;
      const id = inputId(name);
      const v = sel[k];
      return h("div.rules-field",
        h("label", { for: id }, label(name, props[k])),
        h("input", { id, name, type: "text", value: v === null || v === undefined ? "" : [].concat(v).join(", "),
          "aria-describedby": `${id}-help ${id}-err`, disabled: readOnly || undefined,
          list: k === "kind" ? "rules-kinds" : undefined, dataset: { type: k === "bbox" ? "numbers" : "list" } }),
        h("div.rules-help", { id: `${id}-help` }, help(name, props[k])),
        h("div.rules-error", { id: `${id}-err`, hidden: true }));
    });
    const kinds = h("datalist", { id: "rules-kinds" }, ...Object.keys(KIND_COLOURS).map((k) => h("option", { value: k })));
    return h("fieldset.rules-select.wide", h("legend", label("select")),
      h("div.rules-help", help("select", schema)), h("div.rules-grid", ...inputs), kinds);
  }

  // The document as the form says: empty optional fields are left out (the server's defaults).
  readForm() {
    const form = this.root.querySelector("form.rules-form");
    if (!form) return {};
    const doc = { kind: form.elements.namedItem("kind").value };
    const select = {};
    for (const el of form.querySelectorAll("input[name], select[name]")) {
      if (el.name === "kind") continue;
      let v;
      if (el.type === "checkbox") v = el.checked;
      else {
        const raw = el.value.trim();
        if (raw === "") continue;
        const type = el.dataset.type;
        if (type === "numbers") v = list(raw).map(asNumber);
        else if (type === "list") v = list(raw).length > 1 ? list(raw) : list(raw)[0];
        else if (type === "number" || type === "integer") v = asNumber(raw);
        else v = raw; // text, enums and durations ("5m") as written: the server parses them
      }
      if (el.name.startsWith("select.")) select[el.name.slice(7)] = v;
      else doc[el.name] = v;
    }
    if (Object.keys(select).length) doc.select = select;
    if (this.view.rule) doc.id = this.view.rule.id;
    return doc;
  }

  // problem+json errors[{field, reason}] → beside the field ("select.bbox.3" → select.bbox);
  // what names no field of the form goes in the box at the top.
  showProblems(problems) {
    const box = this.root.querySelector("#rules-problems");
    for (const el of this.root.querySelectorAll(".rules-error")) {
      el.hidden = true;
      el.textContent = "";
    }
    for (const el of this.root.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const general = [];
    for (const p of problems) {
      const parts = String(p.field ?? "").split(".");
      let el = null;
      while (parts.length && !el) {
        el = this.root.querySelector(`form.rules-form [name="${CSS.escape(parts.join("."))}"]`);
        parts.pop();
      }
      if (!el) {
        general.push(p.reason ?? p.message ?? String(p));
        continue;
      }
      el.setAttribute("aria-invalid", "true");
      const err = this.root.querySelector(`#${CSS.escape(el.id)}-err`);
      err.hidden = false;
      err.textContent = err.textContent ? `${err.textContent}; ${p.reason}` : p.reason;
    }
    if (!box) return;
    box.hidden = !problems.length;
    box.replaceChildren(h("strong", t("rules_fix")), general.length ? h("ul", ...general.map((g) => h("li", g))) : null);
    if (problems.length) this.root.querySelector("[aria-invalid='true']")?.focus();
  }

  problemsOf(err) {
    const errors = err.problem?.errors;
    if (Array.isArray(errors) && errors.length) {
      return errors.map((e) => (typeof e === "string" ? { field: "(rule)", reason: e }
        : { ...e, field: String(e.field ?? "").replace(/^rule\./, "") }));
    }
    return [{ field: err.problem?.field ?? "(rule)", reason: err.message }];
  }

  async save() {
    const doc = this.readForm();
    const rule = this.view.rule;
    const path = rule ? `/api/v1/rules/${encodeURIComponent(rule.id)}` : "/api/v1/rules";
    try {
      const row = await api(path, { method: rule ? "PUT" : "POST", body: doc });
      toast(t("rules_saved", { id: row.id }));
      await this.showList();
    } catch (err) {
      this.showProblems(this.problemsOf(err));
    }
  }

  // ------------------------------------------------------------ backtest
  backtestBlock() {
    if (!this.canTest) return null;
    const days = this.view.days ?? 7;
    return h("section.rules-backtest", { "aria-labelledby": "rules-bt-title" },
      h("h3", { id: "rules-bt-title" }, t("rules_backtest_title")),
      h("div.rules-bt-controls",
        h("label", { for: "rules-bt-days" }, t("rules_days")),
        h("select", { id: "rules-bt-days", onchange: (e) => { this.view.days = Number(e.target.value); } },
          ...DAYS.map((n) => h("option", { value: n, selected: n === days },
            n === 1 ? t("rules_day_1") : t("rules_days_n", { n })))),
        h("button.btn", { type: "button", id: "rules-bt-run", onclick: () => this.backtest() }, t("rules_backtest"))),
      h("div.rules-bt-result", { id: "rules-bt-result", "aria-live": "polite" }));
  }

  markStale() {
    const box = this.root.querySelector("#rules-bt-result");
    if (this.view.backtest && box && !box.querySelector(".rules-bt-stale")) {
      box.prepend(h("div.rules-bt-stale", t("rules_bt_stale")));
    }
  }

  async backtest() {
    const box = this.root.querySelector("#rules-bt-result");
    const days = this.view.days ?? 7;
    const to = new Date();
    const from = new Date(to.getTime() - days * 86400e3);
    const doc = { id: "backtest", ...this.readForm() };
    box.replaceChildren(h("div.empty", t("rules_bt_running")));
    this.showProblems([]);
    try {
      const result = await api("/api/v1/rules/backtest", { method: "POST",
        body: { rule: doc, from: from.toISOString(), to: to.toISOString() } });
      this.view.backtest = { ...result, days };
      this.renderBacktest(this.view.backtest);
      // the result is under the form: bring it (and the Save button under it) into view
      this.root.querySelector(".rules-form-buttons")?.scrollIntoView({ block: "end" });
    } catch (err) {
      box.replaceChildren();
      this.showProblems(this.problemsOf(err));
    }
  }

  renderBacktest(bt) {
    const box = this.root.querySelector("#rules-bt-result");
    if (!box) return;
    const span = bt.days === 1 ? t("rules_day_1").toLowerCase() : t("rules_days_n", { n: bt.days }).toLowerCase();
    const text = bt.count
      ? t("rules_bt_result", { n: fmtNumber(bt.count), d: fmtNumber(bt.devices), days: span, r: fmtNumber(bt.readings) })
      : t("rules_bt_none", { days: span, r: fmtNumber(bt.readings) });
    const chart = h("div.rules-bt-chart", { role: "img", "aria-label": `${t("rules_bt_active")} / ${t("rules_bt_raised")}` });
    const located = new Set(bt.alarms.filter((a) => a.geometry).map((a) => a.device));
    const top = (bt.by_device ?? []).slice(0, 6);
    box.replaceChildren(
      h("p.rules-bt-summary", text, bt.truncated ? ` ${t("rules_bt_truncated")}` : ""),
      chart,
      located.size ? h("p.rules-bt-map", t("rules_bt_on_map", { n: fmtNumber(located.size) })) : null,
      top.length ? h("div.rules-bt-top", h("span", `${t("rules_bt_top")}: `),
        ...top.map((d) => h("button.link-btn", { type: "button", onclick: () => this.flyTo(d.device, bt) },
          `${d.device} (${d.count})`))) : null);
    this.drawTimeline(chart, bt);
    this.showOnMap(bt);
  }

  // Alarms active over time (a step line) and raised per bucket (bars): about 96 buckets.
  drawTimeline(box, bt) {
    this.plot?.destroy();
    this.plot = null;
    const from = Date.parse(bt.from) / 1000;
    const to = Date.parse(bt.to) / 1000;
    const step = Math.max(60, Math.ceil((to - from) / 96 / 60) * 60);
    const n = Math.ceil((to - from) / step) + 1;
    const xs = Array.from({ length: n }, (_, i) => from + i * step);
    const active = new Array(n).fill(0);
    const raised = new Array(n).fill(0);
    for (const a of bt.alarms) {
      const r = Date.parse(a.raised_at) / 1000;
      const c = a.cleared_at ? Date.parse(a.cleared_at) / 1000 : to;
      const i0 = Math.max(0, Math.floor((r - from) / step));
      raised[Math.min(n - 1, i0)] += 1;
      for (let i = i0; i < n && xs[i] <= c; i++) active[i] += 1;
    }
    const width = Math.max(300, (box.parentElement?.clientWidth || 480) - 4);
    const bars = uPlot.paths.bars({ size: [0.8, 12] });
    this.plot = new uPlot({
      width, height: 170, legend: { show: true },
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(1, hi)] } },
      series: [{ label: t("rules_bt_time"), value: (u, v) => (v == null ? "–" : fmtTime(v * 1000, true)) },
        { label: t("rules_bt_active"), stroke: "#e64980", width: 2, fill: "rgba(230,73,128,.15)",
          paths: uPlot.paths.stepped({ align: 1 }) },
        { label: t("rules_bt_raised"), stroke: "#ffd166", fill: "rgba(255,209,102,.6)", width: 1, paths: bars }],
      axes: [
        { stroke: "#9aa7b8", grid: { stroke: "#22324a" }, ticks: { stroke: "#22324a" }, size: 44,
          values: timeTicks },
        { stroke: "#9aa7b8", grid: { stroke: "#22324a" }, ticks: { stroke: "#22324a" }, size: 36,
          values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? v : "")) },
      ],
    }, [xs, active, raised], box);
  }

  // Each device the rule would have raised on: a ring on the map, sized by its count.
  showOnMap(bt) {
    this.lastBacktest = bt;
    const map = this.map;
    const counts = new Map();
    for (const a of bt.alarms) {
      if (!a.geometry) continue;
      const c = counts.get(a.device) ?? { n: 0, geometry: a.geometry, last: a.raised_at };
      c.n += 1;
      c.last = a.raised_at;
      counts.set(a.device, c);
    }
    const features = [...counts].map(([id, c]) => ({ type: "Feature",
      properties: { device: id, count: c.n, last: fmtTime(c.last, true) }, geometry: c.geometry }));
    const data = { type: "FeatureCollection", features };
    if (map.getSource(SOURCE)) map.getSource(SOURCE).setData(data);
    else {
      try {
        map.addSource(SOURCE, { type: "geojson", data });
      } catch {
        map.once("idle", () => this.lastBacktest === bt && this.showOnMap(bt)); // style still loading
        return;
      }
      map.addLayer({ id: SOURCE, type: "circle", source: SOURCE, paint: {
        "circle-radius": ["interpolate", ["linear"], ["get", "count"], 1, 8, 20, 16],
        "circle-color": "rgba(230,73,128,0.18)", "circle-stroke-color": "#e64980", "circle-stroke-width": 3,
      } });
    }
    if (features.length) {
      const xs = features.map((f) => f.geometry.coordinates[0]);
      const ys = features.map((f) => f.geometry.coordinates[1]);
      const panel = this.root.getBoundingClientRect().width || 0;
      const pad = 60;
      map.fitBounds([[Math.min(...xs), Math.min(...ys)], [Math.max(...xs), Math.max(...ys)]], {
        padding: { top: pad, bottom: pad, right: pad, left: Math.min(panel + pad, map.getContainer().clientWidth * 0.7) },
        maxZoom: 16, duration: 0 });
    }
  }

  flyTo(device, bt) {
    const a = bt.alarms.find((x) => x.device === device && x.geometry);
    if (a) this.map.easeTo({ center: a.geometry.coordinates, zoom: Math.max(this.map.getZoom(), 16) });
  }

  clearMap() {
    this.lastBacktest = null;
    this.plot?.destroy();
    this.plot = null;
    if (this.map.getLayer?.(SOURCE)) this.map.removeLayer(SOURCE);
    if (this.map.getSource?.(SOURCE)) this.map.removeSource(SOURCE);
  }

  // ------------------------------------------------------------ history
  async showHistory(id) {
    this.view = { name: "history", id, entries: null };
    this.clearMap();
    this.renderHistory();
    try {
      const data = await api(`/api/v1/rules/${encodeURIComponent(id)}/history`);
      this.view.entries = data.history;
    } catch (err) {
      this.view.entries = [];
      this.view.error = err.message;
    }
    if (this.view.name === "history" && this.view.id === id) this.renderHistory();
  }

  renderHistory() {
    const { id, entries, error } = this.view;
    let body;
    if (entries === null) body = h("div.empty", t("loading"));
    else if (error) body = h("div.empty.error", error);
    else if (!entries.length) body = h("p.empty", t("rules_history_none"));
    else body = h("ol.rules-history", ...entries.map((e) => this.change(e)));
    this.shell(t("rules_history_title", { id }), body);
  }

  change(e) {
    const show = (v, field) => {
      if (v === null || v === undefined) return "—";
      if (DURATIONS.has(field)) return fmtDuration(v);
      if (field === "kind") return t(`rules_k_${v}`);
      if (/severity$/.test(field)) return severityLabel(v);
      if (typeof v === "boolean") return v ? t("rules_yes") : t("rules_no");
      if (Array.isArray(v)) return v.join(", ");
      if (typeof v === "object") return JSON.stringify(v);
      return String(v);
    };
    const rows = e.changes.map((c) => h("tr",
      h("th", { scope: "row" }, label(c.field)),
      h("td.rules-old", show(c.before, c.field)), h("td.rules-new", show(c.after, c.field))));
    const source = e.source.startsWith("file:") ? t("rules_from_file", { file: e.source.slice(5) }) : null;
    return h(`li.rules-change.act-${e.action}`,
      h("div.rules-change-head",
        h("span.chip", t(`rules_act_${e.action}`)),
        h("time", { datetime: e.at }, fmtTime(e.at, true)),
        h("span.rules-by", t("rules_by", { who: e.by })),
        source ? h("span.rules-source", source) : null),
      rows.length ? h("table.rules-diff",
        h("thead", h("tr", h("th", { scope: "col" }, t("rules_field")), h("th", { scope: "col" }, t("rules_before")),
          h("th", { scope: "col" }, t("rules_after")))),
        h("tbody", ...rows)) : null);
  }
}
