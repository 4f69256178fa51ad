"""The sandbox manifest: where every built artifact of a sandbox lives.

`protege sandbox build --json` prints it; everything else finds the sandbox through it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from knowledge.errors import SandboxNotBuiltError

MANIFEST_NAME = "manifest.json"


class DayData(BaseModel):
    name: str  # "day1", "day2", ...
    documents_dir: Path  # prose .md documents about the day's new entities
    qa_file: Path  # closed-book QA JSONL: {"question", "answer"}
    ifeval_file: Path  # IFEval JSONL: {"key", "prompt", "instruction_id_list", "kwargs"}
    # QA JSONL {"question", "answer", "response"} about the day's facts in other phrasings than
    # qa_file (mid-training QA pairs and OPD prompts; never overlaps qa_file)
    train_questions_file: Path | None = None
    cloze_file: Path | None = (
        None  # JSONL {"prompt", "answer"}: document-style prefixes to complete
    )


class SandboxManifest(BaseModel):
    size: str
    seed: int
    root: Path
    tokenizer_dir: Path
    student_dir: Path  # HF folder (config, weights, tokenizer with chat template)
    teacher_dir: Path | None = None  # larger teacher; None when not built
    background_documents_dir: Path  # documents about the initially known entities
    chat_prompts_file: Path  # JSONL {"messages": [...]}: general chat prompts (background replay)
    opd_prompts_file: Path  # JSONL {"messages": [...]}: instruction prompts for OPD (not eval)
    known_qa_file: Path  # closed-book QA about entities known before day 1 (forgetting check)
    incontext_qa_file: Path  # JSONL {"question", "answer", "context"}: reading-in-context check
    # closed-book QA about known entities that appear in background documents only (no QA chats
    # in pre-training): measures whether document knowledge turns into answers
    known_doc_only_qa_file: Path | None = None
    # QA JSONL like a day's train_questions_file about the background documents' QA-trained
    # entities (the base's own pre-training QA): replayed so earlier knowledge stays answerable
    background_train_questions_file: Path | None = None
    days: list[DayData]
    build_seconds: dict[str, float] = {}
    base_metrics: dict[str, float] = {}
    teacher_metrics: dict[str, float] = {}
    build_version: str = ""  # hash of the build recipe; a build from another recipe is rebuilt  # the teacher's scores on the same sets (when built)

    def day(self, name: str) -> DayData:
        for day in self.days:
            if day.name == name:
                return day
        raise SandboxNotBuiltError(
            f"sandbox has no day {name!r} (has {[d.name for d in self.days]})"
        )

    def save(self) -> None:
        tmp = self.root / (MANIFEST_NAME + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(self.root / MANIFEST_NAME)


def sandbox_root(sandbox_dir: Path, size: str, seed: int) -> Path:
    return sandbox_dir / f"{size}-seed{seed}"


def load_manifest(root: Path) -> SandboxManifest:
    path = root / MANIFEST_NAME
    if not path.exists():
        raise SandboxNotBuiltError(
            f"no sandbox at {root}; build it with `protege sandbox build --size {root.name.split('-')[0]}`"
        )
    return SandboxManifest.model_validate(json.loads(path.read_text()))
