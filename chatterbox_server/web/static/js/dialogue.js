// The Dialogue panel: a script with speaker labels, a library voice for each label, and
// POST /v1/audio/dialogue as SSE, its PCM scheduled gap-free as it arrives. The turns are listed as
// the server announces them (`dialogue.turn`, `dialogue.turn.done`); the one highlighted is the one
// heard now, found from the playback position against each turn's start and end in the audio.

import { ApiError, call, on, schemaOf } from "./api.js";
import { clearErrors, controlFor, el, field, fillSelect, rangeHint, showError, values } from "./forms.js";
import { PcmQueue, base64Bytes, sseEvents, wavBlob } from "./player.js";
import { voiceOptions } from "./speak.js";

const PATH = "/v1/audio/dialogue";
const TICK_MS = 50; // how often the highlight follows the playback
const MAX_AHEAD_S = 120; // as player.js: read no further ahead of the playback than this
const GAP_MS = { type: "integer", minimum: 0, maximum: 5000, default: 300 };
const SCRIPT_PARAMS = new Set(["input", "inputs", "speakers"]); // errors about the script or its voices
// The server's markers (text/speakers.py); [voice:NAME] names its voice itself, so it needs no row.
const MARKER = /\[(s[0-9]{1,4})\]|\[(speaker[ _-]?[0-9]{1,4})\]|^[ \t]*(speaker[ \t]*[0-9]{1,4})[ \t]*:/gim;
const INLINE_VOICE = /\[voice[ \t]*:[ \t]*([A-Za-z0-9_.-]{1,64})[ \t]*\]/gi;
const EXAMPLE = ["[S1] Welcome back to the show. Today we are talking about speech that streams.",
  "[S2] Thanks for having me! It starts playing before the whole answer is made.",
  "[S1] Then let us hear it, one speaker after the other."].join("\n");
const STATE_TEXT = { synthesizing: "synthesizing…", ready: "ready", speaking: "speaking", heard: "heard ✓",
  stopped: "stopped" };

export const panel = { id: "dialogue", label: "Dialogue", init };

/** A label as the server compares them: "Speaker 1", "speaker_1" and "SPEAKER1" are one speaker. */
const normalize = (label) => label.toLowerCase().replace(/[\s_-]+/g, "");

/** The speakers a script names, in order of first appearance: [{key, label}] (key as the server normalizes it). */
export function speakerLabels(script) {
  const found = new Map();
  for (const match of script.matchAll(MARKER)) {
    const written = match[1] || match[2] || match[3];
    const key = normalize(written);
    const digits = key.replace(/^\D+/, "");
    if (!found.has(key)) found.set(key, { key, label: key.startsWith("speaker") ? `Speaker ${digits}` : `S${digits}` });
  }
  return [...found.values()];
}

