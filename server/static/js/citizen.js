// What the citizens' pages share: their labels (Vietnamese first), the categories and
// statuses in both languages, the language toggle, and the public API calls. No token and no
// session here: the public API needs none.

import "./a11y.js"; // the static landmarks' names, in the current language
import { addStrings, applyStatic, lang, onLangChange, setLang, t } from "./i18n.js";

addStrings({
  cz_brand: "City reports",
  cz_sub: "Report a problem in the street",
  cz_report_title: "Report a problem",
  cz_step_category: "1. What is the problem?",
  cz_step_photos: "2. Photos (up to 3)",
  cz_add_photo: "Take or add a photo",
  cz_remove_photo: "Remove photo {n}",
  cz_photo_hint: "Photos are made smaller on your phone before they are sent; their location and camera data are removed.",
  cz_step_where: "3. Where is it?",
  cz_use_gps: "Use my location",
  cz_pick_map: "Pick on the map",
  cz_map_hint: "Tap the map where the problem is.",
  cz_where_none: "No location yet.",
  cz_where_set: "Location: {lat}, {lon}",
  cz_where_gps: "Location from your phone (±{acc} m): {lat}, {lon}",
  cz_gps_failed: "Your phone did not give a location ({why}). Pick the place on the map instead.",
  cz_gps_waiting: "Finding your location…",
  cz_step_describe: "4. Describe it",
  cz_description: "Description",
  cz_description_ph: "What is wrong, and where exactly (house number, landmark)?",
  cz_contact: "Phone or e-mail (optional, never shown publicly)",
  cz_website: "Leave this field empty",
  cz_send: "Send report",
  cz_sending: "Sending… {pct}%",
  cz_retry: "Try again",
  cz_retrying: "No answer; trying again in {s} s…",
  cz_failed: "The report was not sent: {why}",
  cz_offline: "no connection",
  cz_need_category: "Choose what the problem is.",
  cz_need_where: "Give the location: use your phone's location or tap the map.",
  cz_need_description: "Describe the problem.",
  cz_bad_photo: "This picture cannot be read: {name}",
  cz_thanks: "Thank you! Your report was received.",
  cz_your_code: "Your tracking code",
  cz_keep_code: "Keep this code: with it you can follow the report and rate the work.",
  cz_follow: "Follow your report",
  cz_another: "Report another problem",
  cz_public_link: "All reports and statistics",
  cz_track_title: "Report",
  cz_not_found: "No report has this code.",
  cz_category: "Problem",
  cz_status: "Status",
  cz_ward: "Ward",
  cz_unit: "Responsible unit",
  cz_reporters: "Citizens who reported it",
  cz_received_at: "Received",
  cz_due: "Service level: resolve by",
  cz_timeline: "What happened",
  cz_photos_before: "Photos of the problem",
  cz_photos_after: "After the work",
  cz_rate_title: "How was it handled?",
  cz_rate_stars: "{n} of 5 stars",
  cz_comment: "Comment (optional)",
  cz_rate_send: "Send rating",
  cz_rated: "Thank you for your rating.",
  cz_rated_stars: "You rated it {n} of 5.",
  cz_need_stars: "Choose 1 to 5 stars.",
  cz_other_reporter: "another citizen reported it",
  cz_public_title: "Citizens' reports",
  cz_public_sub: "Public map and statistics",
  cz_filter_category: "Problem",
  cz_filter_status: "Status",
  cz_all: "All",
  cz_open: "Open",
  cz_closed: "Closed",
  cz_from: "From",
  cz_to: "To",
  cz_by: "Per",
  cz_by_ward: "Ward",
  cz_by_category: "Problem",
  cz_stats: "Statistics",
  cz_received_n: "Received",
  cz_resolved_n: "Resolved",
  cz_within_sla: "Within service level",
  cz_median: "Median time to resolve",
  cz_satisfaction: "Satisfied citizens",
  cz_hours: "{n} h",
  cz_open_data: "Open data",
  cz_download_geojson: "Download GeoJSON",
  cz_download_csv: "Download CSV",
  cz_shown: "Reports on the map: {n}",
  cz_minutes: "{n} min",
  cz_col_sla: "On time",
  cz_col_median: "Median",
  cz_col_sat: "Satisfied",
  cz_unit_crews: "The city's maintenance crews",
  cz_map_label: "Map of reports",
  cz_no_rows: "No reports in this period.",
  cz_total: "Total",
  cz_report_link: "Report a problem",
  cz_language: "Language",
}, {
  cz_brand: "Phản ánh hiện trường",
  cz_sub: "Báo sự cố trên đường phố",
  cz_report_title: "Gửi phản ánh",
  cz_step_category: "1. Sự cố gì?",
  cz_step_photos: "2. Ảnh (tối đa 3)",
  cz_add_photo: "Chụp hoặc chọn ảnh",
  cz_remove_photo: "Xoá ảnh {n}",
  cz_photo_hint: "Ảnh được thu nhỏ trên điện thoại trước khi gửi; vị trí và thông tin máy ảnh bị xoá.",
  cz_step_where: "3. Ở đâu?",
  cz_use_gps: "Dùng vị trí của tôi",
  cz_pick_map: "Chọn trên bản đồ",
  cz_map_hint: "Chạm vào bản đồ tại nơi có sự cố.",
  cz_where_none: "Chưa có vị trí.",
  cz_where_set: "Vị trí: {lat}, {lon}",
  cz_where_gps: "Vị trí từ điện thoại (±{acc} m): {lat}, {lon}",
  cz_gps_failed: "Điện thoại không cho vị trí ({why}). Hãy chọn trên bản đồ.",
  cz_gps_waiting: "Đang tìm vị trí…",
  cz_step_describe: "4. Mô tả",
  cz_description: "Mô tả",
  cz_description_ph: "Sự cố là gì, ở chỗ nào (số nhà, điểm mốc)?",
  cz_contact: "Số điện thoại hoặc e-mail (không bắt buộc, không bao giờ công khai)",
  cz_website: "Để trống ô này",
  cz_send: "Gửi phản ánh",
  cz_sending: "Đang gửi… {pct}%",
  cz_retry: "Gửi lại",
  cz_retrying: "Chưa có phản hồi; thử lại sau {s} giây…",
  cz_failed: "Chưa gửi được phản ánh: {why}",
  cz_offline: "không có kết nối",
  cz_need_category: "Hãy chọn loại sự cố.",
  cz_need_where: "Hãy cho biết vị trí: dùng vị trí điện thoại hoặc chạm vào bản đồ.",
  cz_need_description: "Hãy mô tả sự cố.",
  cz_bad_photo: "Không đọc được ảnh này: {name}",
  cz_thanks: "Cảm ơn bạn! Phản ánh đã được tiếp nhận.",
  cz_your_code: "Mã theo dõi của bạn",
  cz_keep_code: "Hãy giữ mã này để theo dõi phản ánh và đánh giá kết quả xử lý.",
  cz_follow: "Theo dõi phản ánh",
  cz_another: "Gửi phản ánh khác",
  cz_public_link: "Tất cả phản ánh và thống kê",
  cz_track_title: "Phản ánh",
  cz_not_found: "Không có phản ánh nào với mã này.",
  cz_category: "Sự cố",
  cz_status: "Trạng thái",
  cz_ward: "Phường",
  cz_unit: "Đơn vị xử lý",
  cz_reporters: "Số người phản ánh",
  cz_received_at: "Tiếp nhận",
  cz_due: "Hạn xử lý",
  cz_timeline: "Quá trình xử lý",
  cz_photos_before: "Ảnh sự cố",
  cz_photos_after: "Sau khi xử lý",
  cz_rate_title: "Bạn đánh giá việc xử lý thế nào?",
  cz_rate_stars: "{n} trên 5 sao",
  cz_comment: "Nhận xét (không bắt buộc)",
  cz_rate_send: "Gửi đánh giá",
  cz_rated: "Cảm ơn bạn đã đánh giá.",
  cz_rated_stars: "Bạn đã đánh giá {n} trên 5 sao.",
  cz_need_stars: "Hãy chọn từ 1 đến 5 sao.",
  cz_other_reporter: "một người dân khác cũng phản ánh",
  cz_public_title: "Phản ánh của người dân",
  cz_public_sub: "Bản đồ và thống kê công khai",
  cz_filter_category: "Sự cố",
  cz_filter_status: "Trạng thái",
  cz_all: "Tất cả",
  cz_open: "Đang xử lý",
  cz_closed: "Đã đóng",
  cz_from: "Từ ngày",
  cz_to: "Đến ngày",
  cz_by: "Theo",
  cz_by_ward: "Phường",
  cz_by_category: "Sự cố",
  cz_stats: "Thống kê",
  cz_received_n: "Tiếp nhận",
  cz_resolved_n: "Đã xử lý",
  cz_within_sla: "Đúng hạn",
  cz_median: "Thời gian xử lý (trung vị)",
  cz_satisfaction: "Người dân hài lòng",
  cz_hours: "{n} giờ",
  cz_open_data: "Dữ liệu mở",
  cz_download_geojson: "Tải GeoJSON",
  cz_download_csv: "Tải CSV",
  cz_shown: "Số phản ánh trên bản đồ: {n}",
  cz_minutes: "{n} phút",
  cz_col_sla: "Đúng hạn",
  cz_col_median: "Trung vị",
  cz_col_sat: "Hài lòng",
  cz_unit_crews: "Đội bảo trì của thành phố",
  cz_map_label: "Bản đồ phản ánh",
  cz_no_rows: "Không có phản ánh trong khoảng thời gian này.",
  cz_total: "Tổng",
  cz_report_link: "Gửi phản ánh",
  cz_language: "Ngôn ngữ",
});

