// An alarm's message in the reader's language (issue 18): worded from the alarm's context
// (rule kind, metric, value, limit, unit; the server keeps it beside the English message),
// with the metric's name and unit, never its raw id. An alarm without a context (raised
// before the server kept one, or of a kind not worded here) shows the server's message.

import { addStrings, metricLabel, t } from "./i18n.js";

addStrings({
  amsg_below: "{metric} {value} below limit {limit}",
  amsg_above: "{metric} {value} above limit {limit}",
  amsg_back: "{metric} {value} back within limit {limit}",
  amsg_rate_below: "{metric} falling {rate}/min over {window}",
  amsg_rate_above: "{metric} rising {rate}/min over {window}",
  amsg_rate_back: "{metric} changing {rate}/min over {window}: back to normal",
  amsg_state: "{metric} is {value}",
  amsg_state_back: "{metric} is {value} (normal)",
  amsg_fault: "{metric} reported",
  amsg_fault_bad: "Bad reading of {metric}",
  amsg_fault_any: "A reading of bad quality",
  amsg_offline: "Device offline (its link reports no answer)",
  amsg_fault_clear: "Fault cleared",
  amsg_stale: "No data for {age} (expected every {interval})",
  amsg_stale_back: "Reporting again",
  amsg_day_burner: "Lamp on in daylight (day-burner)",
  amsg_night_outage: "Lamp off at night (outage)",
  amsg_sched_on: "Lamp on while its lighting schedule {schedule} has it off",
  amsg_sched_off: "Lamp off while its lighting schedule {schedule} has it on",
  amsg_back_normal: "{what}: back to normal",
  amsg_topology: "{n} of {total} devices under it in alarm ({member})",
  amsg_neighbourhood: "{n} nearby {member} alarms within {spread} m",
  amsg_incident_end: "Incident ended",
  alarm_out_of_service: "Out of service",
  amsg_span_s: "{n} s",
  amsg_span_min: "{n} min",
  amsg_span_h: "{n} h",
  amsg_span_d: "{n} d",
}, {
  amsg_below: "{metric} {value} dưới ngưỡng {limit}",
  amsg_above: "{metric} {value} vượt ngưỡng {limit}",
  amsg_back: "{metric} {value} trở lại trong ngưỡng {limit}",
  amsg_rate_below: "{metric} giảm {rate}/phút trong {window}",
  amsg_rate_above: "{metric} tăng {rate}/phút trong {window}",
  amsg_rate_back: "{metric} thay đổi {rate}/phút trong {window}: đã bình thường",
  amsg_state: "{metric} là {value}",
  amsg_state_back: "{metric} là {value} (bình thường)",
  amsg_fault: "Báo {metric}",
  amsg_fault_bad: "Số đo {metric} không hợp lệ",
  amsg_fault_any: "Số đo chất lượng kém",
  amsg_offline: "Thiết bị mất kết nối (đường truyền không trả lời)",
  amsg_fault_clear: "Đã hết lỗi",
  amsg_stale: "Không có dữ liệu {age} (dự kiến mỗi {interval})",
  amsg_stale_back: "Đã gửi dữ liệu trở lại",
  amsg_day_burner: "Đèn sáng ban ngày",
  amsg_night_outage: "Đèn tắt ban đêm (mất đèn)",
  amsg_sched_on: "Đèn sáng khi lịch chiếu sáng {schedule} quy định tắt",
  amsg_sched_off: "Đèn tắt khi lịch chiếu sáng {schedule} quy định bật",
  amsg_back_normal: "{what}: đã bình thường",
  amsg_topology: "{n}/{total} thiết bị phía dưới đang cảnh báo ({member})",
  amsg_neighbourhood: "{n} cảnh báo {member} gần nhau trong bán kính {spread} m",
  amsg_incident_end: "Sự cố đã kết thúc",
  alarm_out_of_service: "Ngừng giám sát",
  amsg_span_s: "{n} giây",
  amsg_span_min: "{n} phút",
  amsg_span_h: "{n} giờ",
  amsg_span_d: "{n} ngày",
});

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const decimals = (v) => (Number.isInteger(v) ? 0 : Math.min(3, (String(v).split(".")[1] ?? "").length));

