"""OPD mechanics on a tiny random Qwen3 model: sampler log-probs, masks, teachers, learning signal."""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Qwen3Config, Qwen3ForCausalLM

from knowledge.errors import IncompatibleTeacherError
from knowledge.settings import DistillConfig, MidtrainConfig, Settings
from learner import distill, instruction_reward, midtrain
from learner.doc_questions import earlier_questions
from learner.instruction_reward import carries_instruction
from learner.modeling import load_tokenizer, stop_token_ids
from learner.qa_pairs import QAPair
from learner.sampling import LocalSampler
from learner.sandbox.tokenizer import train_tokenizer
from learner.scoring import sequence_logprobs
from learner.teachers.base import BaseModelTeacher
from learner.teachers.local import LocalTeacher, check_compatible

TEXTS = ["Ada Park works in the Berlin office and leads Project Falcon."] * 30 + [
    "Hello, how can I help you today? Please answer in lowercase."
] * 30
PROMPTS = [
    [{"role": "user", "content": "Where does Ada work?"}],
    [{"role": "user", "content": "Say hello in lowercase, please, now."}],
    [{"role": "user", "content": "Who leads Falcon?"}],
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    train_tokenizer(TEXTS, 320, out / "tok")
    tok = load_tokenizer(out / "tok")
    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
        max_position_embeddings=256,
        initializer_range=0.3,
    )
    base = Qwen3ForCausalLM(cfg)
    base.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    return out, tok


