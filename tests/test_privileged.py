"""Privileged-context teacher on the test sandbox's student: alignment against a naive reference.

.venv/bin/python -m pytest tests/test_privileged.py -q
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from peft import LoraConfig, get_peft_model
from pydantic import ValidationError

from assistant.app import create_app
from assistant.server import serve_in_thread
from knowledge.prompting import grounded_user_message
from knowledge.settings import DistillConfig, ModelsConfig, ServingConfig, Settings
from learner import distill
from learner.datasets import read_jsonl
from learner.generation import chat_prompt
from learner.modeling import load_causal_lm, load_tokenizer
from learner.sampling import LocalSampler, SampleBatch
from learner.teachers.base import BaseModelTeacher
from learner.teachers.local import LocalTeacher
from learner.teachers.privileged import ContextPrompt, logprobs_with_context, teacher_view
from learner.teachers.server import ServerTeacher

CPU = torch.device("cpu")


def _student(sandbox_test):
    """The sandbox student under a LoRA that changes it, as after mid-training."""
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    torch.manual_seed(0)
    model = get_peft_model(
        load_causal_lm(sandbox_test.student_dir, CPU),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def student(sandbox_test):
    return _student(sandbox_test)


@pytest.fixture(scope="module")
def questions(sandbox_test):
    day = sandbox_test.days[0]
    rows = read_jsonl(day.train_questions_file)[:3]
    office = sorted(day.documents_dir.glob("*.md"))[0].read_text().split("\n\n")
    passages = [office[1], office[2]]  # two paragraphs of a day-1 document
    prompts = [[{"role": "user", "content": r["question"]}] for r in rows]
    return prompts, passages


@pytest.fixture(scope="module")
def served_base(sandbox_test, tmp_path_factory) -> Iterator[str]:
    """protege serving the sandbox student's base weights (no adapter): a server teacher."""
    settings = Settings(
        home=tmp_path_factory.mktemp("privileged-teacher"),
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(registry_poll_seconds=3600, retrieval=False, auth="open"),
    )
    with serve_in_thread(create_app(settings)) as url:
        yield f"{url}/v1"


def _sample(model, tokenizer, prompts) -> SampleBatch:
    torch.manual_seed(1)
    return LocalSampler(model, tokenizer).sample(prompts, n=2, temperature=1.0, max_tokens=10)


def _naive(model, tokenizer, messages, passages, completion_ids) -> torch.Tensor:
    """The teacher's log-probs of the completion, its sequence built by hand, one unpadded row."""
    if passages:
        question = messages[-1]["content"]
        messages = [{"role": "user", "content": grounded_user_message(question, passages)}]
    prompt_ids = tokenizer(chat_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + completion_ids.tolist()])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
    return lp[-len(completion_ids) :]


