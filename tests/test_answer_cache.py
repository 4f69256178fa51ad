"""The raw base's eval answers kept between nights (learner/evals/answer_cache.py).

.venv/bin/python -m pytest tests/test_answer_cache.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from learner.evals.answer_cache import AnswerCache
from learner.evals.evaluate import evaluate_model
from learner.modeling import load_causal_lm, load_tokenizer
from learner.sandbox.manifest import SandboxManifest


def test_only_prompts_not_cached_are_generated_and_kept_on_disk(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def generate(prompts: list[str]) -> list[str]:
        calls.append(prompts)
        return [p.upper() for p in prompts]

    cache = AnswerCache(tmp_path / "c.json")
    assert cache.answer("qa", 8, ["a", "b", "a"], generate) == ["A", "B", "A"]
    assert calls == [["a", "b"]]  # a repeated prompt is generated once
    cache.save()
    again = AnswerCache(tmp_path / "c.json")
    assert again.answer("qa", 8, ["b", "c"], generate) == ["B", "C"]
    assert calls[-1] == ["c"] and (again.hits, again.misses) == (1, 1)
    again.answer("ifeval", 8, ["b"], generate)  # another kind, another answer length: misses
    again.answer("qa", 16, ["b"], generate)
    assert calls[-2:] == [["b"], ["b"]]


def test_a_torn_file_starts_afresh_and_only_what_a_run_asked_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"qa\\u00008\\u0000a": "A", ')  # a write cut short
    cache = AnswerCache(path)
    cache.answer("qa", 8, ["x", "y"], lambda ps: [p.upper() for p in ps])
    cache.save()
    assert json.loads(path.read_text()) == {"qa\x008\x00x": "X", "qa\x008\x00y": "Y"}
    night2 = AnswerCache(path)
    night2.answer("qa", 8, ["y", "z"], lambda ps: [p.upper() for p in ps])
    night2.save()  # "x" was not asked this run: it goes, so the file stays one run in size
    assert list(json.loads(path.read_text()).values()) == ["Y", "Z"]
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary file left


def test_the_file_is_named_by_the_model_folder(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"1234")
    first = AnswerCache.for_model(tmp_path / "cache", model, "float32", "cpu")
    assert first.path == AnswerCache.for_model(tmp_path / "cache", model, "float32", "cpu").path
    assert first.path != AnswerCache.for_model(tmp_path / "cache", model, "bfloat16", "cpu").path
    (model / "weights.bin").write_bytes(b"12345")  # a rebuilt base
    assert first.path != AnswerCache.for_model(tmp_path / "cache", model, "float32", "cpu").path


def test_evaluate_with_the_cache_gives_the_same_metrics_and_generates_nothing_twice(
    sandbox_test: SandboxManifest, tmp_path: Path
) -> None:
    model = load_causal_lm(sandbox_test.student_dir, torch.device("cpu"))
    tokenizer = load_tokenizer(sandbox_test.student_dir)
    day = sandbox_test.days[0]
    files = {
        "qa_file": day.qa_file,
        "ifeval_file": day.ifeval_file,
        "known_qa_file": sandbox_test.known_qa_file,
        "incontext_qa_file": sandbox_test.incontext_qa_file,
        "cloze_file": day.cloze_file,
        "new_sets": {"day1"},
    }
    run = {"max_new_tokens": 16, "batch_size": 4, "limit": 4, "progress": False}
    plain = evaluate_model(model, tokenizer, **files, **run)
    cache = AnswerCache.for_model(tmp_path, sandbox_test.student_dir, "float32", "cpu")
    assert evaluate_model(model, tokenizer, **files, **run, answer_cache=cache) == plain
    assert (cache.hits, cache.misses) == (0, 20)  # QA, IFEval, known, in-context, cloze: 4 each
    cache.save()
    reloaded = AnswerCache.for_model(tmp_path, sandbox_test.student_dir, "float32", "cpu")
    assert evaluate_model(model, tokenizer, **files, **run, answer_cache=reloaded) == plain
    assert (reloaded.hits, reloaded.misses) == (20, 0)
