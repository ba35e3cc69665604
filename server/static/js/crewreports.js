// The citizens' reports assigned to this crew, on the crews' page (issue 14, point 4): where
// and what, the citizen's photos and contact, "Start" (in progress) and "Resolve" with a note
// and an after-photo (made smaller here, cleaned of its metadata by the server like the
// citizens' photos). Kept current by its own websocket subscription to "report" messages
// (the hub sends a crew token only its crew's reports) and a slow poll.

import { api, fmtTime, h, listOf, LiveSocket, timeAgo, toast } from "./common.js";
import { CATEGORY_COLOURS, categoryLabel, reportStatusLabel } from "./citizen.js";
import { addStrings, onLangChange, t } from "./i18n.js";

addStrings({
  crp_title: "Citizens' reports",
  crp_none: "No citizens' report is assigned to your crew.",
  crp_start: "Start",
  crp_resolve: "Resolve",
  crp_note: "What was done (the citizen reads it)",
  crp_photo: "After-photo",
  crp_send: "Mark resolved",
  crp_sending: "Sending…",
  crp_cancel: "Cancel",
  crp_started: "Report #{id}: work started",
  crp_resolved: "Report #{id} resolved",
  crp_failed: "Could not update report #{id}: {why}",
  crp_call: "Call {who}",
  crp_reporters: "{n} citizens reported it",
  crp_photos: "Citizen's photos",
  crp_after: "After",
}, {
  crp_title: "Phản ánh của người dân",
  crp_none: "Không có phản ánh nào được giao cho tổ.",
  crp_start: "Bắt đầu",
  crp_resolve: "Hoàn thành",
  crp_note: "Đã làm gì (người dân sẽ đọc)",
  crp_photo: "Ảnh sau khi xử lý",
  crp_send: "Đánh dấu đã xử lý",
  crp_sending: "Đang gửi…",
  crp_cancel: "Hủy",
  crp_started: "Phản ánh #{id}: đã bắt đầu",
  crp_resolved: "Phản ánh #{id} đã xử lý xong",
  crp_failed: "Không cập nhật được phản ánh #{id}: {why}",
  crp_call: "Gọi {who}",
  crp_reporters: "{n} người dân đã báo",
  crp_photos: "Ảnh của người dân",
  crp_after: "Sau",
});

const POLL_MS = 60000;
const MAX_SIDE = 1600;
const OPEN = ["received", "verified", "assigned", "in_progress"];

class CrewReports {
  constructor(crew) {
    this.crew = crew;
    this.reports = [];
    this.details = new Map(); // id -> photos of the report
    this.resolving = null;
    this.busy = false;
    this.box = h("section.crew-reports", { "aria-labelledby": "crew-reports-title" });
    document.querySelector("#crew-list").after(this.box);
    onLangChange(() => this.render());
  }

  start() {
    this.load();
    const socket = new LiveSocket({ onMessage: (msg) => {
      if (msg.type === "report") this.reloadSoon();
    } });
    socket.subscribe({ reports: true });
    socket.connect();
    setInterval(() => this.load(), POLL_MS);
  }