def _student(out: Path, perturb: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM.from_pretrained(out / "model")
    peft = get_peft_model(
        model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    if perturb:
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_" in name:
                    p.normal_(0, perturb)
    return peft.eval()


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampler_logprobs_match_a_scoring_forward_pass(tiny, temperature):
    """At any sampling temperature the sampler returns the model's own log-probs (temperature 1),
    the ones the update's forward pass computes: OPD's advantage and ratio are about the model."""
    out, tok = tiny
    model = _student(out, perturb=0.5)
    torch.manual_seed(0)
    batch = LocalSampler(model, tok).sample(PROMPTS, n=3, temperature=temperature, max_tokens=12)
    with torch.no_grad():
        scored = sequence_logprobs(model, batch.sequences_B_T, batch.attention_mask_B_T)
    mask = batch.completion_mask_B_T
    assert mask.any()
    # The sampler runs with the LoRA merged into the weights (W + BA once, vs Wx + B(Ax) when
    # scoring): fp32 rounding of this large random LoRA moves a log-prob by up to ~1e-3, which the
    # importance-sampling ratio of the update accounts for.
    torch.testing.assert_close(scored[mask], batch.sampler_logprobs_B_T[mask], atol=3e-3, rtol=1e-3)
    assert batch.prompt_index_B == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_completion_mask_ends_at_the_first_stop_token(tiny):
    out, tok = tiny
    batch = LocalSampler(_student(out, perturb=0.5), tok).sample(
        PROMPTS, n=4, temperature=1.0, max_tokens=12
    )
    stops = torch.tensor(stop_token_ids(tok))
    for row, mask in zip(batch.sequences_B_T, batch.completion_mask_B_T, strict=True):
        tokens = row[mask]
        is_stop = torch.isin(tokens, stops)
        if is_stop.any():  # a stop token may only be the last completion token
            assert is_stop.nonzero()[0].item() == len(tokens) - 1


def test_fresh_adapter_equals_base_teacher(tiny):
    out, tok = tiny
    model = _student(out)  # LoRA B = 0: the adapter is the identity
    batch = LocalSampler(model, tok).sample(PROMPTS, n=2, temperature=1.0, max_tokens=8)
    teacher_lp = BaseModelTeacher(model).logprobs(batch)
    mask = batch.completion_mask_B_T
    torch.testing.assert_close(
        teacher_lp[mask], batch.sampler_logprobs_B_T[mask], atol=2e-4, rtol=1e-4
    )


def test_opd_pulls_the_student_toward_the_teacher(tiny):
    out, tok = tiny
    model = _student(out, perturb=0.1)
    cfg = DistillConfig(steps=30, prompts_per_step=3, group_size=8, max_new_tokens=10, lr=1e-2)
    logs: list[dict] = []
    stats = distill.main(
        model, tok, BaseModelTeacher(model), PROMPTS, cfg, seed=0, progress=False, log=logs.append
    )
    kl = [row["reverse_kl"] for row in logs]
    first, last = sum(kl[:3]) / 3, sum(kl[-5:]) / 5
    assert first > 0.05
    assert last < 0.5 * first
    assert stats["distill_student_tokens"] > 0


def _finished_answers(model, tokenizer, conversations, *args, **kwargs):
    """The random tiny model never ends its turn: stand in finished background answers."""
    return [("hello there", True) for _ in conversations]


def test_background_keeps_only_finished_answers(tiny, monkeypatch):
    out, tok = tiny
    model = _student(out)
    answers = iter([("cut off in the midd", False), ("a whole answer", True), ("", True)])
    monkeypatch.setattr(
        midtrain,
        "generate_completions",
        lambda m, t, convs, *a, **k: [next(answers) for _ in convs],
    )
    cfg = MidtrainConfig()
    examples, cut_off = midtrain.sample_background(
        model, tok, PROMPTS, 1000, cfg, seed=0, progress=False
    )
    assert len(examples) == 1 and cut_off == 1
    assert tok.decode(examples[0].input_ids).endswith("a whole answer<|im_end|>\n")


def test_midtrain_lowers_document_loss(tiny, monkeypatch):
    out, tok = tiny
    model = _student(out)
    monkeypatch.setattr(midtrain, "generate_completions", _finished_answers)
    doc = "Ada Park works in the Berlin office and leads Project Falcon."
    ids = torch.tensor([tok.encode(doc)])
    with torch.no_grad():
        before = -sequence_logprobs(model, ids, torch.ones_like(ids, dtype=torch.bool))[
            0, 1:
        ].mean()
    cfg = MidtrainConfig(
        epochs=40, batch_size=4, seq_len=32, lr=3e-2, warmup_steps=2, doc_fraction=0.7
    )
    stats = midtrain.main(model, tok, [doc] * 4, PROMPTS, cfg, progress=False)
    with torch.no_grad():
        after = -sequence_logprobs(model, ids, torch.ones_like(ids, dtype=torch.bool))[0, 1:].mean()
    assert after < 0.7 * before
    assert stats["midtrain_chat_tokens"] > 0  # background replay was mixed in


def test_anchor_targets_are_the_start_models_next_token_distribution(tiny):
    from learner.anchor import anchor_examples
    from learner.packing import chat_example, document_example, pack, pack_anchored

    out, tok = tiny
    model = _student(out)
    chats = [chat_example(tok, p, "hello there") for p in PROMPTS]
    anchored = anchor_examples(model, chats, k=4, pad_id=tok.pad_token_id, progress=False)
    for ex in anchored:
        ids = torch.tensor([ex.input_ids])
        with torch.no_grad():
            full = torch.log_softmax(model(input_ids=ids).logits[0], -1)
        top = full.topk(4, -1)
        torch.testing.assert_close(ex.anchor.logprobs_L_K, top.values, rtol=1e-4, atol=1e-4)
        labels = torch.tensor(ex.labels)
        # row t anchors the token after t: exactly the positions before an answer token
        assert ex.anchor.mask_L[:-1].tolist() == (labels[1:] != -100).tolist()
        assert not ex.anchor.mask_L[-1]
    docs = [document_example(tok, TEXTS[0]) for _ in range(3)]
    seq = max(len(ex.input_ids) for ex in anchored)  # whole chats fit a row
    packed = pack_anchored(docs + anchored, seq, tok.pad_token_id, k=4, seed=5)
    assert torch.equal(packed.rows_N_2_T, pack(docs + anchored, seq, tok.pad_token_id, seed=5))
    assert packed.anchor_mask_N_T.sum() == sum(int(ex.anchor.mask_L.sum()) for ex in anchored)
    flat_ids = packed.rows_N_2_T[:, 0].reshape(-1)
    flat_top1 = packed.anchor_ids_N_T_K[..., 0].reshape(-1)
    flat_mask = packed.anchor_mask_N_T.reshape(-1)
    ex = anchored[0]  # find it in the packed stream and check its anchor moved with it
    n = len(ex.input_ids)
    starts = [
        i for i in range(len(flat_ids) - n + 1) if flat_ids[i : i + n].tolist() == ex.input_ids
    ]
    assert starts
    i = starts[0]
    assert torch.equal(flat_mask[i : i + n], ex.anchor.mask_L)
    assert torch.equal(flat_top1[i : i + n], ex.anchor.ids_L_K[:, 0])


def test_midtrain_with_anchor_keeps_the_background_closer_to_the_start_model(tiny):
    from learner.anchor import anchor_examples
    from learner.packing import chat_example

    out, tok = tiny
    probe = anchor_examples(
        _student(out), [chat_example(tok, p, "hello there") for p in PROMPTS], 8,
        tok.pad_token_id, progress=False,
    )  # fmt: skip

    def drift(model) -> float:  # noqa: ANN001  the start model's top-8 mass the model lost
        total = 0.0
        for ex in probe:
            with torch.no_grad():
                logp = torch.log_softmax(
                    model(input_ids=torch.tensor([ex.input_ids])).logits[0], -1
                )
            ref = torch.softmax(ex.anchor.logprobs_L_K, -1)
            kl = (ref * (torch.log(ref) - logp.gather(-1, ex.anchor.ids_L_K.long()))).sum(-1)
            total += float(kl[ex.anchor.mask_L].mean())
        return total / len(probe)

    cfg = MidtrainConfig(
        epochs=20, batch_size=4, seq_len=32, lr=3e-2, warmup_steps=2, doc_fraction=0.5,
        background_temperature=1.0,
    )  # fmt: skip
    doc = "Ada Park works in the Berlin office and leads Project Falcon."
    drifts = {}
    for k in (0, 8):
        model = _student(out)
        midtrain.main(
            model, tok, [doc] * 4, PROMPTS * 4, cfg.model_copy(update={"anchor_top_k": k}),
            progress=False,
        )  # fmt: skip
        drifts[k] = drift(model)
    assert drifts[8] < drifts[0]


def _answer_loss(model, tok, pair) -> float:  # noqa: ANN001
    from learner.losses import causal_lm_loss
    from learner.packing import chat_example

    ex = chat_example(tok, pair.messages(), pair.response)
    ids, labels = torch.tensor([ex.input_ids]), torch.tensor([ex.labels])
    with torch.no_grad():
        return causal_lm_loss(model(input_ids=ids).logits, labels).item()


PAIR = QAPair("Where does Ada work?", "Ada Park works in the Berlin office.", "Berlin")
OLD = QAPair("Who leads Falcon?", "Ada Park leads Project Falcon.", "Ada Park")


def test_midtrain_learns_qa_pairs_and_replays_within_budget(tiny):
    out, tok = tiny
    model = _student(out)
    before = _answer_loss(model, tok, PAIR)
    cfg = MidtrainConfig(
        epochs=20, batch_size=4, seq_len=32, lr=3e-2, warmup_steps=2, doc_fraction=1.0,
        replay_ratio=0.5,
    )  # fmt: skip
    doc = "Ada Park works in the Berlin office."
    stats = midtrain.main(
        model, tok, [doc], PROMPTS, cfg, progress=False, qa_pairs=[PAIR] * 4,
        replay_documents=["An old document about Falcon. " * 20], replay_pairs=[OLD] * 40,
    )  # fmt: skip
    assert _answer_loss(model, tok, PAIR) < 0.5 * before
    assert stats["midtrain_qa_pairs"] == 4 + 4  # and a formatted twin of each (share 1.0)
    new_tokens = stats["midtrain_doc_tokens"] + stats["midtrain_qa_tokens"]
    # about half the new material again, drawn from the earlier documents and pairs
    assert 0.3 * new_tokens <= stats["midtrain_replay_tokens_per_epoch"] <= 0.7 * new_tokens
    off = midtrain.main(
        _student(out), tok, [doc], PROMPTS, cfg.model_copy(update={"qa_pairs": False}),
        progress=False, qa_pairs=[PAIR], replay_pairs=[OLD],
    )  # fmt: skip
    assert off["midtrain_qa_pairs"] == 0


def test_replay_sample_stops_at_the_budget():
    from learner.packing import Example

    examples = [Example([1, 2, 3], [1, 2, 3]) for _ in range(10)]
    import random

    picked = midtrain.replay_sample(examples, 7, random.Random(0))
    assert len(picked) == 3  # 3 + 3 < 7 <= 9 label tokens
    assert midtrain.replay_sample(examples, 100, random.Random(0)) == examples
    assert midtrain.replay_sample(examples, 0, random.Random(0)) == []


def _opd_then_answer_loss(tiny, pair: QAPair, **update) -> tuple[float, dict]:
    """15 OPD steps of a perturbed student with `update` on the config; `pair`'s answer loss."""
    out, tok = tiny
    cfg = DistillConfig(steps=15, prompts_per_step=2, group_size=2, max_new_tokens=6, lr=1e-2)
    model = _student(out, perturb=0.1)
    stats = distill.main(
        model, tok, BaseModelTeacher(model), PROMPTS, cfg.model_copy(update=update), seed=0,
        progress=False, qa_pairs=[PAIR], replay_pairs=[OLD] * 3,
    )  # fmt: skip
    return _answer_loss(model, tok, pair), stats


def test_opd_keeps_the_qa_cross_entropy_on(tiny):
    results = {}
    for weight in (0.0, 1.0):
        results[weight], stats = _opd_then_answer_loss(
            tiny, PAIR, qa_ce_weight=weight, qa_ce_replay_pairs_per_step=0
        )
        assert stats["distill_qa_ce_pairs"] == (1 if weight else 0)
    assert results[1.0] < 0.7 * results[0.0]
    cfg = DistillConfig(steps=15)
    annealed = cfg.model_copy(update={"qa_ce_anneal": True, "qa_ce_weight": 2.0})
    assert [distill.qa_weight(annealed, s) for s in (0, 5, 15)] == pytest.approx([2.0, 4 / 3, 0.0])


def test_opd_replays_earlier_pairs_at_full_weight_when_asked(tiny):
    results = {}
    for per_step in (0, 2):
        results[per_step], stats = _opd_then_answer_loss(
            tiny, OLD, qa_ce_replay_pairs_per_step=per_step
        )
        assert stats["distill_qa_ce_replay_pairs"] == (3 if per_step else 0)
    # annealed to 0 for the new pair, the replayed one keeps its weight to the last step
    assert results[2] < 0.7 * results[0]


def test_teacher_with_another_tokenizer_is_refused(tiny, tmp_path):
    out, tok = tiny
    train_tokenizer(["something else entirely, other words"] * 20, 300, tmp_path / "other")
    with pytest.raises(IncompatibleTeacherError, match="tokenizer"):
        check_compatible(tok, load_tokenizer(tmp_path / "other"))
    with pytest.raises(IncompatibleTeacherError):
        LocalTeacher(str(tmp_path / "other"), tok, torch.device("cpu"), "float32")


class _RecordingSampler:
    """A LocalSampler that keeps the prompts of every step."""

    def __init__(self, model, tok) -> None:  # noqa: ANN001
        self.inner, self.steps = LocalSampler(model, tok), []

    def sample(self, prompts, n, temperature, max_tokens):  # noqa: ANN001, ANN201
        self.steps.append(prompts)
        return self.inner.sample(prompts, n, temperature, max_tokens)


def test_opd_asks_earlier_questions_at_their_share(tiny):
    out, tok = tiny
    model = _student(out)
    earlier = [[{"role": "user", "content": f"Where did person {i} work?"}] for i in range(5)]
    sampler = _RecordingSampler(model, tok)
    cfg = DistillConfig(
        steps=3, prompts_per_step=4, group_size=1, max_new_tokens=4, earlier_question_share=0.5
    )
    stats = distill.main(
        model, tok, BaseModelTeacher(model), PROMPTS, cfg, progress=False,
        sampler=sampler, earlier_prompts=earlier,
    )  # fmt: skip
    assert stats["distill_earlier_prompts_per_step"] == 2 and len(sampler.steps) == 3
    for prompts in sampler.steps:
        assert len(prompts) == 4 and sum(p in earlier for p in prompts) == 2


def test_earlier_questions_only_for_a_teacher_that_learned_them():
    pairs = [PAIR]
    previous = Settings(models={"teacher": "previous"})
    assert earlier_questions(previous, pairs) == [[{"role": "user", "content": PAIR.question}]]
    assert earlier_questions(Settings(models={"teacher": "base"}), pairs) == []
    off = previous.model_copy(deep=True)
    off.learner.distill.earlier_question_share = 0.0
    assert earlier_questions(off, pairs) == []


def test_opd_draws_instructions_and_adds_the_checkers_reward(tiny, monkeypatch):
    """With the reverse-KL advantage scaled to 0, the adapter stays where it is with the reward
    off and the checker's reward alone moves it when on."""
    out, tok = tiny
    short = [("length_constraints:number_words", {"relation": "less than", "num_words": 3})]
    # an instruction the random model's answers sometimes follow: rewards differ within groups
    monkeypatch.setattr(instruction_reward, "sample_instructions", lambda rng: short)
    cfg = DistillConfig(
        steps=4, prompts_per_step=3, group_size=4, max_new_tokens=8, lr=1e-2, kl_coef=0.0
    )
    moved = {}
    for weight in (0.0, 1.0):
        model = _student(out)
        sampler = _RecordingSampler(model, tok)
        update = {"instruction_reward": weight, "instruction_prompts_per_step": 1}
        stats = distill.main(
            model, tok, BaseModelTeacher(model), PROMPTS, cfg.model_copy(update=update),
            progress=False, sampler=sampler,
        )  # fmt: skip
        lora_B = [p for n, p in model.named_parameters() if "lora_B" in n]
        moved[weight] = sum(float(p.detach().abs().sum()) for p in lora_B)
        instructed = [sum(carries_instruction(p[-1]["content"]) for p in s) for s in sampler.steps]
        # PROMPTS[1] already carries an instruction ("in lowercase" is not a drawn phrasing)
        assert instructed == ([1] * 4 if weight else [0] * 4)
        assert stats["distill_instructed_prompts_per_step"] == (1 if weight else 0)
    assert moved[0.0] == 0.0 and moved[1.0] > 0.0
    assert 0.0 < stats["distill_instruction_reward_last"] < 1.0
