// Documents: upload (with visibility and groups), list with versions and chunks, delete.
"use strict";

const uploadForm = document.getElementById("upload-form");
const visibility = document.getElementById("visibility");
const groups = document.getElementById("groups");
const tbody = document.querySelector("#documents tbody");

function size(bytes) {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KiB`;
}

function access(doc) {
  return doc.visibility === "groups" ? `groups: ${doc.groups.join(", ")}` : "company";
}

function row(doc) {
  const versions = doc.versions.map((v) => `v${v.version} (${v.status}, ${v.n_chunks} chunks)`);
  const adapters = [...new Set(doc.versions.flatMap((v) => v.adapters))];
  return el(
    "tr",
    { id: `doc-${doc.id}`, "data-name": doc.name },
    el("td", {}, doc.id),
    el("td", {}, doc.name),
    el("td", {}, doc.title),
    el("td", { class: "access" }, access(doc)),
    el("td", { title: versions.join("\n") }, `v${doc.version} of ${doc.n_versions}`),
    el("td", {}, doc.n_chunks),
    el("td", { class: "num" }, size(doc.size_bytes)),
    el("td", { class: "num" }, shortTime(doc.created_at),
      doc.uploaded_by ? el("div", { class: "muted small" }, `by ${doc.uploaded_by}`) : null),
    el("td", {}, adapters.join(", ") || "–"),
    el("td", {}, el("button", { class: "danger delete", type: "button", onclick: () => remove(doc) }, "Delete")),
  );
}

async function refresh() {
  const body = await api("/v1/documents");
  document.getElementById("doc-count").textContent = `(${body.data.length})`;
  tbody.replaceChildren(
    ...(body.data.length
      ? body.data.map(row)
      : [el("tr", {}, el("td", { colspan: 10, class: "muted" }, "No documents yet."))]),
  );
}

async function remove(doc) {
  if (!confirm(`Delete "${doc.name}" and all its versions? This cannot be undone.`)) return;
  try {
    const result = await api(`/v1/documents/${doc.id}`, { method: "DELETE" });
    let message = `Deleted "${doc.name}" (${result.chunks_removed} chunks).`;
    if (result.tainted.length) message += ` Adapters trained on it, now tainted: ${result.tainted.join(", ")}.`;
    if (result.served !== result.served_before) message += ` Now serving ${result.served}.`;
    if (result.serving_error) message += ` Serving could not swap yet: ${result.serving_error}`;
    setServed(result.served);
    showStatus(message, "ok");
  } catch (error) {
    showError(error);
  }
  await refresh().catch(showError);
}

visibility.addEventListener("change", () => {
  groups.disabled = visibility.value !== "groups";
  groups.required = !groups.disabled;
});

// Poll a large upload's job, showing its stage and progress; the stored document at the end.
async function followJob(job) {
  while (job.status === "queued" || job.status === "running") {
    const counts = job.total > 1 ? ` ${job.done}/${job.total}` : "";
    showStatus(`${job.name}: ${job.stage}${counts} (${Math.round(job.progress * 100)}%)`, "info");
    await new Promise((resolve) => setTimeout(resolve, 500));
    job = await api(job.status_url);
  }
  if (job.status !== "succeeded") throw new Error(`${job.name}: ${job.error}`);
  return api(`/v1/documents/${job.document_id}`).then((doc) => ({
    ...doc, created: job.created, replaced_id: job.replaced_id,
  }));
}

uploadForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const files = [...document.getElementById("file").files];
  const done = [];
  try {
    for (const file of files) { // the API takes one file per request
      const data = new FormData();
      data.append("file", file);
      // no visibility: a new version keeps its previous access (widening must be chosen)
      if (visibility.value) data.append("visibility", visibility.value);
      if (visibility.value === "groups") data.append("groups", groups.value);
      let doc = await api("/v1/documents", { method: "POST", body: data });
      if (doc.object === "ingest.job") doc = await followJob(doc); // a large file: 202 and a job
      const what = !doc.created ? "already stored" : doc.replaced_id ? `new version v${doc.version}` : "new";
      done.push(`${doc.name} (${what}, ${doc.n_chunks} chunks)`);
    }
    showStatus(`Uploaded: ${done.join("; ")}`, "ok");
    uploadForm.reset();
    visibility.dispatchEvent(new Event("change"));
  } catch (error) {
    showError(done.length ? new Error(`Uploaded ${done.join("; ")}; then: ${error.message}`) : error);
  }
  await refresh().catch(showError);
});

refresh().catch(showError);
