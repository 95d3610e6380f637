// The page: tabs over the panels, the API key dialog, the health badge.
// A panel is {id, label, init(root, env), show?(), hide?(), detect?()}; one whose detect() is false
// (its API is not on this server) gets no tab. Add a panel by listing its module in PANELS.

import { apiKey, on, setApiKey } from "./api.js";
import { el } from "./forms.js";
import { health } from "./server.js";
import { panel as speak } from "./speak.js";
import { panel as live } from "./live.js";
import { panel as dialogue } from "./dialogue.js";
import { panel as voices } from "./voices.js";
import { panel as convert } from "./convert.js";
import { panel as jobs } from "./jobs.js";
import { panel as outputs } from "./outputs.js";
import { panel as server } from "./server.js";

const PANELS = [speak, live, dialogue, voices, convert, jobs, outputs, server];
const HEALTH_MS = 5000;

const env = { limits: JSON.parse(document.body.dataset.limits) };

async function main() {
  const tablist = document.querySelector("[role=tablist]");
  const main = document.querySelector("main");
  const shown = [];
  for (const panel of PANELS) {
    if (panel.detect && !(await panel.detect())) continue;
    const tab = el("button", { type: "button", role: "tab", id: `tab-${panel.id}`, "aria-controls": `panel-${panel.id}`,
      "aria-selected": "false", tabindex: "-1", text: panel.label });
    const root = el("section", { role: "tabpanel", id: `panel-${panel.id}`, "aria-labelledby": tab.id, tabindex: "0", hidden: true });
    tablist.append(tab);
    main.append(root);
    shown.push({ panel, tab, root });
  }
  const select = (index, focus = false) => {
    shown.forEach(({ panel, tab, root }, i) => {
      const active = i === index;
      if (!active && !root.hidden) panel.hide?.();
      tab.setAttribute("aria-selected", String(active));
      tab.tabIndex = active ? 0 : -1;
      root.hidden = !active;
      if (active) {
        panel.show?.();
        if (focus) tab.focus();
        history.replaceState(null, "", `#${panel.id}`);
      }
    });
  };
  shown.forEach(({ tab }, i) => {
    tab.addEventListener("click", () => select(i));
    tab.addEventListener("keydown", (event) => { // the WAI-ARIA tabs pattern: arrows, Home, End
      const last = shown.length - 1;
      const to = { ArrowRight: i === last ? 0 : i + 1, ArrowLeft: i === 0 ? last : i - 1, Home: 0, End: last }[event.key];
      if (to !== undefined) {
        event.preventDefault();
        select(to, true);
      }
    });
  });
  const wanted = shown.findIndex(({ panel }) => `#${panel.id}` === location.hash);
  select(Math.max(wanted, 0));
  setupKeyDialog();
  await Promise.all(shown.map(({ panel, root }) => panel.init(root, env).catch((error) => {
    root.append(el("p", { class: "form-error", role: "alert", text: `This panel failed to load: ${error.message}` }));
  })));
  shown.find(({ root }) => !root.hidden)?.panel.show?.();
  document.body.dataset.ready = "true";
  badge();
  setInterval(badge, HEALTH_MS);
}

function setupKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  const input = dialog.querySelector("input");
  const open = () => {
    if (dialog.open) return; // several requests can fail at once: keep what the user is typing
    input.value = apiKey();
    dialog.showModal();
  };
  document.getElementById("key-button").addEventListener("click", open);
  dialog.querySelector("form").addEventListener("submit", (event) => {
    if (event.submitter?.value === "cancel") return;
    setApiKey(input.value.trim());
  });
  on("auth-needed", open);
  if (env.limits.auth_required && !apiKey()) open();
}

async function badge() {
  const node = document.getElementById("health-badge");
  try {
    const report = await health();
    node.textContent = badgeText(report);
    node.dataset.status = report.status;
  } catch {
    node.textContent = "unreachable";
    node.dataset.status = "unavailable";
  }
}

/** "ok · tone · default model chatterbox-standard (of 3)"; a server without /health's models: its engine's model. */
function badgeText(report) {
  const served = Object.entries(report.models || {});
  const defaultModel = served.find(([, m]) => m.default)?.[0];
  const model = defaultModel ? ` · default model ${defaultModel}${served.length > 1 ? ` (of ${served.length})` : ""}`
    : `${report.model ? ` ${report.model}` : ""}`;
  return `${report.status} · ${report.engine}${model}`;
}

main();
