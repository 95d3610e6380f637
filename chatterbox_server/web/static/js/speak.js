// The Speak panel: text, voice/model/language pickers, settings from /openapi.json, streaming playback.
// The Model menu lists the served models with their state (/v1/models); the chosen one decides the
// languages offered and which settings apply.

import { call, emit, has, on, schemaOf, audioUrl } from "./api.js";
import { clearErrors, controlFor, el, field, fillSelect, labelFor, rangeHint, select, showError, values } from "./forms.js";
import { StreamPlayer } from "./player.js";

const SETTINGS = ["speed", "exaggeration", "cfg_weight", "temperature", "streaming_quality", "streaming_strategy",
  "streaming_chunk_size", "seed"];
const OPTIONAL = new Set(["streaming_strategy", "streaming_chunk_size", "seed"]);
const HINTS = { exaggeration: "Chatterbox only", cfg_weight: "Chatterbox only", temperature: "Chatterbox only",
  seed: "empty: random; the same seed gives the same audio" };
const POLL_MS = 300;
const MODEL_SETTINGS = ["exaggeration", "cfg_weight"]; // a model whose features.exaggeration is false ignores them
const STATE_WORDS = { loaded: "loaded", loading: "loading…", unloaded: "unloaded: loads on first use", failed: "failed" };
const DISPLAY_NAMES = typeof Intl.DisplayNames === "function" ? new Intl.DisplayNames(["en"], { type: "language" }) : null;

let refreshModels = async () => {};

export const panel = { id: "speak", label: "Speak", init, show: () => refreshModels().catch(() => {}) };

