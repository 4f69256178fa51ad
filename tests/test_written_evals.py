"""Eval items written from the documents (learner/evals/written.py): the mechanics with a scripted
writer and with the sandbox model standing in as teacher, and a whole cycle with no eval files,
a fake teacher server writing.

.venv/bin/python -m pytest tests/test_written_evals.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from fake_teacher import fake_teacher, scripted_reply
from peft import LoraConfig, get_peft_model
from test_e2e import tiny_settings

from assistant.app import create_app
from assistant.server import serve_in_thread
from knowledge.errors import BadInputError, NotFoundError
from knowledge.settings import ModelsConfig, ServingConfig, Settings, dump_settings
from knowledge.store import KnowledgeStore
from learner.datasets import read_jsonl
from learner.doc_questions import teacher_writer
from learner.evals.qa import normalize, qa_correct
from learner.evals.written import (
    add_item,
    delete_item,
    forget_items,
    items_for,
    list_items,
    spread,
    update_item,
    write_items,
)
from learner.forgetting import forget_document
from learner.gate import passes_gate
from learner.modeling import load_causal_lm, load_tokenizer
from learner.pipeline import run_cycle
from learner.registry import Registry
from learner.teachers.base import BaseModelTeacher

DOCS = {
    "offices.md": (
        "# Offices\n\nThe head of the Nairobi office is Amara Okafor. She moved there from the "
        "Lisbon team and runs the weekly planning call.\n\nThe Lisbon office address is Rua "
        "Augusta 12. Visitors sign in at the front desk on the ground floor.\n\nDesks are "
        "booked through the intranet; nobody keeps a fixed desk any more."
    ),
    "badges.md": (
        "# Badges\n\nThe badge supplier is Northwind Security. New badges take three working "
        "days to arrive after the request.\n\nThe badge office hours are Tuesday mornings "
        "only, so plan ahead when a badge is lost."
    ),
    "travel.md": (
        "# Travel\n\nThe travel booking tool is Atlas. Every trip over two days needs the "
        "approval of a manager before it is booked.\n\nThe preferred airline is Skyward Air "
        "for flights inside Europe."
    ),
}


def write_docs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return sorted(folder.iterdir())


@pytest.fixture
def company(sandbox_test, tmp_path):
    """Non-sandbox settings (the student by path) and a store holding the three documents."""
    settings = tiny_settings(tmp_path / "home", sandbox_test)
    settings.models = ModelsConfig(student=str(sandbox_test.student_dir))
    settings.learner.distill.prompts_file = str(sandbox_test.opd_prompts_file)
    settings.learner.midtrain.chat_prompts_file = str(sandbox_test.chat_prompts_file)
    store = KnowledgeStore(settings)
    store.ingest_paths(write_docs(tmp_path / "docs"))
    return settings, store, Registry(settings).engine


def scripted(requests: list[list[dict]]):
    def write(conversations):
        requests.extend(conversations)
        return [scripted_reply(c[-1]["content"]) for c in conversations]

    return write


def test_items_are_supported_by_their_chunk_new_and_written_once(company):
    settings, store, engine = company
    documents = store.list_documents()
    requests: list[list[dict]] = []
    excluded = "Can you tell me what the travel booking tool is?"
    n = write_items(engine, store, documents, scripted(requests), {normalize(excluded)}, "run1", 2)
    chunks = {d.id: [c.text for c in store.chunks_for([d.id])] for d in documents}
    assert len(requests) == sum(min(2, len(c)) for c in chunks.values())  # one per chunk, capped
    items = list_items(engine)
    assert len(items) == n > 0 and n < len(requests)  # unsupported replies are dropped
    for item in items:
        assert any(qa_correct(chunk, item.answer) for chunk in chunks[item.document_id])
        assert item.set_name == "run1" and item.origin == "teacher"
    assert normalize(excluded) not in {normalize(i.question) for i in items}
    # documents that have items are not asked again (travel.md got none: its one fact's
    # question was excluded; asked again, it writes that question again, dropped as before)
    again: list[list[dict]] = []
    assert (
        write_items(engine, store, documents, scripted(again), {normalize(excluded)}, "r2", 2) == 0
    )
    assert again and all("travel booking" in c[-1]["content"] or "Skyward" in c[-1]["content"]
                         for c in again)  # fmt: skip


def test_spread_keeps_first_and_last():
    assert spread(list(range(10)), 3) == [0, 4, 9] and spread([1, 2], 5) == [1, 2]
    assert spread(list(range(10)), 1) == [0]


def test_admin_edits_and_forgetting(company):
    settings, store, engine = company
    doc = store.list_documents()[0]
    item = add_item(engine, store, doc.id, " Who runs the weekly planning call? ", "Amara Okafor")
    assert (item.question, item.origin, item.set_name) == (
        "Who runs the weekly planning call?", "admin", f"doc{doc.id}",
    )  # fmt: skip
    edited = update_item(engine, item.id, answer="Amara")
    assert (edited.question, edited.answer) == (item.question, "Amara")
    with pytest.raises(BadInputError):
        update_item(engine, item.id, question="  ?  ")
    with pytest.raises(BadInputError):
        add_item(engine, store, doc.id, "What?", "x" * 500)
    with pytest.raises(NotFoundError):
        add_item(engine, store, 9999, "Who?", "Nobody")
    with pytest.raises(NotFoundError):
        update_item(engine, 9999, answer="x")
    second = add_item(engine, store, doc.id, "Where do visitors sign in?", "front desk")
    assert second.set_name == item.set_name  # joins the document's set
    delete_item(engine, second.id)
    with pytest.raises(NotFoundError):
        delete_item(engine, second.id)
    forget_document(settings, doc.id, store=store)
    assert items_for(engine, [doc.id]) == []  # forgetting a document forgets its items
    assert forget_items(engine, []) == 0


def test_the_sandbox_model_standing_in_writes_only_supported_items(sandbox_test, company):
    """The tiny model's questions are weak; whatever it writes must still pass the filters."""
    settings, store, engine = company
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    model = get_peft_model(
        load_causal_lm(sandbox_test.student_dir, torch.device("cpu")),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )
    write = teacher_writer(BaseModelTeacher(model), model, tokenizer, max_new_tokens=24)
    documents = store.list_documents()
    write_items(engine, store, documents, write, set(), "run1", 2)
    for item in list_items(engine):
        chunks = [c.text for c in store.chunks_for([item.document_id])]
        assert item.question.endswith("?")
        assert any(qa_correct(chunk, item.answer) for chunk in chunks)


