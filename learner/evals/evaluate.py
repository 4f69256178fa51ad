"""Evaluate a (possibly LoRA-adapted) model: closed- and open-book QA, IFEval, earlier knowledge,
in-context reading, cloze recall and interference.

    metrics = evaluate_model(model, tokenizer, qa_file=qa, ifeval_file=day.ifeval_file,
                             known_qa_file=m.known_qa_file, incontext_qa_file=m.incontext_qa_file,
                             cloze_file=cloze, new_sets={"day1"},
                             passages_for=lambda q: [h.text for h in store.retrieve(q)])

All generation is greedy through learner.generation (a PeftModel with an active adapter works as
is). QA is scored by normalised containment with its majority baseline beside it
(learner.evals.qa.qa_report), IFEval by learner.evals.ifeval (strict and loose). Open-book QA asks
the QA questions with the passages `passages_for(question)` returns (retrieval from the knowledge
store) in the prompt, in the format serving grounds a question with (knowledge.prompting). The
cloze probe completes document-style statement prefixes without the chat template (does the
model recall the documents at all, whatever it answers to questions). Interference: the share of
wrong answers about earlier knowledge (QA rows outside `new_sets`, and the known-QA file) that
name a value only the new sets introduced.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from knowledge.prompting import grounded_user_message
from knowledge.settings import Settings
from knowledge.store import KnowledgeStore
from learner.datasets import EvalSets
from learner.evals.answer_cache import AnswerCache
from learner.evals.ifeval import score_item
from learner.evals.qa import interference, new_values, qa_correct, qa_report, set_of
from learner.generation import Message, complete_texts, generate_texts

CLOZE_NEW_TOKENS = 8  # a value is a few tokens; more only lets the completion wander


def read_jsonl(path: Path | str, limit: int | None = None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return rows[:limit] if limit is not None else rows


def _passages(context: str | list[str]) -> list[str]:
    # The sandbox writes a list of passages; a single string is one passage.
    return [context] if isinstance(context, str) else list(context)


def _generate(
    model: Any,
    tokenizer: Any,
    users: list[str],
    desc: str,
    max_new_tokens: int,
    batch_size: int,
    progress: bool,
    cache: AnswerCache | None = None,
) -> list[str]:
    def run(users: list[str]) -> list[str]:
        conversations: list[list[Message]] = [[{"role": "user", "content": u}] for u in users]
        bar = tqdm(total=len(conversations), desc=desc, disable=not progress, leave=False)
        try:
            return generate_texts(
                model,
                tokenizer,
                conversations,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                progress=bar,
            )
        finally:
            bar.close()

    return cache.answer(desc, max_new_tokens, users, run) if cache is not None else run(users)


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    qa_file: Path | str | None = None,
    ifeval_file: Path | str | None = None,
    known_qa_file: Path | str | None = None,
    incontext_qa_file: Path | str | None = None,
    cloze_file: Path | str | None = None,
    new_sets: Collection[str] = (),
    passages_for: Callable[[str], list[str]] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
    answer_cache: AnswerCache | None = None,
) -> dict[str, float]:
    """Fractions in [0, 1] (and item counts `n_*`) for every file given.

    Keys: qa_closed_book with qa_majority / qa_nonmajority / n_qa and per-set and new/earlier
    blocks (learner.evals.qa.qa_report, prefix "qa"); ifeval_strict, ifeval_loose, n_ifeval
    (always present; 0 when the file is not given); qa_open_book (+ its blocks, prefix
    "qa_open_book") when `passages_for` is given with the QA file; known_qa, incontext_qa,
    cloze (+ per set) when those files are; interference and n_wrong_earlier with `new_sets`.

    `answer_cache` (learner/evals/answer_cache.py): answers kept from earlier calls on the same
    model; only the prompts not in it are generated (the cycle passes one for the raw base).
    """
    gen = {
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "progress": progress,
        "cache": answer_cache,
    }
    metrics: dict[str, float] = {}
    earlier_rows: list[dict[str, Any]] = []
    earlier_answers: list[str] = []

    qa_rows = read_jsonl(qa_file, limit) if qa_file else []
    if qa_file:
        answers = _generate(
            model, tokenizer, [r["question"] for r in qa_rows], "qa_closed_book", **gen
        )
        metrics |= qa_report(qa_rows, answers, "qa", new_sets)
        metrics["qa_closed_book"] = metrics.pop("qa")
        earlier = [i for i, r in enumerate(qa_rows) if set_of(r) not in new_sets]
        earlier_rows += [qa_rows[i] for i in earlier]
        earlier_answers += [answers[i] for i in earlier]
        if passages_for is not None:
            users = [
                grounded_user_message(r["question"], passages_for(r["question"])) for r in qa_rows
            ]
            answers = _generate(model, tokenizer, users, "qa_open_book", **gen)
            metrics |= qa_report(qa_rows, answers, "qa_open_book", new_sets)
    items = read_jsonl(ifeval_file, limit) if ifeval_file else []
    responses = (
        _generate(model, tokenizer, [i["prompt"] for i in items], "ifeval", **gen) if items else []
    )
    scores = [score_item(i, r) for i, r in zip(items, responses, strict=True)]
    metrics["ifeval_strict"] = sum(s for s, _ in scores) / max(1, len(scores))
    metrics["ifeval_loose"] = sum(lo for _, lo in scores) / max(1, len(scores))
    metrics["n_ifeval"] = float(len(scores))
    if known_qa_file:
        rows = read_jsonl(known_qa_file, limit)
        answers = _generate(model, tokenizer, [r["question"] for r in rows], "known_qa", **gen)
        metrics |= qa_report(rows, answers, "known_qa")
        earlier_rows += rows
        earlier_answers += answers
    if incontext_qa_file:
        rows = read_jsonl(incontext_qa_file, limit)
        users = [grounded_user_message(r["question"], _passages(r["context"])) for r in rows]
        answers = _generate(model, tokenizer, users, "incontext_qa", **gen)
        correct = sum(qa_correct(a, r["answer"]) for a, r in zip(answers, rows, strict=True))
        metrics["incontext_qa"] = correct / max(1, len(rows))
        metrics["n_incontext_qa"] = float(len(rows))
    if cloze_file:
        rows = read_jsonl(cloze_file, limit)

        def complete(prefixes: list[str]) -> list[str]:
            return complete_texts(model, tokenizer, prefixes, CLOZE_NEW_TOKENS, batch_size)

        prefixes = [r["prompt"] for r in rows]
        completions = (
            answer_cache.answer("cloze", CLOZE_NEW_TOKENS, prefixes, complete)
            if answer_cache is not None
            else complete(prefixes)
        )
        metrics |= qa_report(rows, completions, "cloze", new_sets)
    if new_sets and qa_rows:
        # earlier_rows holds the known-QA rows too: their answers are not new values
        introduced = new_values(qa_rows + earlier_rows, new_sets)
        share, n_wrong = interference(earlier_rows, earlier_answers, introduced)
        metrics["interference"], metrics["n_wrong_earlier"] = share, float(n_wrong)
    return metrics


def evaluate_cycle(
    settings: Settings,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sets: EvalSets,
    progress: bool,
    store: KnowledgeStore,
    cache: AnswerCache | None = None,
) -> dict[str, float]:
    """A cycle's evaluation (learner/pipeline.py): closed-book QA per set, open-book QA with the
    store's company chunks in the prompt, IFEval, known QA, cloze, in-context reading,
    interference; `cache` only where the model is the raw base."""
    cfg = settings.learner.eval
    top_k = settings.knowledge.top_k
    return evaluate_model(
        model,
        tokenizer,
        qa_file=sets.qa_file,
        ifeval_file=sets.ifeval_file,
        known_qa_file=sets.known_qa_file,
        incontext_qa_file=sets.incontext_qa_file,
        cloze_file=sets.cloze_file,
        new_sets=sets.new_sets,
        passages_for=lambda question: [hit.text for hit in store.retrieve(question, top_k)],
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        progress=progress,
        answer_cache=cache,
    )
