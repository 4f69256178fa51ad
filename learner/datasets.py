"""Where the nightly cycle's prompts and eval sets come from.

With sandbox models (`models.student: sandbox:...`) they come from the sandbox manifest: the QA
eval is every sandbox day whose documents have been ingested, IFEval is every day's held-out set
(150 items a day on the demo sandbox: the gate's IFEval difference rests on all 450).
Otherwise from the paths in the config where given, else: QA items the teacher writes from the
documents (learner/evals/written.py) and the shipped IFEval-format set
(learner/evals/company_ifeval.py).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knowledge.errors import ConfigError, NothingToTrainError
from knowledge.settings import Settings
from learner.evals.company_ifeval import SHIPPED as COMPANY_IFEVAL
from learner.evals.qa import set_of
from learner.generation import Message
from learner.sandbox.manifest import SandboxManifest, load_manifest, sandbox_root

if TYPE_CHECKING:  # the store pulls in Chroma: only its type is needed here
    from knowledge.store import KnowledgeStore
    from knowledge.tables import Document


@dataclass
class EvalSets:
    qa_file: Path | None  # QA rows of every set the gate scores ("set": a sandbox day)
    ifeval_file: Path | None
    known_qa_file: Path | None  # what the model knew before any document (forgetting check)
    new_sets: set[str] = field(default_factory=set)  # the sets about this cycle's new documents
    cloze_file: Path | None = None  # document-recall probe (diagnostic, not gated)
    incontext_qa_file: Path | None = None  # reading a passage with distractors (diagnostic)


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def concat_jsonl(paths: Sequence[Path], out: Path) -> Path:
    """The rows of `paths`, in order, written to `out` (one eval file made of several)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for p in paths for r in read_jsonl(p)))
    return out


def sandbox_ifeval_file(
    manifest: SandboxManifest, out: Path, locate: Callable[[Path], Path] = Path
) -> Path:
    """Every sandbox day's held-out IFEval items in one file (`locate` maps a manifest path to
    where it lies now; the build scores them before its stage is moved into place)."""
    return concat_jsonl([locate(d.ifeval_file) for d in manifest.days], out)


def uses_sandbox(settings: Settings) -> bool:
    return settings.models.student.startswith("sandbox:")


def sandbox_manifest(settings: Settings) -> SandboxManifest:
    return load_manifest(
        sandbox_root(settings.sandbox_dir, settings.sandbox.size, settings.sandbox.seed)
    )


def load_prompts(path: Path) -> list[list[Message]]:
    """JSONL rows of {"messages": [...]} or {"prompt": "..."} -> message lists."""
    prompts = []
    for row in read_jsonl(path):
        if "messages" in row:
            prompts.append(row["messages"])
        elif "prompt" in row:
            prompts.append([{"role": "user", "content": row["prompt"]}])
        else:
            raise ConfigError(f"{path}: each row needs 'messages' or 'prompt'")
    return prompts


def _configured(path: str | None, what: str) -> Path | None:
    if path is None:
        return None
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise ConfigError(f"{what} file {resolved} does not exist")
    return resolved


def chat_prompts(settings: Settings) -> list[list[Message]]:
    path = _configured(settings.learner.midtrain.chat_prompts_file, "background chat prompts")
    if path is None and uses_sandbox(settings):
        path = sandbox_manifest(settings).chat_prompts_file
    return load_prompts(path) if path else []


def background_documents(settings: Settings) -> list[str]:
    """Texts replayed in mid-training beside earlier nights' documents (what the model knew
    before any company document): `midtrain.background_documents_dir`'s .md/.txt files, or the
    sandbox's documents about its initially known entities."""
    configured = settings.learner.midtrain.background_documents_dir
    folder = Path(configured).expanduser() if configured else None
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"background documents folder {folder} does not exist")
    if folder is None and uses_sandbox(settings):
        folder = sandbox_manifest(settings).background_documents_dir
    if folder is None:
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix in (".md", ".txt"))
    return [p.read_text(encoding="utf-8") for p in files]


def _opd_prompts_file(settings: Settings) -> Path | None:
    path = _configured(settings.learner.distill.prompts_file, "OPD prompts")
    if path is None and uses_sandbox(settings):
        path = sandbox_manifest(settings).opd_prompts_file
    return path


def opd_prompts(settings: Settings) -> list[list[Message]]:
    path = _opd_prompts_file(settings)
    if path is None:
        raise ConfigError("no OPD prompts: set learner.distill.prompts_file")
    return load_prompts(path)


def sandbox_document_names(settings: Settings) -> set[str]:
    """Names of the sandbox's day documents (they come with QA sets of their own); none outside
    the sandbox."""
    if not uses_sandbox(settings):
        return set()
    return {p.name for d in sandbox_manifest(settings).days for p in d.documents_dir.iterdir()}


