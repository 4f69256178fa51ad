// Shared by every page: the API key field, fetch with the key, a tiny DOM builder, status line.
"use strict";

const KEY_STORAGE = "protege.apiKey";

function authHeaders(extra = {}) {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

// The message of an error answer: protege's {"error": {...}} or FastAPI's {"detail": ...}.
function errorMessage(body, response) {
  if (body && body.error && body.error.message) return body.error.message;
  if (body && body.detail) {
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  }
  return `${response.status} ${response.statusText}`;
}

// fetch a JSON endpoint; throws an Error carrying the server's message on a non-2xx answer.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(errorMessage(body, response));
  return body;
}

function postJSON(path, payload) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

// el("td", {class: "x"}, "text", child): text goes in as text, never as HTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function showStatus(message, kind = "info") {
  const status = document.getElementById("status");
  status.textContent = message;
  status.className = `status ${kind}`;
  status.hidden = !message;
}

function showError(error) {
  showStatus(error instanceof Error ? error.message : String(error), "error");
}

function setServed(version) {
  for (const id of ["served-version", "served"]) {
    const node = document.getElementById(id);
    if (node) node.textContent = version;
  }
}

function shortTime(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "";
}

(function keyField() {
  const input = document.getElementById("api-key");
  input.value = localStorage.getItem(KEY_STORAGE) || "";
  input.addEventListener("change", () => {
    const key = input.value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    showStatus(key ? "API key saved in this browser." : "API key removed.");
  });
})();
