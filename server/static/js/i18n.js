// English and Vietnamese labels. The language follows the browser's unless the user picked
// one with the toggle (kept in localStorage); every label on the pages comes from here.

const EN = {
  replay: "Replay",
  play: "Play",
  pause: "Pause",
  speed: "Speed",
  replay_range: "Range",
  replay_time: "Time",
  replaying_at: "Replaying — {t}",
  back_to_live: "Back to live",
  last_1h: "Last hour",
  last_6h: "Last 6 hours",
  last_24h: "Last 24 hours",
  last_7d: "Last 7 days",
  last_30d: "Last 30 days",
  app_title: "Operations Center",
  app_sub: "Smart city IOC",
  layers: "Layers",
  wards: "Wards",
  alarms: "Alarms",
  basemap: "Base map",
  devices: "Devices",
  legend: "Legend",
  login_title: "Sign in to the Operations Center",
  login_hint: "Paste an access token. An administrator creates one with: ioc token create --role operator",
  token: "Access token",
  sign_in: "Sign in",
  sign_out: "Sign out",
  bad_token: "That token is unknown, revoked or expired.",
  link_invalid: "This sign-in link has been used or has expired. Sign in with a token, or ask for a new link.",
  session_ended: "Your session has ended. Sign in again.",
  live: "Live",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  offline_link: "Connection lost",
  kpi_online: "Online",
  kpi_lamps_out: "Lamps out",
  kpi_alarms: "Open alarms",
  kpi_unacked: "Unacknowledged",
  no_alarms: "No open alarms. All clear.",
  ack: "Acknowledge",
  shelve: "Shelve",
  unshelve: "Unshelve",
  assign: "Assign",
  assign_to: "Assign to crew",
  comment: "Comment",
  cancel: "Cancel",
  minutes: "minutes",
  shelved_until: "Shelved until {t}",
  assigned_to: "Crew: {crew}",
  acked_by: "Acknowledged by {who}",
  filter_all: "All",
  filter_unacked: "Unacked",
  filter_critical: "Critical + major",
  device: "Device",
  latest_values: "Latest values",
  history: "History",
  last_seen: "Last seen",
  never: "never",
  parent: "Parent",
  ward: "Ward",
  kind: "Kind",
  status: "Status",
  no_values: "No readings yet.",
  no_history: "No readings in this period.",
  loading: "Loading…",
  close: "Close",
  zoom_to: "Zoom to",
  lamps: "Lamps",
  lamps_out: "Out",
  offline: "Offline",
  open_alarms: "Alarms",
  unacked: "Unacked",
  ward_roll_up: "Ward roll-up",
  colour_wards: "Colour wards by lamps out",
  city_total: "City",
  ago_s: "{n} s ago",
  ago_m: "{n} min ago",
  ago_h: "{n} h ago",
  ago_d: "{n} d ago",
  action_failed: "Could not {what}: {why}",
  done_ack: "Alarm {id} acknowledged",
  done_shelve: "Alarm {id} shelved for {n} min",
  done_unshelve: "Alarm {id} unshelved",
  done_assign: "Alarm {id} assigned to {crew}",
  done_comment: "Comment added to alarm {id}",
  save: "Save",
  tiles_missing: "The map layers could not be loaded: {why}",
  incident: "Incident",
  children: "{n} related alarms",
  value: "Value",
  // Crew page
  crew_title: "My work",
  crew_sub: "Maintenance crew",
  crew_none: "Nothing assigned to your crew right now.",
  crew_not_crew: "This token does not belong to a crew. Ask the operations center for a crew token.",
  open_map: "Map",
  navigate: "Navigate",
  start_work: "Start work",
  finish_work: "Work done",
  work_open: "Not started",
  work_in_progress: "In progress",
  work_done: "Done",
  updated: "Updated {t}",
  range_6h: "6 h",
  range_24h: "24 h",
  range_7d: "7 d",
  yes: "Yes",
  no: "No",
  col_lamps_out: "Lamps out",
  col_alarms: "Alarms",
  col_offline: "Offline",
};

