"""Mid-training and OPD on N data-parallel processes, started with `accelerate launch`.

The cycle (learner/pipeline.py) keeps the lease, the run log, the evals and the registry; for a
training stage with `learner.distributed.processes` > 1 it calls `launch`, which writes a job
folder (the adapter so far, the stage's inputs, the settings), starts N ranks of this module and
loads the trained adapter back. Each rank runs the same recipe function the one-process cycle
calls (`midtrain.main` / `distill.main`) with its `World` (learner/world.py): its share of every
batch, gradients averaged. Rank 0 saves the adapter, the stats and the metrics; a failed rank
fails the stage (TrainingRankError) and the served adapter is untouched (nothing is registered).

    stats = launch(settings, "midtrain", model, inputs, run_dir / "ranks", run.metric)

A rank, by hand (what accelerate starts; `--multi_gpu` is accelerate's multi-process mode, the
rank itself picks gloo on CPU):

    accelerate launch --multi_gpu --num_processes 2 -m learner.data_parallel JOB_DIR
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import set_peft_model_state_dict
from safetensors.torch import load_file

from knowledge.errors import TrainingRankError
from knowledge.faults import crash_point
from knowledge.settings import Settings

RECIPES = ("midtrain", "distill")
SPEC, START, OUT = "job.pkl", "start", "out"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    settings: Settings,
    recipe: str,
    model: PeftModel,
    inputs: dict,
    job_dir: Path,
    log: Callable[[dict], None] | None = None,
    served: str = "base",
    served_dir: Path | None = None,
) -> dict:
    """Run `recipe` ("midtrain" | "distill") with `inputs` (its keyword arguments) on the
    configured number of ranks; the model's active adapter comes back trained. `served` and
    `served_dir` name the cycle's teacher for OPD (learner/teachers/factory.cycle_teacher)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}")
    n = settings.learner.distributed.processes
    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    adapter = model.active_adapter
    model.save_pretrained(str(job_dir / START), selected_adapters=[adapter])
    spec = {
        "recipe": recipe,
        "settings": settings,
        "inputs": inputs,
        "served": served,
        "served_dir": served_dir,
    }
    (job_dir / SPEC).write_bytes(pickle.dumps(spec))
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "learner.data_parallel", str(job_dir),
    ]  # fmt: skip
    code = subprocess.run(cmd, check=False).returncode
    out = job_dir / OUT
    if code != 0 or not (out / "stats.json").exists():
        errors = sorted(job_dir.glob("rank*.error"))
        detail = errors[0].read_text().strip().splitlines()[-1] if errors else "no traceback"
        raise TrainingRankError(
            f"{recipe} on {n} processes failed (launcher exit code {code}): {detail}; "
            f"logs in {job_dir}"
        )
    state = load_file(str(out / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, state, adapter_name=adapter)
    if log:
        for line in (out / "metrics.jsonl").read_text().splitlines():
            log(json.loads(line))
    stats = json.loads((out / "stats.json").read_text())
    shutil.rmtree(job_dir, ignore_errors=True)
    return {**stats, "distributed_processes": n}


def _rank_main(job_dir: Path) -> None:
    """One rank: join the process group, load the student and the job's adapter, run the recipe
    on this rank's share, and (rank 0) save the result."""
    from accelerate import PartialState

    from learner import distill, midtrain
    from learner.modeling import load_causal_lm, load_tokenizer, resolve_model_ref, torch_device
    from learner.teachers.factory import cycle_teacher, general_teacher
    from learner.world import current_world

    spec = pickle.loads((job_dir / SPEC).read_bytes())
    settings: Settings = spec["settings"]
    device = torch_device(settings)
    state = PartialState(cpu=device.type == "cpu")  # gloo on CPU, NCCL on GPUs
    world = current_world()
    if device.type == "cuda":
        device = state.device
    else:  # the cores shared out: each rank's own pool, not N x all of them
        threads = settings.models.torch_threads or os.cpu_count() or 1
        torch.set_num_threads(max(1, threads // world.size))
    try:
        path = resolve_model_ref(settings, settings.models.student)
        tokenizer = load_tokenizer(path)
        base = load_causal_lm(path, device, settings.models.dtype)
        model = PeftModel.from_pretrained(base, str(job_dir / START), is_trainable=True)
        crash_point(f"rank{world.rank}:{spec['recipe']}")
        metrics: list[dict] = []
        common = {
            "seed": settings.learner.seed,
            "log": metrics.append if world.is_main else None,
            "progress": world.is_main,
            "world": world,
            **spec["inputs"],
        }
        if spec["recipe"] == "midtrain":
            stats = midtrain.main(model, tokenizer, cfg=settings.learner.midtrain, **common)
        else:
            served, served_dir = spec["served"], spec["served_dir"]
            with cycle_teacher(settings, model, tokenizer, device, served, served_dir) as teacher:
                general = general_teacher(settings, model, teacher)
                stats = distill.main(
                    model, tokenizer, teacher, cfg=settings.learner.distill,
                    general_teacher=general, **common,
                )  # fmt: skip
        if world.is_main:
            partial = job_dir / f"{OUT}.partial"
            model.save_pretrained(str(partial), selected_adapters=[model.active_adapter])
            with (partial / "metrics.jsonl").open("w") as fh:
                fh.writelines(json.dumps(record) + "\n" for record in metrics)
            (partial / "stats.json").write_text(json.dumps(stats))
            partial.rename(job_dir / OUT)  # complete or absent
    except BaseException:
        (job_dir / f"rank{world.rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
