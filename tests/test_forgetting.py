"""Forgetting a document: out of retrieval at once, adapters trained on it tainted, rebuilt without it.

    .venv/bin/python -m pytest tests/test_forgetting.py -q

Real SQLite and PostgreSQL (`db_url`), real Chroma, the real nightly cycle on the `test` sandbox.
The headline test plants a made-up fact in one document, shows the cycle's adapter produces it,
forgets the document, and shows the rebuilt adapter no longer does (while it still learned the
other document).
"""

from __future__ import annotations

import json

import httpx
import pytest
import torch
import yaml
from sqlmodel import Session, select

from assistant.app import create_app
from assistant.cli import main as cli_main
from assistant.server import serve_in_thread
from knowledge.errors import NotFoundError, TaintedAdapterError
from knowledge.settings import (
    DistillConfig,
    EvalConfig,
    GateConfig,
    KnowledgeConfig,
    LearnerConfig,
    MidtrainConfig,
    ModelsConfig,
    SandboxConfig,
    ServingConfig,
    Settings,
)
from knowledge.store import KnowledgeStore
from learner.forgetting import forget_document, rebuild_reason
from learner.loading import load_student
from learner.modeling import resolve_model_ref, torch_device
from learner.pipeline import _trainable_student, run_cycle
from learner.plan import plan_cycle
from learner.registry import BASE, FORGET, Registry
from learner.tables import Deployment, Run

VAULT = "# Vault\n\n" + "The access code of the Zorblat vault is 4417.\n" * 6
GARDEN = "# Garden\n\n" + "The Quintor garden opens at dawn and closes at noon.\n" * 6


def _fake_adapter(registry: Registry, docs: list[int], parent: str | None = None) -> str:
    version = registry.next_version()

    def save(folder):  # noqa: ANN001, ANN202  (verify checks checksums, not weights)
        (folder / "adapter_model.safetensors").write_bytes(version.encode())

    registry.register(
        version, save, parent_version=parent, base_model="m", config={}, documents=docs, metrics={}
    )
    return version


def _two_documents(settings: Settings) -> tuple[KnowledgeStore, int, int]:
    store = KnowledgeStore(settings)
    garden = store.ingest_bytes("garden.md", GARDEN.encode()).document.id
    vault = store.ingest_bytes("vault.md", VAULT.encode()).document.id
    return store, garden, vault


