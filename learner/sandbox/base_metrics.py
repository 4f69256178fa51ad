"""The figures a built sandbox model scores before any nightly cycle (the manifest's
`base_metrics` / `teacher_metrics`); learner/sandbox/build.py calls it after training."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from learner.datasets import sandbox_ifeval_file
from learner.evals.evaluate import evaluate_model
from learner.sandbox.manifest import SandboxManifest


def base_metrics(
    model: torch.nn.Module,
    tokenizer,
    manifest: SandboxManifest,
    stage: Path,
    limit: int | None,
    progress: bool,
) -> dict[str, float]:  # noqa: ANN001
    """A built model's figures on the sandbox's eval sets (day-1 QA and cloze, every day's
    IFEval items, known and document-only QA, in-context reading), stored in the manifest."""

    def staged(path: Path) -> Path:  # evaluation runs before the stage is renamed into place
        return stage / path.relative_to(manifest.root)

    day1 = manifest.days[0]
    extra = {}
    if manifest.known_doc_only_qa_file:
        doc_only = evaluate_model(
            model,
            tokenizer,
            qa_file=staged(manifest.known_doc_only_qa_file),
            limit=limit,
            progress=progress,
        )
        extra = {
            "known_doc_only_qa": doc_only["qa_closed_book"],
            "n_known_doc_only_qa": doc_only["n_qa"],
        }
    with tempfile.TemporaryDirectory() as scratch:  # every day's IFEval items, as the cycle scores
        return extra | evaluate_model(
            model,
            tokenizer,
            qa_file=staged(day1.qa_file),
            ifeval_file=sandbox_ifeval_file(manifest, Path(scratch) / "ifeval.jsonl", staged),
            known_qa_file=staged(manifest.known_qa_file),
            incontext_qa_file=staged(manifest.incontext_qa_file),
            cloze_file=staged(day1.cloze_file) if day1.cloze_file else None,
            new_sets={day1.name},
            limit=limit,
            progress=progress,
        )
