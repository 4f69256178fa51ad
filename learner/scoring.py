"""Log-probabilities of given token sequences under a model (teacher scoring, OPD updates)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from learner.losses import token_logprobs
from learner.sampling import position_ids_for


def sequence_logprobs(
    model: PreTrainedModel, sequences_B_T: torch.Tensor, attention_mask_B_T: torch.Tensor
) -> torch.Tensor:
    """`out[:, t] = log p(seq[:, t] | seq[:, :t])`, shape [B, T]; position 0 gets 0.

    One forward pass; grads flow when called outside `torch.no_grad()`.
    """
    logits_B_T_V = model(
        input_ids=sequences_B_T,
        attention_mask=attention_mask_B_T.long(),
        position_ids=position_ids_for(attention_mask_B_T),
        use_cache=False,
    ).logits
    lp_B_Tm1 = token_logprobs(logits_B_T_V[:, :-1], sequences_B_T[:, 1:])
    return torch.cat([torch.zeros_like(lp_B_Tm1[:, :1]), lp_B_Tm1], dim=1)


def completion_logprobs(
    model: PreTrainedModel,
    sequences_B_T: torch.Tensor,
    attention_mask_B_T: torch.Tensor,
    completion_mask_B_T: torch.Tensor,
    chunks: int = 4,
) -> torch.Tensor:
    """`sequence_logprobs` on the completion tokens only (0 elsewhere), shape [B, T], float32.

    What OPD's teacher scoring and update need, for less work (bench/opd_throughput.py): a sampled
    batch is about half padding (left-padded prompts of different lengths, completions that
    stopped early), so rows are sorted by where their tokens start and scored in `chunks` groups,
    each cut to the columns its rows use; and the vocabulary projection and log-softmax run only
    from the first completion position on (`logits_to_keep`), not over the prompts.
    Grads flow when called outside `torch.no_grad()`.
    """
    B, T = sequences_B_T.shape
    device = sequences_B_T.device
    out_B_T = torch.zeros(B, T, device=device)
    first_real_B = attention_mask_B_T.float().argmax(-1)  # left padding before it
    order_B = torch.argsort(first_real_B, stable=True)
    for rows_R in order_B.chunk(max(1, min(chunks, B))):
        attention_R_T = attention_mask_B_T[rows_R]
        completion_R_T = completion_mask_B_T[rows_R].bool()
        used_T, scored_T = attention_R_T.bool().any(0), completion_R_T.any(0)
        if not scored_T.any():
            continue
        start = int(used_T.nonzero()[0])
        end = int(used_T.nonzero()[-1]) + 1
        first = max(int(scored_T.nonzero()[0]), start + 1)  # the first token has no context
        seq_R_C = sequences_B_T[rows_R, start:end]
        mask_R_C = attention_R_T[:, start:end]
        logits_R_K_V = model(
            input_ids=seq_R_C,
            attention_mask=mask_R_C.long(),
            position_ids=position_ids_for(mask_R_C),
            use_cache=False,
            logits_to_keep=end - first + 1,  # positions first-1 .. end-1; the last predicts nothing
        ).logits
        lp_R_K = token_logprobs(logits_R_K_V[:, :-1], sequences_B_T[rows_R, first:end])
        cols_K = torch.arange(first, end, device=device)
        out_B_T[rows_R[:, None], cols_K[None, :]] = lp_R_K * completion_R_T[:, first:end]
    return out_B_T
