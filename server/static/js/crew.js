// The crews' page: the alarms assigned to this crew, where they are (a link to the map and
// a geo: URI the phone's navigation app opens), and buttons to start and finish the work.
// Kept current through the websocket; a slow poll covers a phone that slept. Starting and
// finishing take a note and a photo (js/workform.js); the tree work orders are js/crewwork.js.

import "./a11y.js"; // the static landmarks' names, in the current language
import {
  api, fmtTime, h, linkIndicator, listOf, LiveSocket, pointOf, SEVERITY_RANK, signIn, signOut,
  startSession, timeAgo, toast, whenUnauthorized,
} from "./common.js";
import { startWorkOrders } from "./crewwork.js";
import { alarmStateLabel, applyStatic, onLangChange, setLang, severityLabel, t } from "./i18n.js";
import { postForm, workForm } from "./workform.js";
import "./crewreports.js"; // issue 14: the citizens' reports assigned to this crew

const $ = (sel) => document.querySelector(sel);
const POLL_MS = 60000;

let crew = null;
let jobs = [];
let seen = new Set();
let reloadTimer = null;
let composing = null; // {id, state}: the job whose note-and-photo form is open

for (const btn of document.querySelectorAll("[data-lang]")) {
  btn.addEventListener("click", () => setLang(btn.dataset.lang));
}
applyStatic();
onLangChange(() => render());

function showLogin(message) {
  $("#login").hidden = false;
  $("#login-error").textContent = message ?? "";
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("#login-token").value.trim();
  if (!token) return;
  try {
    await signIn(token);
    $("#login").hidden = true;
    $("#login-token").value = "";
    if (crew) location.reload();
    else start();
  } catch (err) {
    $("#login-error").textContent = err.status === 401 || err.status === 409 ? t("bad_token") : err.message;
  }
});

$("#sign-out").addEventListener("click", async () => {
  await signOut();
  location.replace("/crew");
});

async function start(session = api("/api/v1/me", { quiet: true })) {
  let me;
  try {
    me = await session;
  } catch (err) {
    showLogin(err.message);
    return;
  }
  whenUnauthorized(() => showLogin(t("session_ended")));
  // Supervisors (operator, admin) may look at a crew's page with ?crew=ID.
  crew = me.crew ?? new URL(location.href).searchParams.get("crew");
  if (!crew) {
    $("#crew-status").textContent = t("crew_not_crew");
    return;
  }
  $("#crew-name").textContent = `${t("crew_sub")} · ${crew}`;
  api(`/api/v1/crews/${encodeURIComponent(crew)}`)
    .then((c) => { $("#crew-name").textContent = c.name ?? crew; })
    .catch(() => {}); // the id is enough to work with
  window.iocCrew = { crew, me };
  await load();
  startWorkOrders(crew, $("#crew-work-orders"));
  const socket = new LiveSocket({
    onStatus: linkIndicator($("#link")),
    onMessage: (msg) => {
      const a = msg.alarm;
      if (msg.type === "alarm" && a && (a.assigned_crew === crew || jobs.some((j) => String(j.id) === String(a.id)))) {
        reloadSoon();
      } else if (msg.type !== "alarm" && msg.type !== "state" && msg.type !== "snapshot") {
        reloadSoon(); // a message for this crew (a notification, an escalation)
      }
    },
  });
  // Alarms only (no bbox: no device states); the hub sends a crew token its own alarms.
  socket.subscribe({ alarms: true });
  socket.connect();
  setInterval(load, POLL_MS);
  window.iocCrew.ready = true;
}

function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(load, 200);
}

async function load() {
  try {
    const data = await api(`/api/v1/alarms?crew=${encodeURIComponent(crew)}&limit=500`);
    jobs = listOf(data, "alarms").filter((a) => a.assigned_crew === undefined || a.assigned_crew === crew);
    $("#crew-status").textContent = t("updated", { t: fmtTime(new Date()) });
    render();
  } catch (err) {
    $("#crew-status").textContent = err.message;
  }
}

const workOf = (a) => a.work_state ?? (a.state === "closed" ? "done" : "open");

