// The Server panel: health, model workers and their state, the served models (load and unload them),
// queue, memory per worker, recent errors.

import { call, emit, formatBytes, has, on, recentErrors } from "./api.js";
import { el, plainWords } from "./forms.js";

const REFRESH_MS = 2000;
const BUSY_WORDS = { load: "Loading…", unload: "Unloading…" };

export const panel = { id: "server", label: "Server", init, show: () => start(), hide: () => stop() };

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

/** /health answers 503 with its report while no worker is ready: that report is still worth showing. */
export async function health() {
  const response = await fetch("/health");
  return response.json();
}

async function init(root) {
  const serverErrors = (await has("/api/v1/errors/recent")) ? "/api/v1/errors/recent" : null;
  const withHistory = await has("/v1/status/statistics"); // request history and statistics (OpenAI-style family)
  const stats = el("dl", { class: "summary" });
  const history = el("div");
  const summary = el("dl", { class: "summary" });
  const workers = el("div");
  const models = el("div");
  const modelsError = el("p", { class: "form-error", role: "alert", id: "models-error" });
  const requests = el("div");
  const errors = el("div");
  const updated = el("p", { class: "hint", "aria-live": "off" });
  root.append(el("h2", { text: "Health" }), summary, el("h2", { text: "Model workers" }), workers,
    el("h2", { text: "Models" }), modelsError, models, el("h2", { text: "Requests in progress" }), requests,
    ...(withHistory ? [el("h2", { text: "Statistics" }), stats, el("h2", { text: "Recent requests" }), history] : []),
    el("h2", { text: "Recent errors" }), errors, updated,
    el("p", {}, el("a", { href: "/metrics", text: "Prometheus metrics" }), " · ", el("a", { href: "/docs", text: "API docs" })));

  const pending = new Map(); // model id → "load" or "unload" while its POST is answered
  let listing = null; // GET /v1/models
  const showModels = () => { // the table is rebuilt: a button that had the focus gets it back
    const focused = models.contains(document.activeElement) ? document.activeElement.dataset : null;
    models.replaceChildren(modelTable(listing, pending, act));
    if (focused?.action) models.querySelector(`button[data-model="${CSS.escape(focused.model)}"][data-action="${focused.action}"]`)?.focus();
  };
  // POST /v1/models/{id}/load (answered once the model is loaded) or /unload (409 while it is in use).
  async function act(id, action) {
    pending.set(id, action);
    modelsError.textContent = "";
    showModels();
    try {
      await call(`/v1/models/${encodeURIComponent(id)}/${action}`, { method: "POST" });
    } catch (error) {
      modelsError.textContent = plainWords(error);
    }
    pending.delete(id);
    emit("models-changed");
    await refresh();
  }

  refresh = async () => {
    try {
      const [report, memory, status, logged, served] = await Promise.all([health(), call("/memory").catch(() => null),
        call("/v1/status").catch(() => null), serverErrors ? call(`${serverErrors}?count=20`).catch(() => null) : null,
        call("/v1/models").catch(() => null)]);
      showSummary(summary, report);
      workers.replaceChildren(workerTable(report, memory));
      listing = served;
      showModels();
      requests.replaceChildren(requestTable(status));
      errors.replaceChildren(errorList(report, logged));
      if (withHistory) {
        const [statistics, recent] = await Promise.all([call("/v1/status/statistics").catch(() => ({})),
          call("/v1/status/history?limit=10").catch(() => ({}))]);
        stats.replaceChildren(...Object.entries(statistics).filter(([, v]) => typeof v !== "object")
          .flatMap(([k, v]) => [el("dt", { text: k.replace(/_seconds$/, "").replaceAll("_", " ") }),
            el("dd", { "data-key": k, text: statistic(k, v) })]));
        history.replaceChildren(historyTable(recent.request_history || []));
      }
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      updated.textContent = `The server cannot be reached (${error.message}).`;
    }
  };
  on("error-logged", () => { if (timer) refresh(); });
}

function statistic(key, value) {
  if (typeof value !== "number") return String(value);
  const shown = Number.isInteger(value) ? String(value) : value.toFixed(2);
  if (key.endsWith("_seconds")) return `${shown} s`;
  return key === "success_rate" ? `${shown}%` : shown;
}

