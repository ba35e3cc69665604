// The alarm store (REST load, then live transitions from the websocket) and the alarm
// panel: most severe first, newest first within a severity, unacknowledged ones marked;
// acknowledge, shelve and assign in place.

import { alarmMessage } from "./alarmtext.js";
import { api, fmtTime, h, listOf, SEVERITY_RANK, timeAgo, toast } from "./common.js";
import { alarmStateLabel, onLangChange, severityLabel, t } from "./i18n.js";

const OPEN_STATES = ["active_unacked", "active_acked", "rtn_unacked"];
const SHELVE_CHOICES = [15, 60, 240, 480];

export const isOpen = (a) => a.state !== "closed";
export const isShelved = (a) => !!(a.shelved_until && new Date(a.shelved_until) > new Date());
// What counts as open on badges and panels (ISA-18.2): not closed, and not taken out of the
// operator's view by shelving or out of service. The server's twin is counts_as_open in
// server/alarms/views.py (the ward roll-up).
export const countsAsOpen = (a) => isOpen(a) && !isShelved(a) && !a.out_of_service;
const unacked = (a) => a.state === "active_unacked" || a.state === "rtn_unacked";

export class AlarmStore {
  constructor() {
    this.alarms = new Map();
    this.listeners = new Set();
  }

  onChange(fn) {
    this.listeners.add(fn);
  }

  emit(changed) {
    for (const fn of this.listeners) fn(changed);
  }

  async load(query = "") {
    let data;
    try {
      data = await api(`/api/v1/alarms?state=${OPEN_STATES.join(",")}&limit=1000${query}`);
    } catch (err) {
      if (err.status !== 400) throw err;
      data = await api(`/api/v1/alarms?limit=1000${query}`); // an older server: filter here
    }
    this.alarms.clear();
    for (const a of listOf(data, "alarms")) if (isOpen(a)) this.alarms.set(String(a.id), a);
    this.emit(null);
  }

  // The open alarms of another moment (a replay's snapshot): all of them replaced.
  replaceAll(alarms) {
    this.alarms.clear();
    for (const a of alarms) if (isOpen(a)) this.alarms.set(String(a.id), a);
    this.emit(null);
  }

  // A transition from the websocket or an action's answer: the newer version wins.
  upsert(a) {
    const id = String(a.id);
    const prev = this.alarms.get(id);
    if (prev?.updated_at && a.updated_at && new Date(a.updated_at) < new Date(prev.updated_at)) return;
    if (isOpen(a)) this.alarms.set(id, { ...prev, ...a });
    else this.alarms.delete(id);
    this.emit({ ...prev, ...a });
  }

  // Shelved and out-of-service alarms last: they stay listed but do not count as open.
  list() {
    return [...this.alarms.values()].sort((x, y) => countsAsOpen(y) - countsAsOpen(x)
      || (SEVERITY_RANK[y.severity] ?? 0) - (SEVERITY_RANK[x.severity] ?? 0)
      || new Date(y.raised_at) - new Date(x.raised_at));
  }

  // The worst open, unshelved alarm of a device (what its colour on the map shows).
  severityOf(device) {
    let best = null;
    for (const a of this.alarms.values()) {
      if (a.device !== device || isShelved(a) || a.suppressed) continue;
      if (!best || (SEVERITY_RANK[a.severity] ?? 0) > (SEVERITY_RANK[best] ?? 0)) best = a.severity;
    }
    return best;
  }
}

export class AlarmPanel {
  constructor(root, store, { crews, onSelect, canAct }) {
    this.root = root;
    this.store = store;
    this.crews = crews; // () => [{id, name}]
    this.onSelect = onSelect;
    this.canAct = canAct;
    this.filter = "all";
    this.openMenu = null;
    this.selected = null;
    this.flash = new Set();
    this.commenting = null;
    this.drafts = new Map();
    store.onChange((changed) => {
      if (changed && isOpen(changed)) this.flash.add(String(changed.id));
      this.render();
    });
    onLangChange(() => this.render());
    for (const btn of root.parentElement.querySelectorAll("[data-filter]")) {
      btn.addEventListener("click", () => {
        this.filter = btn.dataset.filter;
        for (const b of root.parentElement.querySelectorAll("[data-filter]")) {
          b.classList.toggle("active", b === btn);
        }
        this.render();
      });
    }
    setInterval(() => this.refreshTimes(), 15000);
  }

  visible() {
    const all = this.store.list();
    if (this.filter === "unacked") return all.filter(unacked);
    if (this.filter === "severe") return all.filter((a) => (SEVERITY_RANK[a.severity] ?? 0) >= 3);
    return all;
  }

  render() {
    const alarms = this.visible();
    const items = alarms.map((a) => this.item(a));
    this.root.replaceChildren(...(items.length ? items : [h("div.empty", t("no_alarms"))]));
    this.flash.clear();
  }

  refreshTimes() {
    for (const el of this.root.querySelectorAll("[data-ago]")) el.textContent = timeAgo(el.dataset.ago);
  }

