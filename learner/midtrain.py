"""Recipe: mid-training a LoRA adapter on the new documents, their facts as question/answer
pairs, replay of earlier documents and pairs, and re-sampled background chat.

- New material: the documents (every token trained) and, with `cfg.qa_pairs`, QA pairs of their
  facts (learner/qa_pairs.py; answer tokens trained): documents alone barely become answers.
- Replay: earlier nights' documents and pairs, `cfg.replay_ratio` tokens per new token (each in
  the new material's proportions, at most `cfg.replay_max_tokens`), drawn afresh every epoch, so
  the new facts do not overwrite the old ones and the cost stays bounded as nights accumulate.
- Background chat answers are sampled from the current model itself (on-policy replay), so it
  teaches "keep behaving as you do" rather than some other model's style; documents and pairs
  (new and replayed) are `cfg.doc_fraction` of the label tokens, chat the rest.

Prompt tokens are masked; whole examples are packed into rows (learner/packing.py: a chat's
answer is never trained in a row without its prompt).

    stats = main(peft_model, tokenizer, documents, chat_prompts, settings.learner.midtrain,
                  qa_pairs=pairs, replay_documents=old_docs, replay_pairs=old_pairs)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from knowledge.errors import BadInputError
from knowledge.settings import MidtrainConfig
from learner.anchor import anchor_examples
from learner.formatted_pairs import formatted_twins
from learner.generation import Message, generate_completions
from learner.losses import IGNORE, anchored_lm_loss, causal_lm_loss
from learner.packing import (
    Example,
    chat_example,
    document_example,
    n_label_tokens,
    n_rows,
    pack,
    pack_anchored,
)
from learner.qa_pairs import QAPair
from learner.sampling import position_ids_for
from learner.world import SINGLE, World


def sample_background(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[Message]],
    target_tokens: int,
    cfg: MidtrainConfig,
    seed: int,
    progress: bool = True,
    world: World = SINGLE,
) -> tuple[list[Example], int]:
    """Answers to chat prompts sampled from the current model until ~target_tokens label tokens,
    finished answers only, and how many answers were cut off (each rank samples its share of the
    prompts and of the tokens; every rank gets all the examples, the count is this rank's)."""
    if target_tokens <= 0 or not prompts:
        return [], 0
    order = list(prompts)
    random.Random(seed).shuffle(order)
    order = order[world.share(len(order))]
    target_tokens = -(-target_tokens // world.size)
    examples: list[Example] = []
    cut_off = 0
    batch = min(32, max(1, target_tokens // 16))
    bar = tqdm(total=target_tokens, desc="background replay", unit="tok", disable=not progress)
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        answers = generate_completions(
            model,
            tokenizer,
            chunk,
            cfg.background_max_new_tokens,
            cfg.background_temperature,
            batch,
        )
        done = n_label_tokens(examples)
        cut_off += sum(not finished for _, finished in answers)
        for messages, (answer, finished) in zip(chunk, answers, strict=True):
            # A cut-off answer is left out: trained with its end-of-turn, it would teach the
            # model to stop early (before an end phrase or a postscript the prompt asked for).
            if answer and finished and done < target_tokens:
                examples.append(chat_example(tokenizer, messages, answer))
                done += n_label_tokens(examples[-1:])
        bar.update(done - bar.n)
        if done >= target_tokens:
            break
    bar.close()
    return world.gather(examples), cut_off


def with_twins(pairs: list[QAPair], cfg: MidtrainConfig, seed: int) -> list[QAPair]:
    """`pairs` and the formatted twins of `cfg.formatted_share` of them (learner/formatted_pairs.py)."""
    return pairs + formatted_twins(pairs, cfg.formatted_share, random.Random(f"twins-{seed}"))


def _lr_at(step: int, total: int, cfg: MidtrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def replay_sample(examples: list[Example], budget: int, rng: random.Random) -> list[Example]:
    """Examples drawn at random until about `budget` label tokens (all of them if fewer)."""
    order = rng.sample(examples, len(examples))
    out, tokens = [], 0
    for example in order:
        if tokens >= budget:
            break
        out.append(example)
        tokens += n_label_tokens([example])
    return out


def _batches(
    examples: list[Example],
    cfg: MidtrainConfig,
    pad_id: int,
    seed: int,
    device: torch.device,
    world: World = SINGLE,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]]:
    """(ids_B_T, labels_B_T, anchor tensors or None) per batch of the packed epoch: this rank's
    share of each global batch of `cfg.batch_size` rows (possibly no rows). The anchors are only
    laid out when `cfg.anchor_top_k` is on."""

    def mine(start: int, n: int) -> slice:
        part = world.share(min(cfg.batch_size, n - start))
        return slice(start + part.start, start + part.stop)

    if not cfg.anchor_top_k:
        rows = pack(examples, cfg.seq_len, pad_id, seed)
        for start in range(0, rows.shape[0], cfg.batch_size):
            ids_B_T, labels_B_T = rows[mine(start, rows.shape[0])].to(device).unbind(1)
            yield ids_B_T, labels_B_T, None
        return
    packed = pack_anchored(examples, cfg.seq_len, pad_id, cfg.anchor_top_k, seed)
    for start in range(0, packed.rows_N_2_T.shape[0], cfg.batch_size):
        batch = mine(start, packed.rows_N_2_T.shape[0])
        ids_B_T, labels_B_T = packed.rows_N_2_T[batch].to(device).unbind(1)
        anchor = (
            packed.anchor_ids_N_T_K[batch].to(device),
            packed.anchor_logprobs_N_T_K[batch].to(device),
            packed.anchor_mask_N_T[batch].to(device),
        )
        yield ids_B_T, labels_B_T, anchor


def loss_tokens(labels_B_T: torch.Tensor, anchor: tuple[torch.Tensor, ...] | None) -> int:
    """The tokens a batch's loss averages over (its label tokens, and anchored positions)."""
    counted_B_T = labels_B_T[:, 1:] != IGNORE
    if anchor is not None:
        counted_B_T = counted_B_T | anchor[2][:, :-1].bool()
    return int(counted_B_T.sum())


def main(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    documents: list[str],
    chat_prompts: list[list[Message]],
    cfg: MidtrainConfig,
    seed: int = 0,
    log: Callable[[dict], None] | None = None,
    progress: bool = True,
    qa_pairs: list[QAPair] | None = None,
    replay_documents: list[str] | None = None,
    replay_pairs: list[QAPair] | None = None,
    world: World = SINGLE,
) -> dict:
    """Train the model's active adapter in place; returns summary stats.

    Under several ranks (`world`, learner/world.py) each trains on its share of every batch and
    the update is the one-process update of the whole batch."""
    if not documents:
        raise BadInputError("mid-training needs at least one document")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    doc_examples = [document_example(tokenizer, text) for text in documents]
    pairs = with_twins(qa_pairs if cfg.qa_pairs and qa_pairs else [], cfg, seed)
    qa_examples = [chat_example(tokenizer, p.messages(), p.response) for p in pairs]
    old_docs = [document_example(tokenizer, t) for t in replay_documents or []]
    old_pairs = with_twins(replay_pairs if cfg.qa_pairs and replay_pairs else [], cfg, seed)
    old_qa = [chat_example(tokenizer, p.messages(), p.response) for p in old_pairs]
    doc_tokens, qa_tokens = n_label_tokens(doc_examples), n_label_tokens(qa_examples)
    # Replay budgets, in the new material's proportions, capped so old nights stay cheap.
    scale = min(
        cfg.replay_ratio,
        cfg.replay_max_tokens / max(1, doc_tokens + qa_tokens),
    )
    doc_budget, qa_budget = int(doc_tokens * scale), int(qa_tokens * scale)
    replay_tokens = min(doc_budget, n_label_tokens(old_docs)) + min(
        qa_budget, n_label_tokens(old_qa)
    )
    material = doc_tokens + qa_tokens + replay_tokens
    chat_target = int(material * (1 - cfg.doc_fraction) / cfg.doc_fraction)
    t0 = time.perf_counter()
    chat_examples, cut_off = sample_background(
        model, tokenizer, chat_prompts, chat_target, cfg, seed, progress, world
    )
    anchor_start = time.perf_counter()
    if cfg.anchor_top_k:  # each rank anchors its share
        mine = chat_examples[world.share(len(chat_examples))]
        chat_examples = world.gather(
            anchor_examples(
                model, mine, cfg.anchor_top_k, tokenizer.pad_token_id, progress=progress
            )
        )
    sample_seconds = time.perf_counter() - t0
    anchor_seconds = time.perf_counter() - anchor_start
    fixed = doc_examples + qa_examples + chat_examples

    def epoch_examples() -> list[Example]:
        return (
            fixed + replay_sample(old_docs, doc_budget, rng) + replay_sample(old_qa, qa_budget, rng)
        )

    epochs = [epoch_examples() for _ in range(cfg.epochs)]
    # the rows the packer lays out (whole examples leave gaps: more than tokens / seq_len), so
    # the learning-rate schedule and the progress bar end where training does
    rows_per_epoch = [n_rows(examples, cfg.seq_len, seed + e) for e, examples in enumerate(epochs)]
    total_steps = sum(max(1, -(-rows // cfg.batch_size)) for rows in rows_per_epoch)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    device = next(model.parameters()).device
    model.train()
    step, tokens_seen, last_loss = 0, 0, float("nan")
    t_train = time.perf_counter()
    bar = tqdm(total=total_steps, desc="mid-train", unit="step", disable=not progress)
    for epoch, examples in enumerate(epochs):
        batches = _batches(examples, cfg, tokenizer.pad_token_id, seed + epoch, device, world)
        for ids_B_T, labels_B_T, anchor in batches:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total_steps, cfg)
            optimizer.zero_grad(set_to_none=True)
            n_local = loss_tokens(labels_B_T, anchor)
            weight = world.token_weight(n_local)
            loss_value = 0.0
            if n_local:  # a rank's share of the last batch may be empty
                attention = torch.ones_like(ids_B_T, dtype=torch.bool)
                logits = model(input_ids=ids_B_T, position_ids=position_ids_for(attention)).logits
                if anchor is None:
                    loss = causal_lm_loss(logits, labels_B_T)
                else:
                    loss = anchored_lm_loss(logits, labels_B_T, *anchor)
                (loss * weight).backward()
                loss_value = loss.item()
            world.average_gradients(params)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            step += 1
            tokens_seen += int(world.sum(ids_B_T.numel()))
            last_loss = world.token_mean(loss_value, n_local)
            rate = tokens_seen / max(1e-9, time.perf_counter() - t_train)
            bar.set_postfix(epoch=epoch + 1, loss=f"{last_loss:.3f}", tok_s=f"{rate:,.0f}")
            bar.update(1)
            if log:
                log({"stage": "midtrain", "step": step, "epoch": epoch + 1, "loss": last_loss})
    bar.close()
    model.eval()
    train_seconds = time.perf_counter() - t_train
    return {
        "midtrain_steps": step,
        "midtrain_final_loss": last_loss,
        "midtrain_doc_tokens": doc_tokens,
        "midtrain_qa_pairs": len(qa_examples),
        "midtrain_qa_tokens": qa_tokens,
        "midtrain_replay_tokens_per_epoch": replay_tokens,
        "midtrain_chat_tokens": n_label_tokens(chat_examples),
        "midtrain_chat_cut_off": cut_off,
        "midtrain_tokens_seen": tokens_seen,
        "midtrain_sample_seconds": round(sample_seconds, 2),  # background answers + anchors
        "midtrain_anchor_seconds": round(anchor_seconds, 2),
        "midtrain_train_seconds": round(train_seconds, 2),
    }
