"""Loss and advantage functions of mid-training and on-policy distillation (OPD).

Small functions over tensors; shapes in names: B batch, T tokens, V vocabulary.
Each is tested against a naive loop implementation in tests/test_losses.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def token_logprobs(logits_B_T_V: torch.Tensor, targets_B_T: torch.Tensor) -> torch.Tensor:
    """log p(target_t) under logits_t, shape [B, T]. Targets equal to IGNORE give 0."""
    safe_targets = targets_B_T.clamp(min=0)
    logprobs = torch.log_softmax(logits_B_T_V.float(), dim=-1)
    out_B_T = logprobs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    return out_B_T.masked_fill(targets_B_T == IGNORE, 0.0)


def causal_lm_loss(logits_B_T_V: torch.Tensor, labels_B_T: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; labels are aligned with inputs (shifted here), IGNORE masked."""
    shifted_logits = logits_B_T_V[:, :-1].reshape(-1, logits_B_T_V.shape[-1]).float()
    shifted_labels = labels_B_T[:, 1:].reshape(-1)
    return F.cross_entropy(shifted_logits, shifted_labels, ignore_index=IGNORE)


def anchored_lm_loss(
    logits_B_T_V: torch.Tensor,
    labels_B_T: torch.Tensor,
    anchor_ids_B_T_K: torch.Tensor,
    anchor_logprobs_B_T_K: torch.Tensor,
    anchor_mask_B_T: torch.Tensor,
) -> torch.Tensor:
    """Token-mean of two terms: cross-entropy on the labels of positions the anchor does not
    cover, and on anchored positions the cross-entropy against a reference model's top-K
    next-token distribution (renormalised over its K tokens): Learning without Forgetting.

    Row t of the anchor is the reference's distribution of the token after position t (aligned
    with the logits, not the labels); labels are aligned with inputs, as in `causal_lm_loss`.
    """
    logprobs_B_T_V = torch.log_softmax(logits_B_T_V[:, :-1].float(), dim=-1)
    labels = labels_B_T[:, 1:]
    anchored = anchor_mask_B_T[:, :-1]
    hard = (labels != IGNORE) & ~anchored
    hard_nll_B_T = -logprobs_B_T_V.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ref_probs_B_T_K = torch.softmax(anchor_logprobs_B_T_K[:, :-1].float(), dim=-1)
    student_B_T_K = logprobs_B_T_V.gather(-1, anchor_ids_B_T_K[:, :-1].long())
    soft_ce_B_T = -(ref_probs_B_T_K * student_B_T_K).sum(-1)
    total = (
        hard_nll_B_T.masked_fill(~hard, 0.0).sum() + soft_ce_B_T.masked_fill(~anchored, 0.0).sum()
    )
    return total / (hard.sum() + anchored.sum()).clamp(min=1)


def reverse_kl_advantages(
    student_logprobs_B_T: torch.Tensor,
    teacher_logprobs_B_T: torch.Tensor,
    mask_B_T: torch.Tensor,
    kl_coef: float = 1.0,
    discount: float = 0.0,
) -> torch.Tensor:
    """Per-token advantage `-kl_coef * (logp_student - logp_teacher)` of each sampled token.

    With `discount` > 0 each token also receives the discounted advantages of the completion
    tokens after it (a per-token return); discount 0 is the reference recipe.
    """
    mask = mask_B_T.to(student_logprobs_B_T.dtype)
    per_token_B_T = -kl_coef * (student_logprobs_B_T - teacher_logprobs_B_T) * mask
    if discount == 0.0:
        return per_token_B_T.detach()
    returns_B_T = torch.zeros_like(per_token_B_T)
    running_B = torch.zeros_like(per_token_B_T[:, 0])
    for t in range(per_token_B_T.shape[1] - 1, -1, -1):
        running_B = per_token_B_T[:, t] + discount * running_B * mask[:, t]
        returns_B_T[:, t] = running_B
    return (returns_B_T * mask).detach()


def importance_sampling_loss(
    train_logprobs_B_T: torch.Tensor,
    sampler_logprobs_B_T: torch.Tensor,
    advantages_B_T: torch.Tensor,
    mask_B_T: torch.Tensor,
) -> torch.Tensor:
    """`-sum(exp(logp_train - logp_sampler) * A) / n_completion_tokens` over masked tokens.

    The ratio corrects for the sampler's policy differing from the one being trained (stale
    weights, another engine); its gradient is the policy gradient weighted by the advantage.
    """
    mask = mask_B_T.to(train_logprobs_B_T.dtype)
    ratio_B_T = torch.exp(train_logprobs_B_T - sampler_logprobs_B_T.detach())
    n_tokens = mask.sum().clamp(min=1.0)
    return -(ratio_B_T * advantages_B_T.detach() * mask).sum() / n_tokens


def mean_reverse_kl(
    student_logprobs_B_T: torch.Tensor, teacher_logprobs_B_T: torch.Tensor, mask_B_T: torch.Tensor
) -> float:
    """Monte-Carlo estimate of KL(student || teacher) per completion token (the OPD metric)."""
    mask = mask_B_T.to(student_logprobs_B_T.dtype)
    diff = (student_logprobs_B_T - teacher_logprobs_B_T) * mask
    return float(diff.sum() / mask.sum().clamp(min=1.0))


def group_relative_advantages(
    rewards_B: torch.Tensor, group_size: int, mask_B_T: torch.Tensor
) -> torch.Tensor:
    """RL baseline of the restore-cost bench: each sample's reward minus its group's mean reward
    (the `group_size` answers to one prompt), broadcast over the sample's completion tokens.

    Rows are grouped consecutively (rows b*group_size .. (b+1)*group_size-1 answer prompt b).
    """
    grouped_G_N = rewards_B.float().view(-1, group_size)
    centred_B = (grouped_G_N - grouped_G_N.mean(dim=1, keepdim=True)).reshape(-1)
    return (centred_B[:, None] * mask_B_T.to(centred_B.dtype)).detach()