function sortJobs(list) {
  const done = (a) => (workOf(a) === "done" ? 1 : 0);
  return list.slice().sort((x, y) => done(x) - done(y)
    || (SEVERITY_RANK[y.severity] ?? 0) - (SEVERITY_RANK[x.severity] ?? 0)
    || new Date(y.raised_at) - new Date(x.raised_at));
}

function render() {
  const list = $("#crew-list");
  if (!crew) return;
  if (composing && list.querySelector(".work-form")) return; // do not wipe a note being typed
  if (!jobs.length) {
    list.replaceChildren(h("div.empty", t("crew_none")));
    return;
  }
  list.replaceChildren(...sortJobs(jobs).map((a) => job(a)));
  seen = new Set(jobs.map((a) => String(a.id)));
}

function job(a) {
  const id = String(a.id);
  const work = workOf(a);
  const at = pointOf(a.geometry);
  const links = [];
  if (at) {
    const [lon, lat] = at.map((v) => +v.toFixed(6));
    const device = a.device ? `&device=${encodeURIComponent(a.device)}` : "";
    // The map's tab shares this browser's session (the cookie).
    links.push(h("a", { href: `/#map=17/${lat}/${lon}${device}`, target: "_blank", rel: "noopener",
      dataset: { link: "map" } }, t("open_map")));
    links.push(h("a", { href: `geo:${lat},${lon}?q=${lat},${lon}(${encodeURIComponent(a.device ?? id)})`,
      dataset: { link: "geo" } }, t("navigate")));
  }
  const buttons = [];
  const compose = (state) => {
    document.querySelector("#crew-list .work-form")?.remove(); // one form at a time
    composing = { id, state };
    render();
  };
  if (work !== "in_progress" && work !== "done") {
    buttons.push(h("button.btn.go", { dataset: { work: "in_progress" },
      onclick: () => compose("in_progress") }, t("start_work")));
  }
  if (work !== "done") {
    buttons.push(h("button.btn.finish", { dataset: { work: "done" },
      onclick: () => compose("done") }, t("finish_work")));
  }
  const form = composing?.id === id ? workForm({
    submitLabel: t(composing.state === "done" ? "finish_work" : "start_work"),
    onSubmit: ({ note, photo }) => setWork(a, composing.state, note, photo),
    onCancel: () => { composing = null; render(); },
  }) : null;
  const classes = ["job", a.severity, `work-${work}`];
  if (seen.size && !seen.has(id)) classes.push("new");
  return h(`article.${classes.join(".")}`, { dataset: { alarmId: id, work } },
    h("div.job-head",
      h("span.sev-badge", severityLabel(a.severity)),
      h("span.job-device", a.device ?? ""),
      h("span.job-time", { title: fmtTime(a.raised_at, true) }, timeAgo(a.raised_at))),
    h("div.job-msg", a.message || a.rule),
    h("div.job-where", at ? `${at[1].toFixed(5)}, ${at[0].toFixed(5)}` : "", " · ", alarmStateLabel(a.state)),
    h("div.job-work", h(`span.chip.work-chip.work-${work}`, t(`work_${work}`))),
    h("div.job-links", ...links),
    form ?? (buttons.length ? h("div.job-buttons", ...buttons) : null));
}

async function setWork(a, state, note, photo) {
  try {
    const answer = await postForm(`/api/v1/alarms/${encodeURIComponent(a.id)}/work`, { state, note }, photo);
    composing = null;
    if (answer && typeof answer === "object" && answer.id !== undefined) {
      jobs = jobs.map((j) => (String(j.id) === String(answer.id) ? { ...j, ...answer } : j));
    } else {
      a.work_state = state;
    }
    render();
    toast(t(`work_${state}`), "ok");
  } catch (err) {
    toast(t("action_failed", { what: t(state === "done" ? "finish_work" : "start_work").toLowerCase(),
      why: err.message }), "error");
  }
}

const config = JSON.parse(document.getElementById("config").textContent);
if (config.vendorMissing) console.warn(config.vendorMissing);
start(startSession());
