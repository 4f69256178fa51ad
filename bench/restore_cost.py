"""Bench: what restoring instruction following costs — OPD vs SFT vs RL at equal token budgets.

    .venv/bin/python bench/restore_cost.py --size demo --seeds 0,1,2 --png artifacts/restore_cost.png

Per seed: mid-train a LoRA on 100% day-1 documents (IFEval falls), then from that same adapter
run each method for `--steps` steps of `prompts_per_step x group_size` samples on the same
prompts (IFEval-format training prompts with their checkers; never the eval's):

    opd  the student samples; the teacher (the model before mid-training) scores every token;
         per-token reverse-KL advantage, importance-sampling loss (learner/distill.py's step)
    sft  the teacher samples answers to the prompts (off-policy); cross-entropy on them
    rl   the student samples; reward 1 when the IFEval checkers pass (strict), 0 otherwise;
         group-relative advantage on every token, the same importance-sampling loss

Student tokens: completion tokens the student sampled (OPD, RL) or trained on (SFT). Every
`--eval-every` steps IFEval strict is measured on the held-out set; the bench prints the tokens
each method needed to reach 95% of the base model's IFEval (mean ± spread over seeds), closed-book
QA at the end, and writes the curves (mean, min-max band) as a PNG.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import torch
from bench_common import StagePeaks, mean_spread, settings_from_args, student
from peft import get_peft_model_state_dict, set_peft_model_state_dict

from knowledge.settings import Settings
from learner import midtrain
from learner.datasets import chat_prompts, sandbox_manifest
from learner.distill import policy_gradient_step
from learner.evals.evaluate import evaluate_model
from learner.evals.ifeval import score_item
from learner.losses import (
    IGNORE,
    causal_lm_loss,
    group_relative_advantages,
    reverse_kl_advantages,
)
from learner.modeling import load_tokenizer
from learner.sampling import LocalSampler, position_ids_for
from learner.sandbox.prompt_sets import ifeval_items
from learner.sandbox.world import build_world
from learner.teachers.base import BaseModelTeacher

METHODS = ("opd", "sft", "rl")
TARGET = 0.95  # of the base model's IFEval strict


def training_items(settings: Settings, n: int) -> list[dict]:
    """IFEval-format prompts on training topics (with checker ids and kwargs for RL rewards)."""
    world = build_world(settings.sandbox.seed, settings.sandbox.size)
    return ifeval_items(world, 0, random.Random("restore-cost"), n, held_out=False)


def step(model, tokenizer, optimizer, params, method: str, items: list[dict], cfg) -> int:  # noqa: ANN001
    """One update of `method` on `items`; returns the student tokens it used."""
    prompts = [[{"role": "user", "content": i["prompt"]}] for i in items]
    sampler = LocalSampler(model, tokenizer)
    args = (prompts, cfg.group_size, cfg.temperature, cfg.max_new_tokens)
    if method == "sft":
        with model.disable_adapter():  # the teacher: the model before mid-training
            batch = sampler.sample(*args)
        labels_B_T = batch.sequences_B_T.masked_fill(~batch.completion_mask_B_T, IGNORE)
        model.train()
        logits = model(
            input_ids=batch.sequences_B_T,
            attention_mask=batch.attention_mask_B_T.long(),
            position_ids=position_ids_for(batch.attention_mask_B_T),
        ).logits
        loss = causal_lm_loss(logits, labels_B_T)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        model.eval()
        return batch.n_completion_tokens
    batch = sampler.sample(*args)
    mask_B_T = batch.completion_mask_B_T
    if method == "opd":
        teacher_lp_B_T = BaseModelTeacher(model).logprobs(batch)
        advantages_B_T = reverse_kl_advantages(
            batch.sampler_logprobs_B_T, teacher_lp_B_T, mask_B_T, cfg.kl_coef
        )
    else:
        texts = [
            tokenizer.decode(seq[m], skip_special_tokens=True)
            for seq, m in zip(batch.sequences_B_T, mask_B_T, strict=True)
        ]
        rewards_B = torch.tensor(
            [
                float(score_item(items[i], t)[0])
                for i, t in zip(batch.prompt_index_B, texts, strict=True)
            ]
        )
        advantages_B_T = group_relative_advantages(rewards_B, cfg.group_size, mask_B_T)
    policy_gradient_step(model, optimizer, params, batch, advantages_B_T)  # OPD's own update
    return batch.n_completion_tokens


def run_seed(settings: Settings, seed: int, args: argparse.Namespace, peaks: StagePeaks) -> dict:
    manifest = sandbox_manifest(settings)
    day = manifest.days[0]
    tokenizer = load_tokenizer(manifest.student_dir)
    model = student(settings, manifest.student_dir, lora=True, seed=seed)
    cfg = settings.learner.distill

    def ifeval() -> float:
        scores = evaluate_model(
            model, tokenizer, ifeval_file=day.ifeval_file, limit=args.limit, progress=False
        )
        return scores["ifeval_strict"]

    with model.disable_adapter():  # on the same items as every checkpoint
        base_if = ifeval()
    mid_cfg = settings.learner.midtrain.model_copy(update={"doc_fraction": 1.0})
    documents = [p.read_text() for p in sorted(Path(day.documents_dir).glob("*.md"))]
    with peaks.stage("midtrain"):
        midtrain.main(
            model, tokenizer, documents, chat_prompts(settings), mid_cfg, seed, progress=False
        )
    start = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    items = training_items(settings, 2000)
    out = {"seed": seed, "base_ifeval": base_if, "curves": {}, "qa": {}}
    mid_if = ifeval()
    for method in args.methods.split(","):
        set_peft_model_state_dict(model, start)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        rng, tokens = random.Random(seed), 0
        curve = [(0, mid_if)]
        torch.manual_seed(seed)
        with peaks.stage(method):
            for n in range(1, args.steps + 1):
                batch_items = rng.sample(items, cfg.prompts_per_step)
                tokens += step(model, tokenizer, optimizer, params, method, batch_items, cfg)
                if n % args.eval_every == 0:
                    curve.append((tokens, ifeval()))
        scores = evaluate_model(model, tokenizer, qa_file=day.qa_file, progress=False)
        out["curves"][method], out["qa"][method] = curve, scores["qa_closed_book"]
        print(json.dumps({"seed": seed, "method": method, "curve": curve}), flush=True)
    return out


def tokens_to_target(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((tokens for tokens, score in curve if score >= target), None)


def report(results: list[dict], methods: list[str], peaks: StagePeaks) -> str:
    lines = [
        "| method | tokens to 95% of base IFEval | reached (seeds) | final IFEval | final QA day 1 |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        hits = [tokens_to_target(r["curves"][m], TARGET * r["base_ifeval"]) for r in results]
        reached = [h for h in hits if h is not None]
        budget = max(t for t, _ in results[0]["curves"][m])
        cost = mean_spread([float(h) for h in reached], pct=False) if reached else f"> {budget:,}"
        lines.append(
            f"| {m} | {cost} | {len(reached)}/{len(results)} "
            f"| {mean_spread([r['curves'][m][-1][1] for r in results])} "
            f"| {mean_spread([r['qa'][m] for r in results])} |"
        )
    base = mean_spread([r["base_ifeval"] for r in results])
    mem = ", ".join(f"{s} {mb:,.0f}" for s, mb in peaks.mb.items())
    return "\n".join(lines) + f"\n\nbase IFEval strict {base}; peak RSS MB per stage: {mem}"


def plot(results: list[dict], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in methods:
        curves = [r["curves"][m] for r in results]
        xs = [statistics.fmean(c[i][0] for c in curves) for i in range(len(curves[0]))]
        ys = [[c[i][1] for c in curves] for i in range(len(curves[0]))]
        ax.plot(xs, [statistics.fmean(y) for y in ys], marker="o", label=m.upper())
        ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], alpha=0.2)
    target = TARGET * statistics.fmean(r["base_ifeval"] for r in results)
    ax.axhline(target, color="grey", linestyle="--", label="95% of base IFEval")
    ax.set_xlabel("student tokens")
    ax.set_ylabel("IFEval strict (held out)")
    ax.set_title(f"Restoring instruction following after mid-training ({len(results)} seeds)")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sandbox")
    parser.add_argument("--size", default="demo")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--limit", type=int, default=75, help="IFEval items per checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--png", type=Path, default=Path("artifacts/restore_cost.png"))
    parser.add_argument("--set", action="append", default=[], help="e.g. distill.lr=3e-4")
    args = parser.parse_args()
    settings = settings_from_args(args.config, args.size, args.set)
    torch.set_num_threads(args.threads)
    peaks = StagePeaks()
    results = [run_seed(settings, int(s), args, peaks) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    print(report(results, methods, peaks))
    plot(results, methods, args.png)
    print(f"curves: {args.png}")


if __name__ == "__main__":
    main()
