// The Outputs panel: the server's generated files (GET /api/v1/outputs), newest first, with their
// parameters; search, type and folder filters, paging; play, download, delete. Without that API
// (an older server) it lists the files made from this page in this session.

import { audioUrl, call, formatBytes, has, on } from "./api.js";
import { clearErrors, el, field, fillSelect, select, showError } from "./forms.js";

const PAGE_SIZE = 20;
const SEARCH_DELAY_MS = 300;
const TYPES = [["", "(all)"], ["tts", "speech"], ["vc", "voice conversion"], ["concat", "concatenation"]];

export const panel = { id: "outputs", label: "Outputs", init, show: () => refreshHook() };

let refreshHook = () => {};

/** A file's path relative to the outputs directory (folder-qualified), as the API names it. */
export const relativePath = (file) => (file.folder_path ? `${file.folder_path}/${file.filename}` : file.filename);
const encodePath = (path) => path.split("/").map(encodeURIComponent).join("/");

async function init(root) {
  const serverListing = await has("/api/v1/outputs");
  const canDelete = await has("/api/v1/output/{filename}", "delete");
  const withFolders = await has("/api/v1/outputs/folders");
  const session = [];
  const search = el("input", { type: "search", placeholder: "part of a name, folder or parameter", autocomplete: "off" });
  const type = select(TYPES);
  const folder = select([["", "(all folders)"]]);
  const filters = el("form", { class: "row filters", role: "search", novalidate: true },
    field("search", "Search", search), field("generation_type", "Kind", type),
    withFolders ? field("folder", "Folder", folder) : null);
  const player = el("audio", { controls: true, "aria-label": "Output preview" });
  const list = el("div", { "aria-live": "polite" });
  const errors = el("div", {}, el("p", { class: "form-error", role: "alert" }));
  const pager = el("nav", { class: "actions pager", "aria-label": "Pages of outputs" });
  root.append(el("p", { class: "hint", text: serverListing
    ? "Files generated on this server, newest first (Save to outputs, voice conversion, the Extended API)."
    : "Files generated from this page in this session (this server has no outputs listing)." }),
  serverListing ? filters : null, list, pager, errors, player);
  let page = 1;

  const pathOf = (file) => (file.url ? new URL(file.url, location.href).pathname : `/outputs/${encodePath(relativePath(file))}`);

  const guarded = (fn) => async () => {
    clearErrors(errors);
    try {
      await fn();
    } catch (error) {
      showError(errors, error);
    }
  };
  const play = (file) => guarded(async () => {
    player.src = await audioUrl(pathOf(file));
    await player.play();
  });
  const download = (file) => guarded(async () => {
    el("a", { href: await audioUrl(pathOf(file)), download: file.filename }).click();
  });
  const remove = (file) => guarded(async () => {
    if (!window.confirm(`Delete ${relativePath(file)}?`)) return;
    await call(`/api/v1/output/${encodePath(relativePath(file))}?confirm=true`, { method: "DELETE" });
    await refresh();
  });

  function row(file) {
    const name = relativePath(file);
    const seconds = typeof file.duration_seconds === "number" ? `${file.duration_seconds.toFixed(1)} s` : "–";
    const created = file.created_date ? new Date(file.created_date).toLocaleString() : "–";
    return el("tr", { "data-file": name },
      el("th", { scope: "row", text: name }),
      el("td", { text: file.generation_type || file.kind || "–" }),
      el("td", { text: created }),
      el("td", { text: seconds }),
      el("td", { text: formatBytes(file.file_size_bytes ?? file.size_bytes) }),
      el("td", { class: "params" }, describe(file)),
      el("td", { class: "buttons" },
        el("button", { type: "button", text: "Play", "aria-label": `Play ${name}`, on: { click: play(file) } }),
        el("button", { type: "button", text: "Download", "aria-label": `Download ${name}`, on: { click: download(file) } }),
        canDelete ? el("button", { type: "button", text: "Delete", "aria-label": `Delete ${name}`, on: { click: remove(file) } }) : null));
  }

  function table(files, caption) {
    if (!files.length) return el("p", { text: search.value || type.value || folder.value ? "No file matches." : "No generated files yet." });
    return el("table", {}, caption ? el("caption", { text: caption }) : null,
      el("thead", {}, el("tr", {}, ["File", "Kind", "Made", "Length", "Size", "Parameters", "Actions"]
        .map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, files.map(row)));
  }

  async function loadFolders() {
    if (!withFolders) return;
    const answer = await call("/api/v1/outputs/folders");
    fillSelect(folder, [["", "(all folders)"], ...answer.folders.map((f) => [f.path, f.path])]);
  }

  async function refresh() {
    clearErrors(errors);
    if (!serverListing) {
      list.replaceChildren(table(session));
      return;
    }
    try {
      const query = new URLSearchParams({ page, page_size: PAGE_SIZE });
      if (search.value.trim()) query.set("search", search.value.trim());
      if (type.value) query.set("generation_type", type.value);
      if (folder.value) query.set("folder", folder.value);
      const [answer] = await Promise.all([call(`/api/v1/outputs?${query}`), loadFolders()]);
      if (answer.page > answer.total_pages && answer.total_pages > 0) { // the last page emptied by a delete
        page = answer.total_pages;
        await refresh();
        return;
      }
      list.replaceChildren(table(answer.files || [], `${answer.total_files} file(s)`));
      pager.replaceChildren(
        el("button", { type: "button", text: "Previous", disabled: !answer.has_previous, on: { click: () => { page -= 1; refresh(); } } }),
        el("span", { class: "page", text: `page ${answer.page} of ${Math.max(answer.total_pages, 1)}` }),
        el("button", { type: "button", text: "Next", disabled: !answer.has_next, on: { click: () => { page += 1; refresh(); } } }));
    } catch (error) {
      showError(errors, error);
    }
  }
  const fromFirstPage = () => { page = 1; refresh(); };
  let typing = null;
  search.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(fromFirstPage, SEARCH_DELAY_MS); });
  filters.addEventListener("submit", (event) => { event.preventDefault(); clearTimeout(typing); fromFirstPage(); });
  type.addEventListener("change", fromFirstPage);
  folder.addEventListener("change", fromFirstPage);
  refreshHook = refresh;
  on("outputs-created", (files) => {
    session.unshift(...files);
    fromFirstPage();
  });
  on("auth-changed", refresh);
  await refresh();
}

// The fields a person picks in the Speak and Convert panels come first; the rest fold away.
const MAIN = ["text", "reference_audio_filename", "voice", "input_audio_source", "target_voice_source", "seed",
  "speed_factor", "speed", "exaggeration", "cfg_weight", "temperature", "language", "export_formats"];

function describe(file) {
  const parameters = file.parameters || (file.seed !== undefined ? { seed: file.seed } : {});
  const pairs = Object.entries(parameters).filter(([, v]) => v !== null && v !== "")
    .map(([k, v]) => [k, `${k}=${clip(typeof v === "object" ? JSON.stringify(v) : String(v))}`]);
  if (!pairs.length) return "–";
  const main = pairs.filter(([k]) => MAIN.includes(k)).sort(([a], [b]) => MAIN.indexOf(a) - MAIN.indexOf(b));
  const rest = pairs.filter(([k]) => !MAIN.includes(k));
  return [el("span", { text: main.map(([, t]) => t).join(", ") }),
    rest.length ? el("details", {}, el("summary", { text: `${rest.length} more` }), rest.map(([, t]) => t).join(", ")) : null];
}

function clip(text, limit = 60) {
  return text.length > limit ? `${text.slice(0, limit - 1)}…` : text;
}
