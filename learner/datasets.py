"""Where the nightly cycle's prompts and eval sets come from.

With sandbox models (`models.student: sandbox:...`) they come from the sandbox manifest: the QA
eval is every sandbox day whose documents have been ingested, IFEval is the held-out day-1 set.
Otherwise from the paths in the config (an admin-provided JSONL for each).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from knowledge.errors import ConfigError
from knowledge.settings import Settings
from learner.generation import Message
from learner.sandbox.manifest import SandboxManifest, load_manifest, sandbox_root


@dataclass
class EvalSets:
    qa_file: Path | None
    ifeval_file: Path | None
    known_qa_file: Path | None


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


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


def opd_prompts(settings: Settings) -> list[list[Message]]:
    path = _configured(settings.learner.distill.prompts_file, "OPD prompts")
    if path is None and uses_sandbox(settings):
        path = sandbox_manifest(settings).opd_prompts_file
    if path is None:
        raise ConfigError("no OPD prompts: set learner.distill.prompts_file")
    return load_prompts(path)


def eval_sets(settings: Settings, document_names: list[str], workdir: Path) -> EvalSets:
    cfg = settings.learner.eval
    sets = EvalSets(
        _configured(cfg.qa_file, "QA eval"),
        _configured(cfg.ifeval_file, "IFEval"),
        _configured(cfg.known_qa_file, "known-QA eval"),
    )
    if not uses_sandbox(settings):
        return sets
    manifest = sandbox_manifest(settings)
    names = set(document_names)
    days = [d for d in manifest.days if names & {p.name for p in d.documents_dir.iterdir()}]
    if sets.qa_file is None and days:
        workdir.mkdir(parents=True, exist_ok=True)
        combined = workdir / "qa_eval.jsonl"
        combined.write_text("".join(d.qa_file.read_text() for d in days))
        sets.qa_file = combined
    sets.ifeval_file = sets.ifeval_file or manifest.days[0].ifeval_file
    sets.known_qa_file = sets.known_qa_file or manifest.known_qa_file
    return sets


def conversation_prompts(settings: Settings) -> list[list[Message]]:
    """Logged chats (Exchange rows) as prompts, every message redacted (learner/redaction.py).

    NOT used by the nightly cycle yet: it trains on documents and the configured prompt files
    only. Users cannot opt out of conversation training yet (there is no opt-out record), so
    wiring this in must wait for that; the redaction already applies to anything read here.
    Only user and assistant turns are kept: a request's system messages can carry retrieved
    chunks of group-restricted documents, which must not reach weights every user shares.
    A prompt ends with a user turn (what OPD samples an answer to).
    """
    from sqlmodel import Session, col, select

    from knowledge.db import open_database
    from knowledge.tables import Exchange
    from learner.redaction import redact

    with Session(open_database(settings.db_url)) as session:
        rows = session.exec(select(Exchange).order_by(col(Exchange.id))).all()
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
