"""The sandbox: deterministic world and data files, chat template, and the test-size build.

.venv/bin/python -m pytest tests/test_sandbox.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from learner.modeling import load_tokenizer, stop_token_ids
from learner.sandbox.build import SIZE_CONFIGS, build_sandbox, write_data
from learner.sandbox.manifest import SandboxManifest
from learner.sandbox.pretrain import IGNORE, encode_chats, encode_documents
from learner.sandbox.tokenizer import render_chat
from learner.sandbox.world import build_world


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _write(tmp: Path, seed: int) -> dict[str, bytes]:
    root = tmp / f"seed{seed}"
    write_data(build_world(seed, "test"), SIZE_CONFIGS["test"], root, root)
    return _files(root)


def test_world_and_data_are_deterministic_in_seed(tmp_path: Path) -> None:
    first, again, other = (
        _write(tmp_path / "a", 0),
        _write(tmp_path / "b", 0),
        _write(tmp_path / "c", 1),
    )
    assert first == again
    # Same layout (document names differ with the entities), different content.
    assert {Path(k).parent for k in first} == {Path(k).parent for k in other}
    assert first != other


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", ["test", "demo"])
def test_world_is_valid(seed: int, size: str) -> None:
    world = build_world(seed, size)
    assert world.n_days >= 3
    people = [e.name for e in world.entities if e.kind == "person"]
    assert len(people) == len(set(people))
    known = {e.name for e in world.of_day(0)}
    for day in range(1, world.n_days + 1):
        new = world.of_day(day)
        assert new and not {e.name for e in new} & known
        docs = dict(world.documents(day))
        for entity in new:
            text = next(t for n, t in docs.items() if entity.name.lower().replace(" ", "-") in n)
            assert text.startswith("# ")
            for fact in entity.facts():  # every fact stated, in several phrasings
                assert sum(fact.statement(i) in text for i in range(fact.n_statements)) >= 2
        # Known names appear only modestly (by design: a few earlier managers among the day's
        # own) as managers / leads of new entities.
        links = [v for e in new for k, v in e.attrs.items() if k in ("manager", "lead", "head")]
        assert sum(v in known for v in links) <= max(2, len(links) // 3)


def test_eval_questions_never_used_for_training(tmp_path: Path) -> None:
    root = tmp_path / "s"
    manifest = write_data(build_world(0, "test"), SIZE_CONFIGS["test"], root, root)

    def rows(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    eval_texts = {r["question"] for r in rows(manifest.known_qa_file)}
    for day in manifest.days:
        eval_q = {r["question"] for r in rows(day.qa_file)}
        assert eval_q and not eval_q & {r["question"] for r in rows(day.train_questions_file)}
        eval_texts |= eval_q | {r["prompt"] for r in rows(day.ifeval_file)}
    for path in (manifest.opd_prompts_file, manifest.chat_prompts_file):
        users = [m["content"] for r in rows(path) for m in r["messages"] if m["role"] == "user"]
        assert users and not any(q in u for u in users for q in eval_texts)
    contexts = rows(manifest.incontext_qa_file)
    assert all(isinstance(r["context"], list) and 1 <= len(r["context"]) <= 3 for r in contexts)


def test_sandbox_build_has_every_file(sandbox_test: SandboxManifest) -> None:
    m = sandbox_test
    for path in (m.background_documents_dir, m.tokenizer_dir, m.student_dir):
        assert path.is_dir() and any(path.iterdir())
    for path in (m.chat_prompts_file, m.opd_prompts_file, m.known_qa_file, m.incontext_qa_file):
        assert path.read_text().strip()
    assert [d.name for d in m.days][:3] == ["day1", "day2", "day3"]
    for day in m.days:
        docs = list(day.documents_dir.glob("*.md"))
        assert docs and all(d.read_text().startswith("# ") for d in docs)
        for path in (day.qa_file, day.ifeval_file, day.train_questions_file):
            assert path is not None and path.read_text().strip()
        item = json.loads(day.ifeval_file.read_text().splitlines()[0])
        assert set(item) == {"key", "prompt", "instruction_id_list", "kwargs"}
    assert {"known_qa", "incontext_qa", "qa_closed_book", "ifeval_strict"} <= set(m.base_metrics)
    assert m.build_seconds["total"] > 0
    # A complete build is reused, not rebuilt.
    again = build_sandbox(m.root.parent, "test", 0, progress=False)
    assert again.build_seconds["student_pretrain"] == m.build_seconds["student_pretrain"]


def test_chat_template_matches_qwen_chatml(sandbox_test: SandboxManifest) -> None:
    tok = AutoTokenizer.from_pretrained(str(sandbox_test.student_dir))
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    prompt = tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert (
        prompt
        == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt == render_chat(messages, add_generation_prompt=True)
    full = messages + [{"role": "assistant", "content": "Yo"}]
    assert tok.apply_chat_template(full, tokenize=False).endswith(
        "<|im_start|>assistant\nYo<|im_end|>\n"
    )
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")


def test_student_generates_and_stops_at_im_end(sandbox_test: SandboxManifest) -> None:
    tok = load_tokenizer(sandbox_test.student_dir)
    assert tok.padding_side == "left"
    model = AutoModelForCausalLM.from_pretrained(str(sandbox_test.student_dir)).eval()
    assert model.config.tie_word_embeddings and model.config.model_type == "qwen3"
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in stop_token_ids(tok)
    questions = [
        json.loads(line)["question"]
        for line in sandbox_test.known_qa_file.read_text().splitlines()[:4]
    ]
    prompts = [
        render_chat([{"role": "user", "content": q}], add_generation_prompt=True) for q in questions
    ]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=48,
            do_sample=False,
            eos_token_id=stop_token_ids(tok),
            pad_token_id=tok.pad_token_id,
        )
    new = out[:, enc["input_ids"].shape[1] :]
    stopped = [(row == im_end).any().item() for row in new]
    assert sum(stopped) >= len(stopped) // 2, tok.batch_decode(new)
    assert all(text.strip() for text in tok.batch_decode(new, skip_special_tokens=True))


def test_training_encoding_ignores_padding_left_by_eval(sandbox_test: SandboxManifest) -> None:
    # Batched eval (`tokenizer(..., padding=True)`) leaves padding on the shared backend; the
    # teacher trained after the student's eval once got `<|endoftext|>` runs as reply labels.
    tok = load_tokenizer(sandbox_test.tokenizer_dir)
    chats = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
        [
            {"role": "user", "content": "A longer question " * 5},
            {"role": "assistant", "content": "Yes."},
        ],
    ]
    before = encode_chats(tok, chats), encode_documents(tok, ["a b", "a b c d e f"], 64)
    tok(["a b c d", "a"], padding=True, add_special_tokens=False)
    assert (encode_chats(tok, chats), encode_documents(tok, ["a b", "a b c d e f"], 64)) == before
    ids, labels = before[0][0]
    assert tok.pad_token_id not in ids + labels and labels.count(IGNORE) < len(labels)


def test_teacher_is_added_to_an_existing_build(sandbox_test: SandboxManifest) -> None:
    m = build_sandbox(sandbox_test.root.parent, "test", 0, teacher=True, progress=False)
    assert m.teacher_dir is not None and (m.teacher_dir / "config.json").exists()
    assert m.build_seconds["student_pretrain"] == sandbox_test.build_seconds["student_pretrain"]
    teacher = AutoModelForCausalLM.from_pretrained(str(m.teacher_dir))
    student = AutoModelForCausalLM.from_pretrained(str(m.student_dir))
    assert teacher.num_parameters() > student.num_parameters()
    assert (
        AutoTokenizer.from_pretrained(str(m.teacher_dir)).get_vocab()
        == load_tokenizer(m.student_dir).get_vocab()
    )
