"""End to end on the `test` sandbox: ingest -> chat -> train -> promote -> hot-swap -> chat.

A real uvicorn server (in a thread), real SQLite, real Chroma, the real nightly cycle (tiny
settings): the running server answers with the new adapter version, and the conversation log
records which version produced each answer.
"""

import json

import httpx
import pytest
from sqlmodel import Session, select

from assistant.app import create_app
from assistant.server import serve_in_thread
from knowledge.db import open_database
from knowledge.settings import (
    DistillConfig,
    EvalConfig,
    GateConfig,
    KnowledgeConfig,
    LearnerConfig,
    MidtrainConfig,
    SandboxConfig,
    ServingConfig,
    Settings,
)
from knowledge.tables import Exchange
from learner.pipeline import run_cycle
from learner.registry import BASE, Registry
from learner.tables import Run


def tiny_settings(home, manifest) -> Settings:
    return Settings(
        home=home,
        sandbox=SandboxConfig(size=manifest.size, seed=manifest.seed, dir=manifest.root.parent),
        knowledge=KnowledgeConfig(chunk_tokens=64, chunk_overlap=8, top_k=2),
        learner=LearnerConfig(
            # 0.7: less background chat to sample than the default, the slow part here
            midtrain=MidtrainConfig(
                epochs=2, batch_size=8, seq_len=64, warmup_steps=1, doc_fraction=0.7
            ),
            distill=DistillConfig(steps=2, prompts_per_step=4, group_size=2, max_new_tokens=8),
            # the test sandbox only shows mechanics: a permissive gate so the candidate promotes
            gate=GateConfig(
                ifeval_margin=1.0,
                qa_tolerance=1.0,
                known_qa_drop=1.0,
                earlier_qa_drop=1.0,
                min_new_qa_gain=-1.0,
            ),
            eval=EvalConfig(max_new_tokens=8, batch_size=64),
        ),
        serving=ServingConfig(max_new_tokens=8, registry_poll_seconds=3600, auth="open"),
    )


def _chat(client: httpx.Client, question: str) -> dict:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "protege",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 8,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["adapter_version"] == response.headers["x-protege-adapter-version"]
    return body


@pytest.mark.slow
def test_ingest_chat_train_promote_swap(sandbox_test, tmp_path):
    settings = tiny_settings(tmp_path, sandbox_test)
    day = sandbox_test.days[0]
    with (
        serve_in_thread(create_app(settings)) as url,
        httpx.Client(base_url=url, timeout=300) as client,
    ):
        settings.serving.reload_url = url
        docs = sorted(day.documents_dir.glob("*.md"))
        for path in docs:
            upload = client.post(
                "/v1/documents", files={"file": (path.name, path.read_bytes(), "text/markdown")}
            )
            assert upload.status_code == 201, upload.text
        question = json.loads(day.qa_file.read_text().splitlines()[0])["question"]
        before = _chat(client, question)
        assert before["adapter_version"] == BASE and before["sources"]

        result = run_cycle(settings, progress=False)
        assert result.status == "succeeded", result.message
        assert result.promoted and result.version == "v0001"
        assert {
            "qa_closed_book",
            "ifeval_strict",
            "ifeval_loose",
            "n_qa",
            "n_ifeval",
        } <= result.after.keys()
        assert "server answered 200" in result.message  # notified; the server swapped at once

        after = _chat(client, question)
        assert after["adapter_version"] == result.version

        again = run_cycle(settings, progress=False)  # nothing new since v0001
        assert again.status == "skipped" and "nothing to train" in again.message

    registry = Registry(settings)
    assert registry.served_version() == "v0001"
    assert set(json.loads(registry.get("v0001").documents_json)) == set(range(1, len(docs) + 1))
    with Session(open_database(settings.db_url)) as session:
        versions = [e.adapter_version for e in session.exec(select(Exchange).order_by(Exchange.id))]
        runs = session.exec(select(Run).order_by(Run.id)).all()
    assert versions == [BASE, "v0001"]
    assert [r.status for r in runs] == ["succeeded", "skipped"]
    run_dir = settings.runs_dir / f"{runs[0].id:05d}"
    stages = {
        json.loads(line)["stage"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    }
    assert {"select", "midtrain", "distill", "evaluate"} <= stages
    assert json.loads((run_dir / "config.json").read_text())["learner"]["distill"]["steps"] == 2
