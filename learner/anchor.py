"""Anchoring mid-training to the model it starts from (Learning without Forgetting, Li & Hoiem).

Before the first step, the model that the cycle starts from (the served one: the trained adapter
is still unchanged) reads every background chat example once. Its top-K next-token distribution
at each answer position becomes that example's target, in place of the one sampled answer token:
the background then keeps the whole distribution (what the model would also have said, how sure
it was), not only its argmax, which pulls less of the model's behaviour toward the new material.

    examples = anchor_examples(model, chat_examples, k=16, pad_id=tokenizer.pad_token_id)
"""

from __future__ import annotations

import torch
from peft import PeftModel
from tqdm.auto import tqdm

from learner.losses import IGNORE
from learner.packing import Anchor, Example
from learner.sampling import position_ids_for


@torch.no_grad()
def anchor_examples(
    model: PeftModel,
    examples: list[Example],
    k: int,
    pad_id: int,
    batch_size: int = 16,
    progress: bool = True,
) -> list[Example]:
    """The examples with the model's top-k next-token log-probs at every position whose next
    token is a label (row t: the token after position t)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[Example] = []
    bar = tqdm(total=len(examples), desc="anchor targets", unit="ex", disable=not progress)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        width = max(len(ex.input_ids) for ex in chunk)
        ids_B_T = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_B_T = torch.zeros(len(chunk), width, dtype=torch.bool)
        for row, ex in enumerate(chunk):
            ids_B_T[row, : len(ex.input_ids)] = torch.tensor(ex.input_ids)
            attention_B_T[row, : len(ex.input_ids)] = True
        ids_B_T, attention_B_T = ids_B_T.to(device), attention_B_T.to(device)
        logits_B_T_V = model(
            input_ids=ids_B_T,
            attention_mask=attention_B_T,
            position_ids=position_ids_for(attention_B_T),
        ).logits
        top = torch.log_softmax(logits_B_T_V.float(), dim=-1).topk(k, dim=-1)
        for row, ex in enumerate(chunk):
            length = len(ex.input_ids)
            labels_L = torch.tensor(ex.labels)
            mask_L = torch.zeros(length, dtype=torch.bool)
            mask_L[:-1] = labels_L[1:] != IGNORE
            anchor = Anchor(
                top.indices[row, :length].to(torch.int32).cpu(),
                top.values[row, :length].cpu(),
                mask_L,
            )
            out.append(Example(ex.input_ids, ex.labels, anchor))
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return out