// service_code -> [English, Vietnamese]; the same as server/reports CATEGORIES.
export const CATEGORIES = {
  streetlight_out: ["Streetlight out", "Đèn đường không sáng"],
  water_leak: ["Water leak", "Rò rỉ nước"],
  fallen_tree: ["Fallen tree", "Cây đổ"],
  tree_pruning: ["Tree needs pruning", "Cây cần cắt tỉa"],
  pothole: ["Pothole", "Ổ gà"],
  flooding: ["Flooding", "Ngập lụt"],
  traffic_signal: ["Traffic signal fault", "Đèn giao thông hỏng"],
  other: ["Other", "Khác"],
};
export const CATEGORY_COLOURS = {
  streetlight_out: "#d9a400", water_leak: "#1c7ed6", fallen_tree: "#2f9e44", tree_pruning: "#66a80f", pothole: "#7950f2",
  flooding: "#0c8599", traffic_signal: "#e8590c", other: "#868e96",
};
const STATUS = {
  en: { received: "Received", verified: "Verified", assigned: "Assigned to a team", in_progress: "In progress",
    resolved: "Resolved", rejected: "Rejected" },
  vi: { received: "Đã tiếp nhận", verified: "Đã xác minh", assigned: "Đã giao xử lý", in_progress: "Đang xử lý",
    resolved: "Đã xử lý xong", rejected: "Từ chối" },
};
export const STATUSES = Object.keys(STATUS.en);

