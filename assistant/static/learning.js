// Learning: training runs, adapters with their metrics (and a chart), promote and roll back;
// the eval items the gate asks, edited in place.
"use strict";

const SERIES = [
  { key: "qa_closed_book", label: "QA (closed book)", short: "QA", cls: "qa" },
  { key: "ifeval_strict", label: "IFEval (strict)", short: "IFEval", cls: "ifeval" },
];

function num(value) {
  return typeof value === "number" ? value.toFixed(3) : "–";
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

// Points: the base model (from the first adapter's "base" metrics), then every adapter in order.
function chartPoints(adapters) {
  const points = adapters.map((a) => ({ label: a.version, status: a.status, metrics: a.metrics }));
  const base = adapters.find((a) => a.metrics.base)?.metrics.base;
  return base ? [{ label: "base", status: "base", metrics: base }, ...points] : points;
}

function drawChart(adapters) {
  const points = chartPoints(adapters);
  const box = document.getElementById("chart");
  if (!points.length) return;
  const W = 640, H = 240, left = 44, right = 150, top = 14, bottom = 34;
  const plotW = W - left - right, plotH = H - top - bottom;
  const x = (i) => left + (points.length === 1 ? plotW / 2 : (i * plotW) / (points.length - 1));
  const y = (v) => top + plotH * (1 - v); // both metrics are fractions in [0, 1]
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "metrics-chart",
    "aria-label": "QA and IFEval per adapter version" });
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    chart.append(svg("line", { x1: left, x2: left + plotW, y1: y(tick), y2: y(tick), class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y(tick) + 4, class: "tick", "text-anchor": "end" }, tick.toFixed(2)));
  }
  points.forEach((p, i) => {
    chart.append(svg("text", { x: x(i), y: H - 12, class: `tick ${p.status}`, "text-anchor": "middle" }, p.label));
  });
  SERIES.forEach((series, s) => {
    const have = points.map((p, i) => [i, p.metrics[series.key]]).filter(([, v]) => typeof v === "number");
    if (have.length > 1) {
      chart.append(svg("polyline", { class: `line ${series.cls}`,
        points: have.map(([i, v]) => `${x(i)},${y(v)}`).join(" ") }));
    }
    for (const [i, v] of have) {
      chart.append(svg("circle", { cx: x(i), cy: y(v), r: 4, class: `dot ${series.cls}` },
        svg("title", {}, `${points[i].label} ${series.label}: ${v.toFixed(3)}`)));
    }
    const ly = top + 10 + s * 20;
    chart.append(svg("line", { x1: W - right + 16, x2: W - right + 36, y1: ly, y2: ly, class: `line ${series.cls}` }));
    chart.append(svg("text", { x: W - right + 42, y: ly + 4, class: "legend" }, series.label));
  });
  box.replaceChildren(chart);
}

function adapterRow(a, served) {
  const m = a.metrics;
  const servable = !["rejected", "tainted"].includes(a.status);
  return el(
    "tr",
    { id: `adapter-${a.version}`, class: a.served ? "served" : null },
    el("td", {}, el("code", {}, a.version)),
    el("td", {}, el("span", { class: `badge ${a.status}` }, a.status), a.served ? " (served)" : ""),
    el("td", {}, a.parent_version || "base"),
    el("td", {}, a.run_id ?? "–"),
    el("td", {}, num(m.qa_closed_book)),
    el("td", {}, num(m.ifeval_strict)),
    el("td", {}, num(m.ifeval_loose)),
    el("td", {}, a.documents.length),
    el("td", { class: "num" }, shortTime(a.created_at)),
    el("td", {}, el("button", {
      type: "button", class: "promote", disabled: a.version === served || !servable,
      title: servable ? "serve this version now" : `a ${a.status} adapter may not be served`,
      onclick: () => change(`Serve ${a.version} to everyone now?`, "/admin/adapters/promote", { version: a.version }),
    }, "Promote")),
  );
}

