// /report: a citizen files a report from a phone, without an account. Photos are shrunk and
// re-encoded on the phone (a canvas draws only pixels: EXIF, GPS and camera serials stay
// behind, and a 4 MB photo becomes ~300 kB for a slow 3G link); the location comes from the
// phone or a tap on the map (MapLibre is loaded only then). A failed upload keeps everything
// and offers to try again. The hidden "website" field is the server's honeypot.

import { applyStatic } from "./i18n.js";
import { CATEGORIES, categoryLabel, startLanguage, t } from "./citizen.js";

const MAX_PHOTOS = 3;
const MAX_SIDE = 1600;
const QUALITY = 0.8;

const $ = (sel) => document.querySelector(sel);
const state = { photos: [], lat: null, lon: null, source: null, accuracy: null, map: null, marker: null };
window.iocReport = { ready: false, state };

function renderCategories() {
  const box = $("#cats");
  const chosen = box.querySelector("input:checked")?.value;
  box.replaceChildren(...Object.keys(CATEGORIES).map((code) => {
    const input = Object.assign(document.createElement("input"), { type: "radio", name: "category",
      value: code, checked: code === chosen });
    const label = document.createElement("label");
    label.append(input, categoryLabel(code));
    return label;
  }));
}

function renderPhotos() {
  $("#photos").replaceChildren(...state.photos.map((p, i) => {
    const img = Object.assign(document.createElement("img"), { src: p.url, alt: "" });
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "×" });
    remove.setAttribute("aria-label", t("cz_remove_photo", { n: i + 1 }));
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(p.url);
      state.photos.splice(i, 1);
      renderPhotos();
    });
    const div = document.createElement("div");
    div.className = "thumb";
    div.append(img, remove);
    return div;
  }));
  const full = state.photos.length >= MAX_PHOTOS;
  $("#photo-input").disabled = full;
  $("#add-photo-label").hidden = full;
}

function renderWhere() {
  const el = $("#where");
  if (state.lat === null) {
    el.textContent = t("cz_where_none");
    el.classList.remove("set");
    return;
  }
  const vars = { lat: state.lat.toFixed(5), lon: state.lon.toFixed(5), acc: Math.round(state.accuracy ?? 0) };
  el.textContent = state.source === "gps" ? t("cz_where_gps", vars) : t("cz_where_set", vars);
  el.classList.add("set");
}

function render() {
  renderCategories();
  renderPhotos();
  renderWhere();
  applyStatic();
}

// ---------------------------------------------------------------- photos
async function decode(file) {
  try {
    return await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    // Some browsers decode more formats through <img> than through createImageBitmap.
    const url = URL.createObjectURL(file);
    try {
      const img = new Image();
      img.src = url;
      await img.decode();
      return img;
    } finally {
      URL.revokeObjectURL(url);
    }
  }
}

export async function shrink(file) {
  const bmp = await decode(file);
  const w = bmp.width;
  const h = bmp.height;
  const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(w * scale));
  canvas.height = Math.max(1, Math.round(h * scale));
  canvas.getContext("2d").drawImage(bmp, 0, 0, canvas.width, canvas.height);
  bmp.close?.();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", QUALITY));
  if (!blob) throw new Error("canvas");
  return blob;
}

async function addPhotos(files) {
  $("#form-error").textContent = "";
  for (const file of files) {
    if (state.photos.length >= MAX_PHOTOS) break;
    try {
      const blob = await shrink(file);
      state.photos.push({ blob, url: URL.createObjectURL(blob), original: file.size });
    } catch {
      $("#form-error").textContent = t("cz_bad_photo", { name: file.name });
    }
  }
  renderPhotos();
}

// ---------------------------------------------------------------- location
function setWhere(lat, lon, source, accuracy = null) {
  Object.assign(state, { lat, lon, source, accuracy });
  if (state.marker) {
    state.marker.setLngLat([lon, lat]);
    if (!state.markerOn) state.marker.addTo(state.map);
    state.markerOn = true;
  }
  renderWhere();
}

function useGps() {
  if (!navigator.geolocation) {
    $("#where").textContent = t("cz_gps_failed", { why: "—" });
    return;
  }
  $("#where").textContent = t("cz_gps_waiting");
  navigator.geolocation.getCurrentPosition(
    (pos) => {
      setWhere(pos.coords.latitude, pos.coords.longitude, "gps", pos.coords.accuracy);
      if (state.map) state.map.easeTo({ center: [state.lon, state.lat], zoom: 17 });
    },
    (err) => {
      $("#where").textContent = t("cz_gps_failed", { why: err.message || err.code });
      openPicker();
    },
    { enableHighAccuracy: true, timeout: 20000, maximumAge: 60000 });
}

