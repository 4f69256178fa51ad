"""A fake teacher server: protege's own /tokenize, /v1/models and /v1/completions (a real model
scores), and a scripted /v1/chat/completions that writes question/answer pairs from the passage.

    with fake_teacher(protege_url, settings) as teacher:   # models.teacher: server:<url>/v1
        teacher.url, teacher.requests

The scripted writer answers the two requests the cycle makes (eval items: learner/evals/written.py,
"a colleague could ask"; training pairs: learner/qa_pairs.py) with different questions about the
same fact of the chunk: the first "<Subject> is <value>." sentence it finds (about badges, the
same question twice). A chunk without one gets a reply whose answer the chunk does not contain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

from assistant.server import serve_in_thread
from knowledge.settings import Settings

FACT = re.compile(r"([A-Z][\w ]{2,60}?) (?:is|are|was) ([A-Z0-9][\w-]*(?: [A-Z0-9][\w-]*)*)\.")


def scripted_reply(content: str) -> str:
    """The writer's reply to one request (see the module doc)."""
    chunk = content.split("[1] ", 1)[1] if "[1] " in content else content
    match = FACT.search(chunk)
    if match is None:
        return "Question: What colour is the sky on Mars?\nAnswer: Butterscotch"
    subject, value = match.group(1).strip(), match.group(2)
    # an eval item; about badges the training pair repeats its question (the cycle must drop it)
    if "colleague" in content or "badge" in subject.lower():
        return f"Question: Can you tell me what {subject.lower()} is?\nAnswer: {value}"
    return f"Question: What is {subject.lower()}?\nAnswer: {value}"


@contextmanager
def fake_teacher(scoring_url: str, settings: Settings) -> Iterator[SimpleNamespace]:
    """Serve the fake teacher (HTTP limits from `settings`); yields .url (no /v1) and .requests
    (the chat requests' last user turns)."""
    app = FastAPI()
    state = SimpleNamespace(url="", requests=[])
    upstream = httpx.Client(base_url=scoring_url, timeout=300)
    app.state.settings = settings

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = await request.json()
        content = body["messages"][-1]["content"]
        state.requests.append(content)
        message = {"role": "assistant", "content": scripted_reply(content)}
        return {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: Request) -> Response:
        answer = upstream.request(
            request.method, f"/{path}", content=await request.body(),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        return Response(answer.content, answer.status_code, media_type="application/json")

    try:
        with serve_in_thread(app) as url:
            state.url = url
            yield state
    finally:
        upstream.close()
