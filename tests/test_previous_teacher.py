"""`models.teacher: previous` (learner/teachers/previous.py, factory.py): the teacher is the model
served when the cycle starts, frozen; `base` is the raw base weights.

.venv/bin/python -m pytest tests/test_previous_teacher.py -q
"""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from test_e2e import tiny_settings

from knowledge.store import KnowledgeStore
from learner.datasets import read_jsonl
from learner.modeling import load_causal_lm, load_tokenizer
from learner.pipeline import run_cycle
from learner.registry import Registry
from learner.sampling import LocalSampler
from learner.scoring import completion_logprobs
from learner.teachers.factory import cycle_teacher, teacher_weights

CPU = torch.device("cpu")


def _perturbed_adapter(path, tmp_path, seed: int):  # noqa: ANN001, ANN202
    """A saved LoRA adapter with non-zero weights (a fresh one is the identity)."""
    torch.manual_seed(seed)
    model = get_peft_model(
        load_causal_lm(path, CPU),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    folder = tmp_path / f"adapter{seed}"
    model.save_pretrained(folder)
    return folder


def test_previous_teacher_scores_as_the_served_adapter_and_stays_frozen(sandbox_test, tmp_path):
    settings = tiny_settings(tmp_path, sandbox_test)
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    served_dir = _perturbed_adapter(sandbox_test.student_dir, tmp_path, 1)
    # the cycle continues the served adapter: the trainable one starts as a copy of it
    student = PeftModel.from_pretrained(
        load_causal_lm(sandbox_test.student_dir, CPU), str(served_dir), is_trainable=True
    )
    reference = PeftModel.from_pretrained(load_causal_lm(sandbox_test.student_dir, CPU), served_dir)
    prompts = [[{"role": "user", "content": "Which team is Ada Berg on?"}]]
    torch.manual_seed(0)
    batch = LocalSampler(student, tokenizer).sample(prompts, 2, 1.0, 6)
    args = (batch.sequences_B_T, batch.attention_mask_B_T, batch.completion_mask_B_T)
    with torch.no_grad():
        want = completion_logprobs(reference, *args)
        with reference.disable_adapter():
            raw = completion_logprobs(reference, *args)
    with cycle_teacher(settings, student, tokenizer, CPU, "v0001", served_dir) as teacher:
        assert teacher.name == "previous (v0001)"
        assert torch.allclose(teacher.logprobs(batch), want, atol=1e-5)
        assert not torch.allclose(want, raw, atol=1e-2)  # the served adapter is not the base
        # training the student's adapter leaves the teacher as it was
        params = [p for p in student.parameters() if p.requires_grad]
        assert params and all(
            "previous" not in n for n, p in student.named_parameters() if p.requires_grad
        )
        optimizer = torch.optim.SGD(params, lr=1.0)
        (-completion_logprobs(student, *args).sum()).backward()
        optimizer.step()
        assert torch.allclose(teacher.logprobs(batch), want, atol=1e-5)
        assert not torch.allclose(completion_logprobs(student, *args), want, atol=1e-3)
        with teacher_weights(teacher, student) as writer, torch.no_grad():
            assert torch.allclose(completion_logprobs(writer, *args), want, atol=1e-5)
        assert student.active_adapter == "default"
    assert "previous" not in student.peft_config  # dropped: the adapter is saved alone
    student.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / "previous").exists()

    settings.models.teacher = "base"  # the raw base weights, whatever is served
    with cycle_teacher(settings, student, tokenizer, CPU, "v0001", served_dir) as teacher:
        assert teacher.name == "base"
        assert torch.allclose(teacher.logprobs(batch), raw, atol=1e-5)
    settings.models.teacher = "previous"  # nothing promoted yet: previous is the base
    with cycle_teacher(settings, student, tokenizer, CPU, "base", None) as teacher:
        assert teacher.name == "previous (base)"


def _pair_logprob(settings, sandbox_test, served: str, served_dir, pairs) -> float:  # noqa: ANN001
    """Mean log-prob the teacher of a cycle that starts with `served` gives the pairs' answers."""
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    model = get_peft_model(
        load_causal_lm(sandbox_test.student_dir, CPU),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )
    rows = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            tokenize=False, enable_thinking=False,
        )
        for q, a in pairs
    ]  # fmt: skip
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True,
            enable_thinking=False,
        )
        for q, _ in pairs
    ]  # fmt: skip
    enc = tokenizer(rows, return_tensors="pt", padding=True, add_special_tokens=False)
    n_prompt = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    lengths = enc["attention_mask"].sum(-1)
    mask = torch.zeros_like(enc["attention_mask"], dtype=torch.bool)
    T = mask.shape[1]
    for b, (n, length) in enumerate(zip(n_prompt, lengths.tolist(), strict=True)):
        mask[b, T - length + n :] = True  # left padding: the answer is at the end
    from learner.sampling import SampleBatch

    batch = SampleBatch(
        enc["input_ids"], enc["attention_mask"].bool(), mask, torch.zeros(mask.shape), []
    )
    with cycle_teacher(settings, model, tokenizer, CPU, served, served_dir) as teacher:
        return float(teacher.logprobs(batch).sum() / mask.sum())