@pytest.fixture
def teacher_server(sandbox_test, company, tmp_path):
    """protege serving the base student (scoring), behind the fake teacher's scripted writer."""
    settings, _, _ = company
    scoring = Settings(
        home=tmp_path / "teacher-home",
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(registry_poll_seconds=3600, retrieval=False, auth="open"),
    )
    with serve_in_thread(create_app(scoring)) as url, fake_teacher(url, settings) as teacher:
        yield teacher


@pytest.mark.slow
def test_cycle_without_eval_files_writes_gates_on_and_forgets_items(company, teacher_server):
    settings, store, engine = company
    settings.models.teacher = f"server:{teacher_server.url}/v1"
    settings.learner.eval.ifeval_file = None
    assert settings.learner.eval.qa_file is None
    result = run_cycle(settings, progress=False, notify=False)
    assert result.status == "succeeded", result.message
    items = list_items(engine)
    asked = [r for r in teacher_server.requests if "colleague" in r]
    assert items and len(asked) == sum(
        min(16, len(store.chunks_for([d.id]))) for d in store.list_documents()
    )
    # the gate scored the written items as this cycle's new set
    set_name = f"run{result.run_id:05d}"
    assert {i.set_name for i in items} == {set_name}
    for scores in (result.before, result.after):
        assert scores["n_qa_new"] == scores[f"n_qa_{set_name}"] == len(items)
    strict = settings.model_copy(deep=True)
    strict.learner.gate.min_new_qa_gain = 2.0  # impossible: the refusal names the written set
    ok, why = passes_gate(strict, result.before, result.base, result.after, {set_name})
    assert not ok and "new-document QA" in why
    eval_file = settings.runs_dir / f"{result.run_id:05d}" / "qa_eval.jsonl"
    assert [(r["question"], r["answer"]) for r in read_jsonl(eval_file)] == [
        (i.question, i.answer) for i in items
    ]
    # nothing trains on them: the pairs written for training (cached as written) that repeat an
    # item's question are left out
    trained = {
        normalize(row["question"])
        for path in (settings.home / "qa_pairs").glob("*.jsonl")
        for row in map(json.loads, path.read_text().splitlines())
    }
    asked_as_items = trained & {normalize(i.question) for i in items}
    assert asked_as_items == {"can you tell me what badge supplier is"}  # the scripted repeat
    metrics = json.loads(Registry(settings).get(result.version).metrics_json)
    kept = len(trained - asked_as_items)  # ... left out (each kept pair also has its twin)
    assert settings.learner.midtrain.formatted_share == 1.0
    assert metrics["midtrain_qa_pairs"] == 2 * kept > 0

    # a forgotten document's items leave the set: the next (rebuilding) cycle scores the rest
    gone = store.list_documents()[0]
    forget_document(settings, gone.id, store=store)
    teacher_server.requests.clear()
    second = run_cycle(settings, progress=False, notify=False)
    assert second.status == "succeeded", second.message
    kept = list_items(engine)
    assert kept and all(i.document_id != gone.id for i in kept)
    assert not [r for r in teacher_server.requests if "colleague" in r]  # not written again
    rows = read_jsonl(settings.runs_dir / f"{second.run_id:05d}" / "qa_eval.jsonl")
    assert [r["item"] for r in rows] == [i.id for i in kept]
    assert second.after["n_qa"] == len(kept)