// Numbers as an engineer writes them, the same in both languages ("1.98 bar", "2.0"): a
// limit gets at least one decimal when the reading has some.
export function fmtValue(v, atLeast = 0) {
  if (!isNum(v)) return v === true ? "1" : v === false ? "0" : String(v ?? "–");
  const d = Math.max(atLeast, decimals(Number(v.toFixed(3))));
  return v.toFixed(d);
}

function fmtSpan(seconds) {
  if (!isNum(seconds)) return "";
  if (seconds < 120) return t("amsg_span_s", { n: Math.round(seconds) });
  if (seconds < 7200) return t("amsg_span_min", { n: Math.round(seconds / 60) });
  if (seconds < 172800) return t("amsg_span_h", { n: (seconds / 3600).toFixed(1).replace(/\.0$/, "") });
  return t("amsg_span_d", { n: Math.round(seconds / 86400) });
}

// The alarm's message in the current language, or null when its context does not say enough.
export function localMessage(a) {
  const c = a?.context;
  if (!c || typeof c !== "object") return null;
  const metric = c.metric ? metricLabel(c.metric) : "";
  const unit = c.unit ? ` ${c.unit}` : "";
  const value = c.value ?? a.value;
  const cleared = c.event === "clear";
  switch (c.rule_kind) {
    case "threshold": {
      if (!c.metric || !isNum(value) || !isNum(c.limit)) return null;
      const vars = { metric, value: `${fmtValue(value)}${unit}`,
        limit: fmtValue(c.limit, decimals(value) ? 1 : 0) };
      if (cleared || !c.direction) return t("amsg_back", vars);
      return t(c.direction === "above" ? "amsg_above" : "amsg_below", vars);
    }
    case "rate_of_change": {
      const rate = c.rate_per_min ?? value;
      if (!c.metric || !isNum(rate)) return null;
      const vars = { metric, rate: `${fmtValue(rate)}${unit}`, window: fmtSpan(c.window_s) };
      if (cleared || !c.direction) return t("amsg_rate_back", vars);
      vars.rate = `${fmtValue(Math.abs(rate))}${unit}`; // "falling 0.6 bar/min", not "-0.6"
      return t(c.direction === "above" ? "amsg_rate_above" : "amsg_rate_below", vars);
    }
    case "state":
      if (!c.metric) return null;
      return t(cleared ? "amsg_state_back" : "amsg_state", { metric, value: `${fmtValue(value)}${unit}` });
    case "fault":
      if (cleared) return t("amsg_fault_clear");
      if (c.offline) return t("amsg_offline");
      return c.metric ? t("amsg_fault", { metric }) : t("amsg_fault_any");
    case "stale":
      if (cleared) return t("amsg_stale_back");
      return t("amsg_stale", { age: fmtSpan(value), interval: fmtSpan(c.expected_interval_s) });
    case "lighting_schedule": {
      const on = c.check ? c.check === "day_burner" : (c.level ?? 0) > 0;
      let what;
      if (c.schedule) what = t(on ? "amsg_sched_on" : "amsg_sched_off", { schedule: c.schedule });
      else what = t(on ? "amsg_day_burner" : "amsg_night_outage");
      return cleared ? t("amsg_back_normal", { what }) : what;
    }
    case "topology":
      if (cleared) return t("amsg_incident_end");
      return t("amsg_topology", { n: fmtValue(value), total: c.children_total ?? "?", member: c.member_rule ?? "" });
    case "neighbourhood":
      if (cleared) return t("amsg_incident_end");
      return t("amsg_neighbourhood", { n: fmtValue(value), member: c.member_rule ?? "",
        spread: isNum(c.spread_m) ? Math.round(c.spread_m) : "?" });
    default:
      return null;
  }
}

// What to show: the worded message, else the server's, else the rule and value.
export function alarmMessage(a) {
  return localMessage(a) ?? (a.message || `${a.rule}${a.value !== null && a.value !== undefined ? ` = ${a.value}` : ""}`);
}
