// The alarm store (REST load, then live transitions from the websocket) and the alarm
// panel: most severe first, newest first within a severity, unacknowledged ones marked;
// acknowledge, shelve and assign in place. The crew loop (issue 18): the crew's work state
// as a badge, its latest note and photo on the card, Close once the work is done or the
// condition is over, and a "Closed" filter whose alarms can be reopened.

import { alarmMessage } from "./alarmtext.js";
import { api, fmtTime, h, listOf, SEVERITY_RANK, timeAgo, toast } from "./common.js";
import { addStrings, alarmStateLabel, onLangChange, severityLabel, t } from "./i18n.js";

addStrings({
  alarm_filter_closed: "Closed",
  alarm_close: "Close alarm",
  alarm_reopen: "Reopen",
  alarm_done_close: "Alarm {id} closed",
  alarm_done_reopen: "Alarm {id} reopened",
  alarm_crew_note: "Crew: {note}",
  alarm_photo: "Photo of the crew's work on alarm {id}",
  alarm_photo_close: "Close the photo",
  alarm_closed_at: "closed {t}",
  alarm_no_closed: "No closed alarms",
}, {
  alarm_filter_closed: "Đã đóng",
  alarm_close: "Đóng cảnh báo",
  alarm_reopen: "Mở lại",
  alarm_done_close: "Đã đóng cảnh báo {id}",
  alarm_done_reopen: "Đã mở lại cảnh báo {id}",
  alarm_crew_note: "Đội: {note}",
  alarm_photo: "Ảnh công việc của đội cho cảnh báo {id}",
  alarm_photo_close: "Đóng ảnh",
  alarm_closed_at: "đóng lúc {t}",
  alarm_no_closed: "Không có cảnh báo đã đóng",
});

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
    this.closed = []; // the "Closed" filter's alarms, newest first
    this.crewReports = new Map(); // alarm id -> {key, note, photo}: the crew's latest words
    store.onChange((changed) => {
      if (changed && isOpen(changed)) this.flash.add(String(changed.id));
      this.render();
    });
    onLangChange(() => this.render());
    for (const btn of root.parentElement.querySelectorAll("[data-filter]")) {
      btn.addEventListener("click", async () => {
        this.filter = btn.dataset.filter;
        for (const b of root.parentElement.querySelectorAll("[data-filter]")) {
          b.classList.toggle("active", b === btn);
        }
        if (this.filter === "closed") await this.loadClosed();
        this.render();
      });
    }
    setInterval(() => this.refreshTimes(), 15000);
  }

  async loadClosed() {
    try {
      this.closed = listOf(await api("/api/v1/alarms?state=closed&limit=50"), "alarms");
    } catch (err) {
      toast(err.message, "error");
    }
  }

  visible() {
    if (this.filter === "closed") return this.closed;
    const all = this.store.list();
    if (this.filter === "unacked") return all.filter(unacked);
    if (this.filter === "severe") return all.filter((a) => (SEVERITY_RANK[a.severity] ?? 0) >= 3);
    return all;
  }

  render() {
    const alarms = this.visible();
    const items = alarms.map((a) => this.item(a));
    const empty = this.filter === "closed" ? t("alarm_no_closed") : t("no_alarms");
    this.root.replaceChildren(...(items.length ? items : [h("div.empty", empty)]));
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
    if (a.state === "closed" && a.closed_at) meta.push(t("alarm_closed_at", { t: fmtTime(a.closed_at) }));
    const work = a.work_state;
    const workBadge = work === "in_progress" || work === "done"
      ? h(`span.chip.work-chip.work-${work}`, { dataset: { work } }, t(`work_${work}`)) : null;
    const el = h(`div.${classes.join(".")}`, {
      dataset: { alarmId: id, device: a.device, state: a.state, severity: a.severity, work: work ?? "" },
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
    h("div.alarm-meta", h("span.alarm-state", alarmStateLabel(a.state)), workBadge, ...meta.map((m) => h("span", m))),
    this.crewReport(a),
    this.actions(a));
    return el;
  }

  // The crew's latest note and photo (from the alarm's events), fetched once per version.
  crewReport(a) {
    if (a.work_state !== "in_progress" && a.work_state !== "done") return null;
    const id = String(a.id);
    const key = `${a.updated_at}|${a.work_state}`;
    const known = this.crewReports.get(id);
    if (!known || known.key !== key) {
      if (!known?.loading) {
        this.crewReports.set(id, { ...known, key: known?.key, loading: true });
        api(`/api/v1/alarms/${encodeURIComponent(id)}/events`).then((doc) => {
          const work = listOf(doc, "events").filter((e) => e.event === "work");
          const note = [...work].reverse().find((e) => e.reason)?.reason ?? null;
          const photo = [...work].reverse().find((e) => e.details?.photo)?.details.photo ?? null;
          this.crewReports.set(id, { key, note, photo });
          this.render();
        }).catch(() => this.crewReports.set(id, { key, note: null, photo: null }));
      }
      if (!known?.note && !known?.photo) return null;
    }
    const { note, photo } = this.crewReports.get(id);
    if (!note && !photo) return null;
    const url = photo ? `/api/v1/alarms/${encodeURIComponent(id)}/photos/${photo}.jpg` : null;
    return h("div.alarm-crew",
      url ? h("button.photo-thumb", { type: "button", "aria-label": t("alarm_photo", { id }),
        onclick: () => showPhoto(url, t("alarm_photo", { id })) },
      h("img", { src: url, alt: "", loading: "lazy" })) : null,
      note ? h("span.crew-note", t("alarm_crew_note", { note })) : null);
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
    if (a.state === "closed") {
      row.append(h("button.btn", { dataset: { action: "reopen" }, disabled,
        onclick: () => this.act(a, "reopen", {}, t("alarm_done_reopen", { id })) }, t("alarm_reopen")));
      return row;
    }
    if (a.work_state === "done" || a.active === false) {
      row.append(h("button.btn.primary", { dataset: { action: "close" }, disabled,
        onclick: () => this.act(a, "close", {}, t("alarm_done_close", { id })) }, t("alarm_close")));
    }
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
      const fresh = updated ?? { ...a, ...(await api(`/api/v1/alarms/${encodeURIComponent(a.id)}`)) };
      // the "Closed" list follows: a closed alarm joins it, a reopened one leaves it
      this.closed = this.closed.filter((c) => String(c.id) !== String(fresh.id));
      if (fresh.state === "closed") this.closed.unshift(fresh);
      this.store.upsert(fresh);
      toast(done, "ok");
    } catch (err) {
      toast(t("action_failed", { what: t(action).toLowerCase(), why: err.message }), "error");
    }
  }
}

// A crew's photo, large, in a modal dialog (Escape or the button closes it).
function showPhoto(url, label) {
  const dialog = h("dialog.photo-view", { "aria-label": label },
    h("img", { src: url, alt: label }),
    h("button.btn", { type: "button", onclick: () => dialog.close() }, t("alarm_photo_close")));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}
