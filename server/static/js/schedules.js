// Lighting schedules: dimming profiles (steps at dusk/dawn ± minutes or at a clock time,
// exceptions by date such as Tết), assigned to a ward, a cabinet or a group of lamps, with
// a preview of the night and the energy saved against all night at 100 %.
// The server sends the steps (server/schedules/); this panel writes /api/v1/schedules.

import { api, ApiError, fmtNumber, h, toast } from "./common.js";
import { addStrings, lang, onLangChange, t } from "./i18n.js";

addStrings({
  sched_open: "Schedules",
  sched_title: "Lighting schedules",
  sched_close: "Close the schedules",
  sched_new: "New schedule",
  sched_none: "No lighting schedule yet. Lamps follow their photocells and the sun.",
  sched_edit: "Edit",
  sched_delete: "Delete",
  sched_delete_confirm: "Delete {name}?",
  sched_deleted: "Schedule {name} deleted; its lamps keep their last level.",
  sched_saved: "Schedule {name} saved; the step in force is being sent to its lamps.",
  sched_name: "Name",
  sched_target: "Assigned to",
  sched_target_ward: "Ward",
  sched_target_parent: "Cabinet",
  sched_target_devices: "Lamps (ids)",
  sched_target_kind: "Assign by",
  sched_devices_hint: "Device ids, separated by commas",
  sched_priority: "Priority",
  sched_enabled: "Enabled",
  sched_disabled: "Disabled",
  sched_steps: "Steps of the night",
  sched_step: "Step {n}",
  sched_when: "When",
  sched_offset: "Minutes after (−: before)",
  sched_time: "Time",
  sched_level: "Level %",
  sched_dusk: "Dusk (sunset)",
  sched_dawn: "Dawn (sunrise)",
  sched_clock: "Clock time",
  sched_add_step: "Add a step",
  sched_remove_step: "Remove step {n}",
  sched_exceptions: "Exceptions (holidays)",
  sched_exception: "Exception {n}",
  sched_exc_name: "Name",
  sched_exc_from: "From night of",
  sched_exc_to: "To night of",
  sched_exc_level: "All night at %",
  sched_exc_custom: "its own steps: {steps}",
  sched_add_exception: "Add an exception",
  sched_remove_exception: "Remove exception {n}",
  sched_save: "Save schedule",
  sched_cancel: "Cancel",
  sched_preview: "Tonight at these lamps",
  sched_preview_saves: "Uses {used} % of a night at 100 % — saves {saved} %",
  sched_sunset: "Sunset {t}",
  sched_sunrise: "Sunrise {t}",
  sched_lamps: "{n} lamps",
  sched_overridden: "{n} follow another schedule",
  sched_level_now: "Now {level} %",
  sched_next: "next: {level} % at {t}",
  sched_last: "Last sent: {step} ({level} %) to {n} lamps, {t}",
  sched_never_sent: "Nothing sent yet",
  sched_energy: "Energy, last 7 days",
  sched_energy_saved: "Saved {kwh} kWh ({pct} %) against all night at 100 % ({full} kWh)",
  sched_energy_none: "No power readings from its lamps yet",
  sched_energy_planned: "Planned tonight: saves {pct} %",
  sched_energy_lamps: "measured at {m} of {n} lamps",
  sched_fix: "Please correct:",
  sched_exception_tonight: "Tonight follows the exception “{name}”",
}, {
  sched_open: "Lịch chiếu sáng",
  sched_title: "Lịch chiếu sáng",
  sched_close: "Đóng lịch chiếu sáng",
  sched_new: "Tạo lịch mới",
  sched_none: "Chưa có lịch chiếu sáng nào. Đèn bật tắt theo cảm biến ánh sáng và mặt trời.",
  sched_edit: "Sửa",
  sched_delete: "Xóa",
  sched_delete_confirm: "Xóa {name}?",
  sched_deleted: "Đã xóa lịch {name}; đèn giữ mức sáng cuối cùng.",
  sched_saved: "Đã lưu lịch {name}; mức sáng hiện hành đang được gửi tới các đèn.",
  sched_name: "Tên lịch",
  sched_target: "Áp dụng cho",
  sched_target_ward: "Phường",
  sched_target_parent: "Tủ điện",
  sched_target_devices: "Đèn (mã)",
  sched_target_kind: "Áp dụng theo",
  sched_devices_hint: "Mã thiết bị, cách nhau bằng dấu phẩy",
  sched_priority: "Ưu tiên",
  sched_enabled: "Đang bật",
  sched_disabled: "Đang tắt",
  sched_steps: "Các bước trong đêm",
  sched_step: "Bước {n}",
  sched_when: "Thời điểm",
  sched_offset: "Số phút sau (−: trước)",
  sched_time: "Giờ",
  sched_level: "Mức sáng %",
  sched_dusk: "Hoàng hôn (mặt trời lặn)",
  sched_dawn: "Bình minh (mặt trời mọc)",
  sched_clock: "Giờ cố định",
  sched_add_step: "Thêm bước",
  sched_remove_step: "Xóa bước {n}",
  sched_exceptions: "Ngoại lệ (ngày lễ)",
  sched_exception: "Ngoại lệ {n}",
  sched_exc_name: "Tên",
  sched_exc_from: "Từ đêm ngày",
  sched_exc_to: "Đến đêm ngày",
  sched_exc_level: "Cả đêm ở mức %",
  sched_exc_custom: "các bước riêng: {steps}",
  sched_add_exception: "Thêm ngoại lệ",
  sched_remove_exception: "Xóa ngoại lệ {n}",
  sched_save: "Lưu lịch",
  sched_cancel: "Hủy",
  sched_preview: "Đêm nay tại các đèn này",
  sched_preview_saves: "Dùng {used} % điện năng so với sáng 100 % cả đêm — tiết kiệm {saved} %",
  sched_sunset: "Mặt trời lặn {t}",
  sched_sunrise: "Mặt trời mọc {t}",
  sched_lamps: "{n} đèn",
  sched_overridden: "{n} đèn theo lịch khác",
  sched_level_now: "Hiện tại {level} %",
  sched_next: "tiếp theo: {level} % lúc {t}",
  sched_last: "Đã gửi gần nhất: {step} ({level} %) tới {n} đèn, {t}",
  sched_never_sent: "Chưa gửi lệnh nào",
  sched_energy: "Điện năng, 7 ngày qua",
  sched_energy_saved: "Tiết kiệm {kwh} kWh ({pct} %) so với sáng 100 % cả đêm ({full} kWh)",
  sched_energy_none: "Chưa có số liệu công suất từ các đèn",
  sched_energy_planned: "Dự kiến đêm nay: tiết kiệm {pct} %",
  sched_energy_lamps: "đo tại {m}/{n} đèn",
  sched_fix: "Vui lòng sửa:",
  sched_exception_tonight: "Đêm nay theo ngoại lệ “{name}”",
});

