// The Jobs panel: long-text jobs (POST/GET /v1/audio/speech/long, the seed-000 shapes) with live
// progress, pause, resume, cancel, retry, download, and the history's statistics. It appears only
// when the server documents POST /v1/audio/speech/long.

import { audioUrl, call, has, on } from "./api.js";
import { clearErrors, el, field, fillSelect, select, showError } from "./forms.js";
import { voiceOptions } from "./speak.js";

const BASE = "/v1/audio/speech/long";
const REFRESH_MS = 2000;

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

async function init(root) {
  const text = el("textarea", { rows: 8, placeholder: "A long text: an article, a chapter, a book." });
  const count = el("span", { class: "count", "aria-live": "polite" });
  const voice = select([["", "(default voice)"]]);
  const format = select([["mp3", "mp3"], ["wav", "wav"]]);
  const form = el("form", { novalidate: true },
    field("input", "Text", text),
    el("div", { class: "row" }, field("voice", "Voice", voice), field("response_format", "Format", format)),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Start job" })),
    el("p", { class: "form-error", role: "alert" }));
  const stats = el("dl", { class: "summary" });
  const list = el("div", { "aria-live": "polite" });
  const errors = el("div", {}, el("p", { class: "form-error", role: "alert" }));
  const player = el("audio", { controls: true, "aria-label": "Job audio" });
  const historyStats = (await has(`${BASE}-history/stats`)) ? `${BASE}-history/stats` : null;
  root.append(form, el("h2", { text: "Jobs" }), list, errors, player, historyStats ? el("h2", { text: "History" }) : "", stats);
  text.closest(".field").querySelector("label").after(count);
  text.addEventListener("input", () => { count.textContent = `${text.value.length.toLocaleString()} characters`; });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = { input: text.value, response_format: format.value };
    if (voice.value) body.voice = voice.value;
    try {
      await call(BASE, { method: "POST", json: body });
      text.value = "";
      await refresh();
    } catch (error) {
      showError(form, error);
    }
  });

  const action = (fn) => async () => {
    clearErrors(errors);
    try {
      await fn();
      await refresh();
    } catch (error) {
      showError(errors, error);
    }
  };
  const path = (job, tail = "") => `${BASE}/${encodeURIComponent(job.job_id)}${tail}`;

  function row(job) {
    const buttons = [];
    const add = (label, fn) => buttons.push(el("button", { type: "button", text: label, "aria-label": `${label} job ${job.job_id}`, on: { click: action(fn) } }));
    if (["pending", "chunking", "processing"].includes(job.status)) add("Pause", () => call(path(job, "/pause"), { method: "PUT" }));
    if (job.status === "paused" || job.can_resume) add("Resume", () => call(path(job, "/resume"), { method: "PUT" }));
    if (!["completed", "cancelled", "failed"].includes(job.status)) add("Cancel", () => call(path(job), { method: "DELETE" }));
    if (["failed", "cancelled"].includes(job.status)) add("Retry", () => call(path(job, "/retry"), { method: "POST", json: {} }));
    if (job.status === "completed") {
      add("Play", async () => { player.src = await audioUrl(path(job, "/download")); await player.play(); });
      add("Download", async () => { el("a", { href: await audioUrl(path(job, "/download")), download: `${job.job_id}` }).click(); });
    }
    return el("tr", { "data-job": job.job_id },
      el("th", { scope: "row", text: job.display_name || job.text_preview || job.job_id }),
      el("td", { text: job.status }),
      el("td", {}, el("progress", { max: 100, value: job.progress_percentage || 0, "aria-label": `Progress of ${job.job_id}` }),
        ` ${Math.round(job.progress_percentage || 0)}%`),
      el("td", { text: job.voice || "–" }),
      el("td", { class: "buttons" }, buttons));
  }

  refresh = async () => {
    try {
      const answer = await call(BASE);
      list.replaceChildren(answer.jobs.length
        ? el("table", {}, el("caption", { text: `${answer.active_jobs} active, ${answer.completed_jobs} completed, ${answer.total_jobs} in all` }),
          el("thead", {}, el("tr", {}, ["Job", "Status", "Progress", "Voice", "Actions"].map((h) => el("th", { scope: "col", text: h })))),
          el("tbody", {}, answer.jobs.map(row)))
        : el("p", { text: "No jobs yet." }));
      if (historyStats) {
        const s = await call(historyStats);
        stats.replaceChildren(...Object.entries(s).filter(([, v]) => typeof v !== "object")
          .flatMap(([k, v]) => [el("dt", { text: k.replaceAll("_", " ") }), el("dd", { text: String(v) })]));
      }
    } catch (error) {
      showError(errors, error);
    }
  };

  async function loadVoices() {
    try {
      fillSelect(voice, voiceOptions(await call("/v1/voices")));
    } catch (error) {
      showError(form, error);
    }
  }
  on("voices-changed", loadVoices);
  on("auth-changed", () => { loadVoices(); refresh(); });
  await loadVoices();
}