function runRow(r) {
  const timings = Object.entries(r.seconds).map(([stage, s]) => `${stage} ${s.toFixed(1)}`);
  const metrics = SERIES.filter((s) => typeof r.metrics[s.key] === "number")
    .map((s) => `${s.short} ${r.metrics[s.key].toFixed(3)}`);
  return el(
    "tr",
    { id: `run-${r.id}` },
    el("td", {}, r.id),
    el("td", {}, r.trigger),
    el("td", {}, el("span", { class: `badge ${r.status}` }, r.status)),
    el("td", {}, r.stage),
    el("td", {}, r.adapter_version || "–"),
    el("td", { class: "num" }, shortTime(r.started_at)),
    el("td", { class: "small" }, timings.join(" · ") || "–", timings.length ? ` (total ${r.total_seconds.toFixed(1)})` : ""),
    el("td", { class: "small" }, metrics.join(" · ") || "–"),
    el("td", { class: "small message" }, r.message),
  );
}

function emptyRow(columns, text) {
  return el("tr", {}, el("td", { colspan: columns, class: "muted" }, text));
}

function sendJSON(method, path, payload) {
  return api(path, {
    method,
    headers: { "Content-Type": "application/json" },
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
}

// One eval item: question and answer editable in place, saved or deleted with its buttons.
function evalRow(item) {
  const question = el("input", { class: "question", value: item.question, maxlength: 1000 });
  const answer = el("input", { class: "answer", value: item.answer, maxlength: 200 });
  const save = async () => {
    try {
      await sendJSON("PATCH", `/admin/evals/${item.id}`, { question: question.value, answer: answer.value });
      await listedThen(`Eval item ${item.id} saved.`);
    } catch (error) {
      showError(error);
      await refreshEvals().catch(showError);
    }
  };
  const remove = async () => {
    if (!confirm(`Delete eval item ${item.id}?`)) return;
    try {
      await sendJSON("DELETE", `/admin/evals/${item.id}`);
      await listedThen(`Eval item ${item.id} deleted.`);
    } catch (error) {
      showError(error);
      await refreshEvals().catch(showError);
    }
  };
  return el(
    "tr",
    { id: `eval-${item.id}` },
    el("td", {}, item.id),
    el("td", {}, item.document_id),
    el("td", {}, item.set),
    el("td", {}, item.origin),
    el("td", {}, question),
    el("td", {}, answer),
    el("td", {},
      el("button", { type: "button", class: "save", onclick: save }, "Save"),
      el("button", { type: "button", class: "delete secondary", onclick: remove }, "Delete")),
  );
}

async function refreshEvals() {
  const items = await api("/admin/evals");
  document.querySelector("#evals tbody").replaceChildren(
    ...(items.data.length
      ? items.data.map(evalRow)
      : [emptyRow(7, "No eval items yet: a cycle writes them for new documents.")]),
  );
}

// The status line reports a change only once the list shows it: rows are rebuilt on refresh,
// so an edit typed into a row before that would land in a row about to be replaced.
async function listedThen(message) {
  await refreshEvals();
  showStatus(message, "ok");
}

document.getElementById("eval-add").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = (id) => document.getElementById(id).value;
  try {
    const item = await postJSON("/admin/evals", {
      document_id: Number(value("eval-doc")), question: value("eval-question"), answer: value("eval-answer"),
    });
    event.target.reset();
    await listedThen(`Eval item ${item.id} added.`);
  } catch (error) {
    showError(error);
    await refreshEvals().catch(showError);
  }
});

async function refresh() {
  refreshEvals().catch(showError);
  const [runs, adapters] = await Promise.all([api("/admin/runs"), api("/admin/adapters")]);
  setServed(adapters.served);
  drawChart(adapters.data);
  document.querySelector("#adapters tbody").replaceChildren(
    ...(adapters.data.length
      ? [...adapters.data].reverse().map((a) => adapterRow(a, adapters.served))
      : [emptyRow(10, "No adapters yet: they appear after a training cycle.")]),
  );
  document.querySelector("#runs tbody").replaceChildren(
    ...(runs.data.length ? runs.data.map(runRow) : [emptyRow(9, "No training runs yet.")]),
  );
}

async function change(question, path, payload) {
  if (!confirm(question)) return;
  try {
    const swap = await postJSON(path, payload);
    showStatus(`Now serving ${swap.served} (was ${swap.previous}).`, "ok");
  } catch (error) {
    showError(error);
  }
  await refresh().catch(showError);
}

document.getElementById("rollback").addEventListener("click", () =>
  change("Roll back to the previously served version?", "/admin/adapters/rollback", {}));

refresh().catch(showError);