// JSON to the API; a refusal keeps the problem document (its errors name the fields).
async function send(path, method, body) {
  const resp = await fetch(path, {
    method, headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = new ApiError(resp.status, data?.detail ?? `${resp.status} ${resp.statusText}`);
    err.problem = data;
    throw err;
  }
  return data;
}

const REFRESH_MS = 15000;
const AT_RE = /^(dusk|dawn)(?:([+-])(\d+(?:\.\d+)?)(s|m|h))?$/;
const UNIT_MIN = { s: 1 / 60, m: 1, h: 60 };
const DEFAULT_STEPS = [
  { kind: "dusk", offset: 10, time: "18:00", level: 100 },
  { kind: "clock", offset: 0, time: "23:00", level: 50 },
  { kind: "clock", offset: 0, time: "05:00", level: 100 },
  { kind: "dawn", offset: -10, time: "06:00", level: 0 },
];

// "dusk+10m" → {kind: "dusk", offset: 10}; "23:00" → {kind: "clock", time: "23:00"}
export function parseAt(at) {
  const m = AT_RE.exec(at);
  if (m) {
    const minutes = m[2] ? Number(m[3]) * UNIT_MIN[m[4]] * (m[2] === "-" ? -1 : 1) : 0;
    return { kind: m[1], offset: Math.round(minutes * 100) / 100, time: m[1] === "dusk" ? "18:00" : "06:00" };
  }
  return { kind: "clock", offset: 0, time: at };
}

export function formatAt(step) {
  if (step.kind === "clock") return step.time;
  const off = Number(step.offset) || 0;
  if (!off) return step.kind;
  return `${step.kind}${off > 0 ? "+" : "-"}${Math.abs(off)}m`;
}

function stepLabel(at) {
  const s = parseAt(at);
  if (s.kind === "clock") return s.time;
  const name = s.kind === "dusk" ? t("sched_dusk").split(" (")[0] : t("sched_dawn").split(" (")[0];
  return s.offset ? `${name} ${s.offset > 0 ? "+" : "−"}${Math.abs(s.offset)}′` : name;
}

export class SchedulesPanel {
  constructor({ canEdit }) {
    this.canEdit = canEdit;
    this.root = null;
    this.button = null;
    this.list = [];
    this.timezone = "Asia/Ho_Chi_Minh";
    this.energy = new Map();
    this.draft = null; // the schedule being edited, or null for the list
    this.problems = [];
    this.wards = null;
    this.cabinets = null;
    this.preview = null;
    this.previewTimer = null;
    this.previewSeq = 0;
    onLangChange(() => {
      if (this.button) this.button.textContent = t("sched_open");
      if (this.root && !this.root.hidden) this.render();
    });
  }

  // The opening button goes into the top bar; the panel over the map's left side.
  mount(bar, mapWrap) {
    this.button = h("button.btn.small", {
      id: "sched-open", type: "button", "aria-expanded": "false", "aria-controls": "schedules-panel",
      onclick: () => (this.root.hidden ? this.open() : this.close()),
    }, t("sched_open"));
    bar.prepend(this.button);
    this.root = h("section.sched-panel", {
      id: "schedules-panel", role: "region", "aria-labelledby": "sched-title", hidden: true,
    });
    mapWrap.append(this.root);
    return this;
  }

  async open() {
    clearInterval(this.refreshTimer);
    // the step in force and the last one sent move on by themselves: look again now and then
    this.refreshTimer = setInterval(() => {
      if (!this.root.hidden && !this.draft && !document.hidden) this.load({ quiet: true });
    }, REFRESH_MS);
    this.root.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    this.button.classList.add("active");
    this.draft = null;
    await this.load();
  }

  close() {
    clearInterval(this.refreshTimer);
    this.root.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
    this.button.classList.remove("active");
  }

  async load({ quiet = false } = {}) {
    if (!quiet) this.renderShell(h("div.empty", t("loading")));
    try {
      const data = await api("/api/v1/schedules");
      this.list = data.schedules ?? [];
      this.timezone = data.timezone ?? this.timezone;
    } catch (err) {
      if (!quiet) this.renderShell(h("div.empty.error", err.message));
      return;
    }
    if (this.draft) return; // the editor opened meanwhile
    this.render();
    if (!quiet) await Promise.all(this.list.map((s) => this.loadEnergy(s.id)));
    // A schedule just saved has its step in force sent within a moment: show it when it is.
    if (this.list.some((s) => s.enabled && !s.last_step && s.status?.lamps)) {
      clearTimeout(this.soonTimer);
      this.soonTimer = setTimeout(() => this.load({ quiet: true }), 1500);
    }
  }

  async loadEnergy(id) {
    try {
      this.energy.set(id, await api(`/api/v1/schedules/${encodeURIComponent(id)}/energy?days=7`));
    } catch (err) {
      this.energy.set(id, { error: err.message });
    }
    const card = this.root.querySelector(`.sched-card[data-schedule="${CSS.escape(id)}"] .sched-energy`);
    if (card) card.replaceWith(this.energyBlock(id));
  }

  // ------------------------------------------------------------ rendering
  renderShell(...body) {
    const head = h("div.sched-head",
      h("h2", { id: "sched-title" }, t("sched_title")),
      h("div.sched-head-buttons",
        this.canEdit && !this.draft ? h("button.btn.primary.small", {
          type: "button", onclick: () => this.edit(null),
        }, t("sched_new")) : null,
        h("button.icon", { type: "button", "aria-label": t("sched_close"), title: t("sched_close"),
          onclick: () => this.close() }, "×")));
    this.root.replaceChildren(head, h("div.sched-body", ...body));
  }

  render() {
    if (this.draft) {
      this.renderEditor();
      return;
    }
    if (!this.list.length) {
      this.renderShell(h("p.empty", t("sched_none")));
      return;
    }
    this.renderShell(...this.list.map((s) => this.card(s)));
  }

  targetText(target) {
    if (target.ward) {
      const codes = [].concat(target.ward);
      const names = codes.map((c) => this.wards?.find((w) => w.code === c)?.name ?? c);
      return `${t("sched_target_ward")}: ${names.join(", ")}`;
    }
    if (target.parent) return `${t("sched_target_parent")}: ${[].concat(target.parent).join(", ")}`;
    if (target.devices) {
      const ids = target.devices;
      return `${t("sched_target_devices")}: ${ids.slice(0, 4).join(", ")}${ids.length > 4 ? ` … (${ids.length})` : ""}`;
    }
    return JSON.stringify(target);
  }

  clock(iso) {
    return new Date(iso).toLocaleTimeString(lang() === "vi" ? "vi-VN" : "en-GB",
      { hour: "2-digit", minute: "2-digit", timeZone: this.timezone });
  }

  when(iso) {
    return new Date(iso).toLocaleString(lang() === "vi" ? "vi-VN" : "en-GB",
      { day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit", timeZone: this.timezone });
  }

  card(s) {
    const st = s.status ?? {};
    const steps = h("ol.sched-steps", ...s.steps.map((step) => h("li",
      h("span.sched-at", stepLabel(step.at)), h("span.sched-lv", `${fmtNumber(step.level)} %`))));
    const facts = [h("span.chip", t("sched_lamps", { n: fmtNumber(st.lamps ?? 0) }))];
    if (st.overridden) facts.push(h("span.chip", t("sched_overridden", { n: st.overridden })));
    if (st.level_now !== undefined) facts.push(h("span.chip.sched-now", t("sched_level_now", { level: fmtNumber(st.level_now) })));
    if (st.next) facts.push(h("span.sched-next", t("sched_next", { level: fmtNumber(st.next.level), t: this.clock(st.next.at) })));
    const last = s.last_step
      ? t("sched_last", { step: stepLabel(s.last_step.step), level: fmtNumber(s.last_step.level),
        n: fmtNumber(s.last_step.devices), t: this.when(s.last_applied_at) })
      : t("sched_never_sent");
    const exc = s.exceptions.length
      ? h("div.sched-exc", `${t("sched_exceptions")}: `, s.exceptions.map((e) => e.name || e.date || `${e.from}–${e.to}`).join(", "))
      : null;
    return h("article.sched-card", { dataset: { schedule: s.id }, "aria-label": s.name },
      h("div.sched-card-head",
        h("h3.sched-name", s.name),
        h(`span.chip${s.enabled ? ".status-online" : ".status-offline"}`, s.enabled ? t("sched_enabled") : t("sched_disabled")),
        this.canEdit ? h("div.sched-actions",
          h("button.btn.small", { type: "button", "aria-label": `${t("sched_edit")} ${s.name}`, onclick: () => this.edit(s) }, t("sched_edit")),
          h("button.btn.small.danger", { type: "button", "aria-label": `${t("sched_delete")} ${s.name}`,
            onclick: (ev) => this.remove(s, ev.currentTarget) }, t("sched_delete"))) : null),
      h("div.sched-target", this.targetText(s.target)),
      steps,
      h("div.sched-facts", ...facts),
      st.error ? h("div.sched-error", st.error) : null,
      exc,
      h("div.sched-last", last),
      this.energyBlock(s.id));
  }

  energyBlock(id) {
    const e = this.energy.get(id);
    const box = h("div.sched-energy", h("div.sched-energy-title", t("sched_energy")));
    if (!e) return box;
    if (e.error) {
      box.append(h("div.sched-error", e.error));
      return box;
    }
    if (e.measured_lamps > 0 && e.saved_pct !== null) {
      const usedShare = e.full_kwh > 0 ? Math.max(0, Math.min(1, e.used_kwh / e.full_kwh)) : 1;
      const bar = h("div.sched-energy-bar", { role: "img",
        "aria-label": t("sched_energy_saved", { kwh: fmtNumber(e.saved_kwh, 1), pct: fmtNumber(e.saved_pct, 1), full: fmtNumber(e.full_kwh, 1) }) },
      h("span.used"));
      bar.firstChild.style.width = `${(usedShare * 100).toFixed(1)}%`;
      box.append(bar,
        h("div.sched-energy-text", t("sched_energy_saved", { kwh: fmtNumber(e.saved_kwh, 1), pct: fmtNumber(e.saved_pct, 1), full: fmtNumber(e.full_kwh, 1) })),
        h("div.sched-energy-sub", t("sched_energy_lamps", { m: e.measured_lamps, n: e.lamps })));
    } else {
      box.append(h("div.sched-energy-sub", t("sched_energy_none")));
    }
    if (e.planned_saved_pct !== undefined) {
      box.append(h("div.sched-energy-sub", t("sched_energy_planned", { pct: fmtNumber(e.planned_saved_pct, 1) })));
    }
    return box;
  }

  async remove(s, button) {
    if (button.dataset.confirm !== "1") {
      button.dataset.confirm = "1";
      button.textContent = t("sched_delete_confirm", { name: s.name });
      button.setAttribute("aria-label", button.textContent);
      return;
    }
    try {
      await api(`/api/v1/schedules/${encodeURIComponent(s.id)}`, { method: "DELETE" });
      toast(t("sched_deleted", { name: s.name }), "ok");
    } catch (err) {
      toast(err.message, "error");
    }
    await this.load();
  }

  // ------------------------------------------------------------ the editor
  async edit(s) {
    await this.loadChoices();
    const target = s?.target ?? {};
    const kind = target.parent ? "parent" : target.devices ? "devices" : "ward";
    const value = kind === "devices" ? (target.devices ?? []).join(", ")
      : [].concat(target[kind] ?? [])[0] ?? (kind === "ward" ? this.wards?.[0]?.code ?? "" : "");
    this.draft = {
      id: s?.id ?? null,
      name: s?.name ?? "",
      enabled: s?.enabled ?? true,
      priority: s?.priority ?? 0,
      targetKind: kind,
      targetValue: value,
      steps: s ? s.steps.map((st) => ({ ...parseAt(st.at), level: st.level })) : DEFAULT_STEPS.map((st) => ({ ...st })),
      exceptions: (s?.exceptions ?? []).map((e) => this.exceptionDraft(e)),
    };
    this.problems = [];
    this.preview = null;
    this.renderEditor();
    this.schedulePreview(0);
  }

  exceptionDraft(e) {
    const simple = e.steps.length === 2 && e.steps[0].at === "dusk" && e.steps[1].at === "dawn" && e.steps[1].level === 0;
    const yearly = e.date && e.date.length === 5;
    return {
      name: e.name ?? "",
      from: yearly ? "" : e.date ?? e.from ?? "",
      to: yearly ? "" : e.date ?? e.to ?? "",
      level: simple ? e.steps[0].level : 100,
      raw: simple && !yearly ? null : e, // kept as it is: steps or dates this form does not edit
    };
  }

  async loadChoices() {
    if (!this.wards) {
      try {
        this.wards = (await api("/api/v1/wards/summary")).wards.map((w) => ({ code: w.code, name: w.name }))
          .sort((a, b) => a.name.localeCompare(b.name, "vi"));
      } catch {
        this.wards = [];
      }
    }
    if (!this.cabinets) {
      try {
        const fc = await api("/api/v1/devices?kind=lighting_cabinet&limit=5000");
        this.cabinets = (fc.features ?? []).map((f) => ({ id: f.id, name: f.properties?.name ?? f.id }));
      } catch {
        this.cabinets = [];
      }
    }
  }

  body() {
    const d = this.draft;
    const target = {};
    if (d.targetKind === "devices") {
      target.devices = d.targetValue.split(",").map((x) => x.trim()).filter(Boolean);
    } else {
      target[d.targetKind] = d.targetValue;
    }
    const out = {
      name: d.name.trim(), enabled: d.enabled, priority: Number(d.priority) || 0, target,
      steps: d.steps.map((s) => ({ at: formatAt(s), level: Number(s.level) })),
      exceptions: d.exceptions.map((e) => {
        if (e.raw) return e.raw;
        const steps = [{ at: "dusk", level: Number(e.level) }, { at: "dawn", level: 0 }];
        const dates = e.from && e.from === e.to ? { date: e.from } : { from: e.from, to: e.to };
        return { name: e.name, ...dates, steps };
      }),
    };
    if (d.id) out.id = d.id;
    return out;
  }

  field(label, control, fieldName, extra = "") {
    const id = `sched-f-${fieldName.replace(/[^\w]/g, "-")}`;
    control.id = id;
    control.dataset.field = fieldName;
    if (this.problems.some((p) => p.field === fieldName)) control.setAttribute("aria-invalid", "true");
    return h(`div.sched-field${extra}`, h("label", { for: id }, label), control);
  }

  renderEditor() {
    const d = this.draft;
    const input = (value, oninput, attrs = {}) => h("input", { value, ...attrs, oninput: (ev) => {
      oninput(ev.target.value);
      this.schedulePreview();
    } });
    const kindSelect = h("select", { onchange: (ev) => {
      d.targetKind = ev.target.value;
      d.targetValue = d.targetKind === "ward" ? this.wards[0]?.code ?? "" : d.targetKind === "parent" ? this.cabinets[0]?.id ?? "" : "";
      this.renderEditor();
      this.schedulePreview();
    } }, ...["ward", "parent", "devices"].map((k) => h("option", { value: k, selected: d.targetKind === k }, t(`sched_target_${k}`))));
    let valueControl;
    if (d.targetKind === "ward") {
      valueControl = h("select", { onchange: (ev) => { d.targetValue = ev.target.value; this.schedulePreview(); } },
        ...this.wards.map((w) => h("option", { value: w.code, selected: d.targetValue === w.code }, `${w.name} (${w.code})`)));
    } else if (d.targetKind === "parent") {
      valueControl = h("select", { onchange: (ev) => { d.targetValue = ev.target.value; this.schedulePreview(); } },
        ...this.cabinets.map((c) => h("option", { value: c.id, selected: d.targetValue === c.id }, c.id)));
    } else {
      valueControl = input(d.targetValue, (v) => { d.targetValue = v; }, { placeholder: t("sched_devices_hint") });
    }

    const steps = d.steps.map((s, i) => {
      const n = i + 1;
      const when = h("select", { "aria-label": `${t("sched_step", { n })}: ${t("sched_when")}`, dataset: { field: `steps[${i}].at` },
        onchange: (ev) => {
          s.kind = ev.target.value;
          this.renderEditor();
          this.schedulePreview();
        } }, ...["dusk", "dawn", "clock"].map((k) => h("option", { value: k, selected: s.kind === k }, t(`sched_${k}`))));
      const at = s.kind === "clock"
        ? input(s.time, (v) => { s.time = v; }, { inputmode: "numeric", placeholder: "HH:MM", maxlength: "5", "aria-label": `${t("sched_step", { n })}: ${t("sched_time")}`, dataset: { field: `steps[${i}].at` } })
        : input(String(s.offset), (v) => { s.offset = v; }, { type: "number", step: "1", min: "-360", max: "360",
          "aria-label": `${t("sched_step", { n })}: ${t("sched_offset")}`, dataset: { field: `steps[${i}].at` } });
      const level = input(String(s.level), (v) => { s.level = v; }, { type: "number", min: "0", max: "100", step: "1",
        "aria-label": `${t("sched_step", { n })}: ${t("sched_level")}`, dataset: { field: `steps[${i}].level` } });
      for (const el of [when, at, level]) {
        if (this.problems.some((p) => p.field === el.dataset.field)) el.setAttribute("aria-invalid", "true");
      }
      return h("tr",
        h("th", { scope: "row" }, String(n)), h("td", when), h("td", at), h("td", level),
        h("td", h("button.icon", { type: "button", "aria-label": t("sched_remove_step", { n }), title: t("sched_remove_step", { n }),
          disabled: d.steps.length <= 1, onclick: () => {
            d.steps.splice(i, 1);
            this.renderEditor();
            this.schedulePreview();
          } }, "−")));
    });
    const stepTable = h("table.sched-step-table",
      h("thead", h("tr", h("th", "#"), h("th", t("sched_when")), h("th", `${t("sched_offset")} / ${t("sched_time")}`),
        h("th", t("sched_level")), h("th", h("span.sr-only", t("sched_remove_step", { n: "" }))))),
      h("tbody", ...steps));

    const exceptions = d.exceptions.map((e, i) => {
      const n = i + 1;
      const label = (key) => `${t("sched_exception", { n })}: ${t(key)}`;
      const row = h("div.sched-exc-row", { dataset: { field: `exceptions[${i}]` } },
        input(e.name, (v) => { e.name = v; if (e.raw) e.raw = { ...e.raw, name: v }; }, { "aria-label": label("sched_exc_name"), placeholder: t("sched_exc_name") }));
      if (e.raw) {
        row.append(h("span.sched-exc-custom", t("sched_exc_custom", {
          steps: e.raw.steps.map((s) => `${stepLabel(s.at)} ${s.level} %`).join(", "),
        })));
      } else {
        row.append(
          // ISO dates typed out: a date picker shows 02/05/2027 as the browser's own locale
          // wants it, the 2nd of May to some and the 5th of February to others.
          input(e.from, (v) => { e.from = v; }, { placeholder: "YYYY-MM-DD", maxlength: "10", "aria-label": label("sched_exc_from"), dataset: { field: `exceptions[${i}].from` } }),
          input(e.to, (v) => { e.to = v; }, { placeholder: "YYYY-MM-DD", maxlength: "10", "aria-label": label("sched_exc_to"), dataset: { field: `exceptions[${i}].to` } }),
          input(String(e.level), (v) => { e.level = v; }, { type: "number", min: "0", max: "100", step: "1", "aria-label": label("sched_exc_level") }));
      }
      row.append(h("button.icon", { type: "button", "aria-label": t("sched_remove_exception", { n }), title: t("sched_remove_exception", { n }),
        onclick: () => {
          d.exceptions.splice(i, 1);
          this.renderEditor();
          this.schedulePreview();
        } }, "−"));
      return row;
    });

    const problems = this.problems.length ? h("div.sched-problems", { role: "alert" },
      h("strong", t("sched_fix")), h("ul", ...this.problems.map((p) => h("li", `${this.fieldLabel(p.field)}: ${p.reason}`)))) : null;

    const enabled = h("input", { type: "checkbox", checked: d.enabled, onchange: (ev) => { d.enabled = ev.target.checked; } });
    const form = h("form.sched-form", { novalidate: true, onsubmit: (ev) => {
      ev.preventDefault();
      this.save();
    } },
    problems,
    h("div.sched-grid",
      this.field(t("sched_name"), input(d.name, (v) => { d.name = v; }, { maxlength: "200", required: true }), "name", ".wide"),
      this.field(t("sched_target_kind"), kindSelect, "target_kind"),
      this.field(t(`sched_target_${d.targetKind}`), valueControl, "target"),
      this.field(t("sched_priority"), input(String(d.priority), (v) => { d.priority = v; }, { type: "number", min: "-100", max: "100", step: "1" }), "priority"),
      h("label.sched-check", enabled, t("sched_enabled"))),
    h("h3", t("sched_steps")),
    stepTable,
    h("button.btn.small", { type: "button", onclick: () => {
      const last = d.steps[d.steps.length - 1];
      d.steps.push({ kind: "clock", offset: 0, time: last?.kind === "clock" ? last.time : "22:00", level: 50 });
      this.renderEditor();
      this.schedulePreview();
    } }, `+ ${t("sched_add_step")}`),
    h("h3", t("sched_preview")),
    h("div.sched-preview", this.previewBlock()),
    h("h3", t("sched_exceptions")),
    ...exceptions,
    h("button.btn.small", { type: "button", onclick: () => {
      d.exceptions.push({ name: "", from: "", to: "", level: 100, raw: null });
      this.renderEditor();
    } }, `+ ${t("sched_add_exception")}`),
    h("div.sched-form-buttons",
      h("button.btn.primary", { type: "submit" }, t("sched_save")),
      h("button.btn", { type: "button", onclick: () => {
        this.draft = null;
        this.render();
      } }, t("sched_cancel"))));
    this.renderShell(form);
  }

  fieldLabel(field) {
    let m = /^steps\[(\d+)\]\.(at|level)$/.exec(field);
    if (m) return `${t("sched_step", { n: Number(m[1]) + 1 })} · ${m[2] === "at" ? t("sched_when") : t("sched_level")}`;
    m = /^exceptions\[(\d+)\](?:\.(\w+))?/.exec(field);
    if (m) return `${t("sched_exception", { n: Number(m[1]) + 1 })}${m[2] ? ` · ${m[2]}` : ""}`;
    const known = { name: "sched_name", target: "sched_target", steps: "sched_steps", priority: "sched_priority" };
    return known[field] ? t(known[field]) : field;
  }

  async save() {
    const d = this.draft;
    const body = this.body();
    try {
      const saved = d.id
        ? await send(`/api/v1/schedules/${encodeURIComponent(d.id)}`, "PUT", body)
        : await send("/api/v1/schedules", "POST", body);
      toast(t("sched_saved", { name: saved.name }), "ok");
      this.draft = null;
      this.problems = [];
      await this.load();
    } catch (err) {
      this.problems = err.problem?.errors ?? [{ field: "(body)", reason: err.message }];
      this.renderEditor();
      this.root.querySelector(".sched-problems")?.scrollIntoView({ block: "nearest" });
    }
  }

  // ------------------------------------------------------------ preview of the night
  schedulePreview(delay = 400) {
    clearTimeout(this.previewTimer);
    this.previewTimer = setTimeout(() => this.loadPreview(), delay);
  }

  async loadPreview() {
    if (!this.draft) return;
    const seq = ++this.previewSeq;
    const b = this.body();
    const req = { steps: b.steps };
    if (b.exceptions.length) req.exceptions = b.exceptions;
    const tv = Object.values(b.target)[0];
    if (tv && tv.length) req.target = b.target;
    let result;
    try {
      result = await api("/api/v1/schedules/preview", { method: "POST", body: req });
    } catch (err) {
      result = { error: err.message };
    }
    if (seq !== this.previewSeq || !this.draft) return;
    this.preview = result;
    const box = this.root.querySelector(".sched-preview");
    if (box) box.replaceChildren(this.previewBlock());
  }

  previewBlock() {
    const p = this.preview;
    if (!p) return h("div.empty", t("loading"));
    if (p.error) return h("div.sched-error", p.error);
    return h("div", this.timeline(p),
      h("div.sched-preview-text",
        h("span", t("sched_sunset", { t: this.clock(p.sunset) })),
        h("span", t("sched_sunrise", { t: this.clock(p.sunrise) })),
        h("strong", t("sched_preview_saves", { used: fmtNumber(p.energy_share * 100, 1), saved: fmtNumber(p.saved_pct, 1) }))),
      p.exception ? h("div.sched-energy-sub", t("sched_exception_tonight", { name: p.exception })) : null);
  }

  // The night from 15:00 to 09:00 local: the level as a filled step line, sunset and
  // sunrise marked. SVG drawn here (no chart library for one shape).
  timeline(p) {
    const NS = "http://www.w3.org/2000/svg";
    const W = 640;
    const H = 122;
    const top = 22; // sunset and sunrise are named above the plot, clear of the line
    const bottom = 96;
    const sunset = Date.parse(p.sunset);
    const sunrise = Date.parse(p.sunrise);
    const start = sunset - 3 * 3600e3;
    const end = sunrise + 3 * 3600e3;
    const pad = 18; // room for the first and last hour labels
    const x = (ms) => pad + ((Math.min(Math.max(ms, start), end) - start) / (end - start)) * (W - 2 * pad);
    const y = (level) => bottom - ((bottom - top) * level) / 100;
    const el = (name, attrs, text) => {
      const node = document.createElementNS(NS, name);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      return node;
    };
    const steps = p.steps.map((s) => ({ at: Date.parse(s.start), level: s.level }));
    const before = steps.length ? steps[steps.length - 1].level : 0; // last night's last step
    let d = `M${pad},${y(before)}`;
    let level = before;
    for (const s of steps) {
      d += ` L${x(s.at).toFixed(1)},${y(level)} L${x(s.at).toFixed(1)},${y(s.level)}`;
      level = s.level;
    }
    d += ` L${W - pad},${y(level)}`;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "sched-timeline", role: "img",
      "aria-label": `${t("sched_preview")}: ${p.steps.map((s) => `${this.clock(s.start)} ${s.level} %`).join(", ")}` });
    svg.append(el("rect", { x: x(sunset), y: top, width: Math.max(0, x(sunrise) - x(sunset)), height: bottom - top, class: "night" }));
    for (const lv of [0, 50, 100]) {
      svg.append(el("line", { x1: pad, x2: W - pad, y1: y(lv), y2: y(lv), class: "grid" }));
      svg.append(el("text", { x: W - pad - 2, y: y(lv) - 2, class: "tick", "text-anchor": "end" }, `${lv}%`));
    }
    svg.append(el("path", { d: `${d} L${W - pad},${bottom} L${pad},${bottom} Z`, class: "area" }));
    svg.append(el("path", { d, class: "line" }));
    // hour ticks every three hours, at local whole hours
    const hour = 3600e3;
    for (let ms = Math.ceil(start / hour) * hour; ms <= end; ms += hour) {
      const label = this.clock(new Date(ms).toISOString());
      if (!/^(00|03|06|09|12|15|18|21)/.test(label)) continue;
      svg.append(el("line", { x1: x(ms), x2: x(ms), y1: bottom, y2: bottom + 4, class: "grid" }));
      svg.append(el("text", { x: x(ms), y: bottom + 16, class: "tick", "text-anchor": "middle" }, label));
    }
    for (const [ms, key, anchor, dx] of [[sunset, "sched_sunset", "start", 4], [sunrise, "sched_sunrise", "end", -4]]) {
      svg.append(el("line", { x1: x(ms), x2: x(ms), y1: top - 12, y2: bottom, class: "sunline" }));
      svg.append(el("text", { x: x(ms) + dx, y: top - 9, class: "sun", "text-anchor": anchor },
        t(key, { t: this.clock(new Date(ms).toISOString()) })));
    }
    return svg;
  }
}
