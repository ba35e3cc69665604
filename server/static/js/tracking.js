// /reports/{code}: a citizen follows a report with its tracking code: status, timeline,
// photos before and after, the responsible unit, in the citizen's language; once resolved,
// a rating (1-5 stars and a comment), once.

import { applyStatic } from "./i18n.js";
import {
  categoryLabel, fmtDateTime, publicApi, reportStatusLabel, startLanguage, t, unitLabel,
} from "./citizen.js";

const $ = (sel) => document.querySelector(sel);
const code = decodeURIComponent(location.pathname.split("/").pop());
let report = null;
let stars = 0;
window.iocTracking = { ready: false };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

// Notes the server writes itself, in English, for the citizen's language.
const KNOWN_NOTES = { "another citizen reported it": "cz_other_reporter" };
const noteText = (n) => (KNOWN_NOTES[n] ? t(KNOWN_NOTES[n]) : n);

function gallery(title, urls) {
  if (!urls?.length) return null;
  return el("section", { class: "card" }, el("h2", {}, title),
    el("div", { class: "gallery" }, ...urls.map((u, i) => el("a", { href: u },
      el("img", { src: u, alt: `${title} ${i + 1}`, loading: "lazy" })))));
}

function render() {
  const box = $("#track");
  if (!report) {
    box.replaceChildren();
    return;
  }
  const r = report;
  document.title = `${categoryLabel(r.category)} · ${reportStatusLabel(r.status)}`;
  const facts = el("dl", { class: "facts" },
    el("dt", {}, t("cz_status")), el("dd", {}, el("span", { class: `status-pill st-${r.status}`, id: "status" },
      reportStatusLabel(r.status))),
    el("dt", {}, t("cz_ward")), el("dd", {}, r.ward_name || r.ward || "–"),
    el("dt", {}, t("cz_unit")), el("dd", { id: "unit" }, r.unit ? unitLabel(r.unit) : "–"),
    el("dt", {}, t("cz_received_at")), el("dd", {}, fmtDateTime(r.created_at)),
    r.status === "resolved" || r.status === "rejected" ? null : el("dt", {}, t("cz_due")),
    r.status === "resolved" || r.status === "rejected" ? null : el("dd", {}, fmtDateTime(r.sla_due)),
    r.reporters > 1 ? el("dt", {}, t("cz_reporters")) : null,
    r.reporters > 1 ? el("dd", {}, String(r.reporters)) : null);
  const head = el("section", { class: "card" }, el("h1", { id: "category" }, categoryLabel(r.category)),
    el("div", { class: "code", title: t("cz_your_code") }, r.code), facts);
  const timeline = el("section", { class: "card" }, el("h2", {}, t("cz_timeline")),
    el("ol", { class: "timeline", id: "timeline" }, ...r.events.map((e) => el("li", {},
      el("div", { class: "when" }, fmtDateTime(e.at)),
      el("strong", {}, reportStatusLabel(e.status)),
      e.note ? el("div", { class: "note" }, noteText(e.note)) : null))));
  box.replaceChildren(head, timeline, gallery(t("cz_photos_before"), r.before ?? r.photos) ?? "",
    gallery(t("cz_photos_after"), r.after) ?? "");
  renderRating();
}

function renderRating() {
  const section = $("#rate");
  section.hidden = !report || report.status !== "resolved";
  if (section.hidden) return;
  const form = $("#rate-form");
  if (report.rated) {
    form.replaceChildren(el("h2", { class: "step" }, t("cz_rated")),
      report.stars ? el("p", { id: "rated-stars" }, t("cz_rated_stars", { n: report.stars })) : null);
    return;
  }
  $("#stars").replaceChildren(...[1, 2, 3, 4, 5].map((n) => {
    const input = el("input", { type: "radio", name: "stars", value: String(n), "aria-label": t("cz_rate_stars", { n }) });
    input.checked = n === stars;
    input.addEventListener("change", () => {
      stars = n;
      renderRating();
    });
    return el("label", { class: n <= stars ? "on" : "" }, input, el("span", { "aria-hidden": "true" }, "★"));
  }));
  applyStatic(form);
}

async function load() {
  try {
    report = await publicApi(`/api/v1/public/reports/${encodeURIComponent(code)}`);
    $("#track-error").textContent = "";
  } catch (err) {
    report = null;
    $("#track-error").textContent = err.status === 404 ? t("cz_not_found") : err.message;
  }
  render();
}

async function rate(ev) {
  ev.preventDefault();
  const err = $("#rate-error");
  if (!stars) {
    err.textContent = t("cz_need_stars");
    return;
  }
  const comment = $("#rate-comment").value.trim();
  $("#rate-send").disabled = true;
  try {
    await publicApi(`/api/v1/public/reports/${encodeURIComponent(code)}/rating`, {
      method: "POST", body: comment ? { stars, comment } : { stars } });
    Object.assign(report, { rated: true, stars });
    renderRating();
  } catch (e) {
    err.textContent = e.message;
    $("#rate-send").disabled = false;
    if (e.status === 409) await load();
  }
}

startLanguage(render);
$("#rate-form").addEventListener("submit", rate);
await load();
// A report moves on while its page is open: look again every minute while it is visible.
setInterval(() => document.visibilityState === "visible" && report?.status !== "resolved" && load(), 60000);
window.iocTracking = { ready: true, reload: load };