export const categoryLabel = (c) => (CATEGORIES[c] ? CATEGORIES[c][lang() === "vi" ? 1 : 0] : c);
// The unit the server names when none is configured for a category ([reports] units).
export const unitLabel = (u) => (u === "crews" ? t("cz_unit_crews") : u);
export const reportStatusLabel = (s) => STATUS[lang()][s] ?? s;

// The citizens' pages open in Vietnamese unless the citizen picked English with the toggle.
export function startLanguage(render) {
  if (!localStorage.getItem("ioc.lang")) setLang("vi");
  for (const b of document.querySelectorAll("[data-lang]")) {
    b.addEventListener("click", () => setLang(b.dataset.lang));
  }
  onLangChange(() => render());
  applyStatic();
}

export { t, lang };

export class HttpError extends Error {
  constructor(status, detail, retryAfter = null) {
    super(detail);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// GET or POST JSON against the public API; errors carry the server's detail (problem+json).
export async function publicApi(path, { method = "GET", body } = {}) {
  let resp;
  try {
    resp = await fetch(path, {
      method, headers: body === undefined ? { Accept: "application/json" }
        : { Accept: "application/json", "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new HttpError(0, t("cz_offline"));
  }
  const data = await resp.json().catch(() => null);
  if (!resp.ok) throw new HttpError(resp.status, (data && (data.detail || data.title)) || resp.statusText);
  return data;
}

const locale = () => (lang() === "vi" ? "vi-VN" : "en-GB");
export function fmtDateTime(value) {
  if (!value) return "";
  return new Date(value).toLocaleString(locale(), { day: "2-digit", month: "2-digit", year: "numeric",
    hour: "2-digit", minute: "2-digit" });
}
export const fmtNum = (v, d = 1) => (v === null || v === undefined ? "–"
  : Number(v).toLocaleString(locale(), { maximumFractionDigits: d }));
