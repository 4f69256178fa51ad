"""Privileged context: the teacher reads retrieved passages the student does not see.

For a question about the new documents, the student samples an answer closed-book; the teacher
scores those very tokens with the passages put into the prompt (knowledge.prompting's format, as
serving grounds a question), so OPD teaches the student to answer without the documents what the
teacher reads in them.

    lp_B_T = logprobs_with_context(teacher, tokenizer, batch, prompts_B, contexts_B)

Works with any Teacher (base, local, server): each row's prompt is re-rendered with its context
and re-tokenized, the completion token ids are copied unchanged after it, the teacher scores that
batch, and its log-probs on the completion tokens are put back at the student's completion
positions (same tokens, same order, same mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from knowledge.prompting import grounded_user_message
from learner.generation import Message, chat_prompt
from learner.sampling import SampleBatch
from learner.teachers import Teacher

Passages = list[str]


@dataclass(frozen=True)
class ContextPrompt:
    """An OPD prompt whose teacher also sees `passages` (retrieved chunks); the student does not."""

    messages: list[Message]
    passages: Passages


def with_context(messages: list[Message], passages: Passages | None) -> list[Message]:
    """`messages` with the last user turn grounded in `passages` (unchanged without passages)."""
    if not passages:
        return messages
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    grounded = list(messages)
    grounded[last] = {
        "role": "user",
        "content": grounded_user_message(messages[last]["content"], passages),
    }
    return grounded


def teacher_view(
    batch: SampleBatch,
    tokenizer: PreTrainedTokenizerBase,
    prompts_B: list[list[Message]],
    contexts_B: list[Passages | None],
) -> SampleBatch:
    """The batch the teacher scores: row b = prompt b with context b, then row b's completion.

    Left-padded like the sampler's batches; tokens after a row's stop token are dropped.
    """
    device = batch.sequences_B_T.device
    rows = []
    for b, (messages, passages) in enumerate(zip(prompts_B, contexts_B, strict=True)):
        text = chat_prompt(tokenizer, with_context(messages, passages))
        prompt = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        completion = batch.sequences_B_T[b][batch.completion_mask_B_T[b]]
        rows.append((prompt.to(device), completion))
    B, T = len(rows), max(len(p) + len(c) for p, c in rows)
    sequences = torch.full((B, T), tokenizer.pad_token_id, dtype=batch.sequences_B_T.dtype)
    attention = torch.zeros(B, T, dtype=torch.bool)
    completion_mask = torch.zeros(B, T, dtype=torch.bool)
    for b, (prompt, completion) in enumerate(rows):
        n = len(prompt) + len(completion)
        sequences[b, T - n :] = torch.cat([prompt, completion])
        attention[b, T - n :] = True
        completion_mask[b, T - len(completion) :] = True
    return SampleBatch(
        sequences.to(device),
        attention.to(device),
        completion_mask.to(device),
        torch.zeros(B, T, device=device),
        list(batch.prompt_index_B),
    )


def logprobs_with_context(
    teacher: Teacher,
    tokenizer: PreTrainedTokenizerBase,
    batch: SampleBatch,
    prompts_B: list[list[Message]],
    contexts_B: list[Passages | None],
) -> torch.Tensor:
    """Teacher log-probs [B, T] aligned with `batch` (0 outside completions), context in prompt.

    `prompts_B[b]` is the prompt row b was sampled from, `contexts_B[b]` its passages or None.
    """
    view = teacher_view(batch, tokenizer, prompts_B, contexts_B)
    view_lp_B_T = teacher.logprobs(view)
    out_B_T = torch.zeros_like(batch.sampler_logprobs_B_T)
    # Boolean indexing reads row by row, left to right: row b's completion tokens in both
    # tensors, in the same order and the same number, so they land on the same tokens.
    out_B_T[batch.completion_mask_B_T] = view_lp_B_T[view.completion_mask_B_T].to(out_B_T.dtype)
    return out_B_T
