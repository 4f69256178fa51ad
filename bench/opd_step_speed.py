"""Bench: the parts of an OPD step, protege's path against the plain one, side by side.

    .venv/bin/python bench/opd_step_speed.py --threads 2 --rounds 3

Decoding: learner.generation.decode against transformers' generate, and against itself with
finished rows kept in the batch to the end (`drop_finished=False`). Scoring: completion_logprobs
with each distinct prompt run once and the rows continued in two chunks sorted by answer
length (`shared_prompt_logprobs`), against every row run whole (`share_prompts=False`) and
against the shared prompt with all rows continued together (`chunks=1`), for the update
(forward + backward) and the teacher (no grad), on one batch sampled as OPD samples it (the
profile's prompts per step x group size).

The decoders run the sandbox student under a random LoRA (the profile's rank), merged while decoding,
with a static KV cache, from the same left-padded batch: OPD's sampling (temperature 1, the
profile's prompts x group size, the profile's max new tokens) and the evals' greedy answers
(batch 32, 64 new tokens). Rounds alternate which side goes first. Prints seconds per call, the
ratio, and whether the greedy answers are token for token the same. The sandbox must be built.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_common import CPU, settings_from_args, student

from learner.datasets import sandbox_manifest
from learner.generation import chat_prompt, decode, lora_merged
from learner.modeling import load_tokenizer, stop_token_ids
from learner.sampling import LocalSampler
from learner.scoring import completion_logprobs, shared_prompt_logprobs


def _generate(model, enc, max_new: int, stops: list[int], pad: int, temperature: float):  # noqa: ANN001, ANN202
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    with torch.no_grad(), lora_merged(model):
        out = model.generate(
            **enc,
            max_new_tokens=max_new,
            eos_token_id=stops,
            pad_token_id=pad,
            cache_implementation="static",
            disable_compile=True,
            **(sampling if temperature > 0 else {"do_sample": False}),
        )
    return out[:, enc["input_ids"].shape[1] :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/sandbox.yaml")
    parser.add_argument("--size", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = settings_from_args(args.config, args.size, [])
    manifest = sandbox_manifest(settings)
    tokenizer = load_tokenizer(manifest.student_dir)
    model = student(settings, manifest.student_dir, lora=True, seed=0).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)  # a trained adapter is not zero
    with open(manifest.chat_prompts_file) as f:
        prompts = [json.loads(line)["messages"] for line in f]
    d = settings.learner.distill
    cases = {
        "OPD sampling": ([m for m in prompts[: d.prompts_per_step] for _ in range(d.group_size)],
                         d.temperature, d.max_new_tokens),
        "greedy eval": (prompts[100:132], 0.0, 64),
    }  # fmt: skip
    stops, pad = stop_token_ids(tokenizer), tokenizer.pad_token_id
    print(
        "| case | transformers generate s | decode, finished rows kept s | decode s | "
        "generate / decode | kept / decode | greedy same |\n|---|---|---|---|---|---|---|"
    )
    for case, (batch, temperature, max_new) in cases.items():
        texts = [chat_prompt(tokenizer, m) for m in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(CPU)
        seconds = {"generate": 0.0, "kept": 0.0, "decode": 0.0}
        same = kept = new = None
        for r in range(args.rounds + 1):  # the first round warms up, untimed
            order = ["generate", "kept", "decode"][:: 1 if r % 2 else -1]
            for side in order:
                torch.manual_seed(r)
                t0 = time.perf_counter()
                if side == "generate":
                    ref = _generate(model, enc, max_new, stops, pad, temperature)
                else:
                    out, _ = decode(
                        model, enc["input_ids"], enc["attention_mask"], max_new, stops, pad,
                        temperature, drop_finished=side == "decode",
                    )  # fmt: skip
                    kept, new = (out, new) if side == "kept" else (kept, out)
                if r:
                    seconds[side] += time.perf_counter() - t0
            if temperature == 0:
                n = new.shape[1]
                same = torch.equal(ref[:, :n], new) and bool((ref[:, n:] == pad).all())
                same = same and torch.equal(kept, new)
        g, k, c = (seconds[s] / args.rounds for s in ("generate", "kept", "decode"))
        print(f"| {case} ({len(batch)} x {max_new}) | {g:.3f} | {k:.3f} | {c:.3f} | {g / c:.2f}x "
              f"| {k / c:.2f}x | {'-' if same is None else same} |")  # fmt: skip
    scoring_rows(model, tokenizer, prompts, d, args.rounds)


def scoring_rows(model, tokenizer, prompts, d, rounds: int) -> None:  # noqa: ANN001
    """Seconds per call of the update's and the teacher's scoring, shared prompts or not."""
    torch.manual_seed(0)
    batch = LocalSampler(model, tokenizer).sample(
        prompts[: d.prompts_per_step], d.group_size, d.temperature, d.max_new_tokens
    )
    args = (batch.sequences_B_T, batch.attention_mask_B_T, batch.completion_mask_B_T)
    print(
        f"\nbatch {tuple(batch.sequences_B_T.shape)}, {batch.n_completion_tokens} completion tokens"
    )
    print("| scoring | every row whole s | shared prompt, rows together s | shared prompt s | "
          "whole / shared | together / shared | max abs diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    sides = {
        "whole": lambda: completion_logprobs(model, *args, share_prompts=False),
        "together": lambda: shared_prompt_logprobs(model, *args, chunks=1),
        "shared": lambda: completion_logprobs(model, *args),
    }
    for case, grad in (("update (forward + backward)", True), ("teacher (no grad)", False)):
        seconds = dict.fromkeys(sides, 0.0)
        values = {}
        for r in range(rounds + 1):
            for side in list(sides)[:: 1 if r % 2 else -1]:
                model.zero_grad()
                t0 = time.perf_counter()
                with torch.set_grad_enabled(grad):
                    lp = sides[side]()
                    if grad:
                        lp.sum().backward()
                if r:
                    seconds[side] += time.perf_counter() - t0
                values[side] = lp.detach()
        diff = max((values[k] - values["whole"]).abs().max().item() for k in sides)
        w, t, s = (seconds[k] / rounds for k in sides)
        print(
            f"| {case} | {w:.3f} | {t:.3f} | {s:.3f} | {w / s:.2f}x | {t / s:.2f}x | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
