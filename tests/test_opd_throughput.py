"""The faster OPD path (completion-only scoring, LoRA merged while sampling) and the TRL bench.

The bench smoke test (one step of protege's and TRL's OPD on tiny random models) skips without
trl (`make bench-setup`).
"""

import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen3Config, Qwen3ForCausalLM

from knowledge.settings import load_settings
from learner.generation import (
    chat_prompt,
    decode,
    generate_completions,
    lora_merged,
    sample_from,
)
from learner.modeling import load_tokenizer, stop_token_ids
from learner.sampling import LocalSampler
from learner.sandbox.tokenizer import train_tokenizer
from learner.scoring import completion_logprobs, sequence_logprobs, shared_prompt_logprobs

TEXTS = ["Ada Park works in the Berlin office and leads Project Falcon."] * 20 + [
    "Hello, how can I help you today? Please answer in lowercase."
] * 20
PROMPTS = [
    [{"role": "user", "content": "Where does Ada work?"}],
    [{"role": "user", "content": "Say hello in lowercase, please, now, and tell me more."}],
    [{"role": "user", "content": "Who?"}],
]


def _model(tok, hidden: int, seed: int) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        initializer_range=0.3,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return Qwen3ForCausalLM(cfg)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    train_tokenizer(TEXTS, 320, out / "tok")
    tok = load_tokenizer(out / "tok")
    for name, hidden, seed in (("student", 32, 0), ("teacher", 48, 1)):
        _model(tok, hidden, seed).save_pretrained(out / name)
        tok.save_pretrained(out / name)
    return out, tok


def _lora(out: Path):
    model = Qwen3ForCausalLM.from_pretrained(out / "student")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    peft = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    return peft.eval()


