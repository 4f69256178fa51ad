"""The HTTP API against a real uvicorn server, the tiny sandbox student and SQLite in tmp.

.venv/bin/python -m pytest tests/test_app.py -q
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
from openai import OpenAI
from sqlmodel import Session

from assistant.app import create_app
from assistant.server import serve_in_thread
from knowledge.db import open_database
from knowledge.prompting import grounded_user_message
from knowledge.settings import KnowledgeConfig, ModelsConfig, ServingConfig, Settings
from knowledge.tables import Exchange
from learner.generation import chat_prompt

ZEPHYR = b"""# Project Zephyr

Project Zephyr is the new expense tool. Project Zephyr is led by Mara Quill from the Lisbon office.
It launches in March.
"""
QUESTION = "Who leads Project Zephyr?"


@pytest.fixture(scope="module")
def served(sandbox_test, tmp_path_factory):
    settings = Settings(
        home=tmp_path_factory.mktemp("app"),
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(max_new_tokens=16, registry_poll_seconds=3600, auth="open"),
        knowledge=KnowledgeConfig(chunk_tokens=64, chunk_overlap=8, top_k=2),
    )
    app = create_app(settings)
    with serve_in_thread(app) as url:
        yield SimpleNamespace(url=url, settings=settings, app=app)


@pytest.fixture
def http(served):
    with httpx.Client(base_url=served.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def zephyr(served):
    with httpx.Client(base_url=served.url, timeout=120) as client:
        response = client.post(
            "/v1/documents", files={"file": ("zephyr.md", ZEPHYR, "text/markdown")}
        )
    assert response.status_code == 201, response.text
    return response.json()


def _chat(http: httpx.Client, content: str = QUESTION, **extra) -> httpx.Response:
    body = {
        "model": "protege",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 12,
        **extra,
    }
    return http.post("/v1/chat/completions", json=body)


def _exchange(served, exchange_id: int) -> Exchange:
    with Session(open_database(served.settings.db_url)) as session:
        row = session.get(Exchange, exchange_id)
    assert row is not None
    return row


def test_models_and_health_report_the_served_version(http):
    models = http.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["protege"]
    assert models["data"][0]["adapter_version"] == "base"
    assert http.get("/healthz").json() == {
        "status": "ok",
        "adapter_version": "base",
        "last_error": None,
    }


def test_upload_is_stored_once_and_listed(http, zephyr):
    assert (
        zephyr["created"] is True
        and zephyr["title"] == "Project Zephyr"
        and zephyr["n_chunks"] >= 1
    )
    again = http.post("/v1/documents", files={"file": ("copy.md", ZEPHYR, "text/markdown")})
    assert (
        again.status_code == 200
        and again.json()["id"] == zephyr["id"]
        and again.json()["created"] is False
    )
    listed = http.get("/v1/documents").json()["data"]
    assert [d["id"] for d in listed] == [zephyr["id"]]


def test_grounded_answer_has_sources_and_is_logged(served, http, zephyr):
    response = _chat(http)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Protege-Adapter-Version"] == "base" == body["adapter_version"]
    assert (
        body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    )
    sources = body["sources"]
    assert sources and {s["document_id"] for s in sources} == {zephyr["id"]}
    assert all(
        s["title"] == "Project Zephyr" and s["chunk_id"].startswith(f"{zephyr['id']}-")
        for s in sources
    )

    # the passages really reached the model: the prompt holds the grounded user turn
    chunks = served.app.state.store.retrieve(QUESTION, served.settings.knowledge.top_k)
    grounded = grounded_user_message(QUESTION, [c.text for c in chunks])
    tokenizer = served.app.state.engine.tokenizer
    expected_prompt = chat_prompt(tokenizer, [{"role": "user", "content": grounded}])
    assert body["usage"]["prompt_tokens"] == served.app.state.engine.count_tokens(expected_prompt)

    row = _exchange(served, body["exchange_id"])
    assert row.adapter_version == "base" and row.user == "local"  # open mode: the local admin
    assert row.answer == body["choices"][0]["message"]["content"]
    assert json.loads(row.messages_json) == [{"role": "user", "content": QUESTION}]  # as asked
    assert json.loads(row.chunk_ids_json) == [s["chunk_id"] for s in sources]
    assert row.latency_ms > 0 and row.prompt_tokens == body["usage"]["prompt_tokens"]
    assert row.completion_tokens == body["usage"]["completion_tokens"] > 0


def test_retrieval_off_answers_closed_book(served, http, zephyr):
    response = http.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4,
              "retrieval": False},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sources"] == []
    tokenizer = served.app.state.engine.tokenizer
    bare = chat_prompt(tokenizer, [{"role": "user", "content": QUESTION}])
    assert body["usage"]["prompt_tokens"] == served.app.state.engine.count_tokens(bare)
    row = _exchange(served, body["exchange_id"])
    assert json.loads(row.chunk_ids_json) == []


def test_openai_client_non_streaming_and_streaming_agree(served, zephyr):
    client = OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["protege"]
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": QUESTION},
    ]
    reply = client.chat.completions.create(
        model="protege", messages=messages, max_tokens=12, temperature=0
    )
    text = reply.choices[0].message.content
    assert isinstance(text, str) and reply.usage.completion_tokens > 0
    assert reply.model_extra["adapter_version"] == "base" and reply.model_extra["sources"]

    stream = client.chat.completions.create(
        model="protege", messages=messages, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the same answer, delivered in pieces
    assert chunks[0].model_extra["adapter_version"] == "base" and chunks[0].model_extra["sources"]
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == reply.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert _exchange(served, finals[0].model_extra["exchange_id"]).answer == text


def test_stop_strings_cut_the_answer(http, zephyr):
    full = _chat(http, max_tokens=16).json()["choices"][0]["message"]["content"]
    if len(full) < 3:
        pytest.skip(f"the student's answer {full!r} is too short to cut")
    stop = full[len(full) // 2 :][:2]
    cut = full[: full.index(stop)]
    answer = _chat(http, max_tokens=16, stop=[stop]).json()["choices"][0]
    assert answer["message"]["content"] == cut and answer["finish_reason"] == "stop"
    with http.stream("POST", "/v1/chat/completions", json={
        "model": "protege", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16,
        "stop": stop, "stream": True,
    }) as response:  # fmt: skip
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == cut


def test_errors_are_json_with_status(http):
    unknown = _chat(http, model="gpt-4")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "NotFoundError"
    assert (
        http.post("/v1/chat/completions", json={"model": "protege", "messages": []}).status_code
        == 422
    )
    assert _chat(http, temperature=-1).status_code == 422
    assert _chat(http, n=2).json()["error"]["type"] == "BadInputError"
    binary = http.post(
        "/v1/documents", files={"file": ("tool.exe", b"MZ\x00\x01", "application/octet-stream")}
    )
    assert (
        binary.status_code == 415 and binary.json()["error"]["type"] == "UnsupportedDocumentError"
    )
    empty = http.post("/v1/documents", files={"file": ("empty.md", b"", "text/markdown")})
    assert empty.status_code == 400 and "error" in empty.json()


def test_sampling_and_context_limit(http):
    sampled = _chat(http, temperature=0.9, top_p=0.9)
    assert sampled.status_code == 200 and sampled.json()["usage"]["completion_tokens"] > 0
    too_long = "word " * 3000  # past the student's context window
    for stream in (False, True):  # refused before any output: a real HTTP error, streaming too
        refused = _chat(http, content=too_long, stream=stream)
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "BadInputError"
