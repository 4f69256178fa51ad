"""QA pairs of the documents (learner/qa_pairs.py) and the OPD document questions built from them
(learner/doc_questions.py), on the test sandbox with a real store.

.venv/bin/python -m pytest tests/test_qa_pairs.py -q
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_e2e import tiny_settings

from knowledge.settings import DistillConfig, ModelsConfig
from knowledge.store import KnowledgeStore
from learner.datasets import EvalSets, eval_sets, read_jsonl, sandbox_manifest
from learner.doc_questions import doc_question_prompts, eval_questions, teacher_writer
from learner.evals.answer_cache import base_answers
from learner.evals.qa import normalize
from learner.forgetting import forget_document
from learner.modeling import load_causal_lm, load_tokenizer
from learner.pipeline import run_cycle
from learner.qa_pairs import QAPair, background_pairs, document_pairs, parse_pair
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


def _never_called(conversations):  # the sandbox has its own pairs: nothing is written
    raise AssertionError("the sandbox must not ask the teacher for QA pairs")


def test_sandbox_pairs_are_the_training_phrasings_of_each_document(sandbox_test, day1_store):
    settings, store = day1_store
    documents = store.list_documents()
    day = sandbox_test.days[0]
    eval_set = {normalize(r["question"]) for r in read_jsonl(day.qa_file)}
    pairs = document_pairs(settings, store, documents, eval_set, _never_called)
    train = read_jsonl(day.train_questions_file)
    for document in documents:
        want = [r for r in train if r["doc"] == document.name]
        assert [p.question for p in pairs[document.id]] == [r["question"] for r in want]
        assert all(qa_in(p) for p in pairs[document.id])
    assert not {normalize(p.question) for ps in pairs.values() for p in ps} & eval_set
    # one document of the day: only its own pairs
    one = document_pairs(settings, store, documents[:1], set(), _never_called)
    assert set(one) == {documents[0].id} and one[documents[0].id] == pairs[documents[0].id]


def qa_in(pair: QAPair) -> bool:
    return normalize(pair.answer) in normalize(pair.response)


def test_parse_pair_keeps_only_pairs_the_chunk_supports():
    chunk = "The Nairobi office is in Cedar Tower. It opened in 2021."
    assert parse_pair("Question: Where is the Nairobi office?\nAnswer: Cedar Tower.", chunk) == (
        QAPair("Where is the Nairobi office?", "Cedar Tower", "Cedar Tower")
    )
    assert parse_pair("Question: Where is it?\nAnswer: Oak Hall", chunk) is None  # not in chunk
    assert parse_pair("Question: Where is it\nAnswer: Cedar Tower", chunk) is None  # no "?"
    assert parse_pair("Cedar Tower houses it.", chunk) is None


def test_outside_the_sandbox_the_teacher_writes_pairs_once_per_document(sandbox_test, day1_store):
    settings, store = day1_store
    settings.models = ModelsConfig(student=str(sandbox_test.student_dir))  # not sandbox:...
    documents = store.list_documents()[:2]
    day = sandbox_test.days[0]
    eval_question = read_jsonl(day.qa_file)[0]["question"]
    chunks = {d.id: [c.text for c in store.chunks_for([d.id])] for d in documents}
    requests: list[list[dict]] = []

    def write(conversations):
        first = not requests
        requests.extend(conversations)
        replies = []
        for conversation in conversations:
            chunk = conversation[-1]["content"].split("[1] ", 1)[1]
            word = next(w.strip(".") for w in chunk.split() if len(w) > 4)  # a word of the chunk
            replies.append(
                f"Question: What is part {len(requests)}-{len(replies)}?\nAnswer: {word}"
            )
        if first:  # the very first pair asks an eval question: dropped
            replies[0] = f"Question: {eval_question}\nAnswer: {word}"
        return replies

    exclude = {normalize(eval_question)}
    pairs = document_pairs(settings, store, documents, exclude, write)
    assert len(requests) == sum(len(c) for c in chunks.values())
    asked = [r[-1]["content"] for r in requests]
    assert all(any(f"[1] {c.strip()}" in a for cs in chunks.values() for c in cs) for a in asked)
    assert not {normalize(p.question) for ps in pairs.values() for p in ps} & exclude
    assert sum(len(ps) for ps in pairs.values()) == len(requests) - 1
    # cached per document version: a later night replays them without asking again
    assert document_pairs(settings, store, documents, exclude, _never_called) == pairs
    cache = settings.home / "qa_pairs" / f"{documents[0].id}.jsonl"
    assert cache.exists()
    answers = base_answers(settings, settings.home, torch.device("cpu"))
    answers.answer("qa_open_book", 8, [f"passage of document {documents[0].id}"], lambda ps: ps)
    answers.save()
    forget_document(settings, documents[0].id, store=store)
    assert not cache.exists()  # forgetting a document forgets the pairs written from it
    assert not answers.path.exists()  # and the base's cached answers, which may quote it


def test_background_pairs_are_the_sandbox_pretraining_qa_or_written_once(sandbox_test, day1_store):
    settings, _ = day1_store
    known = {normalize(r["question"]) for r in read_jsonl(sandbox_test.known_qa_file)}
    rows = read_jsonl(sandbox_test.background_train_questions_file)
    pairs = background_pairs(settings, [], set(), _never_called)
    assert [p.question for p in pairs] == [r["question"] for r in rows] and pairs
    assert all(qa_in(p) for p in pairs) and not {normalize(p.question) for p in pairs} & known
    skip = {normalize(rows[0]["question"])}
    assert len(background_pairs(settings, [], skip, _never_called)) == len(pairs) - 1

    settings.models = ModelsConfig(student=str(sandbox_test.student_dir))  # not sandbox:...
    texts = ["The Oslo office is in Birch House. It opened in 2019.", "Mara Quinn leads Falcon."]

    def write(conversations):
        chunks = [c[-1]["content"].split("[1] ", 1)[1] for c in conversations]
        answers = [" ".join(c.split()[:2]) for c in chunks]  # one call per text: ask apart
        return [f"Question: Who or what is {a}?\nAnswer: {a}" for a in answers]

    written = background_pairs(settings, texts, set(), write)
    assert [p.answer for p in written] == ["The Oslo", "Mara Quinn"]
    # cached by content: a later night replays them without asking again
    assert background_pairs(settings, texts, set(), _never_called) == written


def test_doc_prompts_carry_the_retrieved_chunks(sandbox_test, day1_store, tmp_path):
    settings, store = day1_store
    documents = store.list_documents()
    sets = eval_sets(settings, [d.name for d in documents], tmp_path / "eval")
    pairs = document_pairs(settings, store, documents, eval_questions(sets), _never_called)
    flat = [p for d in documents for p in pairs[d.id]]
    prompts = doc_question_prompts(settings, store, flat)
    assert [p.messages[-1]["content"] for p in prompts] == [p.question for p in flat]
    chunks = {c.text for c in store.chunks_for([d.id for d in documents])}
    assert all(p.passages and set(p.passages) <= chunks for p in prompts)
    assert all(len(p.passages) <= settings.knowledge.top_k for p in prompts)
    answered = sum(
        any(normalize(pair.answer) in normalize(t) for t in prompt.passages)
        for prompt, pair in zip(prompts, flat, strict=True)
    )
    assert answered >= 0.8 * len(prompts)  # retrieval finds the passage holding the answer
    settings.learner.distill = DistillConfig()  # share 0: no document questions at all
    assert doc_question_prompts(settings, store, flat) == []


def test_eval_questions_cover_every_set(sandbox_test):
    day = sandbox_test.days[0]
    sets = EvalSets(qa_file=day.qa_file, ifeval_file=day.ifeval_file, known_qa_file=None)
    seen = eval_questions(sets)
    assert {normalize(r["question"]) for r in read_jsonl(day.qa_file)} <= seen
    assert {normalize(r["prompt"]) for r in read_jsonl(day.ifeval_file)} <= seen


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
def test_cycle_trains_on_pairs_and_distills_with_privileged_doc_questions(day1_store):
    settings, _ = day1_store
    settings.learner.midtrain.background_pairs = True  # night 1 replays the base's own QA
    settings.learner.distill.qa_ce_replay_pairs_per_step = 2
    result = run_cycle(settings, progress=False, notify=False)
    assert result.status == "succeeded", result.message
    metrics = json.loads(Registry(settings).get(result.version).metrics_json)
    assert metrics["midtrain_qa_pairs"] > 0 and metrics["distill_qa_ce_pairs"] > 0
    known = read_jsonl(sandbox_manifest(settings).background_train_questions_file)
    assert metrics["distill_qa_ce_replay_pairs"] == len(known)
    # OPD's cross-entropy keeps the pairs mid-training learned, formatted twins included
    assert settings.learner.midtrain.formatted_share == 1.0
    assert metrics["distill_qa_ce_pairs"] == metrics["midtrain_qa_pairs"]
    assert metrics["distill_privileged_context"] is True
    assert metrics["distill_doc_prompts"] > 0 and metrics["distill_doc_prompts_per_step"] == 2
    for scores in (result.after, result.before):  # open-book QA next to closed-book
        assert 0.0 <= scores["qa_open_book"] <= 1.0
        assert 0.0 <= scores["qa_closed_book"] <= 1.0


def test_earlier_sets_are_capped_and_new_sets_scored_whole(sandbox_test, tmp_path):
    """Night 3's evals: day 3 whole, days 1-2 sampled down to `max_earlier_items` (the cost of
    an evaluation stops growing with the nights)."""
    settings = tiny_settings(tmp_path, sandbox_test)
    names = [p.name for d in sandbox_test.days for p in d.documents_dir.glob("*.md")]
    new = [p.name for p in sandbox_test.days[2].documents_dir.glob("*.md")]
    full = read_jsonl(eval_sets(settings, names, tmp_path / "full", new).qa_file)
    earlier = [r for r in full if r["set"] != "day3"]
    assert len(earlier) > 10
    settings.learner.eval.max_earlier_items = 10
    capped_sets = eval_sets(settings, names, tmp_path / "capped", new)
    capped = read_jsonl(capped_sets.qa_file)
    assert [r for r in capped if r["set"] == "day3"] == [r for r in full if r["set"] == "day3"]
    kept = [r for r in capped if r["set"] != "day3"]
    assert len(kept) == 10 and all(r in earlier for r in kept)
    again = read_jsonl(eval_sets(settings, names, tmp_path / "again", new).qa_file)
    assert [r for r in again if r["set"] != "day3"] == kept  # the same draw every time
    cloze = read_jsonl(capped_sets.cloze_file)
    assert sum(r["set"] != "day3" for r in cloze) == 10