  item(a) {
    const id = String(a.id);
    const classes = ["alarm", a.severity, a.state];
    if (unacked(a)) classes.push("unacked");
    if (isShelved(a)) classes.push("shelved");
    if (a.out_of_service) classes.push("shelved", "oos");
    if (this.flash.has(id)) classes.push("new");
    if (this.selected === id) classes.push("selected");
    const meta = [];
    if (isShelved(a)) meta.push(t("shelved_until", { t: fmtTime(a.shelved_until) }));
    if (a.out_of_service) meta.push(t("alarm_out_of_service"));
    if (a.assigned_crew) meta.push(t("assigned_to", { crew: this.crewName(a.assigned_crew) }));
    if (a.acked_by && !unacked(a)) meta.push(t("acked_by", { who: a.acked_by }));
    if (a.children?.length) meta.push(t("children", { n: a.children.length }));
    const el = h(`div.${classes.join(".")}`, {
      dataset: { alarmId: id, device: a.device, state: a.state, severity: a.severity },
      onclick: (ev) => {
        if (ev.target.closest("button, select, .menu")) return;
        this.select(id);
        this.onSelect?.(a);
      },
    },
    h("div.alarm-head",
      h("span.sev-badge", severityLabel(a.severity)),
      h("span.alarm-device", a.device),
      h("span.alarm-time", { title: fmtTime(a.raised_at, true), dataset: { ago: a.raised_at } },
        timeAgo(a.raised_at))),
    h("div.alarm-msg", { title: a.message || "" }, alarmMessage(a)),
    h("div.alarm-meta", h("span.alarm-state", alarmStateLabel(a.state)), ...meta.map((m) => h("span", m))),
    this.actions(a));
    return el;
  }

  crewName(id) {
    return this.crews().find((c) => c.id === id)?.name ?? id;
  }

  select(id) {
    this.selected = id;
    for (const el of this.root.querySelectorAll(".alarm")) {
      el.classList.toggle("selected", el.dataset.alarmId === id);
    }
    this.root.querySelector(`[data-alarm-id="${CSS.escape(id)}"]`)?.scrollIntoView({ block: "nearest" });
  }

  actions(a) {
    const id = String(a.id);
    const disabled = !this.canAct();
    const row = h("div.alarm-actions");
    if (unacked(a)) {
      row.append(h("button.btn.primary", { dataset: { action: "ack" }, disabled,
        onclick: () => this.act(a, "ack", {}, t("done_ack", { id })) }, t("ack")));
    }
    if (isShelved(a)) {
      row.append(h("button.btn", { dataset: { action: "unshelve" }, disabled,
        onclick: () => this.act(a, "unshelve", {}, t("done_unshelve", { id })) }, t("unshelve")));
    } else {
      const menu = h("div.menu", ...SHELVE_CHOICES.map((m) => h("button.btn.small", {
        dataset: { minutes: m },
        onclick: () => this.act(a, "shelve", { minutes: m }, t("done_shelve", { id, n: m })),
      }, m < 60 ? `${m} ${t("minutes")}` : `${m / 60} h`)));
      row.append(h("span.menu-wrap",
        h("button.btn", { dataset: { action: "shelve" }, disabled,
          onclick: () => this.toggleMenu(menu) }, t("shelve")), menu));
    }
    row.append(h("button.btn", { dataset: { action: "comment" }, disabled: !this.canComment(),
      onclick: () => {
        this.commenting = this.commenting === id ? null : id;
        this.render();
        this.root.querySelector(`[data-alarm-id="${CSS.escape(id)}"] .comment-form input`)?.focus();
      } }, t("comment")));
    const crews = this.crews();
    if (crews.length) {
      const select = h("select.crew-select", { dataset: { action: "assign" }, disabled,
        "aria-label": t("assign_to"),
        onchange: (ev) => {
          const crew = ev.target.value;
          if (crew) this.act(a, "assign", { crew }, t("done_assign", { id, crew: this.crewName(crew) }));
        } },
      h("option", { value: "" }, `${t("assign")}…`),
      ...crews.map((c) => h("option", { value: c.id, selected: c.id === a.assigned_crew },
        `${c.name}${c.ward ? ` · ${c.ward}` : ""}`)));
      row.append(select);
    }
    if (this.commenting !== id) return row;
    // The draft survives re-renders (alarms keep arriving while someone types).
    const input = h("input", { type: "text", maxlength: 2000, value: this.drafts.get(id) ?? "",
      placeholder: t("comment"), oninput: (ev) => this.drafts.set(id, ev.target.value) });
    const form = h("form.comment-form", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        const text = input.value.trim();
        if (!text) return;
        this.commenting = null;
        this.drafts.delete(id);
        await this.act(a, "comment", { text }, t("done_comment", { id }));
      },
    }, input, h("button.btn.small.primary", { type: "submit" }, t("save")));
    return h("div", row, form);
  }

  canComment() {
    return this.canAct();
  }

  toggleMenu(menu) {
    if (this.openMenu && this.openMenu !== menu) this.openMenu.classList.remove("open");
    menu.classList.toggle("open");
    this.openMenu = menu.classList.contains("open") ? menu : null;
  }

  async act(a, action, body, done) {
    try {
      const answer = await api(`/api/v1/alarms/${encodeURIComponent(a.id)}/${action}`, { method: "POST", body });
      const updated = answer && typeof answer === "object" && answer.id !== undefined ? answer : null;
      if (updated) this.store.upsert(updated);
      else this.store.upsert({ ...a, ...(await api(`/api/v1/alarms/${encodeURIComponent(a.id)}`)) });
      toast(done, "ok");
    } catch (err) {
      toast(t("action_failed", { what: t(action).toLowerCase(), why: err.message }), "error");
    }
  }
}
