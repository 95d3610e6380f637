// The Convert panel: voice conversion (POST /api/v1/vc) of a recording into a library voice.

import { audioUrl, call, emit, on } from "./api.js";
import { clearErrors, el, field, fillSelect, select, showError } from "./forms.js";

const FORMATS = ["wav", "mp3", "flac", "opus", "aac"];

export const panel = { id: "convert", label: "Convert", init };

async function init(root) {
  const input = el("input", { type: "file", accept: "audio/*" });
  const target = select([["", "(choose a library voice)"]]);
  const targetFile = el("input", { type: "file", accept: "audio/*" });
  const formats = el("fieldset", { class: "checks" }, el("legend", { text: "Export formats" }),
    FORMATS.map((f) => el("label", {}, el("input", { type: "checkbox", name: "export_formats", value: f, checked: f === "wav" }), ` ${f}`)));
  const seed = el("input", { type: "number", min: 0, step: 1, inputmode: "numeric", placeholder: "random" });
  const form = el("form", { class: "convert", novalidate: true },
    el("p", { class: "hint", text: "Speak the words of a recording again in another voice." }),
    field("input_audio", "Recording to convert", input, "0.5 s to 10 minutes"),
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
    const body = new FormData();
    if (input.files[0]) body.append("input_audio", input.files[0]);
    if (targetFile.files[0]) body.append("target_voice_source", targetFile.files[0]);
    else if (target.value) body.append("target_voice_source", target.value);
    const chosen = [...form.querySelectorAll("input[name=export_formats]:checked")].map((c) => c.value);
    if (chosen.length) body.append("export_formats", chosen.join(","));
    if (seed.value !== "") body.append("seed", seed.value);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    result.replaceChildren(el("p", { text: "Converting…" }));
    try {
      const answer = await call("/api/v1/vc?response_mode=url", { method: "POST", form: body });
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
    const [first] = answer.output_files;
    const audio = el("audio", { controls: true, "aria-label": "Converted audio", src: await audioUrl(new URL(first.url).pathname) });
    const links = await Promise.all(answer.output_files.map(async (f) =>
      el("a", { href: await audioUrl(new URL(f.url).pathname), download: f.filename, text: `Download ${f.format}` })));
    result.replaceChildren(el("p", { text: `${answer.duration_seconds.toFixed(1)} s in ${answer.processing_time_seconds.toFixed(2)} s, seed ${answer.generation_seed_used}` }),
      audio, el("p", { class: "links" }, links));
  }

  async function loadVoices() {
    try {
      const listing = await call("/v1/voices");
      fillSelect(target, [["", "(choose a library voice)"], ...listing.voices.map((v) => [v.name, v.name])]);
    } catch (error) {
      showError(form, error);
    }
  }
  on("voices-changed", loadVoices);
  on("auth-changed", loadVoices);
  await loadVoices();
}
