// The Jobs panel: long-text jobs (POST/GET /v1/audio/speech/long, the OpenAI-style peer's shapes) with live
// progress, pause, resume, cancel, retry, play, download and delete, and the history's statistics.
// It appears only when the server documents POST /v1/audio/speech/long.
//
// Progress is polled (once a second while the panel is shown): EventSource cannot send the API key,
// and one list request a second covers every job at once.

import { audioUrl, call, formatBytes, has, on, schemaOf } from "./api.js";
import { clearErrors, el, field, fillSelect, select, showError } from "./forms.js";
import { voiceOptions } from "./speak.js";

const BASE = "/v1/audio/speech/long";
const HISTORY = "/v1/audio/speech/long-history";
const STATS = `${HISTORY}/stats`;
const REFRESH_MS = 1000;
const LIMIT = 20;
const ACTIVE = ["pending", "chunking", "processing"];
const FINISHED = ["completed", "failed", "cancelled"];

export const panel = { id: "jobs", label: "Long jobs", detect: () => has(BASE, "post"), init,
  show: () => start(), hide: () => stop() };

let timer = null;
let refresh = async () => {};

function start() {
  stop();
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

function stop() {
  clearInterval(timer);
  timer = null;
}

async function init(root, env) {
  const spec = await schemaOf("LongTextRequest");
  const limit = env.limits.max_longtext_chars;
  const text = el("textarea", { rows: 8, maxlength: limit, placeholder: "A long text: an article, a chapter, a book." });
  const count = el("span", { class: "count", "aria-live": "polite" });
  const name = el("input", { type: "text", maxlength: 200, placeholder: "e.g. Chapter 1", autocomplete: "off" });
  const voice = select([["", "(default voice)"]]);
  const formats = spec.properties?.response_format?.enum || ["mp3", "wav"];
  const format = select(formats.map((f) => [f, f]), spec.properties?.response_format?.default || "mp3");
  const form = el("form", { novalidate: true, class: "job-form" },
    field("input", "Text", text, "cut into chunks by sentence; the job goes on when this page is closed"),
    el("div", { class: "row" }, field("display_name", "Name", name), field("voice", "Voice", voice),
      field("response_format", "Format", format)),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Start job" })),
    el("p", { class: "form-error", role: "alert" }));
  const stats = el("dl", { class: "summary", id: "job-stats" });
  const caption = el("p", { class: "hint", "aria-live": "polite" });
  const tbody = el("tbody");
  const table = el("table", { class: "jobs" },
    el("thead", {}, el("tr", {}, ["Job", "Status", "Progress", "Voice", "Audio", "Actions"].map((h) => el("th", { scope: "col", text: h })))),
    tbody);
  const errors = el("div", {}, el("p", { class: "form-error", role: "alert" }));
  const listErrors = el("div", {}, el("p", { class: "form-error", role: "alert" })); // the polling's own: gone once it works
  const player = el("audio", { controls: true, "aria-label": "Job audio" });
  const withStats = await has(STATS);
  const withSearch = await has(HISTORY);
  const search = el("input", { type: "search", placeholder: "words of the text or the name", autocomplete: "off" });
  const status = select([["", "(any)"], ...["pending", "processing", "paused", "completed", "failed", "cancelled"].map((s) => [s, s])]);
  const filters = el("form", { class: "row filters", role: "search", novalidate: true },
    withSearch ? field("search", "Search", search) : null, field("status", "Status", status));
  root.append(form, el("h2", { text: "Jobs" }), filters, caption, table, listErrors, errors, player,
    withStats ? el("h2", { text: "History" }) : null, stats);
  text.closest(".field").querySelector("label").after(count);
  const showCount = () => { count.textContent = `${text.value.length.toLocaleString()} / ${limit.toLocaleString()} characters`; };
  text.addEventListener("input", showCount);
  showCount();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = { input: text.value, response_format: format.value };
    if (voice.value) body.voice = voice.value;
    if (name.value.trim()) body.display_name = name.value.trim();
    try {
      await call(BASE, { method: "POST", json: body });
      text.value = "";
      name.value = "";
      showCount();
      await refresh();
    } catch (error) {
      showError(form, error);
    }
  });

  const path = (job, tail = "") => `${BASE}/${encodeURIComponent(job.job_id)}${tail}`;
  const act = (fn) => async () => {
    clearErrors(errors);
    try {
      await fn();
      await refresh();
    } catch (error) {
      showError(errors, error);
    }
  };
  const title = (job) => job.display_name || job.text_preview || job.job_id;

  function buttons(job) {
    const list = [];
    const add = (label, fn) => list.push(el("button", { type: "button", text: label, "aria-label": `${label} ${title(job)}`,
      on: { click: act(fn) } }));
    if (["pending", "processing"].includes(job.status)) add("Pause", () => call(path(job, "/pause"), { method: "PUT" }));
    if (job.status === "paused") add("Resume", () => call(path(job, "/resume"), { method: "PUT" }));
    if (!FINISHED.includes(job.status)) add("Cancel", () => call(path(job), { method: "DELETE" }));
    if (["failed", "cancelled"].includes(job.status)) add("Retry", () => call(path(job, "/retry"), { method: "POST", json: {} }));
    if (job.status === "completed") {
      add("Play", async () => { player.src = await audioUrl(path(job, "/download")); await player.play(); });
      add("Download", async () => { // under the server's name for it (long_text_<id>.<format>)
        const response = await call(path(job, "/download"), { raw: true });
        const named = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
        el("a", { href: URL.createObjectURL(await response.blob()), download: named ? named[1] : job.job_id }).click();
      });
    }
    if (FINISHED.includes(job.status)) {
      add("Delete", async () => {
        if (window.confirm(`Delete the job ${title(job)} and its audio?`)) await call(`${path(job)}?action=delete`, { method: "DELETE" });
      });
    }
    return list;
  }

  function progressText(job) {
    const percent = Math.round(job.progress_percentage || 0);
    const left = job.estimated_remaining_seconds;
    return `${percent}%${typeof left === "number" && !FINISHED.includes(job.status) ? `, about ${left} s left` : ""}`;
  }

  // Rows are updated in place (a row is rebuilt only when its status changes), so a button is never
  // replaced under the pointer by the once-a-second refresh.
  const rows = new Map();
  function rowOf(job) {
    const known = rows.get(job.job_id);
    if (known && known.status === job.status) {
      known.bar.value = job.progress_percentage || 0;
      known.percent.textContent = progressText(job);
      return known.tr;
    }
    const bar = el("progress", { max: 100, value: job.progress_percentage || 0, "aria-label": `Progress of ${title(job)}` });
    const percent = el("span", { class: "percent", text: progressText(job) });
    const audio = job.status === "completed"
      ? `${typeof job.total_duration_seconds === "number" ? `${job.total_duration_seconds.toFixed(1)} s, ` : ""}${formatBytes(job.audio_file_size)}`
      : "–";
    const tr = el("tr", { "data-job": job.job_id, "data-status": job.status },
      el("th", { scope: "row", text: title(job), title: job.text_preview || "" }),
      el("td", { class: `status state-${job.status}`, text: job.status + (job.retry_count ? ` (retry ${job.retry_count})` : "") }),
      el("td", { class: "progress" }, bar, percent),
      el("td", { text: job.voice || "default" }),
      el("td", { text: audio }),
      el("td", { class: "buttons" }, buttons(job)));
    if (known) known.tr.replaceWith(tr);
    rows.set(job.job_id, { tr, status: job.status, bar, percent });
    return tr;
  }

  let busy = false;
  refresh = async () => {
    if (busy) return; // a slow answer: skip a tick rather than pile requests up
    busy = true;
    try {
      const query = new URLSearchParams({ limit: LIMIT });
      if (status.value) query.set("status", status.value);
      const words = search.value.trim();
      if (words) {
        query.set("search", words);
        query.set("sort", "created_desc");
      }
      const answer = await call(`${words ? HISTORY : BASE}?${query}`);
      const seen = new Set(answer.jobs.map((job) => job.job_id));
      for (const [id, known] of rows) {
        if (!seen.has(id)) {
          known.tr.remove();
          rows.delete(id);
        }
      }
      answer.jobs.forEach((job, index) => {
        const tr = rowOf(job);
        if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
      });
      table.hidden = !answer.jobs.length;
      caption.textContent = answer.jobs.length
        ? `${answer.active_jobs} running or waiting, ${answer.completed_jobs} completed, ${answer.total_jobs} in all`
        : (words || status.value ? "No job matches." : "No jobs yet.");
      if (withStats) showStats(stats, await call(STATS));
      clearErrors(listErrors);
    } catch (error) {
      showError(listErrors, error);
    } finally {
      busy = false;
    }
  };

  async function loadVoices() {
    try {
      fillSelect(voice, voiceOptions(await call("/v1/voices")));
    } catch (error) {
      showError(form, error);
    }
  }
  let typing = null;
  search.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(refresh, 300); });
  filters.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  status.addEventListener("change", () => refresh());
  on("voices-changed", loadVoices);
  on("auth-changed", () => { loadVoices(); refresh(); });
  await loadVoices();
  await refresh();
}

function showStats(node, s) {
  const seconds = (v) => (typeof v === "number" ? `${v.toFixed(1)} s` : "–");
  const items = [["Jobs", s.total_jobs], ["Completed", s.completed_jobs], ["Failed", s.failed_jobs],
    ["Success rate", typeof s.success_rate_percentage === "number" ? `${s.success_rate_percentage}%` : "–"],
    ["Audio made", seconds(s.total_audio_duration_seconds)], ["Storage", formatBytes(s.total_storage_bytes)],
    ["Average processing", seconds(s.average_processing_time_seconds)], ["Most used voice", s.most_used_voice]];
  const months = Object.entries(s.jobs_by_month || {}).map(([month, n]) => `${month}: ${n}`).join(", ");
  if (months) items.push(["Jobs by month", months]);
  node.replaceChildren(...items.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-key": k, text: String(v ?? "–") })]));
}