const VI = {
  replay: "Phát lại",
  play: "Phát",
  pause: "Tạm dừng",
  speed: "Tốc độ",
  replay_range: "Khoảng thời gian",
  replay_time: "Thời điểm",
  replaying_at: "Đang phát lại — {t}",
  back_to_live: "Về trực tiếp",
  last_1h: "1 giờ qua",
  last_6h: "6 giờ qua",
  last_24h: "24 giờ qua",
  last_7d: "7 ngày qua",
  last_30d: "30 ngày qua",
  app_title: "Trung tâm Điều hành",
  app_sub: "Đô thị thông minh IOC",
  layers: "Lớp bản đồ",
  wards: "Phường",
  alarms: "Cảnh báo",
  basemap: "Bản đồ nền",
  devices: "Thiết bị",
  legend: "Chú giải",
  login_title: "Đăng nhập Trung tâm Điều hành",
  login_hint: "Dán mã truy cập. Quản trị viên tạo mã bằng lệnh: ioc token create --role operator",
  token: "Mã truy cập",
  sign_in: "Đăng nhập",
  sign_out: "Đăng xuất",
  bad_token: "Mã truy cập không tồn tại, đã bị thu hồi hoặc đã hết hạn.",
  link_invalid: "Liên kết đăng nhập này đã được dùng hoặc đã hết hạn. Hãy đăng nhập bằng mã truy cập hoặc xin liên kết mới.",
  session_ended: "Phiên làm việc đã kết thúc. Vui lòng đăng nhập lại.",
  live: "Trực tiếp",
  connecting: "Đang kết nối…",
  reconnecting: "Đang kết nối lại…",
  offline_link: "Mất kết nối",
  kpi_online: "Trực tuyến",
  kpi_lamps_out: "Đèn hỏng",
  kpi_alarms: "Cảnh báo mở",
  kpi_unacked: "Chưa xác nhận",
  no_alarms: "Không có cảnh báo. Mọi thứ bình thường.",
  ack: "Xác nhận",
  shelve: "Tạm ẩn",
  unshelve: "Bỏ tạm ẩn",
  assign: "Giao việc",
  assign_to: "Giao cho tổ",
  comment: "Ghi chú",
  cancel: "Hủy",
  minutes: "phút",
  shelved_until: "Tạm ẩn đến {t}",
  assigned_to: "Tổ: {crew}",
  acked_by: "Đã xác nhận bởi {who}",
  filter_all: "Tất cả",
  filter_unacked: "Chưa xác nhận",
  filter_critical: "Nghiêm trọng + quan trọng",
  device: "Thiết bị",
  latest_values: "Giá trị mới nhất",
  history: "Lịch sử",
  last_seen: "Dữ liệu gần nhất",
  never: "chưa có",
  parent: "Thuộc",
  ward: "Phường",
  kind: "Loại",
  status: "Trạng thái",
  no_values: "Chưa có dữ liệu.",
  no_history: "Không có dữ liệu trong khoảng này.",
  loading: "Đang tải…",
  close: "Đóng",
  zoom_to: "Phóng tới",
  lamps: "Đèn",
  lamps_out: "Hỏng",
  offline: "Mất kết nối",
  open_alarms: "Cảnh báo",
  unacked: "Chưa XN",
  ward_roll_up: "Tổng hợp theo phường",
  colour_wards: "Tô màu phường theo số đèn hỏng",
  city_total: "Toàn thành phố",
  ago_s: "{n} giây trước",
  ago_m: "{n} phút trước",
  ago_h: "{n} giờ trước",
  ago_d: "{n} ngày trước",
  action_failed: "Không thể {what}: {why}",
  done_ack: "Đã xác nhận cảnh báo {id}",
  done_shelve: "Đã tạm ẩn cảnh báo {id} trong {n} phút",
  done_unshelve: "Đã bỏ tạm ẩn cảnh báo {id}",
  done_assign: "Đã giao cảnh báo {id} cho {crew}",
  done_comment: "Đã thêm ghi chú cho cảnh báo {id}",
  save: "Lưu",
  tiles_missing: "Không tải được các lớp bản đồ: {why}",
  incident: "Sự cố",
  children: "{n} cảnh báo liên quan",
  value: "Giá trị",
  crew_title: "Việc của tổ",
  crew_sub: "Tổ bảo trì",
  crew_none: "Hiện chưa có việc nào được giao cho tổ.",
  crew_not_crew: "Mã truy cập này không thuộc tổ bảo trì nào. Hãy xin Trung tâm một mã của tổ.",
  open_map: "Bản đồ",
  navigate: "Chỉ đường",
  start_work: "Bắt đầu xử lý",
  finish_work: "Đã xong",
  work_open: "Chưa bắt đầu",
  work_in_progress: "Đang xử lý",
  work_done: "Hoàn thành",
  updated: "Cập nhật {t}",
  range_6h: "6 giờ",
  range_24h: "24 giờ",
  range_7d: "7 ngày",
  yes: "Có",
  no: "Không",
  col_lamps_out: "Đèn hỏng",
  col_alarms: "Cảnh báo",
  col_offline: "Mất KN",
};

