// Talking to the server: the API key, error envelopes of both families, the OpenAPI document.

const KEY_STORAGE = "chatterbox.apiKey";
const ERROR_LOG_SIZE = 50;

export class ApiError extends Error {
  constructor(status, message, param = null, code = null) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

/** Errors this page has met, newest first (the Server panel lists them). */
export const recentErrors = [];

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  emit("auth-changed");
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export function emit(name, detail = null) {
  document.dispatchEvent(new CustomEvent(`cbx:${name}`, { detail }));
}

export function on(name, handler) {
  document.addEventListener(`cbx:${name}`, (event) => handler(event.detail));
}

/**
 * fetch() with the key, JSON in and out, and every failure as an ApiError.
 * `raw: true` returns the Response itself (for audio and streams).
 */
export async function call(path, { method = "GET", json, form, signal, raw = false } = {}) {
  const sentKey = apiKey();
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw remember(path, new ApiError(0, "The server cannot be reached. Is it running?", null, "network"));
  }
  if (!response.ok) throw remember(path, await errorFrom(response, sentKey));
  if (raw) return response;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

/** The OpenAI envelope names `param`; the Extended one starts `detail` with the field name. */
export async function errorFrom(response, sentKey = apiKey()) {
  let data = null;
  try {
    data = await response.json();
  } catch {
    // not JSON: fall through to the status line
  }
  if (response.status === 401 && sentKey === apiKey()) emit("auth-needed"); // not for a key already replaced
  if (data && data.error && typeof data.error === "object") {
    const { message, param, code } = data.error;
    return new ApiError(response.status, message, param || null, code || null);
  }
  if (data && typeof data.detail === "string") {
    const field = /^([a-z_]+): /.exec(data.detail);
    return new ApiError(response.status, data.detail, field ? field[1] : null, data.error_code || null);
  }
  const text = response.status === 413 ? "The file is larger than the server accepts." : response.statusText;
  return new ApiError(response.status, `${response.status} ${text}`.trim());
}

function remember(path, error) {
  recentErrors.unshift({ time: new Date(), path, status: error.status, message: error.message });
  recentErrors.length = Math.min(recentErrors.length, ERROR_LOG_SIZE);
  emit("error-logged");
  return error;
}

export function logError(path, error) {
  if (error instanceof ApiError) return; // already logged by call()
  remember(path, new ApiError(0, String(error.message || error)));
}

let specPromise = null;

/** /openapi.json, fetched once: the one source of field ranges and of which endpoints exist. */
export function openapi() {
  specPromise ||= fetch("/openapi.json").then((r) => (r.ok ? r.json() : { paths: {}, components: {} }));
  return specPromise;
}

/** Whether the server documents `method path` (panels for newer APIs appear only when it does). */
export async function has(path, method = "get") {
  const spec = await openapi();
  return Boolean(spec.paths && spec.paths[path] && spec.paths[path][method]);
}

export async function schemaOf(component) {
  const spec = await openapi();
  return (spec.components && spec.components.schemas && spec.components.schemas[component]) || { properties: {} };
}

/** An audio response as an object URL that an <audio> element or a download link can use. */
export async function audioUrl(path, options = {}) {
  const response = await call(path, { ...options, raw: true });
  return URL.createObjectURL(await response.blob());
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}