@pytest.mark.parametrize("kind", ["base", "local", "server"])
def test_context_teacher_matches_a_naive_reference(sandbox_test, student, questions, kind, request):
    model, tokenizer = student
    prompts, passages = questions
    batch = _sample(model, tokenizer, prompts)
    mask_before, sequences_before = batch.completion_mask_B_T.clone(), batch.sequences_B_T.clone()
    if kind == "base":
        teacher, reference = BaseModelTeacher(model), load_causal_lm(sandbox_test.student_dir, CPU)
    elif kind == "local":
        teacher = LocalTeacher(str(sandbox_test.student_dir), tokenizer, CPU, "float32")
        reference = teacher.model
    else:
        teacher = ServerTeacher(request.getfixturevalue("served_base"), None, tokenizer)
        reference = load_causal_lm(sandbox_test.student_dir, CPU)
    atol = 1e-3 if kind == "server" else 1e-4  # the server computes in its own batches
    # rows of prompt 0 and 2 get the passages, prompt 1's rows none (a mixed batch)
    contexts = [passages, None, passages]
    rows = batch.prompt_index_B
    prompts_B, contexts_B = [prompts[i] for i in rows], [contexts[i] for i in rows]

    with_ctx = logprobs_with_context(teacher, tokenizer, batch, prompts_B, contexts_B)

    assert torch.equal(batch.completion_mask_B_T, mask_before)  # the student's batch is untouched
    assert torch.equal(batch.sequences_B_T, sequences_before)
    assert with_ctx.shape == batch.sampler_logprobs_B_T.shape
    assert not with_ctx[~batch.completion_mask_B_T].any()  # 0 outside completions
    view = teacher_view(batch, tokenizer, prompts_B, contexts_B)
    plain = teacher.logprobs(batch)
    for b in range(len(rows)):
        completion = batch.sequences_B_T[b][batch.completion_mask_B_T[b]]
        # the teacher scored exactly the sampled token ids
        assert torch.equal(view.sequences_B_T[b][view.completion_mask_B_T[b]], completion)
        expected = _naive(reference, tokenizer, prompts_B[b], contexts_B[b], completion)
        got = with_ctx[b][batch.completion_mask_B_T[b]]
        torch.testing.assert_close(got, expected, atol=atol, rtol=1e-4)
        if contexts_B[b] is None:  # no context: the same as scoring the student's own batch
            torch.testing.assert_close(
                got, plain[b][batch.completion_mask_B_T[b]], atol=atol, rtol=0
            )
        else:  # the passages change what the teacher expects
            assert (got - plain[b][batch.completion_mask_B_T[b]]).abs().max() > 1e-2
    if kind == "server":
        teacher.close()


def test_without_contexts_the_view_is_the_student_batch(student, questions):
    model, tokenizer = student
    prompts, _ = questions
    batch = _sample(model, tokenizer, prompts)
    prompts_B = [prompts[i] for i in batch.prompt_index_B]
    view = teacher_view(batch, tokenizer, prompts_B, [None] * len(prompts_B))
    # every row's prompt and completion tokens (padding, and tokens after a stop, left out)
    for b in range(len(prompts_B)):
        want = batch.sequences_B_T[b][batch.attention_mask_B_T[b]]
        assert torch.equal(view.sequences_B_T[b][view.attention_mask_B_T[b]], want)
        assert view.completion_mask_B_T[b].sum() == batch.completion_mask_B_T[b].sum()


def test_distill_gives_the_teacher_the_passages_of_doc_questions(sandbox_test, questions):
    model, tokenizer = _student(sandbox_test)  # its own: OPD trains it
    prompts, passages = questions
    scored: list[SampleBatch] = []

    class Recording:  # the real base teacher, keeping what it was asked to score
        name = "base"

        def logprobs(self, batch: SampleBatch) -> torch.Tensor:
            scored.append(batch)
            return BaseModelTeacher(model).logprobs(batch)

    general = [[{"role": "user", "content": "Write a short note about lunch."}]] * 4
    doc_prompts = [ContextPrompt(p, passages) for p in prompts]
    cfg = DistillConfig(
        steps=2,
        prompts_per_step=4,
        group_size=2,
        max_new_tokens=6,
        privileged_context=True,
        doc_question_share=0.5,
    )
    stats = distill.main(
        model, tokenizer, Recording(), general, cfg, progress=False, doc_prompts=doc_prompts
    )
    assert stats["distill_privileged_context"] is True
    assert stats["distill_doc_prompts_per_step"] == 2 and stats["distill_doc_prompts"] == 3
    assert len(scored) == 2
    for batch in scored:
        texts = tokenizer.batch_decode(batch.sequences_B_T, skip_special_tokens=True)
        with_docs = [t for t in texts if "Documents:" in t and "Cedar Tower" in t]
        assert len(with_docs) == 2 * cfg.group_size  # the doc questions' rows only


def test_doc_questions_need_privileged_context():
    with pytest.raises(ValidationError, match="privileged_context"):
        DistillConfig(doc_question_share=0.25)
    assert (
        DistillConfig(doc_question_share=0.25, privileged_context=True).doc_question_share == 0.25
    )
