"""Log-probabilities of given token sequences under a model (teacher scoring, OPD updates)."""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

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
    share_prompts: bool = True,
) -> torch.Tensor:
    """`sequence_logprobs` on the completion tokens only (0 elsewhere), shape [B, T], float32.

    What OPD's teacher scoring and update need, for less work (bench/opd_throughput.py): a sampled
    batch is about half padding (left-padded prompts of different lengths, completions that
    stopped early), so rows are sorted by where their tokens start and scored in `chunks` groups,
    each cut to the columns its rows use; and the vocabulary projection and log-softmax run only
    from the first completion position on (`logits_to_keep`), not over the prompts.
    Rows that share their prompt (OPD samples `group_size` answers per prompt) are scored with
    the prompt run once per distinct prompt (`shared_prompt_logprobs`; `share_prompts=False`
    only for bench/opd_step_speed.py's side-by-side).
    Grads flow when called outside `torch.no_grad()`.
    """
    B, T = sequences_B_T.shape
    device = sequences_B_T.device
    shared = (
        shared_prompt_logprobs(model, sequences_B_T, attention_mask_B_T, completion_mask_B_T)
        if share_prompts
        else None
    )
    if shared is not None:
        return shared
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


def shared_prompt_logprobs(
    model: PreTrainedModel,
    sequences_B_T: torch.Tensor,
    attention_mask_B_T: torch.Tensor,
    completion_mask_B_T: torch.Tensor,
    chunks: int = 2,
) -> torch.Tensor | None:
    """`completion_logprobs` with the prompt part run once per distinct prompt, or None where
    no two rows share it (or there is no prompt part).

    The prompt part is every column before the last one ahead of the first completion token: its
    keys and values are computed for the U distinct rows, copied to the B rows (an index, so
    grads flow back into the one prompt pass), and the B rows continue from the last prompt
    token, in `chunks` groups of rows of similar answer length. A sandbox OPD batch holds 16
    prompts x 4 answers of ~27 tokens after prompts of ~100-250: the prompts were most of the
    scoring and update work, and the answers' padding most of the rest.
    """
    scored_T = completion_mask_B_T.bool().any(0)
    if not scored_T.any():
        return torch.zeros(sequences_B_T.shape, device=sequences_B_T.device)
    used_T = attention_mask_B_T.bool().any(0)
    start = int(used_T.nonzero()[0])
    split = int(scored_T.nonzero()[0]) - 1  # the last prompt column: it predicts the first token
    if split - start < 1:
        return None
    prefix_B_P = torch.cat([sequences_B_T[:, start:split], attention_mask_B_T[:, start:split]], 1)
    unique_U_P, row_to_unique_B = torch.unique(prefix_B_P, dim=0, return_inverse=True)
    if len(unique_U_P) == len(prefix_B_P):
        return None
    ids_U_P, mask_U_P = unique_U_P.chunk(2, dim=1)
    if not mask_U_P.bool().any(1).all():  # a row with no prompt token: nothing to attend to
        return None
    prompt = DynamicCache(config=model.config)
    model(
        input_ids=ids_U_P,
        attention_mask=mask_U_P.long(),
        position_ids=position_ids_for(mask_U_P),
        cache=prompt,
        use_cache=True,
        logits_to_keep=1,
    )
    # The rows continue in `chunks` groups sorted by where their completion ends, each cut to
    # the columns its rows use: answers stop at very different lengths (a sandbox OPD batch's
    # average is under half its longest), and the continuation is most of the remaining work.
    last_B = completion_mask_B_T.float().cumsum(1).argmax(1)  # the last scored column
    out_B_T = torch.zeros(sequences_B_T.shape, device=sequences_B_T.device)
    for rows_R in torch.argsort(last_B, stable=True).chunk(max(1, min(chunks, len(last_B)))):
        stop = int(last_B[rows_R].max()) + 1
        if stop <= split + 1:  # no completion token in these rows
            continue
        cache = DynamicCache(config=model.config)
        for i, layer in enumerate(prompt.layers):  # an index: grads reach the one prompt pass
            cache.update(
                layer.keys[row_to_unique_B[rows_R]], layer.values[row_to_unique_B[rows_R]], i
            )
        mask_R_C = attention_mask_B_T[rows_R, start:stop]
        logits_R_S_V = model(
            input_ids=sequences_B_T[rows_R, split:stop],
            attention_mask=mask_R_C.long(),
            position_ids=position_ids_for(mask_R_C)[:, split - start :],
            cache=cache,
            use_cache=True,
        ).logits
        lp_R_S = token_logprobs(logits_R_S_V[:, :-1], sequences_B_T[rows_R, split + 1 : stop])
        cols_S = torch.arange(split + 1, stop, device=sequences_B_T.device)
        out_B_T[rows_R[:, None], cols_S[None, :]] = (
            lp_R_S * completion_mask_B_T[rows_R, split + 1 : stop]
        )
    return out_B_T
