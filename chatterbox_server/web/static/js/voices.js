// The Voices panel: the library, upload or record a voice, preview, delete; rename, default voice and
// aliases appear when the server documents their endpoints (the OpenAI-style voice API).

import { audioUrl, call, emit, has, on } from "./api.js";
import { clearErrors, el, field, fillSelect, select, showError } from "./forms.js";

const SAMPLE = "This is how I sound. The quick brown fox jumps over the lazy dog.";

/** The first of several spellings of a templated path that the server documents, or null. */
async function documented(method, ...paths) {
  for (const path of paths) if (await has(path, method)) return path;
  return null;
}

const encodePath = (name) => name.split("/").map(encodeURIComponent).join("/"); // voices may sit in folders
const fill = (template, name) => template.replace(/\{[a-z_]+\}/, encodePath(name));

export const panel = { id: "voices", label: "Voices", init };

async function init(root, env) {
  const features = {
    download: await documented("get", "/v1/voices/{name}/download", "/v1/voices/{voice_name}/download"),
    rename: await documented("put", "/v1/voices/{name}", "/v1/voices/{voice_name}"),
    setDefault: await documented("post", "/v1/voices/default"),
    aliases: await documented("post", "/v1/voices/{name}/aliases", "/v1/voices/{voice_name}/aliases"),
    metadata: await documented("put", "/api/v1/voice/{filename}/metadata"), // the Extended API's voice metadata
    extended: await documented("get", "/api/v1/voices"),
  };
  const name = el("input", { type: "text", pattern: "[A-Za-z0-9][A-Za-z0-9_-]{0,63}", autocomplete: "off",
    placeholder: "e.g. narrator" });
  const file = el("input", { type: "file", accept: "audio/*" });
  const recordButton = el("button", { type: "button", id: "record", text: "Record from microphone" });
  const recording = el("audio", { controls: true, hidden: true, "aria-label": "Your recording" });
  const form = el("form", { class: "voice-upload", novalidate: true },
    el("h2", { text: "Add a voice" }),
    el("div", { class: "row" },
      field("name", "Name", name, "letters, digits, _ or -; up to 64"),
      field("voice_file", "Audio file", file, `1 to 120 s of clear speech; at most ${Math.round(env.limits.max_upload_bytes / 1048576)} MiB`)),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Upload" }), recordButton,
      recording),
    el("p", { class: "form-error", role: "alert" }),
    el("p", { class: "hint", id: "voice-cloning" }));
  const player = el("audio", { controls: true, class: "preview", "aria-label": "Voice preview" });
  const list = el("div", { class: "voice-list", "aria-live": "polite" });
  const listErrors = el("div", {}, el("p", { class: "form-error", role: "alert" }));
  root.append(form, el("h2", { text: "Library" }), list, listErrors, player);

  let recorded = null;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const body = new FormData();
    body.append("name", name.value.trim());
    const upload = file.files[0] || recorded;
    if (upload) body.append("voice_file", upload, upload.name || "recording.webm");
    try {
      await call("/v1/voices", { method: "POST", form: body });
      form.reset();
      recorded = null;
      recording.hidden = true;
      emit("voices-changed");
    } catch (error) {
      showError(form, error);
    }
  });

  let recorder = null;
  recordButton.addEventListener("click", async () => {
    clearErrors(form);
    if (recorder) {
      recorder.stop();
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = (e) => chunks.push(e.data);
      recorder.onstop = () => {
        stream.getTracks().forEach((t) => t.stop());
        recorded = new File(chunks, "recording.webm", { type: recorder.mimeType || "audio/webm" });
        recording.src = URL.createObjectURL(recorded);
        recording.hidden = false;
        recorder = null;
        recordButton.textContent = "Record again";
        recordButton.setAttribute("aria-pressed", "false");
      };
      recorder.start();
      recordButton.textContent = "Stop recording";
      recordButton.setAttribute("aria-pressed", "true");
    } catch (error) {
      showError(form, { param: "voice_file", message: `The microphone cannot be used: ${error.message}` });
    }
  });

  async function preview(voice) {
    clearErrors(listErrors);
    try {
      player.src = features.download
        ? await audioUrl(fill(features.download, voice))
        : await audioUrl("/v1/audio/speech", { method: "POST", json: { input: SAMPLE, voice, response_format: "wav" } });
      await player.play();
    } catch (error) {
      showError(listErrors, error);
    }
  }

  async function act(promise) {
    clearErrors(listErrors);
    try {
      await promise();
      emit("voices-changed");
    } catch (error) {
      showError(listErrors, error);
    }
  }

  const prompted = (question, initial, then) => () => {
    const answer = window.prompt(question, initial)?.trim();
    if (answer && answer !== initial) act(() => then(answer));
  };

  function row(voice, listing) {
    const isDefault = listing.default === voice.name;
    const button = (text, label, click) => el("button", { type: "button", text, "aria-label": label, on: { click } });
    const buttons = [
      button("Preview", `Preview ${voice.name}`, () => preview(voice.name)),
      features.rename ? button("Rename", `Rename ${voice.name}`, prompted(`New name for ${voice.name}`, voice.name,
        (to) => call(fill(features.rename, voice.name), { method: "PUT", form: formOf({ new_name: to }) }))) : null,
      features.setDefault && !isDefault ? button("Make default", `Make ${voice.name} the default`,
        () => act(() => call(features.setDefault, { method: "POST", form: formOf({ voice_name: voice.name }) }))) : null,
      features.setDefault && isDefault ? button("Unset default", `Stop using ${voice.name} as the default`,
        () => act(() => call(features.setDefault, { method: "DELETE" }))) : null,
      features.aliases ? button("Add alias", `Add an alias for ${voice.name}`, prompted(`Another name for ${voice.name}`, "",
        (alias) => call(fill(features.aliases, voice.name), { method: "POST", form: formOf({ alias }) }))) : null,
      features.metadata ? button("Describe", `Describe ${voice.name}`, prompted(`A description of ${voice.name}`,
        details.get(voice.name)?.description || "",
        (description) => call(fill(features.metadata, voice.name), { method: "PUT", json: { description } }))) : null,
      features.metadata ? button("Move", `Move ${voice.name} to a folder`, prompted(`Folder for ${voice.name} (e.g. team/english)`,
        voice.folder_path || "", (folder) => call(fill(features.metadata, voice.name), { method: "PUT", json: { folder_path: folder } }))) : null,
      button("Delete", `Delete ${voice.name}`, () => {
        if (window.confirm(`Delete the voice ${voice.name}?`)) act(() => call(`/v1/voices/${encodePath(voice.name)}`, { method: "DELETE" }));
      }),
    ];
    const aliases = voice.aliases || Object.entries(listing.aliases || {}).filter(([, target]) => target === voice.name).map(([a]) => a);
    const aliasCell = el("td", { class: "aliases" }, aliases.length ? aliases.map((alias) => el("span", { class: "alias" }, alias,
      features.aliases ? el("button", { type: "button", class: "remove", text: "×", "aria-label": `Remove the alias ${alias}`,
        on: { click: () => act(() => call(`${fill(features.aliases, voice.name)}/${encodeURIComponent(alias)}`, { method: "DELETE" })) } }) : null))
      : "–");
    const shown = voice.display_name && voice.display_name !== voice.name.split("/").pop() ? ` “${voice.display_name}”` : "";
    const extra = details.get(voice.name);
    const about = [extra?.description, extra?.tags?.length ? `tags: ${extra.tags.join(", ")}` : ""].filter(Boolean).join(" · ");
    return el("tr", { "data-voice": voice.name, "data-folder": voice.folder_path || "" },
      el("th", { scope: "row" }, el("span", { class: "name", text: voice.name + shown + (isDefault ? " (default)" : "") }),
        about ? el("div", { class: "hint about", text: about }) : null),
      el("td", { text: `${voice.duration_seconds.toFixed(1)} s` }),
      el("td", { text: voice.source_format }),
      el("td", { text: voice.language || "–" }),
      el("td", { text: new Date(voice.created * 1000).toLocaleString() }),
      aliasCell,
      el("td", { class: "buttons" }, buttons));
  }

  // The Extended API's view of the same voices adds descriptions and tags (keyed by the voice id).
  const details = new Map();
  const folder = select([["", "(all folders)"]]);
  const folderField = field("folder", "Folder", folder);
  folderField.hidden = true;
  list.before(folderField);
  let latest = null;
  folder.addEventListener("change", () => latest && show(latest));

  function show(listing) {
    const folders = [...new Set(listing.voices.map((v) => v.folder_path).filter(Boolean))].sort();
    fillSelect(folder, [["", "(all folders)"], ...folders.map((f) => [f, f])]);
    folderField.hidden = !folders.length;
    const inFolder = (v) => !folder.value || v.folder_path === folder.value || (v.folder_path || "").startsWith(`${folder.value}/`);
    const shown = listing.voices.filter(inFolder);
    list.replaceChildren(listing.voices.length
      ? el("table", {}, el("caption", { text: `${shown.length} of ${listing.voices.length} voice(s); default: ${listing.default}` }),
        el("thead", {}, el("tr", {}, ["Name", "Length", "Source", "Language", "Added", "Aliases", "Actions"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, shown.map((v) => row(v, listing))))
      : el("p", { text: `No library voices yet. Built in: ${listing.built_in.join(", ") || "none"}.` }));
  }

  async function refresh() {
    try {
      const [listing, extended] = await Promise.all([call("/v1/voices"),
        features.extended ? call("/api/v1/voices?page_size=100").catch(() => null) : null]);
      details.clear();
      for (const v of extended?.voices || []) details.set(v.id, v);
      form.querySelector("#voice-cloning").textContent = listing.cloning_supported
        ? "" : "This server's engine cannot clone voices: library voices are kept but cannot speak until a cloning engine runs.";
      latest = listing;
      show(listing);
      clearErrors(listErrors); // e.g. the 401 from before the key was typed
    } catch (error) {
      showError(listErrors, error);
    }
  }
  on("voices-changed", refresh);
  on("auth-changed", refresh);
  await refresh();
}

function formOf(fields) {
  const body = new FormData();
  for (const [k, v] of Object.entries(fields)) body.append(k, v);
  return body;
}
