"""Sampling completions from the student, with the log-prob of every sampled token.

`Sampler` is the small interface OPD needs; `LocalSampler` decodes in process (learner.generation
.decode; learner/vllm_sampler.py implements the same call). Sequences come back left-padded:

    batch = LocalSampler(model, tokenizer).sample(prompts, n=4, temperature=1.0, max_tokens=48)
    batch.sequences_B_T, batch.completion_mask_B_T, batch.sampler_logprobs_B_T
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from learner.generation import Message, chat_prompt, decode
from learner.modeling import stop_token_ids


@dataclass
class SampleBatch:
    """Token-aligned: position t holds token t; logprobs/mask refer to that token."""

    sequences_B_T: torch.Tensor  # prompt + completion, left-padded
    attention_mask_B_T: torch.Tensor
    completion_mask_B_T: torch.Tensor  # True on sampled tokens (up to and including the stop token)
    sampler_logprobs_B_T: torch.Tensor  # log p_sampler(token_t | tokens_<t); 0 outside completions
    prompt_index_B: list[int]  # which prompt each row answers

    @property
    def n_completion_tokens(self) -> int:
        return int(self.completion_mask_B_T.sum())

    def rows(self, keep_B: torch.Tensor) -> SampleBatch:
        """The rows where `keep_B` (bool [B]) is True, in order."""
        index = keep_B.nonzero().flatten().tolist()
        return SampleBatch(
            self.sequences_B_T[keep_B],
            self.attention_mask_B_T[keep_B],
            self.completion_mask_B_T[keep_B],
            self.sampler_logprobs_B_T[keep_B],
            [self.prompt_index_B[i] for i in index],
        )


class Sampler(Protocol):
    def sample(
        self, prompts: list[list[Message]], n: int, temperature: float, max_tokens: int
    ) -> SampleBatch: ...


def position_ids_for(attention_mask_B_T: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as generate() uses them."""
    return (attention_mask_B_T.long().cumsum(-1) - 1).clamp(min=0)


class LocalSampler:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.stops = stop_token_ids(tokenizer)

    @torch.no_grad()
    def sample(
        self, prompts: list[list[Message]], n: int, temperature: float, max_tokens: int
    ) -> SampleBatch:
        texts = [chat_prompt(self.tokenizer, messages) for messages in prompts for _ in range(n)]
        prompt_index = [i for i in range(len(prompts)) for _ in range(n)]
        device = next(self.model.parameters()).device
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            device
        )
        was_training = self.model.training
        self.model.eval()
        new_B_N, new_lp_B_N = decode(
            self.model, enc["input_ids"], enc["attention_mask"], max_tokens, self.stops,
            self.tokenizer.pad_token_id, temperature,
        )  # fmt: skip
        self.model.train(was_training)
        prompt_len = enc["input_ids"].shape[1]
        # completion = tokens up to and including the first stop token
        is_stop_B_N = torch.isin(new_B_N, torch.tensor(self.stops, device=device))
        after_stop_B_N = (is_stop_B_N.long().cumsum(-1) - is_stop_B_N.long()) > 0
        completion_B_N = ~after_stop_B_N
        B = new_B_N.shape[0]
        prompt_zeros = torch.zeros(B, prompt_len, dtype=torch.bool, device=device)
        completion_mask = torch.cat([prompt_zeros, completion_B_N], dim=1)
        attention = torch.cat([enc["attention_mask"].bool(), completion_B_N], dim=1)
        logprobs = torch.cat([prompt_zeros.float(), new_lp_B_N * completion_B_N], dim=1)
        sequences_B_T = torch.cat([enc["input_ids"], new_B_N], dim=1)
        return SampleBatch(sequences_B_T, attention, completion_mask, logprobs, prompt_index)
