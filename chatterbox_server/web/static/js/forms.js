// Form controls built from the OpenAPI schema, and API errors shown next to the field they name.

let uid = 0;

/** Create an element: el("p", {class: "x", text: "hi"}, child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

/**
 * One labelled field: `<div class="field" data-param=name>` with its label, control, hint and error.
 * `control` gets an id, and aria-describedby pointing at the hint and the error.
 */
export function field(name, label, control, hint = "") {
  uid += 1;
  const id = control.id || `f-${name}-${uid}`;
  control.id = id;
  if (!control.name) control.name = name;
  const hintNode = hint ? el("div", { class: "hint", id: `${id}-hint`, text: hint }) : null;
  const error = el("p", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  control.setAttribute("aria-describedby", [hintNode && hintNode.id, error.id].filter(Boolean).join(" "));
  return el("div", { class: "field", "data-param": name }, el("label", { for: id, text: label }), control, hintNode, error);
}

/** A select of [value, text] pairs (or [value, text, attrs], e.g. {disabled: true}), or of optgroups {label, options}. */
export function select(options, value = "") {
  const node = el("select");
  fillSelect(node, options, value);
  return node;
}

export function fillSelect(node, options, value = node.value) {
  const option = ([v, t, attrs = {}]) => el("option", { ...attrs, value: v, text: t });
  node.replaceChildren();
  for (const item of options) {
    node.append(item.options ? el("optgroup", { label: item.label }, item.options.map(option)) : option(item));
  }
  if ([...node.options].some((o) => o.value === value)) node.value = value;
}

const PRETTY = { cfg_weight: "CFG weight", streaming_chunk_size: "Chunk size", streaming_strategy: "Chunking",
  streaming_quality: "Quality", streaming_buffer_size: "Buffer (chunks)", response_format: "Download format" };

export function labelFor(name) {
  return PRETTY[name] || name.charAt(0).toUpperCase() + name.slice(1).replaceAll("_", " ");
}

/**
 * A control for one schema property: a number box with a slider beside it when the schema gives a
 * range, a select for an enum. `optional` adds an empty choice ("server default").
 */
export function controlFor(name, prop, { optional = false, emptyText = "server default" } = {}) {
  if (prop.enum) {
    const choices = prop.enum.map((v) => [v, v]);
    if (optional || prop.default === undefined) choices.unshift(["", `(${emptyText})`]);
    return { control: select(choices, prop.default ?? ""), extra: null };
  }
  if (prop.type === "number" || prop.type === "integer") {
    const step = prop.type === "integer" ? 1 : stepFor(prop);
    const input = el("input", { type: "number", inputmode: prop.type === "integer" ? "numeric" : "decimal",
      min: prop.minimum, max: prop.maximum, step, value: prop.default ?? "", placeholder: optional ? emptyText : null });
    if (prop.minimum === undefined || prop.maximum === undefined || prop.maximum - prop.minimum > 1e6) {
      return { control: input, extra: null };
    }
    const slider = el("input", { type: "range", min: prop.minimum, max: prop.maximum, step,
      value: prop.default ?? prop.minimum, "aria-hidden": "true", tabindex: "-1" });
    slider.addEventListener("input", () => { input.value = slider.value; input.dispatchEvent(new Event("input")); });
    input.addEventListener("input", () => { if (input.value !== "") slider.value = input.value; });
    return { control: input, extra: slider };
  }
  return { control: el("input", { type: "text", value: prop.default ?? "" }), extra: null };
}

function stepFor(prop) {
  return prop.maximum - prop.minimum <= 10 ? 0.05 : 1;
}

export function rangeHint(prop) {
  if (prop.minimum !== undefined && prop.maximum !== undefined && prop.maximum < 1e6) {
    return `${prop.minimum} – ${prop.maximum}${prop.default !== undefined && prop.default !== null ? `, default ${prop.default}` : ""}`;
  }
  return "";
}

/** Values of a form's named controls, leaving out empty optional ones; numbers typed as numbers. */
export function values(form, names) {
  const out = {};
  for (const name of names) {
    const control = form.elements.namedItem(name);
    if (!control || control.value === "") continue;
    out[name] = control.type === "number" ? numberOrText(control.value) : control.value;
  }
  return out;
}

function numberOrText(text) {
  const number = Number(text);
  return Number.isFinite(number) ? number : text; // the server says what is wrong with "abc"
}

export function clearErrors(root) {
  for (const node of root.querySelectorAll(".field-error, .form-error")) node.textContent = "";
  for (const node of root.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

/**
 * Show an API error next to the control its `param` names (or at the form's foot), in plain words,
 * and move the focus there so keyboard and screen-reader users land on it.
 */
export function showError(root, error) {
  const message = plainWords(error);
  const fieldNode = error.param ? root.querySelector(`.field[data-param="${CSS.escape(error.param)}"]`) : null;
  if (fieldNode) {
    fieldNode.querySelector(".field-error").textContent = message;
    const control = fieldNode.querySelector("[name]:not([aria-hidden])") || fieldNode.querySelector("input, select, textarea");
    control.setAttribute("aria-invalid", "true");
    control.focus();
    return;
  }
  const target = root.querySelector(".form-error");
  if (target) target.textContent = message;
}

/** The server's message without the "field: " prefix (the label says which field), first letter up. */
export function plainWords(error) {
  let text = String(error.message || "Something went wrong.");
  if (error.param && text.startsWith(`${error.param}: `)) text = text.slice(error.param.length + 2);
  text = text.replace(/^Not a valid (number|integer)\.$/, "Please enter a $1.");
  if (error.status === 503 && !text) text = "The server is busy or still loading; try again shortly.";
  return text.charAt(0).toUpperCase() + text.slice(1);
}
