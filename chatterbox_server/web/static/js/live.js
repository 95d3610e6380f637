// The Live panel: our realtime socket (GET /v1/audio/speech/realtime). Text typed is sent as it is
// written (`input_text.append`, the way an LLM streams tokens), or pasted text is replayed word by
// word at a chosen rate; the PCM that comes back is scheduled gap-free on a Web Audio graph.
// Stop is barge-in: `context.cancel`, the scheduled audio dropped, and nothing of that turn after.
// One socket per live session; every turn is a context of its own (turn-1, turn-2, ...).

import { apiKey, call, on, schemaOf } from "./api.js";
import { clearErrors, controlFor, el, field, fillSelect, rangeHint, select, showError } from "./forms.js";
import { PcmQueue, base64Bytes } from "./player.js";
import { voiceOptions } from "./speak.js";

const PATH = "/v1/audio/speech/realtime";
const DEFAULT_WORDS_PER_S = 20;
const QUEUED_MS = 250; // how often "Playing" is refreshed
const PREFIXES = ["query: ", "session."]; // the socket's error params name the option after one of these
const OPTIONS = new Set(["voice", "speed"]); // what each turn's context.create carries

export const panel = { id: "live", label: "Live", init };

async function init(root) {
  const live = el("textarea", { id: "live-text", rows: 5, placeholder: "Type here: every character goes to the server as you type it." });
  const replayText = el("textarea", { id: "live-replay-text", rows: 4, placeholder: "Paste an answer here, then replay it as an LLM would stream it." });
  const rate = el("input", { type: "number", min: 1, max: 200, step: 1, value: DEFAULT_WORDS_PER_S, inputmode: "numeric" });
  const voice = select([["", "(default voice)"]]);
  const speedProp = (await schemaOf("SpeechRequest")).properties.speed || { type: "number", minimum: 0.25, maximum: 4, default: 1 };
  const { control: speed, extra: speedSlider } = controlFor("speed", speedProp);
  const form = el("form", { class: "live", novalidate: true },
    el("p", { class: "hint", text: "Streaming-input speech over one WebSocket: audio starts while the text is still being written." }),
    el("div", { class: "row" }, field("voice", "Voice", voice), field("speed", "Speed", speed, rangeHint(speedProp))),
    field("text", "Live text", live, "sent as you type; edits to text already sent are not spoken"),
    el("div", { class: "actions" },
      el("button", { type: "button", id: "live-flush", disabled: true, text: "Speak buffered text" }),
      el("button", { type: "button", class: "primary", id: "live-end", disabled: true, text: "End turn" }),
      el("button", { type: "button", id: "live-stop", disabled: true, text: "Stop" }),
      el("button", { type: "button", id: "live-disconnect", disabled: true, text: "Disconnect" })),
    el("details", { class: "settings" }, el("summary", { text: "Replay as an LLM" }),
      field("replay", "Text to replay", replayText),
      el("div", { class: "actions" }, field("rate", "Words per second", rate),
        el("button", { type: "button", id: "live-replay", text: "Replay as an LLM" }))),
    el("p", { class: "form-error", role: "alert" }));
  speed.closest(".field").querySelector("label").after(speedSlider || "");
  const status = el("div", { class: "play-status", role: "status", "aria-live": "polite" },
    el("dl", {},
      el("dt", { text: "Socket" }), el("dd", { id: "live-socket", text: "closed" }),
      el("dt", { text: "Turn" }), el("dd", { id: "live-turn", text: "–" }),
      el("dt", { text: "First audio" }), el("dd", { id: "live-latency", text: "–" }),
      el("dt", { text: "Playing" }), el("dd", { id: "live-playing", text: "–" })));
  root.append(form, status);
  const show = (id, text) => { status.querySelector(`#${id}`).textContent = text; };
  const button = (id) => form.querySelector(`#${id}`);

  const queue = new PcmQueue();
  let socket = null;
  let opened = false;
  let outbox = []; // sent before the socket opened
  let defaultRate = 24000;
  let binaryFor = null; // the context whose binary frame comes next
  let serial = 0;
  let turn = null; // the context the live text goes to: {id, sentAt, heard, ended}
  let sent = ""; // the live text already sent
  let replay = null; // the replay timer
  const contexts = new Map(); // open on the server: id -> turn
  const rates = new Map(); // id -> sample rate of its PCM
  const cancelled = new Set(); // stopped: their audio is never played, even what is still on the way
  const failedIds = new Set(); // cancelled after an error: their acknowledgement is not news
  root.dataset.ignoredDeltas = "0";

  const setState = (state) => { root.dataset.state = state; };
  const socketState = (text, state) => { show("live-socket", text); root.dataset.socket = state; };
  const buttons = () => {
    const speaking = contexts.size > 0 || queue.ahead() > 0;
    button("live-flush").disabled = !turn;
    button("live-end").disabled = !turn;
    button("live-stop").disabled = !turn && !speaking && !replay;
    button("live-disconnect").disabled = !socket;
  };

  function connect() {
    const query = new URLSearchParams({ response_format: "pcm", binary: "true" });
    const key = apiKey();
    if (key) query.set("api_key", key); // a browser cannot set a socket's headers
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${PATH}?${query}`);
    ws.binaryType = "arraybuffer";
    socket = ws;
    opened = false;
    socketState("connecting…", "connecting");
    ws.addEventListener("open", () => {
      if (socket !== ws) return;
      opened = true;
      socketState("open", "open");
      for (const message of outbox) ws.send(message);
      outbox = [];
    });
    ws.addEventListener("message", (event) => { if (socket === ws) received(event.data); });
    ws.addEventListener("close", (event) => { if (socket === ws) closed(event); });
    buttons();
  }

  function send(message) {
    if (!socket) connect();
    const text = JSON.stringify(message);
    if (opened) socket.send(text);
    else outbox.push(text);
  }

  async function closed(event) {
    const wasOpen = opened;
    socket = null;
    opened = false;
    outbox = [];
    binaryFor = null;
    contexts.clear();
    if (turn) endLocally("socket closed");
    stopReplay();
    const why = event.reason ? `${event.code}: ${event.reason}` : String(event.code);
    socketState(`closed (${why})`, "closed");
    buttons();
    if (!wasOpen && event.code !== 1000) {
      // The handshake was refused and a browser is not told why: ask the HTTP API (a 401 opens the key dialog).
      try {
        await call("/v1/voices");
        showError(form, { message: `The live socket could not be opened (${why}).` });
      } catch (error) {
        showError(form, error);
      }
    }
  }

  function received(data) {
    if (data instanceof ArrayBuffer) {
      const id = binaryFor;
      binaryFor = null;
      if (id !== null) audio(id, new Uint8Array(data));
      return;
    }
    const event = JSON.parse(data);
    const id = event.context_id;
    switch (event.type) {
      case "session.created":
        defaultRate = event.session.sample_rate || defaultRate;
        socketState(`open · ${event.engine}`, "open");
        break;
      case "context.created":
        rates.set(id, event.session.sample_rate || defaultRate);
        break;
      case "speech.audio.delta":
        if (event.audio !== undefined) audio(id, base64Bytes(event.audio));
        else binaryFor = id; // its bytes are the next binary frame
        break;
      case "speech.audio.done":
        finished(id, "finished");
        break;
      case "context.cancelled":
        if (failedIds.delete(id)) break;
        if (contexts.has(id) || cancelled.has(id)) finished(id, "cancelled");
        break;
      case "error":
        failed(event);
        break;
      default: // session.updated, input_text.flushed, speech.audio.timestamps
    }
  }

  function audio(id, bytes) {
    const context = contexts.get(id);
    if (!context || cancelled.has(id)) {
      root.dataset.ignoredDeltas = String(Number(root.dataset.ignoredDeltas) + 1);
      return;
    }
    const at = queue.schedule(bytes, rates.get(id) || defaultRate);
    if (!context.heard) {
      context.heard = true;
      const ms = performance.now() - context.sentAt + Math.max(0, at - queue.context.currentTime) * 1000;
      show("live-latency", `${Math.round(ms)} ms`);
      root.dataset.firstAudioMs = String(Math.round(ms));
      if (context === turn) setState("speaking");
    }
    buttons();
  }

  function finished(id, how) {
    const context = contexts.get(id);
    contexts.delete(id);
    rates.delete(id);
    if (how === "cancelled") cancelled.delete(id);
    if (context || how === "cancelled") {
      show("live-turn", `${id} ${how}`);
      setState(how === "cancelled" ? "cancelled" : "done");
    }
    if (context === turn) turn = null;
    buttons();
  }

  function failed(event) {
    const error = event.error || {};
    const id = event.context_id;
    if (failedIds.delete(id)) return;
    if (error.code === "context_not_found" && (cancelled.has(id) || !contexts.has(id))) {
      cancelled.delete(id); // a Stop that crossed the turn's end: nothing was left to cancel
      show("live-turn", `${id} cancelled`);
      setState("cancelled");
      return;
    }
    let param = error.param || null;
    for (const prefix of PREFIXES) if (param && param.startsWith(prefix)) param = param.slice(prefix.length);
    showError(form, { param, message: error.message, status: error.status });
    let failedId = id && contexts.has(id) ? id : null;
    if (!id && turn && OPTIONS.has(param)) {
      // context.create refused the voice or speed: the turn's text would go to a default context
      failedId = turn.id;
      failedIds.add(failedId);
      send({ type: "context.cancel", context_id: failedId });
    }
    if (failedId) {
      contexts.delete(failedId);
      if (turn && turn.id === failedId) endLocally("failed");
      setState("error");
    }
    buttons();
  }

  function endLocally(how) {
    show("live-turn", `${turn.id} ${how}`);
    turn = null;
    sent = "";
    live.value = "";
  }

  /** Text for the current turn (a new one, with the voice and speed chosen now, if none is open). */
  function appendText(text) {
    if (!text) return;
    if (!turn) {
      clearErrors(form);
      serial += 1;
      turn = { id: `turn-${serial}`, sentAt: performance.now(), heard: false };
      contexts.set(turn.id, turn);
      const options = {};
      if (voice.value) options.voice = voice.value;
      if (speed.value !== "") options.speed = Number(speed.value);
      send({ type: "context.create", context_id: turn.id, session: options });
      show("live-turn", `${turn.id} · streaming text`);
      show("live-latency", "–");
      delete root.dataset.firstAudioMs;
      setState("streaming");
      queue.resume();
    }
    send({ type: "input_text.append", context_id: turn.id, text });
    buttons();
  }

  live.addEventListener("input", () => {
    if (live.value.startsWith(sent)) appendText(live.value.slice(sent.length));
    sent = live.value; // an edit inside what was sent: it cannot be taken back, so it is not spoken
  });

  button("live-flush").addEventListener("click", () => {
    if (turn) send({ type: "input_text.flush", context_id: turn.id });
  });

  function endTurn() {
    if (!turn) return;
    stopReplay();
    send({ type: "input_text.done", context_id: turn.id });
    show("live-turn", `${turn.id} · ended, speaking`);
    setState("ending");
    turn = null;
    sent = "";
    live.value = "";
    buttons();
  }
  button("live-end").addEventListener("click", endTurn);

  button("live-stop").addEventListener("click", () => {
    stopReplay();
    queue.silence(); // at once, not when the server answers
    for (const id of contexts.keys()) {
      cancelled.add(id);
      send({ type: "context.cancel", context_id: id });
    }
    if (turn) show("live-turn", `${turn.id} · cancelling`);
    contexts.clear();
    turn = null;
    sent = "";
    live.value = "";
    setState("cancelling");
    buttons();
  });

  button("live-disconnect").addEventListener("click", () => {
    stopReplay();
    queue.silence();
    socket?.close(1000, "closed by the page");
  });

  function stopReplay() {
    if (!replay) return;
    clearTimeout(replay.timer);
    replay = null;
    button("live-replay").disabled = false;
  }

  button("live-replay").addEventListener("click", () => {
    clearErrors(form);
    const words = replayText.value.split(/\s+/).filter(Boolean);
    const perSecond = Number(rate.value);
    if (!words.length) return showError(form, { param: "replay", message: "Paste some text to replay first." });
    if (!(perSecond >= 1 && perSecond <= 200)) return showError(form, { param: "rate", message: "Choose 1 to 200 words per second." });
    stopReplay();
    const started = performance.now();
    replay = { index: 0, timer: null };
    button("live-replay").disabled = true;
    const tick = () => {
      if (!replay) return;
      const word = words[replay.index];
      const text = `${replay.index ? " " : ""}${word}`;
      live.value += text;
      sent = live.value;
      appendText(text);
      replay.index += 1;
      show("live-turn", `${turn.id} · word ${replay.index} of ${words.length}`);
      if (replay.index >= words.length) {
        endTurn(); // the LLM is done
        return;
      }
      // on a fixed clock, so a slow tick does not slow the whole replay down
      const due = started + (replay.index * 1000) / perSecond;
      replay.timer = setTimeout(tick, Math.max(0, due - performance.now()));
    };
    tick();
  });

  setInterval(() => {
    const ahead = queue.ahead();
    show("live-playing", ahead > 0 ? `${ahead.toFixed(1)} s queued` : "–");
    root.dataset.playing = String(ahead > 0);
    buttons();
  }, QUEUED_MS);

  async function loadVoices() {
    try {
      fillSelect(voice, voiceOptions(await call("/v1/voices")));
    } catch (error) {
      showError(form, error);
    }
  }
  on("voices-changed", loadVoices);
  on("auth-changed", () => {
    loadVoices();
    socket?.close(1000, "new API key"); // the next text opens a socket with the new key
  });
  await loadVoices();
}
