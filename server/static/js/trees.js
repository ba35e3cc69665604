// A tree's (or green area's) section of the device panel (issue 14): its attributes
// (species, height, trunk diameter, planted, condition, last pruned), its work orders with
// their history, notes and photos, and for operators a form to order an inspection,
// pruning or removal by a crew.

import { api, fmtTime, h, listOf, toast } from "./common.js";
import { addStrings, t } from "./i18n.js";

addStrings({
  tree_section: "Tree",
  tree_species: "Species",
  tree_height: "Height",
  tree_trunk: "Trunk diameter",
  tree_planted: "Planted",
  tree_condition: "Condition",
  tree_last_pruned: "Last pruned",
  tree_orders: "Work orders",
  tree_no_orders: "No work orders yet.",
  tree_order_type: "Work type",
  tree_order_crew: "Crew",
  tree_order_note: "Instructions",
  tree_order_create: "Order work",
  tree_order_made: "Work order {id} created",
  tree_photo: "Photo of work order {id}",
  tree_photo_close: "Close the photo",
  tree_type_inspection: "Inspection",
  tree_type_pruning: "Pruning",
  tree_type_removal: "Removal",
  tree_status_open: "Not started",
  tree_status_in_progress: "In progress",
  tree_status_done: "Done",
}, {
  tree_section: "Cây xanh",
  tree_species: "Loài cây",
  tree_height: "Chiều cao",
  tree_trunk: "Đường kính thân",
  tree_planted: "Năm trồng",
  tree_condition: "Tình trạng",
  tree_last_pruned: "Cắt tỉa lần cuối",
  tree_orders: "Phiếu công việc",
  tree_no_orders: "Chưa có phiếu công việc.",
  tree_order_type: "Loại công việc",
  tree_order_crew: "Đội",
  tree_order_note: "Hướng dẫn",
  tree_order_create: "Giao việc",
  tree_order_made: "Đã tạo phiếu công việc {id}",
  tree_photo: "Ảnh của phiếu công việc {id}",
  tree_photo_close: "Đóng ảnh",
  tree_type_inspection: "Kiểm tra",
  tree_type_pruning: "Cắt tỉa",
  tree_type_removal: "Chặt hạ",
  tree_status_open: "Chưa bắt đầu",
  tree_status_in_progress: "Đang xử lý",
  tree_status_done: "Hoàn thành",
});

const TYPES = ["inspection", "pruning", "removal"];
const KINDS = new Set(["tree", "green_area"]);

export function treeSection(device, { canAct, crews }) {
  const p = device.properties ?? {};
  if (!KINDS.has(p.kind)) return null;
  const facts = [
    [t("tree_species"), p.species],
    [t("tree_height"), p.height_m !== undefined && p.height_m !== null ? `${p.height_m} m` : null],
    [t("tree_trunk"), p.trunk_diameter_cm !== undefined && p.trunk_diameter_cm !== null
      ? `${p.trunk_diameter_cm} cm` : null],
    [t("tree_planted"), p.planted],
    [t("tree_condition"), p.condition],
    [t("tree_last_pruned"), p.last_pruned],
  ].filter(([, v]) => v !== undefined && v !== null && v !== "");
  const list = h("div.wo-list");
  const section = h("section.tree-section", { "aria-label": t("tree_section") },
    h("h3", t("tree_section")),
    facts.length ? h("dl.facts", ...facts.flatMap(([k, v]) => [h("dt", k), h("dd", String(v))])) : null,
    h("h3", t("tree_orders")),
    list,
    canAct() ? orderForm(device, crews(), () => load(device, list)) : null);
  load(device, list);
  return section;
}

async function load(device, list) {
  try {
    const data = await api(`/api/v1/work-orders?device=${encodeURIComponent(device.id)}`);
    const orders = listOf(data, "work_orders");
    const full = await Promise.all(orders.slice(0, 10).map((w) => api(`/api/v1/work-orders/${w.id}`)));
    list.replaceChildren(...(full.length ? full.map(orderItem) : [h("div.empty", t("tree_no_orders"))]));
  } catch (err) {
    list.replaceChildren(h("div.empty.error", err.message));
  }
}

function orderItem(w) {
  const events = (w.events ?? []).map((e) => h("li",
    `${fmtTime(e.at)} · ${t(`tree_status_${e.status}`)}${e.by ? ` · ${e.by}` : ""}${e.note ? ` — ${e.note}` : ""}`,
    e.photo ? h("button.photo-thumb", { type: "button", "aria-label": t("tree_photo", { id: w.id }),
      onclick: () => showPhoto(e.photo, t("tree_photo", { id: w.id })) },
    h("img", { src: e.photo, alt: "", loading: "lazy" })) : null));
  return h("div.wo-item", { dataset: { workOrderId: w.id, status: w.status } },
    h("div", h("strong", `#${w.id} ${t(`tree_type_${w.type}`)}`), " ",
      h(`span.chip.work-chip.work-${w.status}`, t(`tree_status_${w.status}`)),
      w.crew ? ` · ${w.crew}` : ""),
    h("ul.wo-events", ...events));
}

function orderForm(device, crews, reload) {
  const type = h("select", { "aria-label": t("tree_order_type") },
    ...TYPES.map((k) => h("option", { value: k }, t(`tree_type_${k}`))));
  const crew = h("select", { "aria-label": t("tree_order_crew") },
    h("option", { value: "" }, "—"), ...crews.map((c) => h("option", { value: c.id }, c.name ?? c.id)));
  const note = h("input", { type: "text", maxlength: 4000, "aria-label": t("tree_order_note"),
    placeholder: t("tree_order_note") });
  return h("form.wo-form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const made = await api("/api/v1/work-orders", { method: "POST", body: {
          device: device.id, type: type.value, crew: crew.value || undefined, note: note.value.trim() || undefined,
        } });
        note.value = "";
        toast(t("tree_order_made", { id: made.id }), "ok");
        reload();
      } catch (err) {
        toast(err.message, "error");
      }
    },
  }, type, crew, note, h("button.btn.small.primary", { type: "submit" }, t("tree_order_create")));
}

function showPhoto(url, label) {
  const dialog = h("dialog.photo-view", { "aria-label": label },
    h("img", { src: url, alt: label }),
    h("button.btn", { type: "button", onclick: () => dialog.close() }, t("tree_photo_close")));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}
