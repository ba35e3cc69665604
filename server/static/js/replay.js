// The time slider: the whole map as it was, replayed over the websocket ({"op": "replay"},
// docs/api.md). Each play, pause or seek asks the server for a fresh replay from the
// cursor: a snapshot at that moment (the devices, and the alarms open then), then, when
// playing, the past's messages paced by the speed. "Back to live" sends {"op": "live"}.

import { h } from "./common.js";
import { lang, onLangChange, t } from "./i18n.js";

const RANGES = [["1h", 60], ["6h", 360], ["24h", 1440], ["7d", 7 * 1440], ["30d", 30 * 1440]];
const SPEEDS = [60, 300, 900, 3600];
const MAX_SPEED = 86400;
const MINUTE = 60_000;

const iso = (ms) => new Date(ms).toISOString();

export class ReplayControl {
  // socket: the LiveSocket; view(): {bbox, layers} of the map now; onMode(active): the page
  // follows (alarm actions off while replaying, the live alarm list back after).
  constructor({ bar, badge, socket, view, onMode }) {
    this.bar = bar;
    this.badge = badge;
    this.socket = socket;
    this.view = view;
    this.onMode = onMode ?? (() => {});
    this.active = false;
    this.playing = false;
    this.spanMin = 1440;
    this.speed = SPEEDS[0];
    this.end = Date.now();
    this.cursor = this.end - this.spanMin * MINUTE;
    this.req = null; // the replay asked for: {from, to, speed}
    this.startedAt = null; // performance.now() when its snapshot arrived
    this.render();
    onLangChange(() => this.render());
    setInterval(() => this.tick(), 250);
  }

  // ------------------------------------------------------------ what the user does

  toggle() {
    if (this.active) this.leave();
    else this.enter();
  }

  enter() {
    this.active = true;
    this.playing = false;
    this.end = Math.floor(Date.now() / MINUTE) * MINUTE;
    this.cursor = this.end - this.spanMin * MINUTE;
    document.body.classList.add("replaying");
    this.onMode(true);
    this.ask();
    this.render();
  }

  leave() {
    this.active = false;
    this.playing = false;
    this.req = null;
    document.body.classList.remove("replaying");
    const { bbox, layers } = this.view();
    this.socket.send({ op: "live", bbox, layers, alarms: true });
    this.onMode(false);
    this.render();
  }

  play() {
    if (this.cursor >= this.end - 1000) this.cursor = this.end - this.spanMin * MINUTE;
    this.playing = true;
    this.ask();
    this.render();
  }

  pause() {
    this.cursor = this.now();
    this.playing = false;
    this.ask();
    this.render();
  }

  seek(ms) {
    this.cursor = Math.max(this.end - this.spanMin * MINUTE, Math.min(this.end, ms));
    this.ask();
    this.tick();
  }

  setSpeed(speed) {
    this.cursor = this.now();
    this.speed = speed;
    if (this.playing) this.ask();
  }

  setSpan(minutes) {
    this.spanMin = minutes;
    this.end = Math.floor(Date.now() / MINUTE) * MINUTE;
    this.cursor = Math.max(this.cursor, this.end - minutes * MINUTE);
    this.ask();
    this.render();
  }

  // The map moved, or the connection came back: the same moment, the new view.
  refresh() {
    if (!this.active) return;
    this.cursor = this.now();
    this.ask();
  }

  // ------------------------------------------------------------ the server's side

  ask() {
    const { bbox, layers } = this.view();
    const from = Math.min(this.cursor, this.end - 1);
    const to = this.playing ? this.end : from + 1; // paused: just the snapshot at the cursor
    const speed = this.playing ? this.speed : MAX_SPEED;
    this.req = { from, to, speed };
    this.startedAt = null;
    this.socket.send({ op: "replay", from: iso(from), to: iso(to), speed, bbox, layers,
      alarms: true, coalesce: true });
  }

  // A replay's snapshot arrived: its clock starts now (the server paces from it).
  onSnapshot(msg) {
    if (this.req) this.startedAt = performance.now();
    if (msg.at) this.cursor = Date.parse(msg.at);
  }

  onEnd() {
    if (!this.req || !this.playing) return;
    this.cursor = this.req.to;
    this.playing = false;
    this.render();
  }

  // Where the replay is: the cursor, moving with the speed while playing.
  now() {
    const r = this.req;
    if (!this.playing || !r || this.startedAt === null) return this.cursor;
    return Math.min(r.to, r.from + (performance.now() - this.startedAt) * r.speed);
  }

  // ------------------------------------------------------------ drawing

  // HH:MM, with the day when the range is longer than a day (or when asked).
  timeText(ms, withDay = this.spanMin > 1440) {
    const d = new Date(ms);
    const locale = lang() === "vi" ? "vi-VN" : "en-GB";
    const hhmm = d.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit", hour12: false });
    if (!withDay) return hhmm;
    return `${d.toLocaleDateString(locale, { day: "2-digit", month: "2-digit" })} ${hhmm}`;
  }

  tick() {
    if (!this.active) return;
    const now = this.now();
    const text = t("replaying_at", { t: this.timeText(now) });
    if (this.badgeText !== text) {
      this.badgeText = text;
      this.badge.textContent = text;
    }
    if (this.slider && document.activeElement !== this.slider) {
      this.slider.value = String(Math.round((now - (this.end - this.spanMin * MINUTE)) / MINUTE));
    }
    if (this.clock) this.clock.textContent = this.timeText(now);
  }

  render() {
    const pressed = this.active ? "true" : "false";
    const toggle = h("button.btn.small.replay-toggle", { type: "button", "aria-pressed": pressed,
      onclick: () => this.toggle() }, h("span", { "aria-hidden": "true" }, "⟲ "), t("replay"));
    this.badge.hidden = !this.active;
    this.badgeText = null;
    if (!this.active) {
      this.slider = this.clock = null;
      this.bar.replaceChildren(toggle);
      this.bar.classList.remove("open");
      return;
    }
    const start = this.end - this.spanMin * MINUTE;
    const play = h("button.btn.small.replay-play", { type: "button",
      "aria-label": this.playing ? t("pause") : t("play"),
      onclick: () => (this.playing ? this.pause() : this.play()) },
    this.playing ? "❚❚" : "▶");
    const speed = h("select.replay-speed", { "aria-label": t("speed"),
      onchange: (e) => this.setSpeed(Number(e.target.value)) },
    ...SPEEDS.map((s) => h("option", { value: s, selected: s === this.speed }, `${s}×`)));
    const span = h("select.replay-span", { "aria-label": t("replay_range"),
      onchange: (e) => this.setSpan(Number(e.target.value)) },
    ...RANGES.map(([key, min]) => h("option", { value: min, selected: min === this.spanMin },
      t(`last_${key}`))));
    this.slider = h("input.replay-slider", { type: "range", min: 0, max: this.spanMin, step: 1,
      value: Math.round((this.cursor - start) / MINUTE), "aria-label": t("replay_time"),
      onchange: (e) => this.seek(start + Number(e.target.value) * MINUTE) });
    this.clock = h("span.replay-clock", { "aria-hidden": "true" });
    const live = h("button.btn.small.primary.replay-live", { type: "button",
      onclick: () => this.leave() }, t("back_to_live"));
    this.bar.replaceChildren(toggle, play, this.slider, this.clock,
      h("span.replay-ends", this.timeText(start, this.spanMin >= 1440), " – ",
        this.timeText(this.end, this.spanMin >= 1440)), speed, span, live);
    this.bar.classList.add("open");
    this.tick();
  }
}