def eval_sets(
    settings: Settings,
    document_names: list[str],
    workdir: Path,
    new_names: Collection[str] = (),
    written: Sequence[dict[str, Any]] = (),
    new_document_ids: Collection[int] = (),
) -> EvalSets:
    """The cycle's eval sets: configured files, or the sandbox's own and the written items.

    Without a configured QA file the QA set is the sandbox days with an ingested document among
    `document_names` (with their cloze probes) plus `written` (learner/evals/written.py rows, each
    with its "set" and "doc"); `new_sets` are the days with a document among `new_names` and the
    written sets holding an item about one of `new_document_ids` (this cycle's new documents).
    """
    cfg = settings.learner.eval
    sets = EvalSets(
        _configured(cfg.qa_file, "QA eval"),
        _configured(cfg.ifeval_file, "IFEval"),
        _configured(cfg.known_qa_file, "known-QA eval"),
    )
    qa_rows: list[dict[str, Any]] = []
    if uses_sandbox(settings):
        manifest = sandbox_manifest(settings)

        def days_with(names: Collection[str]) -> list:
            wanted = set(names)
            return [
                d for d in manifest.days if wanted & {p.name for p in d.documents_dir.iterdir()}
            ]

        days = days_with(document_names)
        if sets.qa_file is None and days:
            qa_rows += [r for d in days for r in read_jsonl(d.qa_file)]
            sets.new_sets = {d.name for d in days_with(new_names)}
            clozes = [d.cloze_file for d in days if d.cloze_file]
            if clozes:
                workdir.mkdir(parents=True, exist_ok=True)
                sets.cloze_file = workdir / "cloze_eval.jsonl"
                rows = [r for p in clozes for r in read_jsonl(p)]
                rows = cap_earlier(rows, sets.new_sets, cfg.max_earlier_items)
                sets.cloze_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        if sets.ifeval_file is None:
            # All days' items: on one day's 150, identical runs' IFEval differed by 5 points.
            sets.ifeval_file = sandbox_ifeval_file(manifest, workdir / "ifeval_eval.jsonl")
        sets.known_qa_file = sets.known_qa_file or manifest.known_qa_file
        sets.incontext_qa_file = manifest.incontext_qa_file
    else:
        sets.ifeval_file = sets.ifeval_file or COMPANY_IFEVAL  # the shipped set
    if sets.qa_file is None and written:
        qa_rows += written
        new_ids = set(new_document_ids)
        sets.new_sets |= {row["set"] for row in written if row["doc"] in new_ids}
    if qa_rows:
        workdir.mkdir(parents=True, exist_ok=True)
        sets.qa_file = workdir / "qa_eval.jsonl"
        rows = cap_earlier(qa_rows, sets.new_sets, cfg.max_earlier_items)
        sets.qa_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sets


def cap_earlier(
    rows: list[dict[str, Any]], new_sets: Collection[str], cap: int, seed: int = 0
) -> list[dict[str, Any]]:
    """`rows` with at most `cap` of the rows outside `new_sets`, drawn at random (fixed seed),
    in their original order; the new sets' rows are all kept."""
    earlier = [i for i, row in enumerate(rows) if set_of(row) not in new_sets]
    if len(earlier) <= cap:
        return rows
    dropped = set(earlier) - set(random.Random(seed).sample(earlier, cap))
    return [row for i, row in enumerate(rows) if i not in dropped]


def conversation_prompts(settings: Settings) -> list[list[Message]]:
    """Logged chats (Exchange rows) as prompts, every message redacted (learner/redaction.py).

    Used by the nightly cycle only when `learner.sources.conversations` is on. Left out:
    exchanges of users who opted out (knowledge/optout.py) and exchanges with no user (nobody
    could have opted them out, so there is no consent to rely on).
    Only user and assistant turns are kept: a request's system messages can carry retrieved
    chunks of group-restricted documents, which must not reach weights every user shares.
    A prompt ends with a user turn (what OPD samples an answer to).
    """
    from sqlmodel import Session, col, select

    from knowledge.db import open_database
    from knowledge.optout import opted_out_users
    from knowledge.tables import Exchange
    from learner.redaction import redact

    engine = open_database(settings.db_url)
    opted_out = opted_out_users(engine)
    query = (
        select(Exchange)
        .where(col(Exchange.user).is_not(None))
        .where(col(Exchange.user).not_in(opted_out))
        .order_by(col(Exchange.id))
    )
    with Session(engine) as session:
        rows = session.exec(query).all()
    prompts: list[list[Message]] = []
    for row in rows:
        kept = [
            {"role": m["role"], "content": redact(m["content"])}
            for m in json.loads(row.messages_json)
            if m.get("role") in {"user", "assistant"} and isinstance(m.get("content"), str)
        ]
        while kept and kept[-1]["role"] != "user":
            kept.pop()
        if kept:
            prompts.append(kept)
    return prompts


@dataclass
class TrainingPrompts:
    """The prompts one cycle uses, and how many came from each allowed source."""

    chat: list[list[Message]]  # background replay during mid-training
    opd: list[list[Message]]  # on-policy distillation
    documents: list[str]  # background documents replayed during mid-training
    sources: dict[str, int]  # allowed source -> prompts taken from it (only allowed ones appear)


def training_prompts(settings: Settings) -> TrainingPrompts:
    """Gather prompts from the sources `learner.sources` allows (documents are selected apart)."""
    allowed = settings.learner.sources
    chat: list[list[Message]] = []
    opd: list[list[Message]] = []
    documents: list[str] = []
    sources: dict[str, int] = {}
    if allowed.prompt_files:
        chat = chat_prompts(settings)
        path = _opd_prompts_file(settings)
        opd = load_prompts(path) if path else []
        documents = background_documents(settings)
        sources["prompt_files"] = len(chat) + len(opd) + len(documents)
    if allowed.conversations:
        conversations = conversation_prompts(settings)
        opd = opd + conversations
        sources["conversations"] = len(conversations)
    if not opd:
        raise ConfigError(
            "no OPD prompts: set learner.distill.prompts_file with learner.sources.prompt_files "
            "on, or turn learner.sources.conversations on once there are conversations to use"
        )
    return TrainingPrompts(chat, opd, documents, sources)


def eligible_documents(
    settings: Settings, store: KnowledgeStore, exclude_ids: Collection[int]
) -> list[Document]:
    """The new documents a cycle would train on; NothingToTrainError when that source is off."""
    if not settings.learner.sources.documents:
        raise NothingToTrainError(
            "learner.sources.documents is off: there is nothing to mid-train on, so the cycle "
            "is skipped"
        )
    return store.training_eligible(exclude_ids=exclude_ids)
