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
