"""protege's own POST /v1/completions and POST /tokenize, on a real server with the tiny student.

.venv/bin/python -m pytest tests/test_completions.py -q
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from assistant.app import create_app
from assistant.server import serve_in_thread
from knowledge.settings import ModelsConfig, ServingConfig, Settings
from learner.generation import chat_prompt
from learner.modeling import load_causal_lm, load_tokenizer
from learner.registry import BASE, Registry
from learner.scoring import sequence_logprobs


def perturbed_lora(student_dir, seed: int = 1) -> PeftModel:
    """A LoRA (r=4 on q_proj/v_proj) with random weights, so it visibly changes the model."""
    model = load_causal_lm(student_dir, torch.device("cpu"))
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return peft_model.eval()


def register(registry: Registry, peft_model: PeftModel) -> str:
    version = registry.next_version()
    registry.register(
        version, save=lambda folder: peft_model.save_pretrained(folder), parent_version=None,
        base_model="test-student", config={}, documents=[], metrics={},
    )  # fmt: skip
    return version


@pytest.fixture(scope="module")
def protege(sandbox_test, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """protege (embedded engine) serving a perturbed LoRA as its promoted adapter."""
    home = tmp_path_factory.mktemp("protege-completions")
    settings = Settings(
        home=home,
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(max_new_tokens=16, registry_poll_seconds=3600, retrieval=False,
                              auth="open"),
    )  # fmt: skip
    registry = Registry(settings)
    lora = perturbed_lora(sandbox_test.student_dir)
    version = register(registry, lora)
    registry.promote(version)
    app = create_app(settings)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        yield SimpleNamespace(
            url=url, http=http, version=version, lora=lora, app=app,
            tokenizer=load_tokenizer(sandbox_test.student_dir),
        )  # fmt: skip


def _forward_logprobs(model: torch.nn.Module, ids: list[int]) -> list[float]:
    seq = torch.tensor([ids])
    with torch.no_grad():
        return sequence_logprobs(model, seq, torch.ones_like(seq, dtype=torch.bool))[0].tolist()


def test_prompt_logprobs_are_the_served_adapters(protege):
    tok = protege.tokenizer
    prompts = [
        tok(chat_prompt(tok, [{"role": "user", "content": q}]))["input_ids"]
        for q in ("Who leads the Lisbon office?", "What is the training budget policy?")
    ]
    response = protege.http.post(
        "/v1/completions",
        json={"model": "protege", "prompt": prompts, "max_tokens": 1, "prompt_logprobs": 0},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        body["adapter_version"] == protege.version == response.headers["X-Protege-Adapter-Version"]
    )
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for ids, choice in zip(prompts, body["choices"], strict=True):
        entries = choice["prompt_logprobs"]
        assert len(entries) == len(ids) and entries[0] is None
        got = [
            entry[str(token)]["logprob"] for token, entry in zip(ids[1:], entries[1:], strict=True)
        ]
        with_adapter = _forward_logprobs(protege.lora, ids)[1:]
        with protege.lora.disable_adapter():
            base = _forward_logprobs(protege.lora, ids)[1:]
        assert got == pytest.approx(with_adapter, abs=1e-4)
        assert max(abs(a - b) for a, b in zip(got, base, strict=True)) > 0.1  # not the base's
        assert choice["finish_reason"] == "length" and len(choice["text"]) > 0
    assert body["usage"]["prompt_tokens"] == sum(map(len, prompts))
    assert body["usage"]["completion_tokens"] == 2


def test_text_prompt_generates_like_the_engine(protege):
    tok = protege.tokenizer
    prompt = chat_prompt(tok, [{"role": "user", "content": "Who leads the Lisbon office?"}])
    body = protege.http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 8}).json()
    ids = tok(prompt)["input_ids"]
    with torch.no_grad():
        out = protege.lora.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=8, do_sample=False,
            eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
        )  # fmt: skip
    expected = tok.decode(out[0, len(ids) :], skip_special_tokens=True)
    assert body["choices"][0]["text"] == expected and "prompt_logprobs" not in body["choices"][0]
    assert body["usage"]["prompt_tokens"] == len(ids)


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"prompt": [1, 2, 3], "prompt_logprobs": 2}, 400, "prompt_logprobs 0"),
        ({"prompt": [1, 99999]}, 400, "token ids"),
        ({"prompt": []}, 400, "empty prompt"),
        ({"prompt": [1, 2], "model": "gpt-4"}, 404, "unknown model"),
        ({"prompt": [1, 2], "stream": True}, 400, "streaming"),
        ({"prompt": list(range(3, 500)) * 3, "max_tokens": 4}, 400, "context"),
    ],
)
def test_bad_completion_requests_are_refused_clearly(protege, payload, status, words):
    response = protege.http.post("/v1/completions", json=payload)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    assert protege.app.state.switcher.pinned() == {}  # a refused request holds no pin


def test_tokenize_matches_the_student_tokenizer(protege):
    tok = protege.tokenizer
    messages = [{"role": "user", "content": "Hi there"}]
    chat = protege.http.post("/tokenize", json={"messages": messages}).json()
    assert chat["tokens"] == tok(chat_prompt(tok, messages), add_special_tokens=False)["input_ids"]
    text = protege.http.post("/tokenize", json={"prompt": "Lisbon office"}).json()
    assert text["tokens"] == tok("Lisbon office")["input_ids"] and text["count"] > 1
    assert protege.http.post("/tokenize", json={}).status_code == 400


def test_base_is_served_without_adapter(sandbox_test, tmp_path):
    settings = Settings(
        home=tmp_path, models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(registry_poll_seconds=3600, retrieval=False, auth="open"),
    )  # fmt: skip
    ids = [1, 40, 50, 60, 70]
    with serve_in_thread(create_app(settings)) as url:
        body = httpx.post(
            f"{url}/v1/completions", json={"prompt": ids, "prompt_logprobs": 0}, timeout=60
        ).json()
    assert body["adapter_version"] == BASE
    model = load_causal_lm(sandbox_test.student_dir, torch.device("cpu"))
    entries = body["choices"][0]["prompt_logprobs"][1:]
    got = [e[str(t)]["logprob"] for t, e in zip(ids[1:], entries, strict=True)]
    assert got == pytest.approx(_forward_logprobs(model, ids)[1:], abs=1e-4)