async function openPicker() {
  $("#pick").hidden = false;
  if (state.map) return;
  const { openMap } = await import("./citizenmap.js");
  const center = state.lat === null ? undefined : [state.lon, state.lat];
  const { maplibregl, map } = await openMap($("#pick-map-box"), { center, zoom: center ? 17 : undefined });
  state.map = map;
  state.marker = new maplibregl.Marker({ color: "#b42318" });
  if (state.lat !== null) setWhere(state.lat, state.lon, state.source, state.accuracy);
  map.on("click", (ev) => setWhere(ev.lngLat.lat, ev.lngLat.lng, "map"));
  window.iocReport.map = map;
}

// ---------------------------------------------------------------- sending
function check(form) {
  if (!form.querySelector("input[name=category]:checked")) return ["cz_need_category", "#cats input"];
  if (state.lat === null) return ["cz_need_where", "#use-gps"];
  if (!form.description.value.trim()) return ["cz_need_description", "#description"];
  return null;
}

function upload(data, onProgress, key) {
  // XMLHttpRequest rather than fetch: it reports the upload's progress.
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/public/reports");
    xhr.setRequestHeader("Accept", "application/json");
    // The same key on every resend of this report: an answer lost on a slow line does not
    // make the report twice (the server answers the first one's code again).
    xhr.setRequestHeader("Idempotency-Key", key);
    xhr.upload.onprogress = (ev) => ev.lengthComputable && onProgress(ev.loaded / ev.total);
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      resolve({ status: xhr.status, body, retryAfter: xhr.getResponseHeader("Retry-After") });
    };
    xhr.onerror = () => resolve({ status: 0, body: null });
    xhr.ontimeout = () => resolve({ status: 0, body: null });
    xhr.timeout = 180000;
    xhr.send(data);
  });
}

async function send(ev) {
  ev.preventDefault();
  const form = $("#report-form");
  const err = $("#form-error");
  const problem = check(form);
  if (problem) {
    err.textContent = t(problem[0]);
    document.querySelector(problem[1])?.focus();
    return;
  }
  err.textContent = "";
  const data = new FormData();
  data.append("category", form.querySelector("input[name=category]:checked").value);
  data.append("lat", state.lat.toFixed(6));
  data.append("lon", state.lon.toFixed(6));
  data.append("description", form.description.value.trim());
  if (form.contact.value.trim()) data.append("contact", form.contact.value.trim());
  data.append("website", form.website.value);
  state.photos.forEach((p, i) => data.append("photo", p.blob, `photo-${i + 1}.jpg`));

  const button = $("#send");
  const bar = $("#progress");
  button.disabled = true;
  bar.hidden = false;
  const progress = (f) => {
    bar.firstElementChild.style.width = `${Math.round(f * 100)}%`;
    button.textContent = t("cz_sending", { pct: Math.round(f * 100) });
  };
  progress(0);
  state.key ??= crypto.randomUUID?.() ?? Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, "0")).join("");
  // A lost connection or a busy server is tried again by itself, twice, before the citizen
  // is asked to press Retry (which sends with the same key too).
  let res = await upload(data, progress, state.key);
  for (const wait of [3, 10]) {
    if (!(res.status === 0 || res.status === 502 || res.status === 503 || res.status === 504)) break;
    const after = Math.min(Number(res.retryAfter) || wait, 30);
    button.textContent = t("cz_retrying", { s: after });
    await new Promise((r) => setTimeout(r, after * 1000));
    res = await upload(data, progress, state.key);
  }
  button.disabled = false;
  bar.hidden = true;
  if (res.status === 201 && res.body?.code) {
    done(res.body.code);
    return;
  }
  if (res.status === 422) state.key = null; // the report was changed: the next send is a new one
  const why = res.status === 0 ? t("cz_offline") : (res.body?.detail || res.body?.title || `HTTP ${res.status}`);
  err.textContent = t("cz_failed", { why });
  button.dataset.i18n = "cz_retry";
  button.textContent = t("cz_retry");
  const field = res.body?.errors?.[0]?.field;
  if (field && form.elements[field]) form.elements[field].focus?.();
}

function done(code) {
  const url = `/reports/${encodeURIComponent(code)}`;
  $("#report-form").hidden = true;
  $("#done").hidden = false;
  $("#done-code").textContent = code;
  $("#done-link").href = url;
  $("#done-url").href = url;
  $("#done-url").textContent = new URL(url, location.href).href;
  try {
    // The phone remembers the codes it sent (nowhere else), so the citizen can find them again.
    const mine = JSON.parse(localStorage.getItem("ioc.reports") || "[]");
    localStorage.setItem("ioc.reports", JSON.stringify([code, ...mine.filter((c) => c !== code)].slice(0, 20)));
  } catch {
    // private mode: nothing kept
  }
  window.scrollTo(0, 0);
  window.iocReport.code = code;
}

startLanguage(render);
render();
$("#photo-input").addEventListener("change", async (ev) => {
  await addPhotos([...ev.target.files]);
  ev.target.value = "";
});
$("#use-gps").addEventListener("click", useGps);
$("#pick-map").addEventListener("click", openPicker);
$("#report-form").addEventListener("submit", send);
window.iocReport.ready = true;
