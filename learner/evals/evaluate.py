"""Evaluate a (possibly LoRA-adapted) model: closed- and open-book QA, IFEval, known-entity QA,
in-context QA.

    metrics = evaluate_model(model, tokenizer, qa_file=day.qa_file, ifeval_file=day.ifeval_file,
                             known_qa_file=m.known_qa_file, incontext_qa_file=m.incontext_qa_file,
                             passages_for=lambda q: [h.text for h in store.retrieve(q)])

All generation is greedy through learner.generation.generate_texts (a PeftModel with an active
adapter works as is). QA is scored by normalised containment (learner.evals.qa), IFEval by
learner.evals.ifeval (strict and loose). Open-book QA asks the QA questions with the passages
`passages_for(question)` returns (retrieval from the knowledge store) in the prompt, in the format
serving grounds a question with (knowledge.prompting).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from knowledge.prompting import grounded_user_message
from learner.evals.ifeval import score_item
from learner.evals.qa import qa_correct
from learner.generation import Message, generate_texts


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
) -> list[str]:
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


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    qa_file: Path | str | None = None,
    ifeval_file: Path | str | None = None,
    known_qa_file: Path | str | None = None,
    incontext_qa_file: Path | str | None = None,
    passages_for: Callable[[str], list[str]] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Fractions in [0, 1] (and item counts `n_*`) for every file given.

    Keys: qa_closed_book, n_qa, ifeval_strict, ifeval_loose, n_ifeval (always present; 0 when the
    file is not given), qa_open_book when `passages_for` is given with the QA file, and known_qa,
    n_known_qa, incontext_qa, n_incontext_qa when those files are.
    """
    gen = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "progress": progress}
    metrics: dict[str, float] = {}

    def closed_book(path: Path | str | None, key: str, n_key: str) -> None:
        rows = read_jsonl(path, limit) if path else []
        answers = (
            _generate(model, tokenizer, [r["question"] for r in rows], key, **gen) if rows else []
        )
        correct = sum(qa_correct(a, r["answer"]) for a, r in zip(answers, rows, strict=True))
        metrics[key], metrics[n_key] = correct / max(1, len(rows)), float(len(rows))

    closed_book(qa_file, "qa_closed_book", "n_qa")
    if qa_file and passages_for is not None:
        rows = read_jsonl(qa_file, limit)
        users = [grounded_user_message(r["question"], passages_for(r["question"])) for r in rows]
        answers = _generate(model, tokenizer, users, "qa_open_book", **gen) if rows else []
        correct = sum(qa_correct(a, r["answer"]) for a, r in zip(answers, rows, strict=True))
        metrics["qa_open_book"] = correct / max(1, len(rows))
    items = read_jsonl(ifeval_file, limit) if ifeval_file else []
    responses = (
        _generate(model, tokenizer, [i["prompt"] for i in items], "ifeval", **gen) if items else []
    )
    scores = [score_item(i, r) for i, r in zip(items, responses, strict=True)]
    metrics["ifeval_strict"] = sum(s for s, _ in scores) / max(1, len(scores))
    metrics["ifeval_loose"] = sum(lo for _, lo in scores) / max(1, len(scores))
    metrics["n_ifeval"] = float(len(scores))
    if known_qa_file:
        closed_book(known_qa_file, "known_qa", "n_known_qa")
    if incontext_qa_file:
        rows = read_jsonl(incontext_qa_file, limit)
        users = [grounded_user_message(r["question"], _passages(r["context"])) for r in rows]
        answers = _generate(model, tokenizer, users, "incontext_qa", **gen)
        correct = sum(qa_correct(a, r["answer"]) for a, r in zip(answers, rows, strict=True))
        metrics["incontext_qa"] = correct / max(1, len(rows))
        metrics["n_incontext_qa"] = float(len(rows))
    return metrics