def test_admin_api_and_cli_list_add_edit_delete(company, tmp_path):
    """A real server: GET/POST/PATCH/DELETE /admin/evals; `protege evals list|show` read them."""
    settings, store, engine = company
    docs = store.list_documents()
    write_items(engine, store, docs, scripted([]), set(), "run00001", 2)
    written = list_items(engine)
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url) as http:
        listed = http.get("/admin/evals").json()["data"]
        assert [r["id"] for r in listed] == [i.id for i in written]
        one = http.get("/admin/evals", params={"document_id": docs[0].id}).json()["data"]
        assert {r["document_id"] for r in one} == {docs[0].id}
        body = {"document_id": docs[1].id, "question": "When is the badge office open?",
                "answer": "Tuesday mornings"}  # fmt: skip
        added = http.post("/admin/evals", json=body)
        assert added.status_code == 201 and added.json()["origin"] == "admin", added.text
        item_id = added.json()["id"]
        changed = http.patch(f"/admin/evals/{item_id}", json={"answer": "Tuesday"})
        assert changed.status_code == 200 and changed.json()["answer"] == "Tuesday"
        assert http.patch("/admin/evals/99999", json={"answer": "x"}).status_code == 404
        assert http.patch(f"/admin/evals/{item_id}", json={"answer": ""}).status_code == 422
        assert http.patch(f"/admin/evals/{item_id}", json={"answer": " . "}).status_code == 400
        assert http.post("/admin/evals", json={**body, "document_id": 9999}).status_code == 404
        assert http.post("/admin/evals", json={**body, "extra": 1}).status_code == 422
        assert http.delete(f"/admin/evals/{written[0].id}").json()["deleted"] is True
        assert http.delete(f"/admin/evals/{written[0].id}").status_code == 404
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(dump_settings(settings)))
    cli = [sys.executable, "-m", "assistant.cli", "--config", str(profile), "evals"]
    out = subprocess.run([*cli, "list", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert written[0].id not in {r["id"] for r in rows} and item_id in {r["id"] for r in rows}
    out = subprocess.run([*cli, "show", str(item_id)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Tuesday" in out.stdout and "admin" in out.stdout, out.stderr
    out = subprocess.run([*cli, "show", "99999"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "no eval item with id 99999" in out.stderr
