// Names of the pages' static landmarks and groups (the language switch, the map) for screen
// readers, in the current language: elements marked data-i18n-aria="key" (i18n.applyStatic).

import { addStrings } from "./i18n.js";

addStrings({
  a11y_language: "Language", a11y_city_map: "City map", a11y_map_tools: "Map tools", a11y_map: "Map", a11y_replay: "Replay",
}, {
  a11y_language: "Ngôn ngữ", a11y_city_map: "Bản đồ thành phố", a11y_map_tools: "Công cụ bản đồ", a11y_map: "Bản đồ", a11y_replay: "Phát lại",
});
