// The header's search box (issue 18): a device id, name, ward or address. Keyboard first:
// "/" focuses it, the arrows move through the results, Enter opens the device (or zooms to
// the ward), Escape closes. A combobox with a listbox, so screen readers follow along.

import { api, h } from "./common.js";
import { addStrings, kindName, onLangChange, t } from "./i18n.js";

addStrings({
  search_label: "Search",
  search_placeholder: "Search id, name, ward, address  ( / )",
  search_placeholder_short: "Search  ( / )",
  search_none: "Nothing found for “{q}”",
  search_ward: "Ward",
  search_results: "Search results",
}, {
  search_label: "Tìm kiếm",
  search_placeholder: "Tìm mã, tên, phường, địa chỉ  ( / )",
  search_placeholder_short: "Tìm kiếm  ( / )",
  search_none: "Không tìm thấy “{q}”",
  search_ward: "Phường",
  search_results: "Kết quả tìm kiếm",
});

export class SearchBox {
  constructor(host, { onDevice, onWard }) {
    this.onDevice = onDevice;
    this.onWard = onWard;
    this.items = [];
    this.active = -1;
    this.seq = 0;
    this.input = h("input.search-input", {
      type: "search", id: "search-input", role: "combobox", autocomplete: "off", spellcheck: "false",
      "aria-autocomplete": "list", "aria-expanded": "false", "aria-controls": "search-list",
    });
    this.list = h("ul.search-list", { id: "search-list", role: "listbox" });
    this.list.hidden = true;
    this.root = h("div.search", this.input, this.list);
    host.append(this.root);
    this.label();
    onLangChange(() => this.label());
    new ResizeObserver(() => this.fitPlaceholder()).observe(this.input);

    let timer = null;
    this.input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.query(), 150);
    });
    this.input.addEventListener("keydown", (ev) => this.key(ev));
    this.input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
    document.addEventListener("keydown", (ev) => {
      const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName ?? "")
        || document.activeElement?.isContentEditable;
      if (ev.key === "/" && !typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
        ev.preventDefault();
        this.input.focus();
        this.input.select();
      }
    });
  }

  label() {
    this.input.setAttribute("aria-label", t("search_label"));
    this.input.title = t("search_placeholder");
    this.list.setAttribute("aria-label", t("search_results"));
    this.fitPlaceholder();
  }

  // The whole hint when the box is wide enough for it, else the short one (the header narrows
  // the box on a 1280 px screen, and Vietnamese is longer); the whole hint stays in the title.
  fitPlaceholder() {
    const long = t("search_placeholder");
    const cs = getComputedStyle(this.input);
    const ctx = (SearchBox.measure ??= document.createElement("canvas").getContext("2d"));
    ctx.font = `${cs.fontStyle} ${cs.fontWeight} ${cs.fontSize} ${cs.fontFamily}`;
    const room = this.input.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const text = ctx.measureText(long).width <= room ? long : t("search_placeholder_short");
    if (this.input.placeholder !== text) this.input.placeholder = text;
  }

  async query() {
    const q = this.input.value.trim();
    if (q.length < 2) {
      this.close();
      return;
    }
    const seq = ++this.seq;
    let data;
    try {
      data = await api(`/api/v1/search?q=${encodeURIComponent(q)}&limit=8`, { quiet: true });
    } catch (err) {
      if (seq === this.seq) this.show([], err.message);
      return;
    }
    if (seq !== this.seq) return; // a later keystroke's answer wins
    this.show([
      ...data.wards.map((w) => ({ type: "ward", ...w })),
      ...data.devices.map((d) => ({ type: "device", ...d })),
    ], data.devices.length || data.wards.length ? "" : t("search_none", { q }));
  }

  show(items, message) {
    this.items = items;
    this.active = items.length ? 0 : -1;
    this.list.replaceChildren(...items.map((it, i) => h("li.search-item", {
      role: "option", id: `search-opt-${i}`, dataset: { index: i },
      onmousedown: (ev) => {
        ev.preventDefault(); // keep the focus in the box
        this.pick(i);
      },
    }, it.type === "ward"
      ? [h("span.search-main", it.name), h("span.search-sub", `${t("search_ward")} · ${it.code}`)]
      : [h("span.search-main", h("b", it.id), " ", it.name),
        h("span.search-sub", [kindName(it.kind), it.ward_name, it.address].filter(Boolean).join(" · "))])));
    if (message) this.list.append(h("li.search-empty", { role: "option", "aria-disabled": "true" }, message));
    this.list.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
    this.highlight();
  }

  highlight() {
    for (const li of this.list.querySelectorAll(".search-item")) {
      const on = Number(li.dataset.index) === this.active;
      li.classList.toggle("active", on);
      li.setAttribute("aria-selected", on ? "true" : "false");
      if (on) li.scrollIntoView({ block: "nearest" });
    }
    if (this.active >= 0) this.input.setAttribute("aria-activedescendant", `search-opt-${this.active}`);
    else this.input.removeAttribute("aria-activedescendant");
  }

  key(ev) {
    const n = this.items.length;
    if (ev.key === "ArrowDown" && n) {
      ev.preventDefault();
      this.active = (this.active + 1) % n;
      this.highlight();
    } else if (ev.key === "ArrowUp" && n) {
      ev.preventDefault();
      this.active = (this.active - 1 + n) % n;
      this.highlight();
    } else if (ev.key === "Enter") {
      ev.preventDefault();
      if (this.active >= 0) this.pick(this.active);
      else this.query();
    } else if (ev.key === "Escape") {
      this.close();
      this.input.blur();
    }
  }

  pick(i) {
    const it = this.items[i];
    if (!it) return;
    this.close();
    if (it.type === "ward") this.onWard?.(it);
    else this.onDevice?.(it);
  }

  close() {
    this.list.hidden = true;
    this.input.setAttribute("aria-expanded", "false");
  }
}