const KINDS = {
  en: {
    streetlight: "Streetlights", lighting_cabinet: "Lighting cabinets", water_meter: "Water meters",
    pressure_sensor: "Pressure sensors", flow_meter: "Flow meters", water_pipe: "Water mains",
    traffic_controller: "Traffic controllers", road_segment: "Traffic (road segments)",
    env_sensor: "Environment stations", camera: "Cameras", wards: "Ward boundaries",
    roads: "Roads", alarms: "Active alarms (tiles)", aggregates: "City-wide summary",
    ward_stats: "Ward roll-up (shaded)", tree: "Trees", green_area: "Parks and green areas",
  },
  vi: {
    streetlight: "Đèn đường", lighting_cabinet: "Tủ điện chiếu sáng", water_meter: "Đồng hồ nước",
    pressure_sensor: "Cảm biến áp lực", flow_meter: "Lưu lượng kế", water_pipe: "Đường ống cấp nước",
    traffic_controller: "Tủ đèn tín hiệu giao thông", road_segment: "Giao thông (đoạn đường)",
    env_sensor: "Trạm quan trắc môi trường", camera: "Camera", wards: "Ranh giới phường",
    roads: "Đường phố", alarms: "Cảnh báo đang mở (lớp ô)", aggregates: "Tổng hợp toàn thành phố",
    ward_stats: "Tổng hợp theo phường (tô màu)", tree: "Cây xanh", green_area: "Công viên, mảng xanh",
  },
};

const KIND_ONE = {
  en: {
    streetlight: "Streetlight", lighting_cabinet: "Lighting cabinet", water_meter: "Water meter",
    pressure_sensor: "Pressure sensor", flow_meter: "Flow meter", water_pipe: "Water main",
    traffic_controller: "Traffic controller", road_segment: "Road segment",
    env_sensor: "Environment station", camera: "Camera",
  },
  vi: {
    streetlight: "Đèn đường", lighting_cabinet: "Tủ điện chiếu sáng", water_meter: "Đồng hồ nước",
    pressure_sensor: "Cảm biến áp lực", flow_meter: "Lưu lượng kế", water_pipe: "Đường ống cấp nước",
    traffic_controller: "Tủ đèn tín hiệu giao thông", road_segment: "Đoạn đường",
    env_sensor: "Trạm quan trắc môi trường", camera: "Camera",
  },
};

const STATUS = {
  en: { online: "Online", stale: "Stale", offline: "Offline", unknown: "No data yet", lamp_on: "Lamp on",
        lamp_off: "Lamp off" },
  vi: { online: "Trực tuyến", stale: "Chậm cập nhật", offline: "Mất kết nối", unknown: "Chưa có dữ liệu",
        lamp_on: "Đèn đang sáng", lamp_off: "Đèn tắt" },
};

const SEVERITY = {
  en: { critical: "Critical", major: "Major", minor: "Minor", warning: "Warning" },
  vi: { critical: "Nghiêm trọng", major: "Quan trọng", minor: "Thứ yếu", warning: "Lưu ý" },
};

const ALARM_STATE = {
  en: { active_unacked: "Active, unacknowledged", active_acked: "Active, acknowledged",
        rtn_unacked: "Cleared, unacknowledged", closed: "Closed" },
  vi: { active_unacked: "Đang xảy ra, chưa xác nhận", active_acked: "Đang xảy ra, đã xác nhận",
        rtn_unacked: "Đã hết, chưa xác nhận", closed: "Đã đóng" },
};