def test_completion_logprobs_equal_full_scoring_on_completions(tiny):
    out, tok = tiny
    model = _lora(out)
    batch = LocalSampler(model, tok).sample(PROMPTS, n=3, temperature=1.0, max_tokens=12)
    mask = batch.completion_mask_B_T
    with torch.no_grad():
        full = sequence_logprobs(model, batch.sequences_B_T, batch.attention_mask_B_T) * mask
        for chunks in (1, 2, 4, 100):
            fast = completion_logprobs(
                model, batch.sequences_B_T, batch.attention_mask_B_T, mask, chunks=chunks
            )
            torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    # grads flow through the chunks like through one forward pass
    grads = []
    for fn in (
        lambda: sequence_logprobs(model, batch.sequences_B_T, batch.attention_mask_B_T) * mask,
        lambda: completion_logprobs(model, batch.sequences_B_T, batch.attention_mask_B_T, mask),
    ):
        model.zero_grad()
        fn().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_rows_that_share_a_prompt_run_it_once(tiny):
    """OPD's batches (n answers per prompt) take the shared-prompt path, and it scores as every
    row run whole, values and grads, whatever the chunks of rows continued together (answers cut
    to different lengths); a batch of distinct prompts does not take it."""
    out, tok = tiny
    model = _lora(out)
    grouped = LocalSampler(model, tok).sample(PROMPTS, n=4, temperature=1.0, max_tokens=10)
    distinct = LocalSampler(model, tok).sample(PROMPTS, n=1, temperature=1.0, max_tokens=10)
    args = [grouped.sequences_B_T.clone(), grouped.attention_mask_B_T.clone()]
    args.append(grouped.completion_mask_B_T.clone())
    first = int(args[2].bool().any(0).nonzero()[0])
    for row in range(len(args[0])):  # answers of 1 to 7 tokens, as if they had stopped
        cut = first + 1 + row % 7
        args[0][row, cut:], args[1][row, cut:], args[2][row, cut:] = tok.pad_token_id, 0, 0
    with torch.no_grad():
        distinct_args = (distinct.sequences_B_T, distinct.attention_mask_B_T)
        assert shared_prompt_logprobs(model, *distinct_args, distinct.completion_mask_B_T) is None
        whole = completion_logprobs(model, *args, share_prompts=False)
        for chunks in (1, 2, 3, 100):
            shared = shared_prompt_logprobs(model, *args, chunks=chunks)
            torch.testing.assert_close(shared, whole, atol=1e-5, rtol=1e-5)
    grads = []
    for share in (False, True):
        model.zero_grad()
        completion_logprobs(model, *args, share_prompts=share).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_lora_merged_restores_the_exact_base_weights(tiny):
    out, _ = tiny
    model = _lora(out)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        with lora_merged(model):
            merged = model(input_ids=ids).logits
        again = model(input_ids=ids).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    assert torch.equal(again, unmerged)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_generation_with_the_lora_merged_answers_as_the_unmerged_model(tiny):
    out, tok = tiny
    model = _lora(out)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    answers = generate_completions(model, tok, PROMPTS, 8)  # merged, static KV cache
    reference = []
    for messages in PROMPTS:  # one at a time, unmerged, the default cache
        enc = tok(chat_prompt(tok, messages), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            ids = model.generate(
                **enc,
                max_new_tokens=8,
                do_sample=False,
                eos_token_id=stop_token_ids(tok),
                pad_token_id=tok.pad_token_id,
            )
        reference.append(tok.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    assert [text for text, _ in answers] == [r.strip() for r in reference]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_sample_from_draws_from_the_tempered_softmax():
    """The inverse-CDF draw against the distribution it claims: frequencies within 0.01 of
    softmax(logits / T) over 40,000 draws, a zero-probability token never drawn, and the
    returned log-prob that of the drawn token under the model's own softmax(logits)."""
    torch.manual_seed(0)
    logits_V = torch.tensor([2.0, 0.5, -1.0, float("-inf"), 1.0])
    for temperature in (1.0, 0.7):
        tokens_B, logprobs_B = sample_from(logits_V.expand(40_000, -1), temperature)
        expected_V = torch.softmax(logits_V / temperature, -1)
        freq_V = torch.bincount(tokens_B, minlength=5).float() / len(tokens_B)
        torch.testing.assert_close(freq_V, expected_V, atol=0.01, rtol=0)
        assert freq_V[3] == 0
        torch.testing.assert_close(logprobs_B, torch.log_softmax(logits_V, -1)[tokens_B])
    greedy_B, zero_B = sample_from(logits_V.expand(3, -1), 0.0)
    assert greedy_B.tolist() == [0, 0, 0] and zero_B.abs().sum() == 0


def _encoded_prompts(tok):  # noqa: ANN001, ANN202 - PROMPTS left-padded, as decode takes them
    return tok(
        [chat_prompt(tok, m) for m in PROMPTS],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )


def test_decode_stops_each_row_at_its_stop_token_and_pads_after(tiny):
    out, tok = tiny
    model = _lora(out)
    enc = _encoded_prompts(tok)
    stops = stop_token_ids(tok)
    torch.manual_seed(3)
    new_B_N, logprobs_B_N = decode(
        model, enc["input_ids"], enc["attention_mask"], 24, stops, tok.pad_token_id, 1.0
    )
    is_stop_B_N = torch.isin(new_B_N, torch.tensor(stops))
    after_B_N = (is_stop_B_N.long().cumsum(-1) - is_stop_B_N.long()) > 0
    assert (new_B_N[after_B_N] == tok.pad_token_id).all()
    assert (logprobs_B_N[after_B_N] == 0).all() and (logprobs_B_N[~after_B_N] < 0).all()
    if is_stop_B_N.any(1).all():  # every row stopped: nothing decoded past the last stop
        assert not after_B_N[:, -1].all()


def test_decode_drops_finished_rows_without_changing_the_others(tiny):
    """Rows that stop leave the batch (the cache is compacted): every row's greedy tokens equal
    the same batch decoded with no stop token, cut at its first stop and padded after."""
    out, tok = tiny
    model = _lora(out)
    enc = _encoded_prompts(tok)
    ids, mask, pad = enc["input_ids"], enc["attention_mask"], tok.pad_token_id
    full_B_N, _ = decode(model, ids, mask, 16, [], pad)
    stops = sorted({int(full_B_N[0, 2]), int(full_B_N[1 % len(PROMPTS), 5])})
    new_B_N, _ = decode(model, ids, mask, 16, stops, pad)
    expected_B_N = torch.full_like(full_B_N, pad)
    lengths = []
    for row, tokens in enumerate(full_B_N.tolist()):
        end = next((i + 1 for i, t in enumerate(tokens) if t in stops), len(tokens))
        expected_B_N[row, :end] = full_B_N[row, :end]
        lengths.append(end)
    assert len(set(lengths)) > 1  # rows finished at different steps: the batch was compacted
    assert torch.equal(new_B_N, expected_B_N[:, : new_B_N.shape[1]])


def test_bench_runs_one_step_of_protege_and_trl(tiny):
    pytest.importorskip("trl")
    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    import opd_throughput

    out, _ = tiny
    settings = load_settings("sandbox")
    settings.learner.lora.target_modules = ["q_proj", "v_proj"]
    settings.learner.distill = settings.learner.distill.model_copy(
        update={"prompts_per_step": 2, "group_size": 2, "max_new_tokens": 6}
    )
    for run in (opd_throughput.run_protege, opd_throughput.run_trl):
        result = run(settings, out / "student", out / "teacher", PROMPTS, 0, 1)
        assert result["tokens"] > 0
        assert set(result["seconds"]) == {"sample", "teacher", "update"}
        assert {"load", "sample", "teacher", "update"} <= set(result["peak_mb"])