async function init(root, env) {
  const limit = env.limits.max_stream_input_chars;
  const text = el("textarea", { rows: 6, maxlength: limit, required: true,
    placeholder: "Type something to hear it, e.g. Hello! This is chatterbox speaking." });
  const count = el("span", { class: "count", "aria-live": "polite" });
  const voice = select([["", "(default voice)"]]);
  const model = select([["", "(server's default model)"]]);
  const language = select([["", "(model's language)"]]);
  const format = select([]);
  const form = el("form", { class: "speak", novalidate: true },
    field("input", "Text", text, "Ctrl+Enter plays"),
    el("div", { class: "row" }, field("voice", "Voice", voice), field("model", "Model", model),
      field("language", "Language", language)),
    el("details", { class: "settings" }, el("summary", { text: "Synthesis settings" }),
      el("div", { class: "grid", id: "speak-settings" })),
    el("div", { class: "actions" },
      el("button", { type: "submit", class: "primary", id: "play", text: "Play" }),
      el("button", { type: "button", id: "stop", disabled: true, text: "Stop" }),
      field("response_format", "Download format", format),
      el("button", { type: "button", id: "download", disabled: true, text: "Download" }),
      el("button", { type: "button", id: "save", disabled: true, text: "Save to outputs" })),
    el("p", { class: "form-error", role: "alert" }));
  const bar = el("progress", { max: 100, value: 0, "aria-label": "Synthesis progress" });
  const status = el("div", { class: "play-status", role: "status", "aria-live": "polite" },
    el("dl", {},
      el("dt", { text: "First audio" }), el("dd", { id: "first-audio", text: "–" }),
      el("dt", { text: "Speaking" }), el("dd", { id: "speaking", text: "–" }),
      el("dt", { text: "Synthesized" }), el("dd", { id: "synthesized", text: "–" }),
      el("dt", { text: "Seed" }), el("dd", { id: "seed-used", text: "–" })),
    el("p", { class: "loading", id: "model-loading" }), bar, el("p", { class: "hint", id: "ignored" }));
  root.append(form, status);
  text.closest(".field").querySelector("label").after(count);

  const showCount = () => { count.textContent = `${text.value.length.toLocaleString()} / ${limit.toLocaleString()} characters`; };
  text.addEventListener("input", showCount);
  text.addEventListener("keydown", (event) => { // Ctrl+Enter (⌘+Enter) plays without leaving the text
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  showCount();

  const spec = await schemaOf("SpeechRequest");
  const grid = form.querySelector("#speak-settings");
  for (const name of SETTINGS) {
    const prop = spec.properties[name];
    if (!prop) continue;
    const { control, extra } = controlFor(name, prop, { optional: OPTIONAL.has(name),
      emptyText: name === "seed" ? "random" : "from quality" });
    const node = field(name, labelFor(name), control, [rangeHint(prop), HINTS[name]].filter(Boolean).join(" · "));
    if (extra) node.querySelector("label").after(extra);
    grid.append(node);
  }
  const formats = spec.properties.response_format?.enum || ["wav"];
  fillSelect(format, formats.map((f) => [f, f]), "wav");

  const byId = (id) => status.querySelector(`#${id}`);
  const playButton = form.querySelector("#play");
  const stopButton = form.querySelector("#stop");
  const downloadButton = form.querySelector("#download");
  const saveButton = form.querySelector("#save");
  const loadingNote = status.querySelector("#model-loading");
  let poll = null;
  let listing = null; // GET /v1/models
  let languages = null; // GET /v1/languages: the default model's, with their names
  let lastBody = null;
  let seedUsed = null;
  let total = 0;

  const stopPolling = () => { clearInterval(poll); poll = null; };
  const showLoading = (text) => {
    loadingNote.textContent = text;
    if (text) root.dataset.loading = "true";
    else delete root.dataset.loading;
  };
  const player = new StreamPlayer({
    onStart({ requestId, seed, chunks, ignored }) {
      seedUsed = seed;
      total = chunks;
      byId("seed-used").textContent = seed || "–";
      byId("ignored").textContent = ignored ? `Not used by this engine: ${ignored.replaceAll(",", ", ")}.` : "";
      byId("synthesized").textContent = `0 of ${chunks} chunks`;
      poll = setInterval(() => progress(requestId), POLL_MS);
    },
    onLoading(event) { // the model had no weights in memory: the audio follows its load
      const name = servedModels(listing).find((m) => m.id === event.model || m.names?.includes(event.model))?.id
        || event.model;
      showLoading(name ? `loading model ${name}…` : "loading model…");
    },
    onFirstAudio(ms) {
      showLoading("");
      byId("first-audio").textContent = `${Math.round(ms)} ms`;
      root.dataset.firstAudioMs = String(Math.round(ms));
    },
    onReceived(index) {
      bar.value = Math.max(bar.value, (100 * (index + 1)) / Math.max(total, 1));
      byId("synthesized").textContent = `${index + 1} of ${total} chunks`;
    },
    onChunk(index) {
      byId("speaking").textContent = `chunk ${index + 1} of ${total}`;
    },
    onEnd({ endsIn }) {
      stopPolling();
      bar.value = 100;
      downloadButton.disabled = false;
      saveButton.disabled = false;
      root.dataset.state = "done";
      setTimeout(() => { if (!player.busy) { stopButton.disabled = true; byId("speaking").textContent = "finished"; } },
        endsIn * 1000);
      refreshModels().catch(() => {}); // the model it used is loaded now
    },
    onError(error) {
      stopPolling();
      showLoading("");
      refreshModels().catch(() => {});
      stopButton.disabled = true;
      root.dataset.state = "error";
      showError(form, error);
    },
  });

  async function progress(requestId) {
    const asked = poll;
    try {
      const report = await call(`/v1/status/progress?request_id=${encodeURIComponent(requestId)}`);
      if (poll !== asked) return; // the stream ended while this answer was on its way: it is stale
      bar.value = Math.max(bar.value, report.progress_percentage);
      byId("synthesized").textContent = `${report.current_chunk} of ${report.total_chunks} chunks`;
    } catch {
      stopPolling(); // 404: the request has finished (or was cancelled)
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const ignored = ignoredBy(modelEntry(listing, model.value));
    lastBody = { input: text.value,
      ...values(form, ["voice", "model", "language", ...SETTINGS.filter((name) => !ignored.has(name))]) };
    showLoading("");
    for (const id of ["first-audio", "speaking", "synthesized", "seed-used"]) byId(id).textContent = "–";
    bar.value = 0;
    downloadButton.disabled = true;
    saveButton.disabled = true;
    stopButton.disabled = false;
    root.dataset.state = "playing";
    delete root.dataset.firstAudioMs;
    await player.play(lastBody);
  });

  stopButton.addEventListener("click", () => {
    player.stop();
    stopPolling();
    showLoading("");
    stopButton.disabled = true;
    byId("speaking").textContent = "stopped";
    root.dataset.state = "stopped";
    downloadButton.disabled = player.pieces.length === 0;
  });

  downloadButton.addEventListener("click", async () => {
    clearErrors(form);
    const fmt = format.value;
    try {
      let url;
      if (fmt === "wav" || fmt === "pcm") {
        // The audio received (all of it, or up to Stop): no second synthesis.
        url = URL.createObjectURL(fmt === "wav" ? player.wav() : new Blob(player.pieces, { type: "audio/pcm" }));
      } else {
        // Same text, settings and seed: the server makes the same audio again in the chosen format
        // (through the streaming endpoint, whose text limit is the one this page applies).
        url = await audioUrl("/v1/audio/speech/stream", { method: "POST",
          json: { ...lastBody, seed: Number(seedUsed), response_format: fmt } });
      }
      el("a", { href: url, download: `speech.${fmt}` }).click();
    } catch (error) {
      showError(form, error);
    }
  });

  // The same text, voice, settings and seed through the Extended API, which keeps the file under /outputs.
  saveButton.addEventListener("click", async () => {
    clearErrors(form);
    const tts = toExtended(lastBody, Number(seedUsed), format.value);
    try {
      const answer = await call("/api/v1/tts?response_mode=url", { method: "POST", json: tts });
      const { text: _text, ...parameters } = tts;
      emit("outputs-created", answer.output_files.map((f) => ({ ...f, kind: "speech", parameters })));
      saveButton.textContent = "Saved";
      setTimeout(() => { saveButton.textContent = "Save to outputs"; }, 2000);
    } catch (error) {
      const param = Object.entries(EXTENDED_NAMES).find(([, theirs]) => theirs === error.param)?.[0] || error.param;
      showError(form, { param, message: error.message.replace(/^[a-z_]+: /, ""), status: error.status });
    }
  });

  // The chosen model's languages in the language menu; the settings it ignores disabled, with a note.
  function showModel() {
    const entry = modelEntry(listing, model.value);
    const names = new Map((languages?.languages || []).map((l) => [l.code, l.name]));
    const codes = languages && (!entry || entry.default || !entry.features?.languages)
      ? languages.languages.map((l) => l.code) : entry?.features?.languages || [];
    // Without a model named, the server sends a language its default model cannot speak to one that can.
    const others = model.value ? [] : spokenElsewhere(listing, entry, codes);
    fillSelect(language, languageOptions(codes, names, others));
    const ignored = ignoredBy(entry);
    for (const name of MODEL_SETTINGS) markIgnored(grid, name, ignored.has(name) ? entry.id : null);
  }
  model.addEventListener("change", showModel);

  refreshModels = async () => {
    listing = await call("/v1/models");
    fillSelect(model, modelOptions(listing));
    showModel();
  };

  async function loadPickers() {
    try {
      const languagePath = (await has("/v1/languages")) ? "/v1/languages" : (await has("/languages")) && "/languages";
      const [voices, models, found] = await Promise.all([call("/v1/voices"), call("/v1/models"),
        languagePath ? call(languagePath) : null]);
      fillSelect(voice, voiceOptions(voices));
      listing = models;
      languages = found;
      fillSelect(model, modelOptions(listing));
      showModel();
    } catch (error) {
      showError(form, error);
    }
  }
  on("voices-changed", loadPickers);
  on("auth-changed", loadPickers);
  on("models-changed", () => refreshModels().catch(() => {}));
  await loadPickers();
}

/** The served models of a /v1/models listing (the aliases, which name the model they go to, left out). */
export function servedModels(listing) {
  return (listing?.data || []).filter((m) => !m.routes_to);
}

/** The served model a Model choice goes to: itself, an alias's target, or (the empty choice) the default. */
export function modelEntry(listing, value) {
  const served = servedModels(listing);
  const alias = (listing?.data || []).find((m) => m.routes_to && m.id === value);
  const id = alias ? alias.routes_to : value || listing?.default;
  return served.find((m) => m.id === id) || served.find((m) => m.default) || served[0] || null;
}

/** The served models with their state (a failed one cannot be chosen), then the other names and their model. */
export function modelOptions(listing) {
  const served = servedModels(listing).map((m) => [m.id, m.state ? `${m.id} (${STATE_WORDS[m.state] || m.state})` : m.id,
    { disabled: m.state === "failed", "data-state": m.state }]);
  const options = [["", `(server's default: ${listing.default || servedModels(listing)[0]?.id || "its model"})`], ...served];
  const aliases = (listing.data || []).filter((m) => m.routes_to).map((m) => [m.id, `${m.id} → ${m.routes_to}`]);
  if (aliases.length) options.push({ label: "Other names", options: aliases });
  return options;
}

/** Settings the model ignores (features.exaggeration false: exaggeration and CFG weight). */
export function ignoredBy(entry) {
  return new Set(entry?.features?.exaggeration === false ? MODEL_SETTINGS : []);
}

/** Languages only other served models speak, each with the first such model: [[code, model id], ...]. */
function spokenElsewhere(listing, entry, codes) {
  const seen = new Set(codes);
  const found = [];
  for (const m of servedModels(listing)) {
    if (m === entry || m.state === "failed") continue;
    for (const code of m.features?.languages || []) {
      if (!seen.has(code)) found.push([code, m.id]);
      seen.add(code);
    }
  }
  return found;
}

/** "French (fr)": the server's name for the code (/v1/languages names the default model's), else the browser's. */
export function languageLabel(code, names) {
  let name = names.get(code);
  try {
    name ||= DISPLAY_NAMES?.of(code);
  } catch {
    // not a code the browser knows
  }
  return `${name || code} (${code})`;
}

export function languageOptions(codes, names, others = []) {
  const options = [["", "(model's language)"], ...codes.map((code) => [code, languageLabel(code, names)])];
  if (others.length) {
    options.push({ label: "Through another model", options: others.map(([code, id]) => [code, `${languageLabel(code, names)} → ${id}`]) });
  }
  return options;
}

/** A setting field the chosen model ignores (`modelId`), or uses again (null): disabled, with a note. */
function markIgnored(grid, name, modelId) {
  const node = grid.querySelector(`.field[data-param="${name}"]`);
  if (!node) return;
  const controls = [...node.querySelectorAll("input, select")];
  let note = node.querySelector(".model-note");
  if (!note) {
    const control = controls.find((c) => c.id);
    note = el("p", { class: "hint model-note", id: `${control.id}-model` });
    node.querySelector(".field-error").before(note);
    control.setAttribute("aria-describedby", `${control.getAttribute("aria-describedby")} ${note.id}`);
  }
  for (const control of controls) control.disabled = Boolean(modelId);
  note.textContent = modelId ? `Not used by ${modelId}: not sent.` : "";
  node.classList.toggle("ignored", Boolean(modelId));
}

const EXTENDED_NAMES = { input: "text", voice: "reference_audio_filename", speed: "speed_factor",
  response_format: "export_formats" };
const EXTENDED_FIELDS = ["exaggeration", "cfg_weight", "temperature", "language", "model"];
const EXTENDED_FORMATS = ["wav", "mp3", "flac", "opus", "aac"];

/** A Speak request in the Extended API's words (POST /api/v1/tts). */
export function toExtended(body, seed, fmt) {
  const tts = { text: body.input, seed, export_formats: [EXTENDED_FORMATS.includes(fmt) ? fmt : "wav"] };
  if (body.voice) tts.reference_audio_filename = body.voice;
  if (body.speed !== undefined) tts.speed_factor = body.speed;
  for (const name of EXTENDED_FIELDS) if (body[name] !== undefined) tts[name] = body[name];
  return tts;
}

/** Library voices, built-in voices and aliases, grouped; the default is the empty choice. */
export function voiceOptions(listing) {
  const groups = [["", `(default: ${listing.default})`]];
  const library = listing.voices.map((v) => [v.name, v.name]);
  if (library.length) groups.push({ label: "Library", options: library });
  if (listing.built_in.length) groups.push({ label: "Built in", options: listing.built_in.map((n) => [n, n]) });
  const aliases = Object.entries(listing.aliases || {}).map(([alias, target]) => [alias, `${alias} → ${target}`]);
  if (aliases.length) groups.push({ label: "Aliases", options: aliases });
  return groups;
}