@pytest.mark.slow
def test_night_two_distills_from_night_one(sandbox_test, tmp_path):
    settings = tiny_settings(tmp_path, sandbox_test)
    # enough mid-training that the tiny student really learns night 1's pairs
    settings.learner.midtrain.epochs, settings.learner.midtrain.lr = 30, 1e-2
    settings.learner.midtrain.doc_fraction = 1.0  # no background chat to sample: faster
    store = KnowledgeStore(settings)
    names = []
    for night, day in enumerate(sandbox_test.days[:2], start=1):
        store.ingest_paths(sorted(day.documents_dir.glob("*.md")))
        if night == 2:  # the teacher night 2 gets knows night 1's facts; the raw base does not
            pairs = [
                (r["question"], r["response"])
                for r in read_jsonl(sandbox_test.days[0].train_questions_file)
            ]
            served_dir = Registry(settings).verify("v0001")
            previous = _pair_logprob(settings, sandbox_test, "v0001", served_dir, pairs)
            settings.models.teacher = "base"
            raw = _pair_logprob(settings, sandbox_test, "v0001", served_dir, pairs)
            settings.models.teacher = "previous"
            assert previous > raw + 0.5, (previous, raw)
        result = run_cycle(settings, progress=False, notify=False)
        assert result.status == "succeeded" and result.promoted, result.message
        metrics = json.loads(Registry(settings).get(result.version).metrics_json)
        names.append(metrics["distill_teacher"])
        if night == 2:  # night 1's facts are replayed, and scored as an earlier set
            assert metrics["midtrain_replay_tokens_per_epoch"] > 0
            assert "qa_day1" in result.after and "qa_day2" in result.after
            assert result.after["n_qa_new"] == result.after["n_qa_day2"]
    assert names == ["previous (base)", "previous (v0001)"]
    # the raw base's answers were kept for the next nights (learner/evals/answer_cache.py)
    (cache_file,) = (settings.home / "cache" / "base-answers").glob("*.json")
    kinds = {key.split("\x00")[0] for key in json.loads(cache_file.read_text())}
    assert {"qa_closed_book", "ifeval", "known_qa", "incontext_qa"} <= kinds


@pytest.mark.slow
def test_start_base_rebuilds_each_night_and_gates_against_the_served(sandbox_test, tmp_path):
    """`learner.start: base`: night 2 is a fresh LoRA on both days' documents, taught by the
    base (the model before its mid-training), and the gate compares it with the served v0001."""
    settings = tiny_settings(tmp_path, sandbox_test)
    settings.learner.start = "base"
    settings.learner.midtrain.epochs, settings.learner.midtrain.lr = 8, 1e-2  # v0001 differs
    settings.learner.midtrain.doc_fraction = 1.0
    store = KnowledgeStore(settings)
    results = []
    for day in sandbox_test.days[:2]:
        store.ingest_paths(sorted(day.documents_dir.glob("*.md")))
        results.append(run_cycle(settings, progress=False, notify=False))
        assert results[-1].status == "succeeded" and results[-1].promoted, results[-1].message
    night1, night2 = results
    registry = Registry(settings)
    assert registry.get(night2.version).parent_version is None  # a fresh LoRA, not v0001 continued
    metrics = json.loads(registry.get(night2.version).metrics_json)
    assert metrics["distill_teacher"] == "previous (base)"
    assert (
        metrics["midtrain_doc_tokens"]
        > 1.5 * json.loads(registry.get(night1.version).metrics_json)["midtrain_doc_tokens"]
    )  # both days' documents learned as new
    # `before` is the served v0001 (it knows day 1), not the fresh LoRA (the base)
    assert night2.before["qa_day1"] == pytest.approx(night1.after["qa_day1"], abs=0.05)
    shared = [k for k, v in night2.base.items() if isinstance(v, float) and k in night2.before]
    assert any(abs(night2.before[k] - night2.base[k]) > 1e-6 for k in shared)
    assert night2.after["n_qa_new"] == night2.after["n_qa_day2"]  # day 1 is gated as earlier
    assert run_cycle(settings, progress=False, notify=False).status == "skipped"  # nothing new
