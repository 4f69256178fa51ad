"""Build the sandbox: fictional company, documents, eval sets, tokenizer and tiny Qwen3 models.

    build_sandbox(Path(".protege/sandbox"), "demo", seed=0)                 # ~9-14 min on 2 cores
    python -m learner.sandbox.build --size test --dir /tmp/sandbox --json   # ~1 min

The build is staged in a hidden sibling folder and renamed into place at the end, so a crash never
leaves a manifest that points at partial files. A complete build is reused unless `force`;
asking for the teacher later adds it to the existing build (staged and renamed the same way);
`--rebuild-teacher` retrains only the teacher of an existing build, replacing it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from knowledge.errors import SandboxNotBuiltError
from learner.sandbox import chat_data as cd
from learner.sandbox import prompt_sets as ps
from learner.sandbox.base_metrics import base_metrics
from learner.sandbox.manifest import (
    MANIFEST_NAME,
    DayData,
    SandboxManifest,
    load_manifest,
    sandbox_root,
)
from learner.sandbox.pretrain import (
    ModelSpec,
    TrainSpec,
    encode_chats,
    encode_documents,
    make_model,
    pack,
    pretrain,
)
from learner.sandbox.tokenizer import render_chat, train_tokenizer
from learner.sandbox.world import World, build_world


@dataclass(frozen=True)
class SizeConfig:
    vocab: int
    student: ModelSpec
    student_train: TrainSpec
    teacher: ModelSpec
    teacher_train: TrainSpec
    doc_share: float  # share of training tokens spent on background documents
    n_known_qa: int
    n_ifeval: int
    n_incontext: int
    n_chat_prompts: int
    n_opd: int
    eval_limit: int | None = None


SIZE_CONFIGS: dict[str, SizeConfig] = {
    "test": SizeConfig(
        vocab=512,
        student=ModelSpec(hidden=64, layers=2, heads=2, intermediate=128),
        student_train=TrainSpec(steps=250, batch_size=8, seq_len=128, warmup=10, lr=1e-2),
        teacher=ModelSpec(hidden=96, layers=2, heads=2, intermediate=192),
        teacher_train=TrainSpec(steps=60, batch_size=8, seq_len=128, warmup=5, lr=1e-2),
        doc_share=0.05,
        n_known_qa=20,
        n_ifeval=12,
        n_incontext=12,
        n_chat_prompts=40,
        n_opd=30,
    ),
    "demo": SizeConfig(
        vocab=1536,
        student=ModelSpec(hidden=192, layers=4, heads=4, intermediate=512),
        student_train=TrainSpec(steps=1200, batch_size=16, lr=3e-3),
        teacher=ModelSpec(hidden=256, layers=4, heads=8, intermediate=768),
        teacher_train=TrainSpec(steps=850, batch_size=16, lr=2e-3),
        doc_share=0.15,
        n_known_qa=200,
        n_ifeval=150,
        n_incontext=200,
        n_chat_prompts=2000,
        n_opd=1000,
    ),
}
DATA_VERSION = 8  # bump when the world / chat data recipe changes (invalidates cached builds)
AVG_CHAT_TOKENS = 70  # measured mean length of a training chat (sizes the generated set)


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"[sandbox] {message}", file=sys.stderr, flush=True)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_docs(folder: Path, docs: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs:
        (folder / name).write_text(text)


def write_data(world: World, cfg: SizeConfig, stage: Path, root: Path) -> SandboxManifest:
    """Documents, eval sets and prompt files under `stage`; the manifest points at `root`."""
    seed = world.seed
    rel = {
        "background_documents_dir": Path("documents/background"),
        "chat_prompts_file": Path("data/chat_prompts.jsonl"),
        "opd_prompts_file": Path("data/opd_prompts.jsonl"),
        "known_qa_file": Path("data/known_qa.jsonl"),
        "incontext_qa_file": Path("data/incontext_qa.jsonl"),
        "known_doc_only_qa_file": Path("data/known_doc_only_qa.jsonl"),
        "background_train_questions_file": Path("data/background_train_questions.jsonl"),
    }
    _write_docs(stage / rel["background_documents_dir"], world.documents(0))
    _write_jsonl(
        stage / rel["chat_prompts_file"],
        ps.chat_prompts(world, random.Random(f"chat-prompts-{seed}"), cfg.n_chat_prompts),
    )
    _write_jsonl(
        stage / rel["opd_prompts_file"],
        ps.opd_prompts(world, random.Random(f"opd-{seed}"), cfg.n_opd),
    )
    known = ps.qa_items([f for e in cd.qa_trained(world) for f in e.facts()], "A", "day0")
    random.Random(f"known-qa-{seed}").shuffle(known)
    _write_jsonl(stage / rel["known_qa_file"], known[: cfg.n_known_qa])
    doc_only = ps.qa_items([f for e in cd.doc_only(world) for f in e.facts()], "A")
    random.Random(f"doc-only-qa-{seed}").shuffle(doc_only)
    _write_jsonl(stage / rel["known_doc_only_qa_file"], doc_only[: cfg.n_known_qa])
    train_known = ps.train_qa_items(cd.qa_trained(world))  # pre-training's B/C, never known_qa's A
    _write_jsonl(stage / rel["background_train_questions_file"], train_known)
    rng = random.Random(f"incontext-eval-{seed}")  # its own stream: never a training example
    incontext = [cd.incontext_item(rng, world, "A") for _ in range(cfg.n_incontext)]
    _write_jsonl(
        stage / rel["incontext_qa_file"],
        [{k: r[k] for k in ("question", "answer", "context")} for r in incontext],
    )
    days = []
    for d in range(1, world.n_days + 1):
        folder = Path(f"days/day{d}")
        _write_docs(stage / folder / "documents", world.documents(d))
        _write_jsonl(stage / folder / "qa.jsonl", ps.qa_items(world.facts(d), "A", f"day{d}"))
        _write_jsonl(stage / folder / "cloze.jsonl", ps.cloze_items(world.facts(d), f"day{d}"))
        _write_jsonl(stage / folder / "train_questions.jsonl", ps.train_qa_items(world.of_day(d)))
        _write_jsonl(
            stage / folder / "ifeval.jsonl",
            ps.ifeval_items(world, d, random.Random(f"ifeval-{seed}-{d}"), cfg.n_ifeval),
        )
        days.append(
            DayData(
                name=f"day{d}",
                documents_dir=root / folder / "documents",
                qa_file=root / folder / "qa.jsonl",
                ifeval_file=root / folder / "ifeval.jsonl",
                train_questions_file=root / folder / "train_questions.jsonl",
                cloze_file=root / folder / "cloze.jsonl",
            )
        )
    return SandboxManifest(
        size=world.size,
        seed=seed,
        root=root,
        tokenizer_dir=root / "tokenizer",
        student_dir=root / "student",
        days=days,
        **{k: root / v for k, v in rel.items()},
    )


def training_rows(world: World, tokenizer, cfg: SizeConfig, spec: TrainSpec) -> torch.Tensor:  # noqa: ANN001
    """Packed pre-training rows: background documents repeated to `doc_share` of the tokens."""
    rng = random.Random(f"train-{world.seed}")
    n_chats = int(spec.tokens * (1 - cfg.doc_share) / AVG_CHAT_TOKENS * 1.05)
    # Prompts stay masked: training on the passages too (tried) cost IFEval and in-context QA.
    chats = encode_chats(tokenizer, cd.training_chats(world, rng, n_chats))
    docs = encode_documents(tokenizer, [t for _, t in world.documents(0)], spec.seq_len)
    repeats = max(1, round(spec.tokens * cfg.doc_share / max(1, sum(len(i) for i, _ in docs))))
    return pack(chats + docs * repeats, spec.seq_len, rng, tokenizer.pad_token_id)


def _train_model(
    world: World, tokenizer, cfg: SizeConfig, teacher: bool, out: Path, progress: bool
) -> torch.nn.Module:  # noqa: ANN001
    spec, train = (cfg.teacher, cfg.teacher_train) if teacher else (cfg.student, cfg.student_train)
    rows = training_rows(world, tokenizer, cfg, train)
    model = make_model(spec, tokenizer, seed=world.seed + (1000 if teacher else 0))
    n_params = sum(p.numel() for p in model.parameters())
    _log(
        progress,
        f"{'teacher' if teacher else 'student'}: {n_params / 1e6:.2f}M params, {train.steps} steps",
    )
    desc = "teacher" if teacher else "student"
    pretrain(model, rows, train, seed=world.seed, progress=progress, desc=desc)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))  # every model folder is loadable on its own
    return model


def build_version(size: str) -> str:
    # The teacher's spec is left out: changing it must not invalidate a built student.
    cfg = dataclasses.replace(SIZE_CONFIGS[size], teacher=None, teacher_train=None)
    recipe = f"{DATA_VERSION}:{cfg!r}".encode()
    return hashlib.sha256(recipe).hexdigest()[:16]


def is_complete(manifest: SandboxManifest) -> bool:
    paths = [manifest.tokenizer_dir, manifest.student_dir, manifest.background_documents_dir]
    paths += [
        manifest.chat_prompts_file,
        manifest.opd_prompts_file,
        manifest.known_qa_file,
        manifest.incontext_qa_file,
        manifest.background_train_questions_file,
    ]
    paths += [p for d in manifest.days for p in (d.documents_dir, d.qa_file, d.ifeval_file)]
    paths += [manifest.teacher_dir] if manifest.teacher_dir else []
    return (
        manifest.build_version == build_version(manifest.size)
        and all(p is not None and p.exists() for p in paths)
        and (manifest.student_dir / "config.json").exists()
    )


def build_sandbox(
    sandbox_dir: Path,
    size: Literal["test", "demo"] = "demo",
    seed: int = 0,
    *,
    teacher: bool = False,
    force: bool = False,
    rebuild_teacher: bool = False,
    progress: bool = True,
) -> SandboxManifest:
    """Build (or reuse) the sandbox at `sandbox_root(sandbox_dir, size, seed)`; see module doc.

    `rebuild_teacher` retrains only the teacher of a complete build (the student is kept)."""
    if size not in SIZE_CONFIGS:
        raise SandboxNotBuiltError(f"unknown sandbox size {size!r} (test or demo)")
    # PROTEGE_TORCH_THREADS overrides (1 is faster when other processes share the 2 cores).
    torch.set_num_threads(
        int(os.environ.get("PROTEGE_TORCH_THREADS") or min(2, os.cpu_count() or 1))
    )
    cfg, root = SIZE_CONFIGS[size], sandbox_root(Path(sandbox_dir), size, seed).resolve()
    if not force and (root / MANIFEST_NAME).exists():
        manifest = load_manifest(root)
        if is_complete(manifest):
            if rebuild_teacher or (teacher and manifest.teacher_dir is None):
                return _add_teacher(manifest, cfg, progress)
            _log(progress, f"reusing {root}")
            return manifest
    return _build_fresh(root, size, seed, cfg, teacher or rebuild_teacher, progress)


def _build_fresh(
    root: Path, size: str, seed: int, cfg: SizeConfig, teacher: bool, progress: bool
) -> SandboxManifest:
    start, seconds = time.time(), {}
    stage = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    _log(progress, f"building {size} sandbox (seed {seed}) in {stage}")
    world = build_world(seed, size)
    manifest = write_data(world, cfg, stage, root)
    manifest.build_version = build_version(size)
    seconds["data"] = time.time() - start

    t = time.time()
    sample = cd.training_chats(
        world, random.Random(f"tokenizer-{seed}"), 20000 if size == "demo" else 2000
    )
    texts = [text for _, text in world.documents(0)] + [render_chat(c, False) for c in sample]
    tokenizer = train_tokenizer(texts, cfg.vocab, stage / "tokenizer")
    seconds["tokenizer"] = time.time() - t

    t = time.time()
    model = _train_model(world, tokenizer, cfg, False, stage / "student", progress)
    seconds["student_pretrain"] = time.time() - t
    t = time.time()
    manifest.base_metrics = base_metrics(
        model, tokenizer, manifest, stage, cfg.eval_limit, progress
    )
    seconds["student_eval"] = time.time() - t
    _log(
        progress,
        f"base metrics: {json.dumps({k: round(v, 3) for k, v in manifest.base_metrics.items()})}",
    )
    if teacher:
        t = time.time()
        tmodel = _train_model(world, tokenizer, cfg, True, stage / "teacher", progress)
        manifest.teacher_dir = root / "teacher"
        seconds["teacher_pretrain"] = time.time() - t
        manifest.teacher_metrics = base_metrics(
            tmodel, tokenizer, manifest, stage, cfg.eval_limit, progress
        )
    seconds["total"] = time.time() - start
    manifest.build_seconds = {k: round(v, 1) for k, v in seconds.items()}
    (stage / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
    # Swap into place: the old build (force) is moved aside first, then deleted.
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    if root.exists():
        root.rename(old)
    stage.rename(root)
    shutil.rmtree(old, ignore_errors=True)
    _log(progress, f"done in {seconds['total']:.0f}s: {root}")
    return load_manifest(root)


def _add_teacher(manifest: SandboxManifest, cfg: SizeConfig, progress: bool) -> SandboxManifest:
    from learner.modeling import load_tokenizer

    start, root = time.time(), manifest.root
    stage = root / f".teacher.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    world = build_world(manifest.seed, manifest.size)
    tokenizer = load_tokenizer(manifest.tokenizer_dir)
    tmodel = _train_model(world, tokenizer, cfg, True, stage, progress)
    if (root / "teacher").exists():
        shutil.rmtree(root / "teacher")
    stage.rename(root / "teacher")
    manifest.teacher_dir = root / "teacher"
    manifest.build_seconds["teacher_pretrain"] = round(time.time() - start, 1)
    manifest.teacher_metrics = base_metrics(
        tmodel, tokenizer, manifest, root, cfg.eval_limit, progress
    )
    manifest.save()  # atomic (tmp + rename)
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZE_CONFIGS), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dir", type=Path, default=Path(os.environ.get("PROTEGE_HOME", ".protege")) / "sandbox"
    )
    parser.add_argument("--teacher", action="store_true")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--rebuild-teacher", action="store_true", help="retrain only the teacher")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    args = parser.parse_args(argv)
    manifest = build_sandbox(
        args.dir,
        args.size,
        args.seed,
        teacher=args.teacher,
        force=args.force,
        rebuild_teacher=args.rebuild_teacher,
    )
    print(manifest.model_dump_json(indent=2) if args.json else manifest.root)


if __name__ == "__main__":
    main()
