"""Bench: the reference table (mid-training erodes IF, OPD restores it) on the sandbox.

    .venv/bin/python bench/personalization.py --size demo --rows base,mid100,mid70,mid70+opd,mid100+opd

Each row starts from the base student with a fresh LoRA, trains on the day-1 documents with the
given recipe and evaluates: closed-book QA on day 1, IFEval (held out), QA on known entities.
Prints a markdown table with student tokens sampled, teacher tokens scored and wall seconds.
This is the first version used to choose the nightly default; the full bench of issue 3 (3 seeds,
larger teacher, privileged context, SFT/RL comparisons) is not built yet.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from knowledge.settings import load_settings
from learner import distill, midtrain
from learner.datasets import chat_prompts, opd_prompts, sandbox_manifest
from learner.evals.evaluate import evaluate_model
from learner.modeling import load_causal_lm, load_tokenizer
from learner.teachers.base import BaseModelTeacher


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_row(name: str, settings, manifest, documents, limit):  # noqa: ANN001, ANN201
    torch.manual_seed(settings.learner.seed)
    tokenizer = load_tokenizer(manifest.student_dir)
    model = load_causal_lm(manifest.student_dir, torch.device("cpu"), "float32")
    lora = settings.learner.lora
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=0.0,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    t0 = time.perf_counter()
    stats: dict = {}
    if name.startswith("mid"):
        cfg = settings.learner.midtrain.model_copy()
        cfg.doc_fraction = (
            1.0 if name.startswith("mid100") else settings.learner.midtrain.doc_fraction
        )
        stats |= midtrain.main(
            model, tokenizer, documents, chat_prompts(settings), cfg, progress=True
        )
    if name.endswith("+opd"):
        stats |= distill.main(
            model,
            tokenizer,
            BaseModelTeacher(model),
            opd_prompts(settings),
            settings.learner.distill,
            progress=True,
        )
    seconds = time.perf_counter() - t0
    day = manifest.days[0]
    scores = evaluate_model(
        model,
        tokenizer,
        qa_file=day.qa_file,
        ifeval_file=day.ifeval_file,
        known_qa_file=manifest.known_qa_file,
        max_new_tokens=settings.learner.eval.max_new_tokens,
        batch_size=settings.learner.eval.batch_size,
        limit=limit,
        progress=False,
    )
    student_tokens = stats.get("distill_student_tokens", 0)
    return {
        "row": name,
        **scores,
        "student_tokens": student_tokens,
        "teacher_tokens": student_tokens,
        "seconds": seconds,
        "peak_mb": _peak_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="sandbox")
    parser.add_argument("--size", default=None)
    parser.add_argument("--rows", default="base,mid100,mid70,mid70+opd,mid100+opd")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set", action="append", default=[], help="learner override, e.g. midtrain.lr=1e-3"
    )
    args = parser.parse_args()
    settings = load_settings(args.config)
    if args.size:
        settings.sandbox.size = args.size
    for item in args.set:
        path, value = item.split("=", 1)
        section, key = path.split(".")
        target = getattr(settings.learner, section)
        setattr(target, key, type(getattr(target, key))(value))
    torch.set_num_threads(args.threads)
    manifest = sandbox_manifest(settings)
    documents = [p.read_text() for p in sorted(Path(manifest.days[0].documents_dir).glob("*.md"))]
    rows = [
        run_row(name, settings, manifest, documents, args.limit) for name in args.rows.split(",")
    ]
    print(
        "\n| row | QA day1 | IFEval strict | IFEval loose | known QA | student tok | teacher tok | s | peak MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['row']} | {r['qa_closed_book']:.1%} | {r['ifeval_strict']:.1%} | {r['ifeval_loose']:.1%} | "
            f"{r.get('known_qa', float('nan')):.1%} | {r['student_tokens']} | {r['teacher_tokens']} | "
            f"{r['seconds']:.0f} | {r['peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
