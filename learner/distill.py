"""Recipe: on-policy distillation (OPD) of the student's adapter toward a teacher.

Each step: the student samples `group_size` answers per prompt at `temperature`; the teacher
returns the log-prob of every sampled token in one forward pass; the per-token advantage is
`-kl_coef * (logp_student - logp_teacher)` (reverse KL; discount 0 by default); the update
minimises the importance-sampling policy-gradient loss over completion tokens.

The cross-entropy of the new facts' QA pairs can be kept on beside the OPD loss
(`qa_ce_weight`, optionally annealed to 0), so OPD restores behaviour without removing them.

Questions about the new documents (`doc_prompts`, learner/doc_questions.py) fill
`doc_question_share` of each step's prompts; with `privileged_context` the teacher scores their
answers with the retrieved passages in its prompt (learner/teachers/privileged.py).

The general prompts can be scored by another teacher (`general_teacher`: the raw base with
`models.general_teacher: base`, learner/teachers/factory.general_teacher) than the questions about
company documents.

Questions about earlier nights' documents (`earlier_prompts`) fill `earlier_question_share` of
each step's prompts: the teacher, the model served when the cycle started, knows those answers,
so OPD restores what mid-training blurred of them, as it does for what the base knew.

    stats = main(peft_model, tokenizer, teacher, prompts, settings.learner.distill)
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from knowledge.errors import BadInputError
from knowledge.settings import DistillConfig
from learner.generation import Message
from learner.instruction_reward import checker_rewards, draw_instructed, instructable
from learner.losses import (
    IGNORE,
    causal_lm_loss,
    group_relative_advantages,
    importance_sampling_loss,
    mean_reverse_kl,
    reverse_kl_advantages,
)
from learner.packing import Example, chat_example, pack
from learner.qa_pairs import QAPair
from learner.sampling import LocalSampler, SampleBatch, Sampler, position_ids_for
from learner.scoring import completion_logprobs
from learner.teachers import Teacher
from learner.teachers.privileged import ContextPrompt, Passages, logprobs_with_context
from learner.world import SINGLE, World

QA_SEQ_LEN = 128  # rows the QA pairs are packed into for the cross-entropy term


def policy_gradient_step(
    model: PeftModel,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batch: SampleBatch,
    advantages_B_T: torch.Tensor,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    world: World = SINGLE,
) -> float:
    """One update with the importance-sampling loss on `batch`'s completion tokens (plus
    `extra_loss()`, e.g. the QA cross-entropy); returns the policy-gradient loss (over all
    ranks' tokens: each rank passes its share of the step's samples).

    OPD's update (advantages from the teacher); bench/restore_cost.py's RL baseline uses it too.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    n_local = batch.n_completion_tokens
    weight = world.token_weight(n_local)
    total = torch.zeros(())
    loss_value = 0.0
    if n_local:
        mask_B_T = batch.completion_mask_B_T
        train_lp_B_T = completion_logprobs(
            model, batch.sequences_B_T, batch.attention_mask_B_T, mask_B_T
        )
        loss = importance_sampling_loss(
            train_lp_B_T, batch.sampler_logprobs_B_T, advantages_B_T, mask_B_T
        )
        total = loss * weight
        loss_value = loss.item()
    if extra_loss is not None:
        total = total + extra_loss()
    if total.requires_grad:
        total.backward()
    world.average_gradients(params)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    model.eval()
    return world.token_mean(loss_value, n_local)


def qa_cross_entropy(
    model: PeftModel,
    examples: list[Example],
    n: int,
    seq_len: int,
    pad_id: int,
    rng: random.Random,
    world: World = SINGLE,
) -> torch.Tensor:
    """Mean next-token cross-entropy on `n` QA examples drawn at random (answer tokens only);
    under several ranks each computes its share of the rows, weighted as in learner/world.py."""
    rows = pack(rng.sample(examples, min(n, len(examples))), seq_len, pad_id, rng.randrange(2**31))
    rows = rows[world.share(rows.shape[0])]
    ids_B_T, labels_B_T = rows.to(next(model.parameters()).device).unbind(1)
    n_local = int((labels_B_T[:, 1:] != IGNORE).sum())
    weight = world.token_weight(n_local)
    if not n_local:
        return torch.zeros(())
    attention = torch.ones_like(ids_B_T, dtype=torch.bool)
    logits = model(input_ids=ids_B_T, position_ids=position_ids_for(attention)).logits
    return causal_lm_loss(logits, labels_B_T) * weight


