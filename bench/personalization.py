"""Bench: the reference table (mid-training erodes IF, OPD restores it) on the sandbox, 3 seeds.

    .venv/bin/python bench/personalization.py --size demo --seeds 0,1,2

Every row starts from the base student (a fresh LoRA, or full fine-tuning for `:full` rows),
trains on the day-1 documents with its recipe (night 1 of the nightly cycle) and is evaluated on
closed-book QA about day 1 (with the majority baseline and the non-majority accuracy beside it),
IFEval (held-out prompts), QA about entities known before the cycle, interference, cloze recall
and open-book reading. Recipes:

    base              no training
    mid100            mid-train on 100% documents
    mid70             mid-train on 70% documents / 30% chat re-sampled from the model (replay)
    qa                documents + QA pairs of their facts (learner/qa_pairs.py) + 30% chat
    qa+opd            qa, then OPD with the QA pairs' cross-entropy kept on (the default recipe)
    qa+opd:noce       qa, then plain OPD (no QA cross-entropy)
    qa+opd:priv       qa+opd where a share of prompts are questions about the new documents and
                      the teacher reads the retrieved chunks (privileged context)
    qa+opd:large      qa+opd with the sandbox's larger teacher
    mid70+opd         mid70, then OPD with teacher = the model before mid-training (reference)
    mid100+opd        mid100, then OPD (teacher = the model before mid-training)
    mid100+opd:priv   mid100, then privileged-context OPD
    mid70:full        mid70 with full fine-tuning instead of LoRA (lr / 10, the usual ratio)
    mid70+opd:full    that, then OPD at lr / 10 (teacher: the base student as a separate model)

Settings are the profile's (configs/sandbox.yaml); `--set section.key=value` overrides one.
Prints per-seed rows as they finish, then mean ± spread over seeds with student tokens sampled,
teacher tokens scored, wall seconds and the peak resident memory of each stage.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from bench_common import StagePeaks, Timer, mean_spread, settings_from_args, student

from knowledge.settings import Settings
from knowledge.store import KnowledgeStore
from learner import distill, midtrain
from learner.datasets import (
    background_documents,
    chat_prompts,
    opd_prompts,
    read_jsonl,
    sandbox_manifest,
)
from learner.doc_questions import with_passages
from learner.evals.evaluate import evaluate_model
from learner.modeling import load_tokenizer
from learner.qa_pairs import QAPair
from learner.sandbox.manifest import SandboxManifest
from learner.teachers.base import BaseModelTeacher
from learner.teachers.local import LocalTeacher

ROWS = "base,mid70,mid70+opd,qa,qa+opd:noce,qa+opd,qa+opd:priv"
PRIVILEGED_SHARE = 0.25  # of each OPD step's prompts: questions about the new documents


def day1_store(settings: Settings, manifest: SandboxManifest, workdir: Path) -> KnowledgeStore:
    """A real store holding the day-1 documents (retrieval for open-book QA and privileged OPD)."""
    local = settings.model_copy(deep=True)
    local.sandbox.dir = settings.sandbox_dir
    local.home = workdir
    store = KnowledgeStore(local)
    store.ingest_paths(sorted(Path(manifest.days[0].documents_dir).glob("*.md")))
    return store


def run_row(recipe: str, settings: Settings, manifest: SandboxManifest, seed: int, ctx: dict):  # noqa: ANN201
    name, _, variant = recipe.partition(":")
    full = variant == "full"
    tokenizer = load_tokenizer(manifest.student_dir)
    model = student(settings, manifest.student_dir, lora=not full, seed=seed)
    peaks, stats, timer = StagePeaks(), {}, Timer()
    pairs = ctx["pairs"] if name.startswith("qa") else []
    if name.startswith(("mid", "qa")):
        cfg = settings.learner.midtrain.model_copy()
        cfg.doc_fraction = 1.0 if name.startswith("mid100") else cfg.doc_fraction
        cfg.qa_pairs = bool(pairs)
        cfg.lr = cfg.lr / 10 if full else cfg.lr
        with peaks.stage("midtrain"):
            stats |= midtrain.main(
                model, tokenizer, ctx["documents"], ctx["chat"], cfg, seed, progress=False,
                qa_pairs=pairs, replay_documents=ctx["background"],
            )  # fmt: skip
    if name.endswith("+opd"):
        cfg = settings.learner.distill.model_copy()
        cfg.lr = cfg.lr / 10 if full else cfg.lr
        cfg.qa_ce_weight = 0.0 if variant == "noce" else cfg.qa_ce_weight
        extra: list = []
        if variant in ("large", "full"):  # full FT has no adapter to switch off: load the base
            path = manifest.teacher_dir if variant == "large" else manifest.student_dir
            teacher = LocalTeacher(path, tokenizer, torch.device("cpu"), "float32")
        else:
            teacher = BaseModelTeacher(model, "previous (base)")
        if variant == "priv":
            cfg.privileged_context, cfg.doc_question_share = True, PRIVILEGED_SHARE
            extra = ctx["doc_prompts"]
        with peaks.stage("distill"):
            stats |= distill.main(
                model, tokenizer, teacher, ctx["opd"], cfg, seed, progress=False,
                doc_prompts=extra, qa_pairs=pairs,
            )  # fmt: skip
    seconds = timer.seconds
    day = manifest.days[0]
    with peaks.stage("evaluate"):
        scores = evaluate_model(
            model,
            tokenizer,
            qa_file=day.qa_file,
            ifeval_file=day.ifeval_file,
            known_qa_file=manifest.known_qa_file,
            cloze_file=day.cloze_file,
            new_sets={day.name},
            passages_for=ctx["passages_for"],
            max_new_tokens=settings.learner.eval.max_new_tokens,
            batch_size=settings.learner.eval.batch_size,
            limit=ctx["limit"],
            progress=False,
        )
    tokens = stats.get("distill_student_tokens", 0)
    return {
        "row": recipe,
        "seed": seed,
        **{k: scores.get(k, 0.0) for k in FIGURES},
        "student_tokens": tokens,
        "teacher_tokens": tokens,  # the teacher scores every sampled token once
        "seconds": seconds,
        "peak_mb": peaks.mb,
    }


FIGURES = [
    "qa_closed_book", "qa_majority", "qa_nonmajority", "ifeval_strict", "ifeval_loose",
    "known_qa", "interference", "cloze", "qa_open_book",
]  # fmt: skip


def summary(rows: list[dict], names: list[str]) -> str:
    lines = [
        "| row | QA day 1 | majority baseline | non-majority QA | IFEval strict | earlier QA | "
        "interference | cloze | open-book | student tok | train s | peak MB (stage) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        group = [r for r in rows if r["row"] == name]
        peaks: dict[str, float] = {}
        for r in group:
            for stage, mb in r["peak_mb"].items():
                peaks[stage] = max(peaks.get(stage, 0.0), mb)
        cells = [
            mean_spread([r[k] for r in group])
            for k in ("qa_closed_book", "qa_majority", "qa_nonmajority", "ifeval_strict",
                      "known_qa", "interference", "cloze", "qa_open_book")
        ]  # fmt: skip
        lines.append(
            f"| {name} | {' | '.join(cells)} "
            f"| {mean_spread([r['student_tokens'] for r in group], pct=False)} "
            f"| {mean_spread([r['seconds'] for r in group], pct=False)} "
            f"| {', '.join(f'{s} {mb:,.0f}' for s, mb in peaks.items())} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sandbox")
    parser.add_argument("--size", default="demo")
    parser.add_argument("--rows", default=ROWS)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--limit", type=int, default=None, help="eval items per set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write every row here")
    parser.add_argument("--set", action="append", default=[], help="e.g. midtrain.lr=1e-3")
    args = parser.parse_args()
    settings = settings_from_args(args.config, args.size, args.set)
    torch.set_num_threads(args.threads)
    manifest = sandbox_manifest(settings)
    names = args.rows.split(",")
    day = manifest.days[0]
    with tempfile.TemporaryDirectory() as workdir:
        store = day1_store(settings, manifest, Path(workdir))
        train = read_jsonl(Path(day.train_questions_file))
        ctx = {
            "documents": [p.read_text() for p in sorted(Path(day.documents_dir).glob("*.md"))],
            "chat": chat_prompts(settings),
            "background": background_documents(settings),  # replayed, as the nightly cycle does
            "opd": opd_prompts(settings),
            "pairs": [QAPair(r["question"], r["response"], r["answer"]) for r in train],
            "limit": args.limit,
            "doc_prompts": with_passages(
                store, [r["question"] for r in train], settings.knowledge.top_k
            ),
            "passages_for": lambda q: [h.text for h in store.retrieve(q, settings.knowledge.top_k)],
        }
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            for name in names:
                row = run_row(name, settings, manifest, seed, ctx)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{len(args.seeds.split(','))} seeds ({args.seeds}); mean ± standard deviation\n")
    print(summary(rows, names))


if __name__ == "__main__":
    main()