function showSummary(node, report) {
  const w = report.workers || {};
  const defaultModel = Object.entries(report.models || {}).find(([, m]) => m.default)?.[0];
  const items = [["Status", report.status], ["Engine", report.engine], ["Model", report.model],
    ...(defaultModel ? [["Default model", defaultModel]] : []), ["Device", report.device],
    ["Sample rate", report.sample_rate ? `${report.sample_rate} Hz` : "–"],
    ["Workers", `${w.ready ?? 0} ready, ${w.busy ?? 0} busy, ${w.alive ?? 0} alive of ${w.total ?? 0}`],
    ["Jobs in flight", report.jobs_in_flight], ["Queue depth", report.queue_depth]];
  node.replaceChildren(...items.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-key": k, text: String(v ?? "–") })]));
}

function workerTable(report, memory) {
  const slots = report.workers?.slots || [];
  const mem = new Map((memory?.memory_info?.model_workers || []).map((m) => [m.slot, m]));
  const accelerator = (m) => {
    const a = m?.accelerator;
    if (!a) return "–";
    const used = a.allocated_bytes ?? a.used_bytes ?? a.reserved_bytes;
    return used !== undefined ? `${formatBytes(used)}${a.total_bytes ? ` of ${formatBytes(a.total_bytes)}` : ""}` : JSON.stringify(a);
  };
  return el("table", { class: "workers" },
    el("thead", {}, el("tr", {}, ["Slot", "PID", "State", "Jobs now", "Done", "Failed", "Restarts", "Memory", "GPU memory", "Last error"]
      .map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, slots.map((s) => el("tr", { "data-state": s.state },
      el("th", { scope: "row", text: String(s.slot) }), el("td", { text: String(s.pid) }),
      el("td", { class: `state-${s.state}`, text: s.state }), el("td", { text: String(s.active_jobs) }),
      el("td", { text: String(s.jobs_done) }), el("td", { text: String(s.jobs_failed) }), el("td", { text: String(s.restarts) }),
      el("td", { text: formatBytes(mem.get(s.slot)?.rss_bytes) }), el("td", { text: accelerator(mem.get(s.slot)) }),
      el("td", { text: s.last_error || "–" })))));
}

/** The served models of /v1/models (the entries with a state), each with Load and Unload. */
function modelTable(listing, pending, act) {
  const served = (listing?.data || []).filter((m) => m.state);
  if (!served.length) return el("p", { id: "no-models", text: "None." });
  const button = (m, action, label, usable) => el("button", { type: "button", "data-model": m.id, "data-action": action,
    disabled: !usable || pending.has(m.id), text: pending.get(m.id) === action ? BUSY_WORDS[action] : label,
    "aria-label": `${label} ${m.id}`, on: { click: () => act(m.id, action) } });
  const lastLoad = (m) => {
    const seconds = (m.workers || []).filter((w) => w.loads && typeof w.load_seconds === "number").map((w) => w.load_seconds);
    return seconds.length ? `${Math.max(...seconds).toFixed(1)} s` : "–";
  };
  const workers = (m) => `${(m.workers || []).filter((w) => w.loaded).length}/${(m.workers || []).length}`;
  return el("table", { class: "models" },
    el("thead", {}, el("tr", {}, ["Model", "State", "Default", "Device", "Workers loaded", "Memory", "Requests now", "Loads",
      "Last load", "Error", ""].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, served.map((m) => el("tr", { "data-model": m.id, "data-state": m.state },
      el("th", { scope: "row", text: m.id }), el("td", { class: `state state-${m.state}`, text: m.state }),
      el("td", { text: m.default ? "default" : "" }), el("td", { text: m.device || "–" }),
      el("td", { class: "worker-count", text: workers(m) }),
      el("td", { class: "memory", text: `${m.memory?.weight_mb ?? 0} MiB` }),
      el("td", { text: String(m.active_jobs ?? 0) }), el("td", { text: String(m.loads ?? 0) }),
      el("td", { text: lastLoad(m) }), el("td", { class: "error", text: m.error || "–" }),
      el("td", { class: "buttons" }, button(m, "load", "Load", !["loaded", "loading"].includes(m.state)),
        button(m, "unload", "Unload", ["loaded", "loading"].includes(m.state)))))));
}

function requestTable(status) {
  if (!status || !status.requests.length) return el("p", { id: "no-requests", text: "None." });
  return el("table", {},
    el("thead", {}, el("tr", {}, ["Request", "Progress", "Seconds", "Text"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, status.requests.map((r) => el("tr", {},
      el("th", { scope: "row", text: r.request_id }), el("td", { text: `${r.current_chunk}/${r.total_chunks} (${r.progress_percentage}%)` }),
      el("td", { text: r.duration_seconds.toFixed(1) }), el("td", { text: r.text_preview || "" })))));
}

function historyTable(items) {
  if (!items.length) return el("p", { text: "None yet." });
  const when = (t) => (typeof t === "number" ? new Date(t * 1000).toLocaleTimeString() : String(t ?? "–"));
  return el("table", { class: "history" },
    el("thead", {}, el("tr", {}, ["Started", "Status", "Characters", "Seconds", "Text or error"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, items.map((r) => el("tr", {},
      el("th", { scope: "row", text: when(r.start_time) }), el("td", { text: String(r.status ?? "–") }),
      el("td", { text: String(r.text_length ?? "–") }),
      el("td", { text: typeof r.duration_seconds === "number" ? r.duration_seconds.toFixed(2) : "–" }),
      el("td", { text: r.error_message || r.error || r.text_preview || "" })))));
}

function errorList(report, logged) {
  const rows = [];
  for (const s of report.workers?.slots || []) {
    if (s.last_error) rows.push(["–", `model worker ${s.slot}`, "", s.last_error]);
  }
  const serverLog = logged && (logged.recent_errors || logged.errors);
  for (const e of serverLog || []) {
    rows.push([e.timestamp ? new Date(e.timestamp).toLocaleTimeString() : "–", e.operation || "", String(e.status ?? ""),
      e.error_code ? `${e.message} (${e.error_code})` : e.message]);
  }
  // The server logs every error answer it gives; this page adds only what never reached it.
  for (const e of recentErrors.filter((item) => !serverLog || !item.status).slice(0, 10)) {
    rows.push([e.time.toLocaleTimeString(), e.path, e.status ? String(e.status) : "", e.message]);
  }
  if (!rows.length) return el("p", { text: "None." });
  return el("table", { class: "errors" },
    el("thead", {}, el("tr", {}, ["Time", "Request", "Status", "Message"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map(([time, what, status, message]) => el("tr", {},
      el("th", { scope: "row", text: time }), el("td", { text: what }), el("td", { text: status }), el("td", { text: message })))));
}
