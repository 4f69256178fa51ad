"""OPD prompts about the new documents, each with the chunks retrieval finds for it.

The passages are the privileged context: the teacher reads them, the student answers closed-book
(learner/teachers/privileged.py). Where the questions come from:

- sandbox: the ingested days' training questions (`train_questions.jsonl`: other phrasings of the
  day's facts than the QA eval, never the same question);
- otherwise: the teacher writes one question per chunk of the new documents at training time.

Either way a question that matches an eval question or IFEval prompt (normalised) is dropped, so
OPD never trains on what the gate measures.

    doc_prompts = doc_question_prompts(settings, store, new_docs, sets, write)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from knowledge.prompting import grounded_user_message
from knowledge.settings import Settings
from learner.datasets import EvalSets, read_jsonl, sandbox_manifest, uses_sandbox
from learner.evals.qa import normalize
from learner.generation import Message, generate_texts
from learner.teachers import Teacher
from learner.teachers.local import LocalTeacher
from learner.teachers.privileged import ContextPrompt

if TYPE_CHECKING:  # the store pulls in Chroma: only its type is needed here
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

    from knowledge.store import KnowledgeStore
    from knowledge.tables import Document

# Written with a chunk in knowledge.prompting's grounded format, the one the models read context in.
WRITE_QUESTION = "Write one question that these documents answer. Reply with the question only."

Writer = Callable[[list[list[Message]]], list[str]]  # conversations -> one reply each


def question_request(chunk: str) -> list[Message]:
    """The conversation that asks the teacher for a question about `chunk`."""
    return [{"role": "user", "content": grounded_user_message(WRITE_QUESTION, [chunk])}]


def teacher_writer(
    teacher: Teacher, student: PeftModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
) -> Writer:
    """Greedy replies from the teacher's weights: a local teacher's model, otherwise (the base
    teacher; a server teacher, which only scores) the student's base weights, adapter off."""

    def write(conversations: list[list[Message]]) -> list[str]:
        if isinstance(teacher, LocalTeacher):
            return generate_texts(teacher.model, tokenizer, conversations, max_new_tokens)
        with student.disable_adapter():
            return generate_texts(student, tokenizer, conversations, max_new_tokens)

    return write


def eval_questions(sets: EvalSets) -> set[str]:
    """Normalised questions and prompts of every eval set the cycle scores."""
    seen: set[str] = set()
    for path, key in (
        (sets.qa_file, "question"),
        (sets.known_qa_file, "question"),
        (sets.ifeval_file, "prompt"),
    ):
        if path is not None:
            seen |= {normalize(row[key]) for row in read_jsonl(path)}
    return seen


def clean_questions(replies: list[str], exclude: set[str]) -> list[str]:
    """First line of each reply, kept when it is a question, new, and not an eval question."""
    kept, seen = [], set(exclude)
    for reply in replies:
        lines = reply.strip().splitlines()
        question = lines[0].strip() if lines else ""
        key = normalize(question)
        if not question.endswith("?") or not key or key in seen:
            continue
        seen.add(key)
        kept.append(question)
    return kept


def sandbox_questions(settings: Settings, document_names: list[str]) -> list[str]:
    """Training questions of the sandbox days whose documents are among `document_names`."""
    names = set(document_names)
    questions = []
    for day in sandbox_manifest(settings).days:
        if day.train_questions_file and names & {p.name for p in day.documents_dir.iterdir()}:
            questions += [row["question"] for row in read_jsonl(Path(day.train_questions_file))]
    return questions


def written_questions(chunks: list[str], write: Writer, n: int, seed: int) -> list[str]:
    """One question per chunk, for `n` chunks drawn at random (OPD uses no more prompts)."""
    picked = random.Random(seed).sample(chunks, min(n, len(chunks)))
    return write([question_request(chunk) for chunk in picked])


def with_passages(store: KnowledgeStore, questions: list[str], k: int) -> list[ContextPrompt]:
    """Each question with the company chunks retrieval finds for it (as serving grounds one).

    Company documents only (no groups): the context shapes weights every user reaches.
    Questions that retrieve nothing are dropped: the teacher would know no more than the student.
    """
    prompts = []
    for question in questions:
        passages = [hit.text for hit in store.retrieve(question, k)]
        if passages:
            prompts.append(ContextPrompt([{"role": "user", "content": question}], passages))
    return prompts


def doc_question_prompts(
    settings: Settings,
    store: KnowledgeStore,
    documents: list[Document],
    sets: EvalSets,
    write: Writer,
) -> list[ContextPrompt]:
    """The cycle's document questions with their passages; [] when `doc_question_share` is 0."""
    cfg = settings.learner.distill
    if cfg.doc_question_share == 0 or not documents:
        return []
    if uses_sandbox(settings):
        replies = sandbox_questions(settings, [d.name for d in documents])
    else:
        chunks = [c.text for c in store.chunks_for([d.id for d in documents])]
        needed = cfg.steps * round(cfg.doc_question_share * cfg.prompts_per_step)
        replies = written_questions(chunks, write, needed, settings.learner.seed)
    questions = clean_questions(replies, eval_questions(sets))
    return with_passages(store, questions, settings.knowledge.top_k)
