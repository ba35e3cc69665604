// The crews' "note and photo" form (issue 18 and 14): used on /crew when a crew starts or
// finishes an alarm or a work order. The photo is shrunk and re-encoded on the phone
// (a canvas draws only pixels: no EXIF or GPS leaves the phone; the server cleans it again)
// and sent as multipart/form-data with the note.

import { h } from "./common.js";
import { addStrings, t } from "./i18n.js";

addStrings({
  wf_note: "Note",
  wf_note_hint: "What was found, what was done",
  wf_photo: "Photo",
  wf_send: "Send",
  wf_cancel: "Cancel",
  wf_sending: "Sending…",
}, {
  wf_note: "Ghi chú",
  wf_note_hint: "Tình trạng, công việc đã làm",
  wf_photo: "Ảnh",
  wf_send: "Gửi",
  wf_cancel: "Hủy",
  wf_sending: "Đang gửi…",
});

const MAX_PX = 1600;

export async function shrinkPhoto(file) {
  const bmp = await createImageBitmap(file);
  const scale = Math.min(1, MAX_PX / Math.max(bmp.width, bmp.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bmp.width * scale));
  canvas.height = Math.max(1, Math.round(bmp.height * scale));
  canvas.getContext("2d").drawImage(bmp, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  if (!blob) throw new Error("the photo could not be read");
  return blob;
}

// POST fields (and a photo) as multipart/form-data; the JSON answer, or an Error with the
// server's problem detail.
export async function postForm(path, fields, photo) {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null && v !== "") form.append(k, v);
  if (photo) form.append("photo", await shrinkPhoto(photo), "photo.jpg");
  const resp = await fetch(path, { method: "POST", body: form, headers: { Accept: "application/json" } });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!resp.ok) {
    const err = new Error((data && (data.detail || data.title)) || `${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

// The form itself: a note, a photo from the camera or the gallery, Send and Cancel.
export function workForm({ submitLabel, onSubmit, onCancel }) {
  const note = h("textarea.wf-note", { rows: 3, maxlength: 4000, "aria-label": t("wf_note"),
    placeholder: t("wf_note_hint") });
  const photo = h("input.wf-photo", { type: "file", accept: "image/*", capture: "environment",
    "aria-label": t("wf_photo") });
  const send = h("button.btn.primary.wf-send", { type: "submit" }, submitLabel ?? t("wf_send"));
  const form = h("form.work-form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      send.disabled = true;
      send.textContent = t("wf_sending");
      try {
        await onSubmit({ note: note.value.trim(), photo: photo.files[0] ?? null });
      } finally {
        send.disabled = false;
        send.textContent = submitLabel ?? t("wf_send");
      }
    },
  },
  h("label.wf-label", t("wf_note"), note),
  h("label.wf-label", t("wf_photo"), photo),
  h("div.wf-buttons", send, h("button.btn.wf-cancel", { type: "button", onclick: () => onCancel?.() },
    t("wf_cancel"))));
  return form;
}
