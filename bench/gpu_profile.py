"""Bench: each stage of one `qwen3` cycle on a GPU, with Qwen3-shaped models of random weights.

    .venv/bin/python bench/gpu_profile.py                 # on a CUDA host; skips, saying so, else
    .venv/bin/python bench/gpu_profile.py --smoke --shrink 64   # small shapes on the CPU (a test)

No download: the student (Qwen3-1.7B) and teacher (Qwen3-8B) are built from their published
configs (`STUDENT`, `TEACHER` below, from the models' config.json) with random bf16 weights, which
cost the same memory and time as the real ones. Stages, at the `qwen3` profile's sizes
(configs/qwen3.yaml):

- midtrain: one LoRA step (rank/alpha/targets from the profile, AdamW, gradient checkpointing)
  on `midtrain.batch_size` x `midtrain.seq_len` tokens;
- opd_sample: the student with its LoRA samples `distill.prompts_per_step` x `group_size`
  completions of up to `distill.max_new_tokens` (transformers' generate, as LocalSampler; random
  weights rarely stop early, so this is the worst case);
- teacher_score: the 8B teacher's log-probs of those sequences, in micro-batches;
- opd_update: the importance-sampling update on them;
- eval_generate: greedy answers of `eval.batch_size` prompts, `eval.max_new_tokens` tokens.

Prints, per stage, seconds, tokens/s and peak GPU memory (torch.cuda.max_memory_allocated, reset
before each stage, models resident included), beside the README's estimate ("Config profiles").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knowledge.settings import load_settings  # noqa: E402
from learner.losses import importance_sampling_loss  # noqa: E402
from learner.scoring import completion_logprobs  # noqa: E402

COMMON = dict(vocab_size=151936, head_dim=128, max_position_embeddings=40960,
              rope_theta=1_000_000.0, rms_norm_eps=1e-6, num_key_value_heads=8)  # fmt: skip
STUDENT = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
               num_attention_heads=16, tie_word_embeddings=True, **COMMON)  # fmt: skip
TEACHER = dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
               num_attention_heads=32, tie_word_embeddings=False, **COMMON)  # fmt: skip
# README "Config profiles": the estimate this bench checks (GB, bf16)
ESTIMATE_GB = {"midtrain": 3.4 + 0.6 + 10, "opd_sample": 3.4 + 11, "teacher_score": 16.4 + 4,
               "opd_update": 3.4 + 0.6 + 10, "eval_generate": 3.4 + 4}  # fmt: skip
PROMPT_TOKENS = 256  # a typical OPD/eval prompt with its chat template


def smoke_shape(shape: dict) -> dict:
    """2 layers, a 4k vocabulary and widths / 8: the same code path, small enough for a CPU."""
    return {**shape, "num_hidden_layers": 2, "vocab_size": 4096,
            "hidden_size": shape["hidden_size"] // 8,
            "intermediate_size": shape["intermediate_size"] // 8,
            "num_attention_heads": shape["num_attention_heads"] // 4, "num_key_value_heads": 2}  # fmt: skip


def build(shape: dict, smoke: bool, device: torch.device, dtype: torch.dtype):  # noqa: ANN201
    config = Qwen3Config(**(smoke_shape(shape) if smoke else shape))
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype)
    return model.eval()


class Stage:
    """Seconds and peak device memory of a block (CUDA: max_memory_allocated; CPU: 0)."""

    rows: list[tuple[str, float, int, float]] = []

    def __init__(self, name: str, tokens: int, device: torch.device) -> None:
        self.name, self.tokens, self.device = name, tokens, device

    def __enter__(self) -> Stage:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self.start
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        Stage.rows.append((self.name, seconds, self.tokens, peak))


def run(args: argparse.Namespace) -> None:
    settings = load_settings("qwen3")
    mid, opd, ev, lora = (settings.learner.midtrain, settings.learner.distill,
                          settings.learner.eval, settings.learner.lora)  # fmt: skip
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    shrink = args.shrink  # divides batch and lengths (the smoke test; 1 on a GPU)
    batch, seq_len = max(1, mid.batch_size // shrink), max(8, mid.seq_len // shrink)
    n_seq = max(2, opd.prompts_per_step * opd.group_size // shrink)
    new_tokens = max(4, opd.max_new_tokens // shrink)
    prompt_len = max(4, PROMPT_TOKENS // shrink)
    torch.manual_seed(0)

    student = build(STUDENT, args.smoke, device, dtype)
    model = get_peft_model(student, LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, target_modules=lora.target_modules,
        task_type="CAUSAL_LM"))  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=mid.lr)
    vocab = student.config.vocab_size

    with Stage("midtrain", batch * seq_len, device):
        ids = torch.randint(0, vocab, (batch, seq_len), device=device)
        student.gradient_checkpointing_enable()  # training only: generation wants its KV cache
        model.train()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.eval()
        student.gradient_checkpointing_disable()

    prompts = torch.randint(0, vocab, (n_seq, prompt_len), device=device)
    with Stage("opd_sample", n_seq * new_tokens, device), torch.no_grad():
        out = model.generate(
            input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
            temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, pad_token_id=0,
        )  # fmt: skip
    attention = torch.ones_like(out, dtype=torch.bool)
    completion = attention.clone()
    completion[:, :prompt_len] = False

    teacher = build(TEACHER, args.smoke, device, dtype)
    with Stage("teacher_score", n_seq * new_tokens, device), torch.no_grad():
        chunks = max(1, n_seq // args.score_rows)
        teacher_lp = completion_logprobs(teacher, out, attention, completion, chunks=chunks)
    del teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()

    with Stage("opd_update", n_seq * new_tokens, device):
        student.gradient_checkpointing_enable()
        model.train()
        rows = max(1, n_seq // args.update_chunks)
        for start in range(0, n_seq, rows):  # micro-batches, gradients accumulated
            part = slice(start, start + rows)
            lp = completion_logprobs(model, out[part], attention[part], completion[part], 1)
            adv = -(lp.detach() - teacher_lp[part])
            importance_sampling_loss(lp, lp.detach(), adv, completion[part]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.eval()
        student.gradient_checkpointing_disable()

    n_eval = max(2, ev.batch_size // shrink)
    eval_new = max(4, ev.max_new_tokens // shrink)
    with Stage("eval_generate", n_eval * eval_new, device), torch.no_grad():
        eval_prompts = prompts[:n_eval] if n_eval <= n_seq else prompts.repeat(2, 1)[:n_eval]
        model.generate(
            input_ids=eval_prompts, attention_mask=torch.ones_like(eval_prompts),
            do_sample=False, max_new_tokens=eval_new, min_new_tokens=eval_new, pad_token_id=0,
        )  # fmt: skip

    where = "CPU smoke run, small shapes" if args.smoke else torch.cuda.get_device_name()
    print(f"\n| stage ({where}) | seconds | tokens | tokens/s | peak GPU GB | README estimate GB |")
    print("|---|---|---|---|---|---|")
    for name, seconds, tokens, peak in Stage.rows:
        print(f"| {name} | {seconds:.2f} | {tokens:,} | {tokens / seconds:,.0f} | {peak:.1f} "
              f"| {ESTIMATE_GB[name]:.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="small shapes on the CPU (smoke_shape)"
    )
    parser.add_argument("--shrink", type=int, default=1, help="divide batch sizes and lengths")
    parser.add_argument("--score-rows", type=int, default=16, help="teacher rows per forward")
    parser.add_argument("--update-chunks", type=int, default=16, help="OPD update micro-batches")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU visible: bench/gpu_profile.py skipped (use --smoke for the CPU path)")
        return
    run(args)


if __name__ == "__main__":
    main()
