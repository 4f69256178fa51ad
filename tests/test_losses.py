"""Losses and advantages against naive loop implementations."""

import math

import torch

from learner.losses import (
    IGNORE,
    anchored_lm_loss,
    causal_lm_loss,
    group_relative_advantages,
    importance_sampling_loss,
    mean_reverse_kl,
    reverse_kl_advantages,
    token_logprobs,
)


def _naive_advantages(student, teacher, mask, kl_coef, discount):
    B, T = student.shape
    out = torch.zeros(B, T)
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            total, power = 0.0, 1.0
            for k in range(t, T):
                if not mask[b, k]:
                    break
                total += power * (-kl_coef * (student[b, k] - teacher[b, k]).item())
                power *= discount
                if discount == 0.0:
                    break
            out[b, t] = total
    return out


def test_advantages_match_naive_reference():
    torch.manual_seed(0)
    student, teacher = -torch.rand(3, 7) * 3, -torch.rand(3, 7) * 3
    mask = torch.tensor(
        [[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]]
    ).bool()
    for kl_coef, discount in [(1.0, 0.0), (0.5, 0.0), (1.0, 0.9), (2.0, 1.0)]:
        got = reverse_kl_advantages(student, teacher, mask, kl_coef, discount)
        want = _naive_advantages(student, teacher, mask, kl_coef, discount)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_importance_sampling_loss_matches_naive_and_gradient():
    torch.manual_seed(1)
    train = (-torch.rand(2, 5) * 2).requires_grad_(True)
    sampler = train.detach() + 0.1 * torch.randn(2, 5)
    adv = torch.randn(2, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]).bool()
    loss = importance_sampling_loss(train, sampler, adv, mask)
    total, n = 0.0, 0
    for b in range(2):
        for t in range(5):
            if mask[b, t]:
                total += math.exp(train[b, t].item() - sampler[b, t].item()) * adv[b, t].item()
                n += 1
    assert abs(loss.item() - (-total / n)) < 1e-5
    loss.backward()
    # d/d(train) of -ratio*A/n = -ratio*A/n on masked tokens, 0 elsewhere
    ratio = torch.exp(train.detach() - sampler)
    want = torch.where(mask, -ratio * adv / n, torch.zeros_like(adv))
    torch.testing.assert_close(train.grad, want)


def test_on_policy_gradient_is_policy_gradient():
    """When sampler == train policy the ratio is 1 and the gradient is -A * grad(logp) / n."""
    logits = torch.randn(1, 4, 6, requires_grad=True)
    targets = torch.tensor([[1, 2, 3, 4]])
    lp = token_logprobs(logits, targets)
    adv = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    importance_sampling_loss(lp, lp.detach(), adv, mask).backward()
    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = sum(
        -adv[0, t] * torch.log_softmax(ref_logits[0, t], -1)[targets[0, t]] / 4 for t in range(4)
    )
    ref.backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)


def test_token_logprobs_and_lm_loss_match_naive():
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 5)
    targets = torch.tensor([[1, 0, IGNORE, 3], [4, 4, 2, IGNORE]])
    got = token_logprobs(logits, targets)
    for b in range(2):
        for t in range(4):
            want = (
                0.0
                if targets[b, t] == IGNORE
                else torch.log_softmax(logits[b, t], -1)[targets[b, t]]
            )
            assert abs(got[b, t].item() - float(want)) < 1e-5
    labels = torch.tensor([[IGNORE, 1, 2, 3], [IGNORE, IGNORE, 0, 1]])
    terms = [
        -torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
        for b in range(2)
        for t in range(1, 4)
        if labels[b, t] != IGNORE
    ]
    assert abs(causal_lm_loss(logits, labels).item() - float(sum(terms) / len(terms))) < 1e-5


def test_mean_reverse_kl():
    s = torch.tensor([[-1.0, -2.0, -3.0]])
    t = torch.tensor([[-1.5, -2.0, -9.0]])
    mask = torch.tensor([[1, 1, 0]]).bool()
    assert abs(mean_reverse_kl(s, t, mask) - 0.25) < 1e-6


def test_group_relative_advantages_match_naive():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    mask = torch.rand(8, 5) > 0.3
    out = group_relative_advantages(rewards, group_size=4, mask_B_T=mask)
    for b in range(8):
        group = rewards[(b // 4) * 4 : (b // 4) * 4 + 4]
        expected = rewards[b].item() - sum(group.tolist()) / 4
        for t in range(5):
            assert math.isclose(out[b, t].item(), expected if mask[b, t] else 0.0, abs_tol=1e-6)
    assert out[4:].abs().sum() > 0  # a group with mixed rewards gets a signal
    assert (
        group_relative_advantages(torch.ones(4), 4, torch.ones(4, 3, dtype=torch.bool)).abs().sum()
        == 0
    )


def test_anchored_lm_loss_matches_naive_reference():
    torch.manual_seed(3)
    B, T, V, K = 2, 5, 7, 3
    logits = torch.randn(B, T, V)
    labels = torch.tensor([[IGNORE, 1, 2, 3, 4], [IGNORE, IGNORE, 0, 1, 6]])
    ref = torch.randn(B, T, V)
    top = torch.log_softmax(ref, -1).topk(K, -1)
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]).bool()  # row t: the token after t
    terms = []
    for b in range(B):
        for t in range(T - 1):
            logp = torch.log_softmax(logits[b, t], -1)
            if mask[b, t]:
                p_ref = torch.softmax(top.values[b, t], -1)
                terms.append(-sum(p_ref[j] * logp[top.indices[b, t, j]] for j in range(K)))
            elif labels[b, t + 1] != IGNORE:
                terms.append(-logp[labels[b, t + 1]])
    want = float(sum(terms) / len(terms))
    got = anchored_lm_loss(logits, labels, top.indices.int(), top.values, mask)
    assert abs(got.item() - want) < 1e-5
    # No anchored position: exactly the causal LM loss.
    none = torch.zeros(B, T, dtype=torch.bool)
    plain = anchored_lm_loss(logits, labels, top.indices, top.values, none)
    assert abs(plain.item() - causal_lm_loss(logits, labels).item()) < 1e-6
