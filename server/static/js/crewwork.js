// The crew's work orders on /crew (issue 14: trees' inspections, pruning, removal): the
// open ones first, each with its tree, where it is, and Start / Work done with a note and a
// photo, as the alarms above. A slow poll keeps the list current.

import { api, fmtTime, h, listOf, pointOf, timeAgo, toast } from "./common.js";
import { addStrings, kindName, onLangChange, t } from "./i18n.js";
import { postForm, workForm } from "./workform.js";

addStrings({
  wo_title: "Work orders",
  wo_none: "No work orders for your crew.",
  wo_type_inspection: "Inspection",
  wo_type_pruning: "Pruning",
  wo_type_removal: "Removal",
  wo_status_open: "Not started",
  wo_status_in_progress: "In progress",
  wo_status_done: "Done",
  wo_start: "Start",
  wo_done: "Work done",
  wo_failed: "Could not save the work order: {why}",
  wo_kind_tree: "Tree",
  wo_kind_green_area: "Green area",
}, {
  wo_title: "Phiếu công việc",
  wo_none: "Đội chưa có phiếu công việc.",
  wo_type_inspection: "Kiểm tra",
  wo_type_pruning: "Cắt tỉa",
  wo_type_removal: "Chặt hạ",
  wo_status_open: "Chưa bắt đầu",
  wo_status_in_progress: "Đang xử lý",
  wo_status_done: "Hoàn thành",
  wo_start: "Bắt đầu",
  wo_done: "Đã xong",
  wo_failed: "Không lưu được phiếu công việc: {why}",
  wo_kind_tree: "Cây xanh",
  wo_kind_green_area: "Mảng xanh",
});

const POLL_MS = 60000;
const DONE_SHOWN_MS = 24 * 3600e3; // finished orders stay listed for a day

let root = null;
let orders = [];
let composing = null; // {id, step}

export function startWorkOrders(crew, container) {
  if (!container) return;
  root = container;
  onLangChange(render);
  load();
  setInterval(load, POLL_MS);
}

async function load() {
  try {
    const data = await api("/api/v1/work-orders");
    const now = Date.now();
    orders = listOf(data, "work_orders").filter((w) => w.status !== "done"
      || now - new Date(w.done_at ?? w.updated_at) < DONE_SHOWN_MS);
    render();
  } catch (err) {
    if (err.status !== 403) toast(t("wo_failed", { why: err.message }), "error");
  }
}

function render() {
  if (!root) return;
  if (composing && root.querySelector(".work-form")) return; // a note being typed stays
  const rank = { in_progress: 0, open: 1, done: 2 };
  const items = orders.slice().sort((x, y) => rank[x.status] - rank[y.status] || y.id - x.id).map(item);
  root.replaceChildren(h("h2#crew-wo-title.crew-section", t("wo_title")),
    ...(items.length ? items : [h("div.empty", t("wo_none"))]));
}

function item(w) {
  const id = String(w.id);
  const at = pointOf(w.geometry);
  const links = [];
  if (at) {
    const [lon, lat] = at.map((v) => +v.toFixed(6));
    links.push(h("a", { href: `/#map=18/${lat}/${lon}&device=${encodeURIComponent(w.device)}`, target: "_blank",
      rel: "noopener" }, t("open_map")));
    links.push(h("a", { href: `geo:${lat},${lon}?q=${lat},${lon}(${encodeURIComponent(w.device)})` },
      t("navigate")));
  }
  const compose = (step) => {
    root.querySelector(".work-form")?.remove();
    composing = { id, step };
    render();
  };
  const buttons = [];
  if (w.status === "open") {
    buttons.push(h("button.btn.go", { dataset: { step: "start" }, onclick: () => compose("start") }, t("wo_start")));
  }
  if (w.status !== "done") {
    buttons.push(h("button.btn.finish", { dataset: { step: "done" }, onclick: () => compose("done") },
      t("wo_done")));
  }
  const form = composing?.id === id ? workForm({
    submitLabel: t(composing.step === "done" ? "wo_done" : "wo_start"),
    onSubmit: ({ note, photo }) => step(w, composing.step, note, photo),
    onCancel: () => { composing = null; render(); },
  }) : null;
  return h(`article.job.work-order.work-${w.status}`, { dataset: { workOrderId: id, status: w.status } },
    h("div.job-head",
      h("span.chip", t(`wo_type_${w.type}`)),
      h("span.job-device", w.device),
      h("span.job-time", { title: fmtTime(w.created_at, true) }, timeAgo(w.created_at))),
    h("div.job-msg", `${kindOf(w.device_kind)}${w.device_name ? ` · ${w.device_name}` : ""}`),
    w.note ? h("div.job-where", w.note) : null,
    h("div.job-work", h(`span.chip.work-chip.work-${w.status}`, t(`wo_status_${w.status}`))),
    h("div.job-links", ...links),
    form ?? (buttons.length ? h("div.job-buttons", ...buttons) : null));
}

const kindOf = (kind) => (t(`wo_kind_${kind}`) !== `wo_kind_${kind}` ? t(`wo_kind_${kind}`) : kindName(kind));

async function step(w, name, note, photo) {
  try {
    const answer = await postForm(`/api/v1/work-orders/${encodeURIComponent(w.id)}/${name}`, { note }, photo);
    composing = null;
    orders = orders.map((o) => (o.id === answer.id ? answer : o));
    render();
    toast(t(`wo_status_${answer.status}`), "ok");
  } catch (err) {
    toast(t("wo_failed", { why: err.message }), "error");
  }
}
