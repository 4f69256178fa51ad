"""Data-parallel mid-training and OPD under `accelerate launch` (learner/data_parallel.py): two
CPU processes on gloo give the one-process losses and adapter; a whole cycle on two processes
saves one adapter; a crashed rank fails the cycle and leaves the served adapter alone.

.venv/bin/python -m pytest tests/test_data_parallel.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cycle_children import TINY_LEARNER, write_profile
from peft import LoraConfig, PeftModel, get_peft_model
from sqlmodel import Session, col, select

from assistant.cli import main as cli_main
from knowledge.faults import CRASH_ENV
from knowledge.learner_settings import DistributedConfig, LearnerConfig
from knowledge.settings import (
    DistillConfig,
    MidtrainConfig,
    ModelsConfig,
    Settings,
    load_settings,
)
from learner import distill, midtrain
from learner.data_parallel import launch
from learner.modeling import load_causal_lm, load_tokenizer
from learner.qa_pairs import QAPair
from learner.registry import Registry
from learner.tables import Run
from learner.teachers.base import BaseModelTeacher
from learner.world import World

# Relative agreement of the per-step losses: the same arithmetic split over two processes sums
# in another order (float32), nothing more.
LOSS_RTOL = 1e-4

TEXT = (
    "The head of the Nairobi office is Amara Okafor. She moved there from the Lisbon team and "
    "runs the weekly planning call. The badge supplier is Northwind Security; new badges take "
    "three working days. The travel booking tool is Atlas and the preferred airline is Skyward."
)
PAIRS = [
    QAPair("Who heads the Nairobi office?", "Amara Okafor heads it.", "Amara Okafor"),
    QAPair("Which tool books travel?", "Trips are booked in Atlas.", "Atlas"),
    QAPair("Who supplies badges?", "Northwind Security does.", "Northwind Security"),
    QAPair("Which airline is preferred?", "Skyward Air is preferred.", "Skyward"),
]
PROMPTS = [
    [{"role": "user", "content": q}]
    for q in (
        "Write two sentences about spring.",
        "List three colours, comma separated.",
        "Answer in lowercase: what is a desk?",
        "Say hello twice.",
        "Name a fruit and a city.",
        "Describe a chair in one sentence.",
    )
]


def test_world_share_covers_every_item_once():
    for n in range(0, 9):
        for size in (1, 2, 3):
            parts = [list(range(n))[World(r, size).share(n)] for r in range(size)]
            assert sum(parts, []) == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.fixture
def start_adapter(sandbox_test, tmp_path) -> Path:
    """A LoRA with random (non-zero) weights, so the student differs from the base teacher."""
    torch.manual_seed(0)
    base = load_causal_lm(sandbox_test.student_dir, torch.device("cpu"))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "start")
    return tmp_path / "start"


def _student(manifest, adapter: Path) -> PeftModel:  # noqa: ANN001
    base = load_causal_lm(manifest.student_dir, torch.device("cpu"))
    return PeftModel.from_pretrained(base, str(adapter), is_trainable=True)


def _settings(manifest, home: Path, processes: int) -> Settings:  # noqa: ANN001
    learner = LearnerConfig(
        # no background chat: each rank samples its own share of it, so it is not the same
        # sample as one process draws (everything else is)
        midtrain=MidtrainConfig(
            epochs=1, batch_size=4, seq_len=32, warmup_steps=1, doc_fraction=1.0, replay_ratio=0
        ),
        # near-greedy sampling: one process and two draw the same tokens
        distill=DistillConfig(
            steps=3,
            prompts_per_step=6,
            group_size=2,
            max_new_tokens=8,
            temperature=1e-5,
            qa_ce_pairs_per_step=4,
        ),  # fmt: skip
        distributed=DistributedConfig(processes=processes),
    )
    models = ModelsConfig(student=str(manifest.student_dir), teacher="base", torch_threads=2)
    return Settings(home=home, models=models, learner=learner)


def _weights(model: PeftModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _assert_same_run(one: list[dict], two: list[dict], keys: tuple[str, ...]) -> None:
    assert len(one) == len(two) >= 3
    for a, b in zip(one, two, strict=True):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL, abs=1e-6), (key, a, b)


@pytest.mark.slow
def test_two_processes_train_as_one(sandbox_test, start_adapter, tmp_path):
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    one, two = _settings(sandbox_test, tmp_path, 1), _settings(sandbox_test, tmp_path, 2)
    inputs = {"documents": [TEXT] * 3, "chat_prompts": [], "qa_pairs": PAIRS}

    single, logged_one = _student(sandbox_test, start_adapter), []
    stats_one = midtrain.main(
        single, tokenizer, cfg=one.learner.midtrain, log=logged_one.append, progress=False,
        **inputs,
    )  # fmt: skip
    ranks, logged_two = _student(sandbox_test, start_adapter), []
    stats_two = launch(two, "midtrain", ranks, inputs, tmp_path / "job", logged_two.append)
    assert stats_two["midtrain_steps"] == stats_one["midtrain_steps"] >= 3
    assert stats_two["distributed_processes"] == 2
    _assert_same_run(logged_one, logged_two, ("loss",))
    for key, value in _weights(single).items():
        torch.testing.assert_close(_weights(ranks)[key], value, rtol=1e-3, atol=1e-5)

    # OPD, the QA cross-entropy on: each rank samples and scores 3 of the step's 6 prompts
    opd = {"prompts": PROMPTS, "doc_prompts": [], "qa_pairs": PAIRS}
    logged_one, logged_two = [], []
    distill.main(
        single, tokenizer, BaseModelTeacher(single, "base"), cfg=one.learner.distill,
        log=logged_one.append, progress=False, **opd,
    )  # fmt: skip
    stats = launch(two, "distill", ranks, opd, tmp_path / "job", logged_two.append)
    assert stats["distill_teacher"] == "base"
    # the teacher does differ (a sampled-token estimate of the reverse KL, either sign: about
    # -0.03 here on near-greedy samples; the sampler's merged-LoRA rounding alone moves a
    # log-prob by at most ~1e-3, tests/test_opd.py)
    assert all(abs(r["reverse_kl"]) > 0.01 for r in logged_one)
    _assert_same_run(logged_one, logged_two, ("loss", "reverse_kl", "completion_tokens"))
    for key, value in _weights(single).items():
        torch.testing.assert_close(_weights(ranks)[key], value, rtol=1e-3, atol=1e-5)
    assert not (tmp_path / "job").exists()  # the job folder goes once the adapter is back


def _runs(settings: Settings) -> list[Run]:
    with Session(Registry(settings).engine) as session:
        return list(session.exec(select(Run).order_by(col(Run.id))))


@pytest.mark.slow
def test_cycle_on_two_processes_and_a_crashed_rank(sandbox_test, tmp_path, monkeypatch, capsys):
    learner = {**TINY_LEARNER, "distill": {**TINY_LEARNER["distill"], "prompts_per_step": 2}}
    db = f"sqlite:///{tmp_path / 'home' / 'protege.db'}"
    profile = str(write_profile(tmp_path / "p.yaml", tmp_path / "home", db, sandbox_test, learner))
    day1 = sorted(map(str, sandbox_test.days[0].documents_dir.glob("*.md")))
    assert cli_main(["--config", profile, "ingest", *day1]) == 0
    capsys.readouterr()
    argv = ["--config", profile, "train", "--now", "--no-notify", "--processes", "2"]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["status"], result["version"], result["promoted"]) == (
        "succeeded",
        "v0001",
        True,
    )
    settings = load_settings(profile)
    registry = Registry(settings)
    assert [a.version for a in registry.list()] == ["v0001"]
    meta = json.loads((settings.adapters_dir / "v0001" / "meta.json").read_text())
    assert meta["metrics"]["distributed_processes"] == 2
    [run] = _runs(settings)
    metrics = (settings.runs_dir / f"{run.id:05d}" / "metrics.jsonl").read_text().splitlines()
    stages = {json.loads(line)["stage"] for line in metrics}
    assert {"midtrain", "distill"} <= stages  # rank 0's steps, in the one run log

    # night 2 with rank 1 dying in mid-training: the cycle fails, v0001 stays served
    day2 = sorted(map(str, sandbox_test.days[1].documents_dir.glob("*.md")))
    assert cli_main(["--config", profile, "ingest", *day2]) == 0
    monkeypatch.setenv(CRASH_ENV, "rank1:midtrain")
    capsys.readouterr()
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert "midtrain on 2 processes failed" in err
    assert registry.served_version() == "v0001"
    assert [a.version for a in registry.list()] == ["v0001"]
    failed = _runs(settings)[-1]
    assert failed.status == "failed" and "midtrain on 2 processes failed" in failed.message


def test_ranks_beyond_the_prompts_are_refused(sandbox_test, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'home' / 'protege.db'}"
    profile = str(write_profile(tmp_path / "p.yaml", tmp_path / "home", db, sandbox_test))
    argv = ["--config", profile, "train", "--now", "--processes", "3"]
    assert cli_main(argv) == 2
    assert "must not exceed distill.prompts_per_step" in capsys.readouterr().err
