"""LangChain's `ChatOpenAI` against a real protege server with an API key (test sandbox student).

    .venv/bin/python -m pytest tests/test_langchain_client.py -q

At temperature 0 the answer is the same whichever client asks: LangChain `invoke`, LangChain
`stream` (pieces joined), the `openai` client and a plain HTTP POST.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from sqlmodel import Session, select

from assistant.app import create_app
from assistant.auth import create_key
from assistant.server import serve_in_thread
from knowledge.settings import ModelsConfig, ServingConfig, Settings
from knowledge.tables import Exchange

MAX_TOKENS = 12
# the same conversation for every client: a system turn, a finished turn, the new question
MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Where is the Lisbon office?"},
    {"role": "assistant", "content": "In Lisbon."},
    {"role": "user", "content": "Who leads the Lisbon office?"},
]
LANGCHAIN_MESSAGES = [
    SystemMessage("Answer briefly."),
    HumanMessage("Where is the Lisbon office?"),
    AIMessage("In Lisbon."),
    HumanMessage("Who leads the Lisbon office?"),
]


@pytest.fixture(scope="module")
def served(sandbox_test, tmp_path_factory) -> Iterator[SimpleNamespace]:
    settings = Settings(
        home=tmp_path_factory.mktemp("langchain"),
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(max_new_tokens=32, registry_poll_seconds=3600, retrieval=False),
    )
    assert settings.serving.auth == "keys"
    app = create_app(settings)
    key = create_key(app.state.db, "lc-user", role="user").secret
    with serve_in_thread(app) as url:
        yield SimpleNamespace(url=url, key=key, db=app.state.db)


def _chat(served: SimpleNamespace, api_key: str | None = None) -> ChatOpenAI:
    return ChatOpenAI(
        model="protege", base_url=f"{served.url}/v1", api_key=api_key or served.key,
        temperature=0, max_tokens=MAX_TOKENS, max_retries=0, timeout=120, stream_usage=True,
    )  # fmt: skip


def _http_answer(served: SimpleNamespace) -> dict:
    response = httpx.post(
        f"{served.url}/v1/chat/completions",
        json={"model": "protege", "messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0},
        headers={"Authorization": f"Bearer {served.key}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_invoke_and_stream_equal_the_openai_and_http_answers(served):
    http = _http_answer(served)
    expected = http["choices"][0]["message"]["content"]
    assert expected and http["usage"]["completion_tokens"] > 0

    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.key, max_retries=0)
    reply = client.chat.completions.create(
        model="protege", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    assert reply.choices[0].message.content == expected

    llm = _chat(served)
    invoked = llm.invoke(LANGCHAIN_MESSAGES)
    assert invoked.content == expected
    assert invoked.response_metadata["model_name"] == "protege"
    assert invoked.usage_metadata["output_tokens"] == http["usage"]["completion_tokens"]
    assert invoked.usage_metadata["input_tokens"] == http["usage"]["prompt_tokens"]

    chunks = list(llm.stream(LANGCHAIN_MESSAGES))
    assert len([c for c in chunks if c.content]) > 1  # really streamed, in pieces
    assert "".join(c.content for c in chunks) == expected
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.usage_metadata["output_tokens"] == http["usage"]["completion_tokens"]

    with Session(served.db) as session:  # every client's exchange was logged as the key's user
        rows = session.exec(select(Exchange).where(Exchange.user == "lc-user")).all()
    assert len(rows) == 4 and {row.answer for row in rows} == {expected}


def test_a_wrong_key_is_an_authentication_error(served):
    with pytest.raises(openai.AuthenticationError):
        _chat(served, api_key="prt_not-a-key").invoke("Who leads the Lisbon office?")