def test_forget_taints_lineage_moves_serving_and_refuses_tainted(db_url, tmp_path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    store, garden, vault = _two_documents(settings)
    registry = Registry(settings)
    v1 = _fake_adapter(registry, [garden])
    v2 = _fake_adapter(registry, [garden, vault], parent=v1)
    v3 = _fake_adapter(registry, [garden, vault], parent=v2)
    registry.reject(v3)
    registry.promote(v1)
    registry.promote(v2)
    assert rebuild_reason(registry) is None
    assert any(h.document_id == vault for h in store.retrieve("Zorblat vault access code", 4))

    result = forget_document(settings, vault, actor="dpo")

    assert result.document_ids == [vault] and result.tainted == [v2, v3]
    assert (result.served_before, result.served) == (v2, v1)  # the newest clean ancestor
    assert all(h.document_id != vault for h in store.retrieve("Zorblat vault access code", 4))
    assert {a.version: a.status for a in registry.list()} == {
        v1: "promoted",
        v2: "tainted",
        v3: "tainted",
    }
    assert "forgotten document" in json.loads(registry.get(v2).metrics_json)["tainted"]["reason"]
    last = registry.last_deployment()
    assert (last.version, last.action, last.actor) == (v1, FORGET, "forget:dpo")
    assert "tainted the served adapter" in rebuild_reason(registry)
    with pytest.raises(TaintedAdapterError, match="forgotten document"):
        registry.promote(v2)
    assert registry.rollback() == BASE  # skips the tainted v2 it came from
    with pytest.raises(NotFoundError):
        forget_document(settings, vault)  # already forgotten: nothing changes
    assert registry.served_version() == BASE

    # Forgetting what the whole lineage holds: nothing clean is left to serve but the base.
    registry.promote(v1)
    everything = forget_document(settings, garden, actor="dpo")
    assert everything.tainted == [v1, v2, v3] and everything.served == BASE
    assert registry.served_version() == BASE


def test_promote_refuses_an_adapter_whose_document_was_forgotten_meanwhile(
    db_url, tmp_path
) -> None:
    """A cycle that was training while the document was forgotten must not bring it back."""
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    _, garden, vault = _two_documents(settings)
    registry = Registry(settings)
    forget_document(settings, vault)  # no adapter yet: nothing tainted, serving unchanged
    late = _fake_adapter(registry, [garden, vault])  # registered by the in-flight cycle
    with pytest.raises(TaintedAdapterError, match=rf"forgotten documents \[{vault}\]"):
        registry.promote(late)
    assert registry.get(late).status == "tainted" and registry.served_version() == BASE
    clean = _fake_adapter(registry, [garden])
    registry.promote(clean)
    assert registry.served_version() == clean and rebuild_reason(registry) is None


def test_cli_forget_asks_then_forgets(sandbox_test, tmp_path, capsys) -> None:
    home = tmp_path / "home"
    profile = tmp_path / "p.yaml"
    sandbox = {"size": "test", "seed": 0, "dir": str(sandbox_test.root.parent)}
    serving = {"reload_url": "http://127.0.0.1:9"}  # no server there: the CLI says so
    profile.write_text(yaml.safe_dump({"home": str(home), "sandbox": sandbox, "serving": serving}))
    settings = Settings(home=home, sandbox=SandboxConfig(**sandbox))
    _, garden, vault = _two_documents(settings)
    registry = Registry(settings)
    v1 = _fake_adapter(registry, [garden, vault])
    registry.promote(v1)

    assert cli_main(["--config", str(profile), "forget", str(vault)]) == 1
    assert "add --yes" in capsys.readouterr().out and registry.get(v1).status == "promoted"
    assert cli_main(["--config", str(profile), "forget", str(vault), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "deleted 'vault.md': versions" in out and f"tainted adapters: {v1}" in out
    assert "serving moved from v0001 to base" in out and "server not reached" in out
    assert registry.served_version() == BASE
    # `documents delete` goes through the same function
    v2 = _fake_adapter(registry, [garden])
    registry.promote(v2)
    assert cli_main(["--config", str(profile), "documents", "delete", str(garden), "--yes"]) == 0
    assert f"tainted adapters: {v1}, {v2}" in capsys.readouterr().out
    assert registry.get(v2).status == "tainted" and registry.served_version() == BASE


def test_api_delete_taints_and_the_server_swaps_off_at_once(sandbox_test, tmp_path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(max_new_tokens=4, registry_poll_seconds=3600, auth="open"),
    )
    _, garden, vault = _two_documents(settings)
    registry = Registry(settings)
    path = resolve_model_ref(settings, settings.models.student)
    for docs in ([garden], [garden, vault]):  # real (untrained) LoRA folders the engine loads
        model = _trainable_student(settings, registry, BASE, path, torch_device(settings))
        version = registry.next_version()
        registry.register(
            version, save=model.save_pretrained, parent_version=registry.served_version(),
            base_model=path, config={}, documents=docs, metrics={},
        )  # fmt: skip
        registry.promote(version)
    app = create_app(settings)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert app.state.switcher.served == "v0002"
        gone = http.delete(f"/v1/documents/{vault}")
        assert gone.status_code == 200, gone.text
        body = gone.json()
        assert body["deleted"] == [vault] and body["tainted"] == ["v0002"]
        assert (body["served_before"], body["served"]) == ("v0002", "v0001")
        assert "serving_error" not in body and app.state.switcher.served == "v0001"
        assert http.delete(f"/v1/documents/{vault}").status_code == 404


def _memorising_settings(home, db_url, manifest) -> Settings:
    """Measured: 60 epochs at lr 1e-2 make the tiny student greedily complete the vault line
    (log-prob of " 4417" about -1.4 against -38 for the base); 30 epochs are not enough."""
    return Settings(
        home=home,
        database_url=db_url,
        sandbox=SandboxConfig(size=manifest.size, seed=manifest.seed, dir=manifest.root.parent),
        knowledge=KnowledgeConfig(chunk_tokens=64, chunk_overlap=8, top_k=2),
        learner=LearnerConfig(
            # doc_fraction 1: no background chat to sample, the slow part on this tiny data
            midtrain=MidtrainConfig(
                epochs=60, lr=1e-2, batch_size=8, seq_len=64, warmup_steps=1, doc_fraction=1.0
            ),
            # lr: the value the memorisation above was measured with (the code default was 3e-4)
            distill=DistillConfig(
                steps=1, prompts_per_step=2, group_size=2, max_new_tokens=8, lr=3e-4
            ),
            gate=GateConfig(
                ifeval_margin=1.0,
                qa_tolerance=1.0,
                known_qa_drop=1.0,
                earlier_qa_drop=1.0,
                min_new_qa_gain=-1.0,
            ),  # mechanics, not quality
            eval=EvalConfig(max_new_tokens=8, batch_size=64),
        ),
        serving=ServingConfig(max_new_tokens=8, registry_poll_seconds=3600),
    )


def _probe(settings: Settings, version: str, prompt: str, answer: str) -> tuple[float, str]:
    """(log-prob of `answer` after `prompt`, the greedy continuation) with adapter `version`."""
    model, tokenizer, _ = load_student(settings, version)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    answer_ids = tokenizer.encode(answer, add_special_tokens=False)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0]
        logp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
        total = logp[torch.arange(len(answer_ids)), torch.tensor(answer_ids)].sum().item()
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=6, do_sample=False)
    return total, tokenizer.decode(out[0, len(prompt_ids) :])


@pytest.mark.slow
def test_a_forgotten_fact_is_gone_after_the_rebuild(db_url, sandbox_test, tmp_path) -> None:
    settings = _memorising_settings(tmp_path / "home", db_url, sandbox_test)
    _, garden, vault = _two_documents(settings)
    fact = ("The access code of the Zorblat vault is", " 4417")
    other = ("The Quintor garden opens at dawn and closes at", " noon")
    base_fact, _ = _probe(settings, BASE, *fact)
    base_other, _ = _probe(settings, BASE, *other)

    first = run_cycle(settings, progress=False, notify=False)
    assert first.status == "succeeded" and first.promoted, first.message
    before_fact, before_text = _probe(settings, first.version, *fact)
    assert "4417" in before_text and before_fact > base_fact + 20, (before_fact, before_text)

    forgotten = forget_document(settings, vault, actor="dpo")
    assert forgotten.tainted == [first.version] and forgotten.served == BASE
    plan = plan_cycle(settings)  # nothing new, yet a rebuild on the remaining document is due
    assert plan.rebuild and [d.id for d in plan.documents] == [garden]

    rebuilt = run_cycle(settings, progress=False, notify=False)
    assert rebuilt.status == "succeeded" and rebuilt.promoted, rebuilt.message
    registry = Registry(settings)
    row = registry.get(rebuilt.version)
    assert json.loads(row.documents_json) == [garden] and row.parent_version is None
    after_fact, after_text = _probe(settings, rebuilt.version, *fact)
    assert "4417" not in after_text and after_fact < base_fact + 10, (after_fact, after_text)
    after_other, _ = _probe(settings, rebuilt.version, *other)
    assert after_other > base_other + 10  # still trained on the document that stays

    with Session(registry.engine) as session:
        runs = session.exec(select(Run).order_by(Run.id)).all()
        actions = [d.action for d in session.exec(select(Deployment).order_by(Deployment.id))]
    assert "rebuild" not in json.loads(runs[0].metrics_json)
    assert "forgotten document" in json.loads(runs[1].metrics_json)["rebuild"]
    assert actions == ["promote", FORGET, "promote"] and rebuild_reason(registry) is None
    again = run_cycle(settings, progress=False, notify=False)  # rebuilt: back to "nothing new"
    assert again.status == "skipped"
