// What both pages share: the token, API calls, the live websocket, small DOM helpers.

import { lang, onLangChange, t } from "./i18n.js";

// ---------------------------------------------------------------- session

// No page keeps a token. A token given to a page (the login form, or ?token= of the link
// `ioc demo` prints) is traded at once for a session (POST /api/v1/session), which lives in
// an HttpOnly, SameSite=Strict cookie: no script, ours or an injected one, can read it, it
// is sent with every same-origin request (API, tiles, websocket), and it survives a phone
// reloading the page, for the session's hours.

// The token in the address, if any, taken out of the address bar and the history (so it
// ends up in no screenshot, bookmark or Referer).
export function takeTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (!token) return null;
  url.searchParams.delete("token");
  history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  return token.trim();
}

// Trade a token for this browser's session; throws ApiError (401: unknown, revoked or
// expired; 409: a sign-in link already used).
export async function signIn(token) {
  return api("/api/v1/session", { method: "POST", token, quiet: true });
}

export async function signOut() {
  try {
    await api("/api/v1/session", { method: "DELETE", quiet: true });
  } catch {
    // already ended: nothing to undo
  }
}

// The URL's token, if any, becomes the session; then who we are. Resolves to the caller
// ({name, role, crew}) or rejects with the reason to show beside the login form ("" when
// there simply is no session yet).
export async function startSession() {
  const token = takeTokenFromUrl();
  let linkProblem = "";
  if (token) {
    try {
      await signIn(token);
    } catch (err) {
      // A used or expired link may still find the session it started earlier.
      linkProblem = err.status === 401 || err.status === 409 ? t("link_invalid") : err.message;
    }
  }
  try {
    return await api("/api/v1/me", { quiet: true });
  } catch (err) {
    throw new ApiError(err.status, err.status === 401 ? linkProblem : err.message);
  }
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

// JSON in, JSON out; errors carry the problem+json detail, which is written for people.
// ``token``: sent as the bearer instead of the session cookie (signing in); ``quiet``: a 401
// is the caller's business, not a reason to show the login form.
export async function api(path, { method = "GET", body, signal, token, quiet = false } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, `the server cannot be reached (${err.message})`);
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    const detail = (data && (data.detail || data.title)) || `${resp.status} ${resp.statusText}`;
    if (resp.status === 401 && !quiet) onUnauthorized(detail);
    const error = new ApiError(resp.status, detail);
    error.problem = data && typeof data === "object" ? data : null; // errors[{field, reason}]
    throw error;
  }
  return data;
}

// List endpoints may answer with a bare array, {items|alarms|crews: [...]}, or GeoJSON.
export function listOf(data, ...names) {
  if (Array.isArray(data)) return data;
  if (!data || typeof data !== "object") return [];
  for (const name of [...names, "items", "results", "data"]) {
    if (Array.isArray(data[name])) return data[name];
  }
  if (Array.isArray(data.features)) {
    return data.features.map((f) => ({ id: f.id, geometry: f.geometry, ...f.properties }));
  }
  return [];
}

// ---------------------------------------------------------------- live socket

// One websocket with reconnects (capped, jittered backoff). The latest subscription is
// sent again on every (re)connect, so a reconnect brings a fresh snapshot.
export class LiveSocket {
  constructor({ onMessage, onStatus }) {
    this.onMessage = onMessage;
    this.onStatus = onStatus ?? (() => {});
    this.subscription = null;
    this.ws = null;
    this.attempt = 0;
    this.closed = false;
    this.timer = null;
  }

  connect() {
    this.closed = false;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/api/v1/ws`; // the session cookie goes along
    this.onStatus(this.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.onStatus("live");
      if (this.subscription) this.send(this.subscription);
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        console.warn("ignoring a websocket message that is not JSON", ev.data);
        return;
      }
      for (const m of Array.isArray(msg) ? msg : [msg]) this.onMessage(m);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      if (ev.reason) console.warn("websocket closed:", ev.code, ev.reason);
      this.onStatus("reconnecting", ev.reason);
      const delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt += 1;
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  subscribe(sub) {
    this.subscription = { op: "subscribe", ...sub };
    this.send(this.subscription);
  }

  send(obj) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close(1000, "page closed");
  }
}

// The connection chip in the header: live, connecting, reconnecting (with the reason).
export function linkIndicator(el) {
  let last = ["connecting", ""];
  const show = (status, reason = "") => {
    last = [status, reason];
    el.className = `link ${status}`;
    el.textContent = t(status);
    el.title = reason;
  };
  onLangChange(() => show(...last));
  show(...last);
  return show;
}

// ---------------------------------------------------------------- DOM helpers

// h("div.alarm.critical", {onclick}, child, "text", ...): a small element builder.
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = {};
  }
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function toast(text, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", "aria-live": "polite" });
    document.body.append(box);
  }
  const item = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, text);
  box.append(item);
  setTimeout(() => item.classList.add("fade"), kind === "error" ? 7000 : 3500);
  setTimeout(() => item.remove(), kind === "error" ? 7600 : 4100);
}

// ---------------------------------------------------------------- formatting

const locale = () => (lang() === "vi" ? "vi-VN" : "en-GB");

// A uPlot time axis's tick labels in the page's language, 24-hour, day before month (uPlot's
// own are US: "12/4/26", "6pm"): the date alone for day steps, else the time over the date.
export function timeTicks(u, splits, axis, space, incr) {
  return splits.map((v) => {
    const d = new Date(v * 1000);
    const day = d.toLocaleDateString(locale(), { day: "2-digit", month: "2-digit" });
    return incr >= 86400 ? day : `${d.toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit" })}\n${day}`;
  });
}

export function fmtTime(value, withDate = false) {
  if (!value) return "";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const today = new Date().toDateString() === d.toDateString();
  const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit" };
  if (withDate || !today) Object.assign(opts, { day: "2-digit", month: "2-digit" });
  return d.toLocaleString(locale(), opts);
}

export function timeAgo(value) {
  if (!value) return t("never");
  const s = Math.max(0, Math.round((Date.now() - new Date(value).getTime()) / 1000));
  if (s < 60) return t("ago_s", { n: s });
  if (s < 3600) return t("ago_m", { n: Math.round(s / 60) });
  if (s < 86400) return t("ago_h", { n: Math.round(s / 3600) });
  return t("ago_d", { n: Math.round(s / 86400) });
}

export function fmtNumber(v, digits = 2) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "boolean") return v ? t("yes") : t("no");
  if (typeof v !== "number") return String(v);
  return v.toLocaleString(locale(), { maximumFractionDigits: Math.abs(v) >= 100 ? 1 : digits });
}

export const SEVERITY_RANK = { critical: 4, major: 3, minor: 2, warning: 1 };

// A representative point of a GeoJSON geometry (for links and markers).
export function pointOf(geometry) {
  if (!geometry) return null;
  const c = geometry.coordinates;
  switch (geometry.type) {
    case "Point":
      return c;
    case "LineString":
      return c[Math.floor(c.length / 2)];
    case "MultiPoint":
      return c[0];
    case "Polygon":
    case "MultiLineString": {
      const ring = c[0];
      const xs = ring.map((p) => p[0]);
      const ys = ring.map((p) => p[1]);
      return [(Math.min(...xs) + Math.max(...xs)) / 2, (Math.min(...ys) + Math.max(...ys)) / 2];
    }
    case "MultiPolygon":
      return pointOf({ type: "Polygon", coordinates: c[0] });
    case "GeometryCollection":
      return pointOf(geometry.geometries[0]);
    default:
      return null;
  }
}
