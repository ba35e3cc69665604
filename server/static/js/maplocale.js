// MapLibre's own controls (zoom, compass, attribution, the map canvas itself) in the page's
// language: their titles and aria-labels come from the map's `locale` option when the map is
// built, and are rewritten here when the language changes (MapLibre has no public setter).

import { lang, onLangChange } from "./i18n.js";

// MapLibre's locale keys, as in its default table (maplibre-gl's src/ui/default_locale.ts).
const VI = {
  "AttributionControl.ToggleAttribution": "Bật/tắt ghi công bản đồ",
  "AttributionControl.MapFeedback": "Góp ý về bản đồ",
  "FullscreenControl.Enter": "Toàn màn hình",
  "FullscreenControl.Exit": "Thoát toàn màn hình",
  "GeolocateControl.FindMyLocation": "Tìm vị trí của tôi",
  "GeolocateControl.LocationNotAvailable": "Không xác định được vị trí",
  "LogoControl.Title": "Biểu trưng MapLibre",
  "Map.Title": "Bản đồ",
  "Marker.Title": "Điểm đánh dấu",
  "NavigationControl.ResetBearing": "Kéo để xoay bản đồ, bấm để quay về hướng bắc",
  "NavigationControl.ZoomIn": "Phóng to",
  "NavigationControl.ZoomOut": "Thu nhỏ",
  "Popup.Close": "Đóng cửa sổ",
};
const EN = {
  "AttributionControl.ToggleAttribution": "Toggle attribution",
  "AttributionControl.MapFeedback": "Map feedback",
  "FullscreenControl.Enter": "Enter fullscreen",
  "FullscreenControl.Exit": "Exit fullscreen",
  "GeolocateControl.FindMyLocation": "Find my location",
  "GeolocateControl.LocationNotAvailable": "Location not available",
  "LogoControl.Title": "MapLibre logo",
  "Map.Title": "Map",
  "Marker.Title": "Map marker",
  "NavigationControl.ResetBearing": "Drag to rotate map, click to reset north",
  "NavigationControl.ZoomIn": "Zoom in",
  "NavigationControl.ZoomOut": "Zoom out",
  "Popup.Close": "Close popup",
};

/** The `locale` option for `new maplibregl.Map(...)`, in the current language. */
export function mapLocale() {
  return lang() === "vi" ? { ...VI } : { ...EN };
}

// control selector -> locale key, for the elements MapLibre labelled when it built them
const CONTROLS = [
  [".maplibregl-ctrl-zoom-in", "NavigationControl.ZoomIn"],
  [".maplibregl-ctrl-zoom-out", "NavigationControl.ZoomOut"],
  [".maplibregl-ctrl-compass", "NavigationControl.ResetBearing"],
  [".maplibregl-ctrl-fullscreen", "FullscreenControl.Enter"],
  [".maplibregl-ctrl-shrink", "FullscreenControl.Exit"],
  [".maplibregl-ctrl-geolocate", "GeolocateControl.FindMyLocation"],
  [".maplibregl-ctrl-attrib-button", "AttributionControl.ToggleAttribution"],
  [".maplibregl-ctrl-logo", "LogoControl.Title"],
  [".maplibregl-popup-close-button", "Popup.Close"],
  [".maplibregl-canvas", "Map.Title"],
];

/** Keeps `map`'s control names in the current language from now on. */
export function localizeMap(map) {
  const apply = () => {
    const strings = mapLocale();
    // later popups and markers read the map's table (a private field, no public setter)
    if (map._locale) Object.assign(map._locale, strings);
    const root = map.getContainer();
    for (const [sel, key] of CONTROLS) {
      for (const el of root.querySelectorAll(sel)) {
        el.setAttribute("aria-label", strings[key]);
        if (el.hasAttribute("title") || el.tagName === "BUTTON") el.title = strings[key];
      }
    }
  };
  apply();
  onLangChange(apply);
  return map;
}
