// Chat: streams /v1/chat/completions (SSE over fetch + ReadableStream) into the page.
"use strict";

const turns = []; // this conversation's turns, sent with every question
const messages = document.getElementById("messages");
const form = document.getElementById("chat-form");
const question = document.getElementById("question");
const send = document.getElementById("send");

function citations(sources) {
  const seen = new Map(); // one line per document, however many of its chunks were used
  for (const s of sources) if (!seen.has(s.document_id)) seen.set(s.document_id, s.title);
  if (!seen.size) return el("p", { class: "sources muted" }, "No documents cited.");
  return el(
    "ol",
    { class: "sources" },
    [...seen].map(([id, title]) =>
      el("li", {}, el("a", { href: `/ui/documents#doc-${id}` }, title || "untitled"),
        el("span", { class: "muted" }, ` · document #${id}`)),
    ),
  );
}

// Yields each SSE event's data (a parsed object, or "[DONE]") as it arrives.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) yield data === "[DONE]" ? data : JSON.parse(data);
    }
  }
}

async function ask(asked) {
  messages.querySelector(".empty")?.remove();
  turns.push({ role: "user", content: asked });
  messages.append(el("div", { class: "turn user" }, el("p", { class: "text" }, asked)));
  const answer = el("p", { class: "text answer" });
  const meta = el("p", { class: "meta muted" }, "thinking…");
  const turn = el("div", { class: "turn assistant streaming" }, answer, meta);
  messages.append(turn);
  turn.scrollIntoView({ block: "end" });

  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: authHeaders({ "Content-Type": "application/json" }),
    body: JSON.stringify({ model: "protege", messages: turns, stream: true }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error(errorMessage(body, response));
  }
  let text = "";
  for await (const event of events(response)) {
    if (event === "[DONE]") break;
    if (event.error) throw new Error(event.error.message);
    if (event.sources) turn.append(citations(event.sources));
    if (event.adapter_version) {
      meta.textContent = `adapter ${event.adapter_version}`;
      meta.dataset.adapterVersion = event.adapter_version;
    }
    const delta = event.choices?.[0]?.delta?.content;
    if (delta) {
      text += delta;
      answer.textContent = text;
    }
  }
  turn.classList.remove("streaming");
  turn.classList.add("done");
  turns.push({ role: "assistant", content: text });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = question.value.trim();
  if (!text) return;
  question.value = "";
  send.disabled = true;
  showStatus("");
  try {
    await ask(text);
  } catch (error) {
    turns.pop(); // the question went unanswered: do not send it again as context
    messages.lastElementChild?.classList.replace("streaming", "failed");
    showError(error);
  } finally {
    send.disabled = false;
    question.focus();
  }
});

question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});

document.getElementById("new-chat").addEventListener("click", () => {
  turns.length = 0;
  messages.replaceChildren(el("p", { class: "empty" }, "New conversation."));
});
