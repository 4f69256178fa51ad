"""OPD prompts about the new documents (learner/doc_questions.py) on the test sandbox, real store.

.venv/bin/python -m pytest tests/test_doc_questions.py -q
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_e2e import tiny_settings

from knowledge.settings import DistillConfig, ModelsConfig
from knowledge.store import KnowledgeStore
from learner.datasets import EvalSets, eval_sets, read_jsonl
from learner.doc_questions import (
    clean_questions,
    doc_question_prompts,
    eval_questions,
    sandbox_questions,
    teacher_writer,
)
from learner.evals.qa import normalize
from learner.modeling import load_causal_lm, load_tokenizer
from learner.pipeline import run_cycle
from learner.registry import Registry
from learner.teachers.base import BaseModelTeacher

DOC_QUESTIONS = DistillConfig(
    steps=2, prompts_per_step=4, group_size=2, max_new_tokens=8,
    privileged_context=True, doc_question_share=0.5,
)  # fmt: skip


@pytest.fixture
def day1_store(sandbox_test, tmp_path):
    """Settings with document questions on, and a store holding the day-1 documents."""
    settings = tiny_settings(tmp_path, sandbox_test)
    settings.learner.distill = DOC_QUESTIONS
    store = KnowledgeStore(settings)
    store.ingest_paths(sorted(sandbox_test.days[0].documents_dir.glob("*.md")))
    return settings, store


def _never_called(conversations):  # the sandbox has its own questions: nothing is written
    raise AssertionError("the sandbox must not ask the teacher for questions")


def test_sandbox_questions_are_the_days_training_set(sandbox_test, tmp_path):
    settings = tiny_settings(tmp_path, sandbox_test)
    day1, day2 = sandbox_test.days[:2]
    names = [p.name for p in day2.documents_dir.iterdir()][:1]
    questions = sandbox_questions(settings, names)
    assert questions == [r["question"] for r in read_jsonl(day2.train_questions_file)]
    assert not {normalize(q) for q in questions} & {
        normalize(r["question"]) for r in read_jsonl(day2.qa_file)
    }
    assert sandbox_questions(settings, ["unrelated.md"]) == []


def test_clean_questions_keeps_new_questions_only():
    replies = [
        "Where is the Nairobi office?\nIt is in Cedar Tower.",  # first line only
        "  where is THE nairobi office ?",  # the same question, normalised: once
        "Who leads Keystone?",  # an eval question
        "Cedar Tower houses it.",  # not a question
        "",
    ]
    kept = clean_questions(replies, exclude={normalize("Who leads Keystone?")})
    assert kept == ["Where is the Nairobi office?"]


def test_sandbox_doc_prompts_carry_the_retrieved_chunks(sandbox_test, day1_store, tmp_path):
    settings, store = day1_store
    documents = store.list_documents()
    sets = eval_sets(settings, [d.name for d in documents], tmp_path / "eval")
    prompts = doc_question_prompts(settings, store, documents, sets, _never_called)

    train = read_jsonl(sandbox_test.days[0].train_questions_file)
    assert [p.messages[-1]["content"] for p in prompts] == [r["question"] for r in train]
    assert not {normalize(p.messages[-1]["content"]) for p in prompts} & eval_questions(sets)
    chunks = {c.text for c in store.chunks_for([d.id for d in documents])}
    assert all(p.passages and set(p.passages) <= chunks for p in prompts)
    assert all(len(p.passages) <= settings.knowledge.top_k for p in prompts)
    answered = sum(
        any(normalize(r["answer"]) in normalize(t) for t in p.passages)
        for p, r in zip(prompts, train, strict=True)
    )
    assert answered >= 0.8 * len(prompts)  # retrieval finds the passage holding the answer

    settings.learner.distill = DistillConfig()  # share 0: no document questions at all
    assert doc_question_prompts(settings, store, documents, sets, _never_called) == []


def test_outside_the_sandbox_the_teacher_writes_one_question_per_chunk(sandbox_test, day1_store):
    settings, store = day1_store
    settings.models = ModelsConfig(student=str(sandbox_test.student_dir))  # not sandbox:...
    documents = store.list_documents()
    day = sandbox_test.days[0]
    sets = EvalSets(qa_file=day.qa_file, ifeval_file=day.ifeval_file, known_qa_file=None)
    eval_question = read_jsonl(day.qa_file)[0]["question"]
    requests: list[list[dict]] = []

    def write(conversations):
        requests.extend(conversations)
        replies = [f"What does part {i} of the documents say?" for i in range(len(conversations))]
        return [eval_question.upper(), *replies[1:]]  # the first: an eval question, dropped

    prompts = doc_question_prompts(settings, store, documents, sets, write)

    chunks = [c.text for c in store.chunks_for([d.id for d in documents])]
    needed = DOC_QUESTIONS.steps * round(DOC_QUESTIONS.doc_question_share * 4)
    assert len(requests) == min(needed, len(chunks)) and len(chunks) > 1
    asked = [r[-1]["content"] for r in requests]
    assert all(any(f"[1] {c.strip()}" in a for c in chunks) for a in asked)
    assert len({a for a in asked}) == len(asked)  # distinct chunks
    assert [p.messages[-1]["content"] for p in prompts] == [
        f"What does part {i} of the documents say?" for i in range(1, len(requests))
    ]
    assert all(p.passages for p in prompts)


def test_teacher_writer_replies_once_per_request(sandbox_test):
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    model = get_peft_model(
        load_causal_lm(sandbox_test.student_dir, torch.device("cpu")),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )
    write = teacher_writer(BaseModelTeacher(model), model, tokenizer, max_new_tokens=8)
    replies = write([[{"role": "user", "content": f"Write a question, {n}."}] for n in range(3)])
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)


@pytest.mark.slow
def test_cycle_distills_with_privileged_doc_questions(sandbox_test, day1_store):
    settings, _ = day1_store
    result = run_cycle(settings, progress=False, notify=False)
    assert result.status == "succeeded", result.message
    metrics = json.loads(Registry(settings).get(result.version).metrics_json)
    assert metrics["distill_privileged_context"] is True
    assert metrics["distill_doc_prompts"] > 0 and metrics["distill_doc_prompts_per_step"] == 2
    for scores in (result.after, result.before):  # open-book QA next to closed-book
        assert 0.0 <= scores["qa_open_book"] <= 1.0
        assert 0.0 <= scores["qa_closed_book"] <= 1.0
