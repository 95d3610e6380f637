// The Convert panel: voice conversion (POST /api/v1/vc) of a recording into a library voice.

import { audioUrl, call, emit, has, on } from "./api.js";
import { clearErrors, el, field, fillSelect, select, showError } from "./forms.js";

const FORMATS = ["wav", "mp3", "flac", "opus", "aac"];

export const panel = { id: "convert", label: "Convert", init };

async function init(root) {
  const storedInputs = await has("/api/v1/vc_inputs"); // the Extended API's store of recordings
  const input = el("input", { type: "file", accept: "audio/*" });
  const stored = select([["", "(upload a file instead)"]]);
  const target = select([["", "(choose a library voice)"]]);
  const targetFile = el("input", { type: "file", accept: "audio/*" });
  const formats = el("fieldset", { class: "checks" }, el("legend", { text: "Export formats" }),
    FORMATS.map((f) => el("label", {}, el("input", { type: "checkbox", name: "export_formats", value: f, checked: f === "wav" }), ` ${f}`)));
  const seed = el("input", { type: "number", min: 0, step: 1, inputmode: "numeric", placeholder: "random" });
  const form = el("form", { class: "convert", novalidate: true },
    el("p", { class: "hint", text: "Speak the words of a recording again in another voice." }),
    el("div", { class: "row" }, field("input_audio", "Recording to convert", input, "0.5 s to 10 minutes"),
      storedInputs ? field("input_audio_source", "…or a stored recording", stored) : null),
    el("div", { class: "row" },
      field("target_voice_source", "Target voice", target),
      field("target_voice_file", "…or a voice file", targetFile, "used for this conversion only")),
    el("div", { class: "row" }, el("div", { class: "field", "data-param": "export_formats" }, formats,
      el("p", { class: "field-error", "aria-live": "polite" })), field("seed", "Seed", seed)),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Convert" })),
    el("p", { class: "form-error", role: "alert" }));
  const result = el("div", { class: "result", "aria-live": "polite" });
  root.append(form, result);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const chosen = [...form.querySelectorAll("input[name=export_formats]:checked")].map((c) => c.value);
    let request;
    if (!input.files[0] && stored.value) {
      // a recording stored on the server: the Extended API's JSON form names it
      const json = { input_audio_source: stored.value, target_voice_source: target.value || null };
      if (chosen.length) json.export_formats = chosen;
      if (seed.value !== "") json.seed = Number(seed.value);
      request = { method: "POST", json };
    } else {
      const body = new FormData();
      if (input.files[0]) body.append("input_audio", input.files[0]);
      if (targetFile.files[0]) body.append("target_voice_source", targetFile.files[0]);
      else if (target.value) body.append("target_voice_source", target.value);
      if (chosen.length) body.append("export_formats", chosen.join(","));
      if (seed.value !== "") body.append("seed", seed.value);
      request = { method: "POST", form: body };
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    result.replaceChildren(el("p", { text: "Converting…" }));
    try {
      const answer = await call("/api/v1/vc?response_mode=url", request);
      await show(answer);
      emit("outputs-created", answer.output_files.map((f) => ({ ...f, kind: "voice conversion", seed: answer.generation_seed_used })));
    } catch (error) {
      result.replaceChildren();
      const onFile = error.param === "target_voice_source" && targetFile.files[0];
      showError(form, onFile ? { param: "target_voice_file", message: error.message, status: error.status } : error);
    } finally {
      button.disabled = false;
    }
  });

  async function show(answer) {
    const path = (file) => new URL(file.url, location.href).pathname; // absolute or relative URLs
    const [first] = answer.output_files;
    const audio = el("audio", { controls: true, "aria-label": "Converted audio", src: await audioUrl(path(first)) });
    const links = await Promise.all(answer.output_files.map(async (f) =>
      el("a", { href: await audioUrl(path(f)), download: f.filename, text: `Download ${f.format}` })));
    const seconds = (value, digits) => (typeof value === "number" ? `${value.toFixed(digits)} s` : "?");
    result.replaceChildren(el("p", { text: `${seconds(answer.duration_seconds, 1)} of audio in ${seconds(answer.processing_time_seconds, 2)}, seed ${answer.generation_seed_used}` }),
      audio, el("p", { class: "links" }, links));
  }

  async function loadVoices() {
    try {
      const listing = await call("/v1/voices");
      fillSelect(target, [["", "(choose a library voice)"], ...listing.voices.map((v) => [v.name, v.name])]);
      if (storedInputs) {
        const files = (await call("/api/v1/vc_inputs?page_size=100")).files || [];
        const name = (f) => (f.folder_path ? `${f.folder_path}/${f.filename}` : f.filename);
        fillSelect(stored, [["", "(upload a file instead)"], ...files.map((f) => [name(f), name(f)])]);
      }
    } catch (error) {
      showError(form, error);
    }
  }
  on("voices-changed", loadVoices);
  on("auth-changed", loadVoices);
  await loadVoices();
}