  reloadSoon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 200);
  }

  async load() {
    try {
      const data = await api("/api/v1/reports?status=all");
      const day = Date.now() - 86400e3;
      this.reports = listOf(data, "reports").filter((r) => r.crew === this.crew
        && (OPEN.includes(r.status) || new Date(r.updated_at).getTime() > day));
      await Promise.all(this.reports.filter((r) => !this.details.has(r.id)).map(async (r) => {
        const d = await api(`/api/v1/reports/${r.id}`);
        this.details.set(r.id, d);
      }));
      if (!this.busy) this.render();
    } catch (err) {
      console.warn("crew reports:", err.message);
    }
  }

  render() {
    const open = this.reports.filter((r) => OPEN.includes(r.status));
    const done = this.reports.filter((r) => !OPEN.includes(r.status));
    this.box.replaceChildren(h("h2", { id: "crew-reports-title" }, t("crp_title")),
      ...(this.reports.length ? [...open, ...done].map((r) => this.card(r)) : [h("div.empty", t("crp_none"))]));
  }

  card(r) {
    const id = String(r.id);
    const d = this.details.get(r.id);
    const [lat, lon] = [r.lat, r.lon].map((v) => +Number(v).toFixed(6));
    const links = [
      h("a", { href: `/#map=18/${lat}/${lon}`, target: "_blank", rel: "noopener" }, t("open_map")),
      h("a", { href: `geo:${lat},${lon}?q=${lat},${lon}(${encodeURIComponent(`#${id}`)})` }, t("navigate")),
    ];
    if (r.contact && /^[+\d][\d\s.-]{5,}$/.test(r.contact)) {
      links.push(h("a", { href: `tel:${r.contact.replace(/[^\d+]/g, "")}` }, t("crp_call", { who: r.contact })));
    } else if (r.contact) {
      links.push(h("span", r.contact));
    }
    const before = (d?.photos ?? []).filter((p) => !(d.after ?? []).includes(p));
    const photos = (title, urls) => (urls.length ? h("div.rp-photos", h("h4", title),
      ...urls.map((u, i) => h("a", { href: u, target: "_blank", rel: "noopener" },
        h("img", { src: u, alt: `${title} ${i + 1}`, loading: "lazy" })))) : null);
    const buttons = [];
    if (r.status === "assigned") {
      buttons.push(h("button.btn.go", { type: "button", dataset: { reportAction: "start" },
        onclick: () => this.act(r, "start") }, t("crp_start")));
    }
    if (OPEN.includes(r.status) && this.resolving !== id) {
      buttons.push(h("button.btn.finish", { type: "button", dataset: { reportAction: "resolve" },
        onclick: () => {
          this.resolving = id;
          this.render();
          this.box.querySelector(`[data-report-id="${id}"] textarea`)?.focus();
        } }, t("crp_resolve")));
    }
    return h(`article.crew-report.st-${r.status}`, { dataset: { reportId: id, status: r.status } },
      h("div.job-head",
        h("span.rp-dot", { style: { background: CATEGORY_COLOURS[r.category] ?? "#868e96" } }),
        h("strong", categoryLabel(r.category)), h("span.rp-id", `#${id}`),
        h("span.job-time", { title: fmtTime(r.created_at, true) }, timeAgo(r.created_at))),
      h("div.rp-meta", h(`span.rp-status.st-${r.status}`, reportStatusLabel(r.status)),
        r.reporters > 1 ? h("span.rp-reporters", t("crp_reporters", { n: r.reporters })) : null),
      h("div.rp-desc", r.description ?? ""),
      h("div.job-links", ...links),
      photos(t("crp_photos"), before) ?? "", photos(t("crp_after"), d?.after ?? []) ?? "",
      buttons.length ? h("div.job-buttons", ...buttons) : null,
      this.resolving === id ? this.resolveForm(r) : null);
  }

  // The same form element across re-renders (a report message re-renders the list while the
  // crew types): the note and the chosen photo stay.
  resolveForm(r) {
    const id = String(r.id);
    if (this.form?.dataset.reportId !== id) this.form = this.buildForm(r);
    return this.form;
  }

  buildForm(r) {
    const id = String(r.id);
    const note = h("textarea", { name: "note", rows: 3, required: true, maxlength: 4000, id: `crp-note-${id}` });
    const file = h("input", { type: "file", name: "photo", accept: "image/*", capture: "environment",
      id: `crp-photo-${id}` });
    const send = h("button.btn.primary", { type: "submit", dataset: { reportAction: "resolve-send" } }, t("crp_send"));
    return h("form", { dataset: { reportId: id }, onsubmit: async (ev) => {
      ev.preventDefault();
      if (!note.value.trim()) return;
      send.disabled = true;
      send.textContent = t("crp_sending");
      this.busy = true;
      try {
        const form = new FormData();
        form.append("note", note.value.trim());
        for (const f of file.files) form.append("photo", await shrink(f), "after.jpg");
        await post(`/api/v1/reports/${id}/resolve`, form);
        this.resolving = null;
        this.form = null;
        this.details.delete(r.id);
        toast(t("crp_resolved", { id }), "ok");
      } catch (err) {
        toast(t("crp_failed", { id, why: err.message }), "error");
        send.disabled = false;
        send.textContent = t("crp_send");
      } finally {
        this.busy = false;
      }
      await this.load();
    } },
    h("label", { for: `crp-note-${id}` }, t("crp_note")), note,
    h("label", { for: `crp-photo-${id}` }, t("crp_photo")), file,
    h("div.job-buttons", send, h("button.btn", { type: "button", onclick: () => {
      this.resolving = null;
      this.form = null;
      this.render();
    } }, t("crp_cancel"))));
  }

  async act(r, action) {
    try {
      await api(`/api/v1/reports/${r.id}/${action}`, { method: "POST", body: {} });
      toast(t("crp_started", { id: r.id }), "ok");
    } catch (err) {
      toast(t("crp_failed", { id: r.id, why: err.message }), "error");
    }
    await this.load();
  }
}

// multipart/form-data with the session cookie; the problem's detail as the error's message.
async function post(path, form) {
  const resp = await fetch(path, { method: "POST", body: form, headers: { Accept: "application/json" } });
  const doc = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(doc?.detail ?? `${resp.status} ${resp.statusText}`);
  return doc;
}

// A phone camera's picture made at most MAX_SIDE pixels on a side (a JPEG) before it goes out.
async function shrink(file) {
  let bmp;
  try {
    bmp = await createImageBitmap(file);
  } catch {
    return file; // the server checks it and says what is wrong
  }
  const scale = Math.min(1, MAX_SIDE / Math.max(bmp.width, bmp.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bmp.width * scale));
  canvas.height = Math.max(1, Math.round(bmp.height * scale));
  canvas.getContext("2d").drawImage(bmp, 0, 0, canvas.width, canvas.height);
  bmp.close?.();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  return blob ?? file;
}

// The stylesheet comes with the module, so the page's HTML stays as it is.
function addStyles() {
  if (document.querySelector('link[href^="/static/reports.css"]')) return;
  document.head.append(h("link", { rel: "stylesheet", href: "/static/reports.css" }));
}

// Starts once crew.js knows whose page this is (window.iocCrew, set after sign-in).
function whenCrewKnown() {
  const crew = window.iocCrew?.crew;
  if (!crew) {
    setTimeout(whenCrewKnown, 250);
    return;
  }
  addStyles();
  const panel = new CrewReports(crew);
  window.iocCrew.reports = panel;
  panel.start();
}

whenCrewKnown();
