"""OPD prompts about the new documents, each with the chunks retrieval finds for it; the teacher
that writes; the eval questions nothing trains on.

The passages are the privileged context: the teacher reads them, the student answers closed-book
(learner/teachers/privileged.py). The questions are those of the new documents' QA pairs
(learner/qa_pairs.py: the sandbox's training phrasings, else written by the teacher from each
chunk), from which every eval question and IFEval prompt (normalised) is already left out, so
OPD never trains on what the gate measures.

    doc_prompts = doc_question_prompts(settings, store, new_pairs)
    earlier = earlier_questions(settings, earlier_pairs)  # closed-book OPD prompts
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from knowledge.settings import Settings
from learner.datasets import EvalSets, read_jsonl
from learner.evals.qa import normalize
from learner.generation import Message, generate_texts
from learner.qa_pairs import QAPair, Writer
from learner.teachers import Teacher
from learner.teachers.factory import teacher_weights
from learner.teachers.privileged import ContextPrompt
from learner.teachers.server import ServerTeacher

if TYPE_CHECKING:  # the store pulls in Chroma: only its type is needed here
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

    from knowledge.store import KnowledgeStore


def teacher_writer(
    teacher: Teacher, student: PeftModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
) -> Writer:
    """Greedy replies: a server teacher's own chat endpoint, else generation with the teacher's
    weights (learner.teachers.factory.teacher_weights)."""
    if isinstance(teacher, ServerTeacher):
        return lambda conversations: teacher.write(conversations, max_new_tokens)

    def write(conversations: list[list[Message]]) -> list[str]:
        with teacher_weights(teacher, student) as writer:
            return generate_texts(writer, tokenizer, conversations, max_new_tokens)

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
    settings: Settings, store: KnowledgeStore, pairs: list[QAPair]
) -> list[ContextPrompt]:
    """The new documents' questions with their passages; [] when `doc_question_share` is 0."""
    if settings.learner.distill.doc_question_share == 0 or not pairs:
        return []
    return with_passages(store, [p.question for p in pairs], settings.knowledge.top_k)


def earlier_questions(settings: Settings, pairs: list[QAPair]) -> list[list[Message]]:
    """Earlier nights' questions (their QA pairs', never an eval's) as closed-book OPD prompts,
    only with `models.teacher: previous`: the model served when the cycle starts learned their
    answers; the base or a larger teacher did not, and would pull them out of the student."""
    if (
        settings.models.teacher != "previous"
        or settings.learner.distill.earlier_question_share == 0
    ):
        return []
    return [[{"role": "user", "content": p.question}] for p in pairs]
