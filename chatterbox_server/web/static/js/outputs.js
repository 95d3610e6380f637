// The Outputs panel: generated files with their parameters; play, download, delete.
// With GET /api/v1/outputs (Extended API) it lists the server's files; without it, this session's.

import { audioUrl, call, has, on } from "./api.js";
import { clearErrors, el, showError } from "./forms.js";

const PAGE_SIZE = 20;

export const panel = { id: "outputs", label: "Outputs", init, show: () => refreshHook() };

let refreshHook = () => {};

async function init(root) {
  const serverListing = await has("/api/v1/outputs");
  const canDelete = await has("/api/v1/output/{filename}", "delete");
  const session = [];
  const player = el("audio", { controls: true, "aria-label": "Output preview" });
  const list = el("div", { "aria-live": "polite" });
  const errors = el("div", {}, el("p", { class: "form-error", role: "alert" }));
  const pager = el("div", { class: "actions" });
  root.append(el("p", { class: "hint", text: serverListing
    ? "Files generated on this server (Extended API outputs)."
    : "Files generated from this page in this session (this server has no outputs listing)." }),
  list, pager, errors, player);
  let page = 1;

  const pathOf = (file) => (file.url ? new URL(file.url, location.href).pathname
    : `/outputs/${file.folder_path ? `${file.folder_path}/` : ""}${encodeURIComponent(file.filename)}`);

  async function play(file) {
    clearErrors(errors);
    try {
      player.src = await audioUrl(pathOf(file));
      await player.play();
    } catch (error) {
      showError(errors, error);
    }
  }

  async function download(file) {
    try {
      el("a", { href: await audioUrl(pathOf(file)), download: file.filename }).click();
    } catch (error) {
      showError(errors, error);
    }
  }

  async function remove(file) {
    if (!window.confirm(`Delete ${file.filename}?`)) return;
    try {
      await call(`/api/v1/output/${encodeURIComponent(file.filename)}?confirm=true`, { method: "DELETE" });
      await refresh();
    } catch (error) {
      showError(errors, error);
    }
  }

  function table(files) {
    if (!files.length) return el("p", { text: "No generated files yet." });
    return el("table", {},
      el("thead", {}, el("tr", {}, ["File", "Kind", "Size", "Parameters", "Actions"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, files.map((file) => el("tr", {},
        el("th", { scope: "row", text: file.filename }),
        el("td", { text: file.generation_type || file.kind || file.format || "–" }),
        el("td", { text: file.size_bytes ?? file.file_size_bytes ? `${Math.round((file.size_bytes ?? file.file_size_bytes) / 1024)} KiB` : "–" }),
        el("td", { class: "params", text: describe(file) }),
        el("td", { class: "buttons" },
          el("button", { type: "button", text: "Play", "aria-label": `Play ${file.filename}`, on: { click: () => play(file) } }),
          el("button", { type: "button", text: "Download", "aria-label": `Download ${file.filename}`, on: { click: () => download(file) } }),
          canDelete ? el("button", { type: "button", text: "Delete", "aria-label": `Delete ${file.filename}`, on: { click: () => remove(file) } }) : null)))));
  }

  async function refresh() {
    clearErrors(errors);
    if (!serverListing) {
      list.replaceChildren(table(session));
      return;
    }
    try {
      const answer = await call(`/api/v1/outputs?page=${page}&page_size=${PAGE_SIZE}`);
      list.replaceChildren(table(answer.files || []));
      pager.replaceChildren(
        el("button", { type: "button", text: "Previous", disabled: !answer.has_previous, on: { click: () => { page -= 1; refresh(); } } }),
        el("span", { text: ` page ${answer.page} of ${answer.total_pages} ` }),
        el("button", { type: "button", text: "Next", disabled: !answer.has_next, on: { click: () => { page += 1; refresh(); } } }));
    } catch (error) {
      showError(errors, error);
    }
  }
  refreshHook = refresh;
  on("outputs-created", (files) => {
    session.unshift(...files);
    refresh();
  });
  on("auth-changed", refresh);
  await refresh();
}

function describe(file) {
  const parameters = file.parameters || (file.seed !== undefined ? { seed: file.seed } : {});
  return Object.entries(parameters).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ") || "–";
}
