"""Hot-swapping adapters: real LoRA adapters on the tiny student, the real registry and server.

.venv/bin/python -m pytest tests/test_hotswap.py -q
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from sqlmodel import Session
from swap_load import swap_under_load

from assistant.app import create_app
from assistant.embedded_engine import EmbeddedEngine
from assistant.engine import GenerationParams
from assistant.hotswap import SwapResult
from assistant.server import serve_in_thread
from knowledge.db import open_database
from knowledge.settings import ModelsConfig, ServingConfig, Settings
from knowledge.tables import Exchange
from learner.modeling import load_causal_lm
from learner.registry import BASE, Registry

PROMPT = [{"role": "user", "content": "Who leads the Lisbon office?"}]
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def loras(sandbox_test) -> list[PeftModel]:
    """Three LoRA adapters (r=4 on q_proj/v_proj), weights perturbed so each one matters."""
    adapters = []
    for seed in (1, 2, 3):
        model = load_causal_lm(sandbox_test.student_dir, torch.device("cpu"))
        peft_model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
        )
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        adapters.append(peft_model)
    return adapters


@contextmanager
def _server(student_dir: Path, home: Path, poll_seconds: float = 3600) -> Iterator[SimpleNamespace]:
    settings = Settings(
        home=home,
        models=ModelsConfig(student=str(student_dir)),
        serving=ServingConfig(
            max_new_tokens=16, registry_poll_seconds=poll_seconds, retrieval=False, auth="open"
        ),
    )
    registry = Registry(settings)
    app = create_app(settings)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        yield SimpleNamespace(
            url=url, http=http, settings=settings, registry=registry,
            engine=app.state.engine, switcher=app.state.switcher,
        )  # fmt: skip


@pytest.fixture
def server(sandbox_test, tmp_path) -> Iterator[SimpleNamespace]:
    with _server(sandbox_test.student_dir, tmp_path) as served:
        yield served


def _register(registry: Registry, peft_model: PeftModel) -> str:
    version = registry.next_version()
    registry.register(
        version, save=lambda folder: peft_model.save_pretrained(folder), parent_version=None,
        base_model="test-student", config={}, documents=[], metrics={},
    )  # fmt: skip
    return version


def _ask(http: httpx.Client) -> dict:
    response = http.post(
        "/v1/chat/completions",
        json={"model": "protege", "messages": PROMPT, "max_tokens": MAX_TOKENS},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Protege-Adapter-Version"] == body["adapter_version"]
    return body


def _answer(body: dict) -> str:
    return body["choices"][0]["message"]["content"]


def _logged_version(settings: Settings, exchange_id: int) -> str:
    with Session(open_database(settings.db_url)) as session:
        return session.get(Exchange, exchange_id).adapter_version


def test_reload_serves_the_promoted_adapter_and_logs_it(server, loras):
    base = _ask(server.http)
    assert (
        base["adapter_version"] == BASE
        and _logged_version(server.settings, base["exchange_id"]) == BASE
    )
    v1 = _register(server.registry, loras[0])
    server.registry.promote(v1)
    assert _ask(server.http)["adapter_version"] == BASE  # promoted, not yet picked up

    reload = server.http.post("/admin/adapters/reload")
    assert reload.status_code == 200 and reload.json() == {
        "served": v1,
        "previous": BASE,
        "changed": True,
    }
    body = _ask(server.http)
    assert (
        body["adapter_version"] == v1
        and _logged_version(server.settings, body["exchange_id"]) == v1
    )
    assert _answer(body) != _answer(base)  # the adapter really changes the model
    assert server.http.get("/v1/models").json()["data"][0]["adapter_version"] == v1
    assert server.http.post("/admin/adapters/reload").json() == {
        "served": v1,
        "previous": v1,
        "changed": False,
    }
    assert server.engine.loaded_versions() == [v1]

    server.registry.rollback()  # back to base: the adapter is unloaded, the model is plain again
    assert server.http.post("/admin/adapters/reload").json()["served"] == BASE
    again = _ask(server.http)
    assert again["adapter_version"] == BASE and _answer(again) == _answer(base)
    assert server.engine.loaded_versions() == []


def test_swap_during_concurrent_requests_fails_nothing(server, loras):
    v1, v2 = _register(server.registry, loras[0]), _register(server.registry, loras[1])
    expected = {BASE: _answer(_ask(server.http))}  # each version's greedy answer, asked alone
    for version in (v1, v2):
        server.registry.promote(version)
        server.http.post("/admin/adapters/reload").raise_for_status()
        expected[version] = _answer(_ask(server.http))
    assert len(set(expected.values())) == 3, f"versions must be distinguishable: {expected}"
    server.registry.promote(BASE)
    server.http.post("/admin/adapters/reload").raise_for_status()

    def swap(version: str) -> None:
        server.registry.promote(version)
        assert server.http.post("/admin/adapters/reload").json()["served"] == version

    results, failures = swap_under_load(server.url, _ask, swap, BASE, [v1, v2])  # 2 swaps

    assert failures == [] and len(results) >= 24
    assert {body["adapter_version"] for body in results} == set(expected)
    for body in results:  # each answer came from exactly the version it reports
        assert _answer(body) == expected[body["adapter_version"]], body
        assert _logged_version(server.settings, body["exchange_id"]) == body["adapter_version"]
    assert server.engine.stats["max_batch"] > 1  # the clients really ran concurrently
    assert server.switcher.pinned() == {}
    assert server.engine.loaded_versions() == [v2]  # v1 was unloaded once its last request ended


def test_old_adapter_stays_loaded_while_pinned(server, loras):
    v1, v2 = _register(server.registry, loras[0]), _register(server.registry, loras[1])
    server.registry.promote(v1)
    server.http.post("/admin/adapters/reload").raise_for_status()
    params = GenerationParams(max_tokens=MAX_TOKENS)
    alone = server.engine.generate(PROMPT, params, v1).text
    with server.switcher.pin() as pinned:
        assert pinned == v1
        server.registry.promote(v2)
        assert server.http.post("/admin/adapters/reload").json() == {
            "served": v2,
            "previous": v1,
            "changed": True,
        }
        assert server.switcher.served == v2 and server.engine.loaded_versions() == [v1, v2]
        assert server.engine.generate(PROMPT, params, pinned).text == alone  # still v1's weights
    assert server.engine.loaded_versions() == [v2]


def test_unloaded_adapters_are_freed_without_a_collection(sandbox_test, loras, tmp_path):
    """Refcounting alone frees an unloaded adapter (no cycles), so the engine needs no
    gc.collect() on its worker, which stalled requests; old adapters never accumulate."""
    for i, lora in enumerate(loras):
        lora.save_pretrained(tmp_path / f"v{i}")
    engine = EmbeddedEngine(sandbox_test.student_dir)

    def lora_refs(version: str) -> list[weakref.ref]:
        params = engine._model.named_parameters()
        return [weakref.ref(p) for n, p in params if f".{version}." in n]

    gc.disable()
    try:
        engine.ensure_loaded("v0", tmp_path / "v0")
        for new, old in (("v1", "v0"), ("v2", "v1")):
            engine.ensure_loaded(new, tmp_path / new)
            refs = engine._wait(engine._call(lambda old=old: lora_refs(old)))
            assert refs  # LoRA A/B of q_proj and v_proj in every layer
            engine.unload(old).result()
            assert [r for r in refs if r() is not None] == []
        refs = engine._wait(engine._call(lambda: lora_refs("v2")))
        engine.unload("v2").result()  # the last one: the engine unwraps to the plain model
        assert [r for r in refs if r() is not None] == []
        assert engine.loaded_versions() == []
    finally:
        gc.enable()
        engine.close()


def test_tampered_adapter_is_refused_and_the_served_one_stays(server, loras):
    v1, v2 = _register(server.registry, loras[0]), _register(server.registry, loras[2])
    server.registry.promote(v1)
    server.http.post("/admin/adapters/reload").raise_for_status()
    before = _answer(_ask(server.http))
    server.registry.promote(v2)
    weights = server.registry.verify(v2) / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the tensor data
    weights.write_bytes(bytes(data))

    refused = server.http.post("/admin/adapters/reload")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert (
        error["type"] == "AdapterIntegrityError"
        and "checksum" in error["message"]
        and v1 in error["message"]
    )
    body = _ask(server.http)
    assert body["adapter_version"] == v1 and _answer(body) == before
    health = server.http.get("/healthz").json()
    assert health["adapter_version"] == v1 and v2 in health["last_error"]
    assert server.engine.loaded_versions() == [v1]


def test_startup_and_polling_follow_the_registry(sandbox_test, tmp_path, loras):
    registry = Registry(Settings(home=tmp_path))
    v1 = _register(registry, loras[0])
    registry.promote(v1)
    with _server(sandbox_test.student_dir, tmp_path, poll_seconds=0.2) as served:
        assert _ask(served.http)["adapter_version"] == v1  # loaded at startup
        v2 = _register(served.registry, loras[1])
        served.registry.promote(v2)
        deadline = time.monotonic() + 30
        while served.switcher.served != v2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _ask(served.http)["adapter_version"] == v2  # no reload call: the poller swapped
        assert served.engine.loaded_versions() == [v2]


def test_a_poll_cannot_slip_between_a_promotion_and_its_swap(server, loras):
    """The admin promote is one swap: a poll meanwhile waits, so `previous` is what was served."""
    v1, v2 = _register(server.registry, loras[0]), _register(server.registry, loras[1])
    server.registry.promote(v1)
    server.switcher.reload()
    poll = threading.Thread(target=server.switcher.sync)
    waited: list[bool] = []

    def promote_v2() -> None:
        server.registry.promote(v2)
        poll.start()  # as the poller would, right after the registry write
        poll.join(timeout=0.5)
        waited.append(poll.is_alive())

    result = server.switcher.apply(promote_v2)
    poll.join(timeout=30)
    assert waited == [True]
    assert result == SwapResult(served=v2, previous=v1, changed=True)
    assert server.switcher.served == v2 and server.engine.loaded_versions() == [v2]