async function init(root, env) {
  const limit = env.limits.max_stream_input_chars;
  const script = el("textarea", { id: "dialogue-script", rows: 7, maxlength: limit, required: true, spellcheck: "false",
    placeholder: "[S1] Hello there.\n[S2] Hi! How are you?\n[S1] Very well, thank you." });
  const count = el("span", { class: "count", "aria-live": "polite" });
  const { control: gap } = controlFor("gap_ms", GAP_MS);
  const seedProp = (await schemaOf("SpeechRequest")).properties.seed || { type: "integer" };
  const { control: seed } = controlFor("seed", { ...seedProp, default: undefined }, { optional: true, emptyText: "random" });
  const speakerRows = el("div", { class: "row speakers", id: "dialogue-speakers" });
  const inlineNote = el("p", { class: "hint", id: "dialogue-inline" });
  const form = el("form", { class: "dialogue", novalidate: true },
    field("input", "Script", script,
      "one speaker per turn: [S1] …, [SPEAKER1] …, lines \"Speaker 1: …\", or [voice:NAME] …; Ctrl+Enter plays"),
    el("fieldset", { class: "speaker-voices" }, el("legend", { text: "Voices" }),
      el("p", { class: "hint", id: "dialogue-no-speakers", text: "Label the turns of the script ([S1], [S2], …) to give each speaker a voice." }),
      speakerRows, inlineNote),
    el("div", { class: "row" },
      field("gap_ms", "Gap between turns (ms)", gap, rangeHint(GAP_MS)),
      field("seed", "Seed", seed, "empty: random; the same seed gives the same audio")),
    el("div", { class: "actions" },
      el("button", { type: "submit", class: "primary", id: "dialogue-play", text: "Play" }),
      el("button", { type: "button", id: "dialogue-stop", disabled: true, text: "Stop" }),
      el("button", { type: "button", id: "dialogue-download", disabled: true, text: "Download WAV" }),
      el("button", { type: "button", id: "dialogue-example", text: "Load example" })),
    el("p", { class: "form-error", role: "alert" }));
  const turnRows = el("tbody", { id: "dialogue-turns" });
  const status = el("div", { class: "play-status", role: "status", "aria-live": "polite" },
    el("dl", {},
      el("dt", { text: "First audio" }), el("dd", { id: "dialogue-first-audio", text: "–" }),
      el("dt", { text: "Speaking" }), el("dd", { id: "dialogue-speaking", text: "–" }),
      el("dt", { text: "Received" }), el("dd", { id: "dialogue-received", text: "–" }),
      el("dt", { text: "Heard" }), el("dd", { id: "dialogue-heard", text: "–" }),
      el("dt", { text: "Seed" }), el("dd", { id: "dialogue-seed-used", text: "–" })),
    el("table", { class: "dialogue-turns" }, el("caption", { text: "Turns" }),
      el("thead", {}, el("tr", {}, ["#", "Voice", "Text", "Time (s)", "State"].map((t) => el("th", { scope: "col", text: t })))),
      turnRows),
    el("p", { class: "hint", id: "dialogue-no-turns", text: "Press Play: the turns appear here as the server makes them." }));
  root.append(form, status);
  script.closest(".field").querySelector("label").after(count);
  const show = (id, text) => { status.querySelector(`#${id}`).textContent = text; };
  const button = (id) => form.querySelector(`#${id}`);

  // -- the script and its speakers ----------------------------------------------------------------
  let listing = null; // GET /v1/voices
  const chosen = new Map(); // speaker key -> voice, kept while the script is edited
  let shownKeys = "";

  const choices = () => {
    if (!listing) return [["", "(choose a voice)"]];
    return [["", "(choose a voice)"], ...voiceOptions(listing).slice(1)];
  };

  function renderSpeakers() {
    const labels = speakerLabels(script.value);
    const inline = [...new Set([...script.value.matchAll(INLINE_VOICE)].map((m) => m[1]))];
    inlineNote.textContent = inline.length ? `Named in the script: ${inline.join(", ")}.` : "";
    form.querySelector("#dialogue-no-speakers").hidden = labels.length > 0 || inline.length > 0;
    const keys = labels.map((l) => l.key).join(" ");
    if (keys === shownKeys) return;
    shownKeys = keys;
    speakerRows.replaceChildren(...labels.map(({ key, label }) => {
      const voice = el("select", { name: `speaker-${key}`, "data-key": key });
      fillSelect(voice, choices(), chosen.get(key) || "");
      voice.addEventListener("change", () => chosen.set(key, voice.value));
      const row = field(`speaker-${key}`, `Voice of ${label}`, voice);
      row.classList.add("speaker");
      row.dataset.label = label;
      return row;
    }));
  }

  const showCount = () => { count.textContent = `${script.value.length.toLocaleString()} / ${limit.toLocaleString()} characters`; };
  script.addEventListener("input", () => { showCount(); renderSpeakers(); });
  script.addEventListener("keydown", (event) => { // Ctrl+Enter (⌘+Enter) plays without leaving the script
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  button("dialogue-example").addEventListener("click", () => {
    script.value = EXAMPLE;
    script.dispatchEvent(new Event("input"));
    script.focus();
  });
  showCount();
  renderSpeakers();

  // -- playback ---------------------------------------------------------------------------------
  const queue = new PcmQueue();
  let controller = null; // the request in flight
  let pieces = []; // PCM received, in order
  let timeline = []; // {at: context time it sounds, offset: seconds into the dialogue, seconds}
  let cursor = 0;
  let turns = []; // {start, end, row}, by turn number
  let total = 0; // turns the server planned
  let rate = 24000;
  let complete = false; // speech.audio.done received
  let ticker = null;

  const setState = (state) => { root.dataset.state = state; };

  /** Seconds of the dialogue heard so far: where the piece sounding now is, or the end of the last one. */
  function position() {
    if (!timeline.length || !queue.context) return 0;
    const now = queue.context.currentTime - (queue.context.outputLatency || 0);
    while (cursor + 1 < timeline.length && timeline[cursor + 1].at <= now) cursor += 1;
    const piece = timeline[cursor];
    if (piece.at > now) return 0;
    return piece.offset + Math.min(now - piece.at, piece.seconds);
  }

  /**
   * Each turn's state at `heard` seconds: heard (played to its end), speaking (sounding now), else
   * synthesizing or ready. `end` is "finished" (everything was heard) or "stopped" (nothing more will be).
   */
  function markTurns(heard, end = null) {
    let speaking = null;
    turns.forEach((turn, number) => {
      if (!turn) return;
      let state = turn.end === null ? "synthesizing" : "ready";
      if (end === "finished" || (turn.end !== null && heard >= turn.end)) state = "heard";
      else if (end === "stopped") state = "stopped";
      else if (heard > 0 && heard >= turn.start) state = "speaking";
      if (state === "speaking") speaking = number;
      if (turn.row.dataset.state !== state) {
        turn.row.dataset.state = state;
        turn.row.querySelector(".state").textContent = STATE_TEXT[state];
        if (state === "speaking") turn.row.setAttribute("aria-current", "true");
        else turn.row.removeAttribute("aria-current");
      }
    });
    root.dataset.speaking = speaking === null ? "" : String(speaking);
    show("dialogue-speaking", speaking === null ? (end || "–") : `turn ${speaking + 1} of ${total}`);
  }

  function tick() {
    const heard = position();
    root.dataset.position = heard.toFixed(3);
    const last = timeline[timeline.length - 1];
    const all = last ? last.offset + last.seconds : 0; // seconds received
    show("dialogue-heard", `${heard.toFixed(1)} of ${all.toFixed(1)} s`);
    if (complete && queue.ahead() <= 0) {
      stopTicking();
      markTurns(all, "finished");
      button("dialogue-stop").disabled = true;
      setState("done");
      return;
    }
    markTurns(heard);
  }

  const stopTicking = () => { clearInterval(ticker); ticker = null; };

  function addTurn(event) {
    const row = el("tr", { "data-turn": event.turn, "data-state": "synthesizing" },
      el("td", { class: "number", text: String(event.turn + 1) }),
      el("td", { class: "voice", text: event.voice }),
      el("td", { class: "text", text: event.text }),
      el("td", { class: "time", text: `${event.start.toFixed(2)} –` }),
      el("td", { class: "state", text: STATE_TEXT.synthesizing }));
    turns[event.turn] = { start: event.start, end: null, row };
    turnRows.append(row);
    status.querySelector("#dialogue-no-turns").hidden = true;
  }

  function turnDone(event) {
    const turn = turns[event.turn];
    if (!turn) return;
    turn.end = event.end;
    turn.row.querySelector(".time").textContent = `${event.start.toFixed(2)} – ${event.end.toFixed(2)}`;
    show("dialogue-received", `${turns.filter((t) => t && t.end !== null).length} of ${total} turns`);
  }

  function body() {
    const speakers = {}; // a label with no voice is left out: the server's 400 then names it
    for (const { key, label } of speakerLabels(script.value)) {
      const voice = speakerRows.querySelector(`select[data-key="${key}"]`)?.value;
      if (voice) speakers[label] = voice;
    }
    return { input: script.value, speakers, stream_format: "sse", response_format: "pcm",
      ...values(form, ["gap_ms", "seed"]) };
  }

  function reset() {
    for (const id of ["dialogue-first-audio", "dialogue-speaking", "dialogue-received", "dialogue-heard", "dialogue-seed-used"]) show(id, "–");
    turnRows.replaceChildren();
    status.querySelector("#dialogue-no-turns").hidden = false;
    pieces = [];
    timeline = [];
    cursor = 0;
    turns = [];
    total = 0;
    complete = false;
    delete root.dataset.firstAudioMs;
    delete root.dataset.position;
    root.dataset.speaking = "";
  }

  async function play() {
    stop(false);
    clearErrors(form);
    reset();
    const request = body();
    const mine = new AbortController();
    controller = mine;
    const current = () => controller === mine; // a newer Play or a Stop has replaced this one
    button("dialogue-stop").disabled = false;
    button("dialogue-download").disabled = true;
    setState("playing");
    const clicked = performance.now();
    try {
      await queue.resume(); // from the click: autoplay rules
      const response = await call(PATH, { method: "POST", json: request, signal: mine.signal, raw: true });
      total = Number(response.headers.get("X-Chatterbox-Turns")) || 0;
      show("dialogue-seed-used", response.headers.get("X-Chatterbox-Seed") || "–");
      show("dialogue-received", `0 of ${total} turns`);
      ticker = setInterval(tick, TICK_MS);
      let offset = 0; // seconds of the dialogue received so far
      for await (const event of sseEvents(response.body)) {
        if (!current()) return; // stopped: events already buffered must not sound
        if (event.type === "speech.audio.info") rate = event.sample_rate;
        else if (event.type === "dialogue.turn") addTurn(event);
        else if (event.type === "dialogue.turn.done") turnDone(event);
        else if (event.type === "speech.audio.delta") {
          const bytes = base64Bytes(event.audio);
          const seconds = (bytes.byteLength >> 1) / rate;
          const at = queue.schedule(bytes, rate);
          pieces.push(bytes);
          timeline.push({ at, offset, seconds });
          offset += seconds;
          if (pieces.length === 1) {
            const ms = performance.now() - clicked + Math.max(0, at - queue.context.currentTime) * 1000;
            show("dialogue-first-audio", `${Math.round(ms)} ms`);
            root.dataset.firstAudioMs = String(Math.round(ms));
          }
          while (queue.ahead() > MAX_AHEAD_S && current()) {
            await new Promise((resolve) => { setTimeout(resolve, 1000); });
          }
        } else if (event.type === "speech.audio.done") complete = true;
        else if (event.type === "error") throw new ApiError(500, event.error?.message || "synthesis failed");
      }
      if (!complete) throw new ApiError(0, "The stream ended before the dialogue was complete.");
      if (!current()) return;
      controller = null;
      button("dialogue-download").disabled = false;
      root.dataset.received = "true";
    } catch (error) {
      if (error.name === "AbortError" || !current()) return;
      controller = null;
      stopTicking();
      queue.silence();
      markTurns(position(), "stopped");
      show("dialogue-speaking", pieces.length ? "failed" : "–");
      button("dialogue-stop").disabled = true;
      button("dialogue-download").disabled = pieces.length === 0;
      setState("error");
      failed(error);
    }
  }

  /** Cancel the request (the server cancels its jobs when the connection closes) and the sound. */
  function stop(showStopped = true) {
    const heard = position();
    if (controller) controller.abort();
    controller = null;
    stopTicking();
    queue.silence();
    if (!showStopped) return;
    markTurns(heard, "stopped");
    button("dialogue-stop").disabled = true;
    button("dialogue-download").disabled = pieces.length === 0;
    setState("stopped");
  }

  /** A 400 about the script or its speakers goes next to the script, with the cursor at the character it names. */
  function failed(error) {
    if (!SCRIPT_PARAMS.has(error.param)) {
      showError(form, error);
      return;
    }
    const message = String(error.message).replace(/^[a-z_]+(\[\d+\])?: /, "");
    showError(form, { ...error, param: "input", message });
    const at = /at character (\d+)/.exec(message);
    if (at) script.setSelectionRange(Number(at[1]), Number(at[1]));
    const missing = /speaker "([^"]+)" is not in the speakers table/.exec(message);
    const key = missing ? normalize(missing[1]) : "";
    speakerRows.querySelector(`select[data-key="${CSS.escape(key)}"]`)?.setAttribute("aria-invalid", "true");
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    play();
  });
  button("dialogue-stop").addEventListener("click", () => stop());
  button("dialogue-download").addEventListener("click", () => {
    // the audio received (all of it, or up to Stop), gaps included: no second synthesis
    el("a", { href: URL.createObjectURL(wavBlob(pieces, rate)), download: "dialogue.wav" }).click();
  });

  async function loadVoices() {
    try {
      listing = await call("/v1/voices");
      for (const voice of speakerRows.querySelectorAll("select")) {
        fillSelect(voice, choices()); // a voice deleted meanwhile is no longer chosen
        chosen.set(voice.dataset.key, voice.value);
      }
    } catch (error) {
      showError(form, error);
    }
  }
  on("voices-changed", loadVoices);
  on("auth-changed", loadVoices);
  await loadVoices();
}
