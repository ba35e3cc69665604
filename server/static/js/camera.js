// A camera's picture in its device panel (issue 18): the stream (HLS through hls.js, or
// MJPEG as an image) or the snapshot, always through the server's media proxy
// (/api/v1/devices/{id}/media), which checks the session and the outbound allow-list.

import Hls from "hls.js";
import { h } from "./common.js";
import { addStrings, t } from "./i18n.js";

addStrings({
  camera_title: "Camera",
  camera_video: "Live video of {name}",
  camera_snapshot: "Snapshot",
  camera_live: "Live",
  camera_no_stream: "This camera has no stream the browser can play ({scheme}).",
  camera_error: "The stream could not be played: {why}",
  camera_refresh: "Refresh snapshot",
}, {
  camera_title: "Camera",
  camera_video: "Video trực tiếp của {name}",
  camera_snapshot: "Ảnh chụp",
  camera_live: "Trực tiếp",
  camera_no_stream: "Camera này không có luồng mà trình duyệt phát được ({scheme}).",
  camera_error: "Không phát được luồng: {why}",
  camera_refresh: "Làm mới ảnh chụp",
});

const fileName = (url) => new URL(url).pathname.split("/").pop() || "index.m3u8";
const playable = (url) => typeof url === "string" && /^https?:\/\//i.test(url);

let current = null; // the one player alive: closing or switching devices stops it

export function stopCamera() {
  current?.destroy();
  current = null;
}

// The camera section for a device feature, or null when it is not a camera.
export function cameraSection(device) {
  const p = device.properties ?? {};
  if (p.kind !== "camera") return null;
  stopCamera();
  const base = `/api/v1/devices/${encodeURIComponent(device.id)}/media`;
  const name = p.name || device.id;
  const box = h("div.camera-box");
  const section = h("section.camera", h("h3", t("camera_title")), box);
  if (playable(p.stream_url)) {
    if (/\.m3u8(\?|$)/i.test(p.stream_url)) {
      const video = h("video.camera-video", { muted: true, autoplay: true, playsinline: true, controls: true,
        "aria-label": t("camera_video", { name }) });
      video.muted = true;
      box.append(video);
      if (Hls.isSupported()) {
        const hls = new Hls({ enableWorker: true });
        hls.on(Hls.Events.ERROR, (_, data) => {
          if (data.fatal) box.append(h("div.empty.error", t("camera_error", { why: data.details })));
        });
        // By the playlist's own file name below media/, so its relative segment URIs resolve
        // under the proxy too.
        hls.loadSource(`${base}/${encodeURIComponent(fileName(p.stream_url))}`);
        hls.attachMedia(video);
        current = hls;
      } else {
        video.src = base; // Safari plays HLS natively
      }
    } else {
      box.append(h("img.camera-video", { src: base, alt: t("camera_video", { name }) })); // MJPEG
    }
  } else if (playable(p.snapshot_url)) {
    const img = h("img.camera-video", { src: `${base}?src=snapshot`, alt: `${t("camera_snapshot")} · ${name}` });
    box.append(img, h("button.btn.small", { type: "button", onclick: () => {
      img.src = `${base}?src=snapshot&_=${Date.now()}`;
    } }, t("camera_refresh")));
  } else {
    const scheme = (p.stream_url ?? "").split(":")[0] || "–";
    box.append(h("div.empty", t("camera_no_stream", { scheme })));
  }
  return section;
}