def _weighted_qa_loss(
    weight: float,
    model: PeftModel,
    examples: list[Example],
    n: int,
    pad_id: int,
    rng: random.Random,
    world: World,
) -> torch.Tensor:
    return weight * qa_cross_entropy(model, examples, n, QA_SEQ_LEN, pad_id, rng, world)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _sum_of(terms: list[Callable[[], torch.Tensor]]) -> torch.Tensor:
    return sum((term() for term in terms), torch.zeros(()))


def qa_weight(cfg: DistillConfig, step: int) -> float:
    """The QA cross-entropy's weight at `step`: constant, or linearly down to 0 when annealed."""
    if not cfg.qa_ce_anneal:
        return cfg.qa_ce_weight
    return cfg.qa_ce_weight * (1 - step / max(1, cfg.steps))


def main(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    teacher: Teacher,
    prompts: list[list[Message]],
    cfg: DistillConfig,
    seed: int = 0,
    sampler: Sampler | None = None,
    log: Callable[[dict], None] | None = None,
    progress: bool = True,
    doc_prompts: list[ContextPrompt] | None = None,
    qa_pairs: list[QAPair] | None = None,
    earlier_prompts: list[list[Message]] | None = None,
    replay_pairs: list[QAPair] | None = None,
    general_teacher: Teacher | None = None,
    world: World = SINGLE,
) -> dict:
    """Train the model's active adapter in place; returns summary stats.

    Under several ranks (`world`, learner/world.py) every rank draws the same step's prompts,
    samples and scores its share of them, and the update is the one-process update of all.

    With `qa_pairs` and `cfg.qa_ce_weight` > 0 each step also minimises the cross-entropy of
    `cfg.qa_ce_pairs_per_step` of those pairs (the new facts stay while OPD restores behaviour:
    the teacher does not know them and would pull them out otherwise), and of
    `cfg.qa_ce_replay_pairs_per_step` of `replay_pairs` at the full weight (earlier knowledge).

    With `general_teacher`, that teacher scores the answers to `prompts` (the general prompts,
    instructed ones included) and `teacher` those to the earlier and document questions.
    """
    if not prompts:
        raise BadInputError("OPD needs at least one prompt")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    sampler = sampler or LocalSampler(model, tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=0.0
    )  # constant LR, as the reference
    timings = {"sample": 0.0, "teacher": 0.0, "update": 0.0}
    student_tokens, kls = 0, []
    doc_prompts = doc_prompts or []
    qa_examples = [chat_example(tokenizer, p.messages(), p.response) for p in qa_pairs or []]
    n_replay = cfg.qa_ce_replay_pairs_per_step if cfg.qa_ce_weight > 0 else 0
    replay_examples = [
        chat_example(tokenizer, p.messages(), p.response)
        for p in (replay_pairs or [] if n_replay else [])
    ]
    n_doc = min(len(doc_prompts), round(cfg.doc_question_share * cfg.prompts_per_step))
    earlier_prompts = earlier_prompts or []
    n_earlier = min(len(earlier_prompts), round(cfg.earlier_question_share * cfg.prompts_per_step))
    stems = instructable(prompts) if cfg.instruction_reward > 0 else []
    n_instructed = min(cfg.instruction_prompts_per_step, len(stems))
    n_general = min(cfg.prompts_per_step - n_doc - n_earlier - n_instructed, len(prompts))
    rewards: list[float] = []  # each step's mean checker reward on the instructed prompts
    bar = tqdm(range(cfg.steps), desc="distill (OPD)", unit="step", disable=not progress)
    for step in bar:
        batch_prompts = rng.sample(prompts, n_general) + rng.sample(earlier_prompts, n_earlier)
        instructed = draw_instructed(stems, rng, n_instructed) if n_instructed else []
        instructions = [None] * len(batch_prompts) + [d.instructions for d in instructed]
        batch_prompts += [d.messages for d in instructed]
        general = [i < n_general or i >= n_general + n_earlier for i in range(len(batch_prompts))]
        contexts: list[Passages | None] = [None] * len(batch_prompts)
        if n_doc:
            docs = rng.sample(doc_prompts, n_doc)
            batch_prompts += [d.messages for d in docs]
            contexts += [d.passages if cfg.privileged_context else None for d in docs]
            instructions += [None] * len(docs)
            general += [False] * len(docs)
        mine = world.share(len(batch_prompts))
        batch_prompts, contexts, instructions, general = (
            batch_prompts[mine], contexts[mine], instructions[mine], general[mine]
        )  # fmt: skip
        t0 = time.perf_counter()
        batch = sampler.sample(batch_prompts, cfg.group_size, cfg.temperature, cfg.max_new_tokens)
        t1 = time.perf_counter()
        if general_teacher is None:
            general = [False] * len(general)
        general_B = torch.tensor([general[i] for i in batch.prompt_index_B], dtype=torch.bool)
        teacher_lp_B_T = torch.zeros_like(batch.sampler_logprobs_B_T)
        if general_B.any():  # each row scored by one teacher only
            teacher_lp_B_T[general_B] = general_teacher.logprobs(batch.rows(general_B)).float()
        if not general_B.all():
            rest = batch.rows(~general_B)
            if any(contexts):
                rows = rest.prompt_index_B  # each sampled row's prompt and context
                prompts_B = [batch_prompts[i] for i in rows]
                contexts_B = [contexts[i] for i in rows]
                rest_lp = logprobs_with_context(teacher, tokenizer, rest, prompts_B, contexts_B)
            else:
                rest_lp = teacher.logprobs(rest)
            teacher_lp_B_T[~general_B] = rest_lp.float()
        t2 = time.perf_counter()
        mask_B_T = batch.completion_mask_B_T
        advantages_B_T = reverse_kl_advantages(
            batch.sampler_logprobs_B_T, teacher_lp_B_T, mask_B_T, cfg.kl_coef, cfg.discount
        )
        if n_instructed:
            rewards_B = checker_rewards(tokenizer, batch, instructions)
            advantages_B_T = advantages_B_T + cfg.instruction_reward * group_relative_advantages(
                rewards_B, cfg.group_size, mask_B_T
            )
            scored = [i is not None for i in instructions]
            n_scored = cfg.group_size * sum(scored)
            rewards.append(world.sum(float(rewards_B.sum())) / max(1.0, world.sum(n_scored)))
        weight = qa_weight(cfg, step) if qa_examples else 0.0
        terms = []
        if weight > 0:
            terms.append(functools.partial(
                _weighted_qa_loss, weight, model, qa_examples, cfg.qa_ce_pairs_per_step,
                tokenizer.pad_token_id, rng, world,
            ))  # fmt: skip
        if replay_examples:
            terms.append(functools.partial(
                _weighted_qa_loss, cfg.qa_ce_weight, model, replay_examples, n_replay,
                tokenizer.pad_token_id, rng, world,
            ))  # fmt: skip
        extra = functools.partial(_sum_of, terms) if terms else None
        loss = policy_gradient_step(model, optimizer, params, batch, advantages_B_T, extra, world)
        t3 = time.perf_counter()
        timings["sample"] += t1 - t0
        timings["teacher"] += t2 - t1
        timings["update"] += t3 - t2
        kl = world.token_mean(
            mean_reverse_kl(batch.sampler_logprobs_B_T, teacher_lp_B_T, mask_B_T),
            batch.n_completion_tokens,
        )
        kls.append(kl)
        step_tokens = int(world.sum(batch.n_completion_tokens))
        student_tokens += step_tokens
        bar.set_postfix(
            reverse_kl=f"{kl:.3f}", tok_s=f"{student_tokens / sum(timings.values()):,.0f}"
        )
        if log:
            log(
                {
                    "stage": "distill",
                    "step": step + 1,
                    "reverse_kl": kl,
                    "loss": loss,
                    "completion_tokens": step_tokens,
                    **({"instruction_reward": rewards[-1]} if n_instructed else {}),
                }
            )
    return {
        "distill_steps": cfg.steps,
        "distill_teacher": teacher.name,
        "distill_general_teacher": (general_teacher or teacher).name,
        "distill_doc_prompts": len(doc_prompts),
        "distill_doc_prompts_per_step": n_doc,
        "distill_privileged_context": cfg.privileged_context and n_doc > 0,
        "distill_earlier_prompts": len(earlier_prompts),
        "distill_earlier_prompts_per_step": n_earlier,
        "distill_reverse_kl_first": kls[0] if kls else None,
        "distill_reverse_kl_last": kls[-1] if kls else None,
        "distill_student_tokens": student_tokens,
        "distill_qa_ce_pairs": len(qa_examples) if cfg.qa_ce_weight > 0 else 0,
        "distill_qa_ce_replay_pairs": len(replay_examples),
        "distill_instructed_prompts_per_step": n_instructed,
        "distill_instruction_reward_first": _mean(rewards[:10]),
        "distill_instruction_reward_last": _mean(rewards[-10:]),
        **{f"distill_{k}_seconds": round(v, 2) for k, v in timings.items()},
    }