const METRICS = {
  en: {
    lamp_on: "Lamp on", dim_level_pct: "Dim level", power_w: "Power", energy_kwh: "Energy",
    burning_hours: "Burning hours", lamp_fault: "Lamp fault", driver_fault: "Driver fault",
    voltage_l1_v: "Voltage L1", voltage_l2_v: "Voltage L2", voltage_l3_v: "Voltage L3",
    current_l1_a: "Current L1", current_l2_a: "Current L2", current_l3_a: "Current L3",
    power_factor: "Power factor", frequency_hz: "Frequency", energy_import_kwh: "Energy imported",
    breaker_tripped: "Breaker tripped", door_open: "Door open", volume_m3: "Volume",
    flow_m3h: "Flow", battery_pct: "Battery", pressure_bar: "Pressure", temperature_c: "Temperature",
    mode: "Mode", plan: "Plan", detector_faults: "Detector faults", volume_vph: "Volume",
    occupancy_pct: "Occupancy", speed_kmh: "Speed", flow_vph: "Flow", congestion_level: "Congestion",
    pm25_ugm3: "PM2.5", pm10_ugm3: "PM10", no2_ppb: "NO₂", noise_dba: "Noise",
    humidity_pct: "Humidity", online: "Online", recording: "Recording",
  },
  vi: {
    lamp_on: "Đèn sáng", dim_level_pct: "Mức dim", power_w: "Công suất", energy_kwh: "Điện năng",
    burning_hours: "Giờ sáng", lamp_fault: "Lỗi bóng", driver_fault: "Lỗi bộ nguồn",
    voltage_l1_v: "Điện áp L1", voltage_l2_v: "Điện áp L2", voltage_l3_v: "Điện áp L3",
    current_l1_a: "Dòng điện L1", current_l2_a: "Dòng điện L2", current_l3_a: "Dòng điện L3",
    power_factor: "Hệ số công suất", frequency_hz: "Tần số", energy_import_kwh: "Điện năng nhận",
    breaker_tripped: "Aptomat nhảy", door_open: "Cửa tủ mở", volume_m3: "Thể tích",
    flow_m3h: "Lưu lượng", battery_pct: "Pin", pressure_bar: "Áp suất", temperature_c: "Nhiệt độ",
    mode: "Chế độ", plan: "Kế hoạch", detector_faults: "Lỗi đầu dò", volume_vph: "Lưu lượng xe",
    occupancy_pct: "Độ chiếm dụng", speed_kmh: "Tốc độ", flow_vph: "Lưu lượng xe",
    congestion_level: "Mức ùn tắc", pm25_ugm3: "PM2.5", pm10_ugm3: "PM10", no2_ppb: "NO₂",
    noise_dba: "Tiếng ồn", humidity_pct: "Độ ẩm", online: "Trực tuyến", recording: "Đang ghi",
  },
};

// Units from the metric name's suffix (CONTRACT: snake_case with the unit as suffix).
const UNITS = [
  ["_pct", "%"], ["_kwh", "kWh"], ["_w", "W"], ["_v", "V"], ["_a", "A"], ["_hz", "Hz"],
  ["_m3h", "m³/h"], ["_m3", "m³"], ["_bar", "bar"], ["_c", "°C"], ["_ugm3", "µg/m³"],
  ["_ppb", "ppb"], ["_dba", "dB(A)"], ["_kmh", "km/h"], ["_vph", "veh/h"], ["_hours", "h"],
];

const TABLES = { en: EN, vi: VI };
const listeners = new Set();
let current = pickInitial();

function pickInitial() {
  const saved = localStorage.getItem("ioc.lang");
  if (saved === "en" || saved === "vi") return saved;
  const langs = navigator.languages?.length ? navigator.languages : [navigator.language || "en"];
  return langs.some((l) => l.toLowerCase().startsWith("vi")) ? "vi" : "en";
}

export function lang() {
  return current;
}

export function setLang(value) {
  current = value === "vi" ? "vi" : "en";
  localStorage.setItem("ioc.lang", current);
  document.documentElement.lang = current;
  applyStatic();
  for (const fn of listeners) fn(current);
}

// A page module brings its own labels (one table per feature keeps features out of each
// other's way): addStrings({key: "English"}, {key: "Tiếng Việt"}) before its first t(key).
export function addStrings(en, vi) {
  Object.assign(EN, en);
  Object.assign(VI, vi);
}

export function onLangChange(fn) {
  listeners.add(fn);
}

export function t(key, vars = {}) {
  const text = TABLES[current][key] ?? EN[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (vars[name] ?? `{${name}}`));
}

export const kindLabel = (kind) => KINDS[current][kind] ?? KINDS.en[kind] ?? kind.replaceAll("_", " ");
export const kindName = (kind) => KIND_ONE[current][kind] ?? KIND_ONE.en[kind] ?? kindLabel(kind);
export const statusLabel = (s) => STATUS[current][s] ?? s;
export const severityLabel = (s) => SEVERITY[current][s] ?? s;
export const alarmStateLabel = (s) => ALARM_STATE[current][s] ?? s;
export const metricLabel = (m) => METRICS[current][m] ?? METRICS.en[m] ?? m.replaceAll("_", " ");

export function unitOf(metric) {
  for (const [suffix, unit] of UNITS) if (metric.endsWith(suffix)) return unit;
  return "";
}

// Elements marked data-i18n="key" (text) or data-i18n-placeholder / -title / -aria (aria-label).
export function applyStatic(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
  for (const el of root.querySelectorAll("[data-lang]")) {
    el.classList.toggle("active", el.dataset.lang === current);
  }
}

document.documentElement.lang = current;
