"""Question/answer pairs about the documents: the facts in the form people will ask for them.

A small model that reads a fact in a document can often complete the document, yet not answer
a question about it (Physics of Language Models 3.1; measured on the sandbox: ~30%). Training on
question/answer pairs of the new facts makes them answerable; replaying earlier documents' pairs
keeps what earlier nights taught (learner/midtrain.py mixes both in).

Where the pairs come from:
- a sandbox day's document: the day's `train_questions.jsonl` (other phrasings than the QA
  eval's, the answer as the base was taught to say it, and the document stating it);
- any other document: the teacher writes pairs from each chunk of the document, kept only when the short
  answer occurs in the chunk and the question is none the evals ask (after normalisation).

Pairs are cached per document version in `<home>/qa_pairs/<id>.jsonl` (written atomically), so
a later night replays an earlier document's pairs without writing them again; forgetting a
document deletes its file (learner/forgetting.py). The background documents (what the model knew
before any company document) get pairs the same way, cached by content, or, in the sandbox, its
base's own pre-training QA (`midtrain.background_pairs`).

    pairs = document_pairs(settings, store, documents, exclude, write)   # {doc id: [QAPair]}
    known = background_pairs(settings, texts, exclude, write)            # [QAPair]
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from knowledge.chunking import chunk_text, count_words
from knowledge.prompting import grounded_user_message
from knowledge.settings import Settings
from learner.datasets import read_jsonl, sandbox_document_names, sandbox_manifest, uses_sandbox
from learner.evals.qa import normalize, qa_correct
from learner.generation import Message

if TYPE_CHECKING:  # the store pulls in Chroma: only its type is needed here
    from knowledge.store import KnowledgeStore
    from knowledge.tables import Document

WRITE_PAIR = (
    "Write one question that these documents answer, then its answer. Reply in two lines:\n"
    "Question: <the question>\nAnswer: <a short answer copied from the documents>"
)
Writer = Callable[[list[list[Message]]], list[str]]  # conversations -> one reply each
_LINE = re.compile(r"^\s*(question|answer)\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class QAPair:
    question: str
    response: str  # the reply trained on, as the assistant says it
    answer: str  # the short answer inside `response` (what filtering and scoring check)

    def messages(self) -> list[Message]:
        return [{"role": "user", "content": self.question}]


def pair_request(chunk: str) -> list[Message]:
    """The conversation that asks the teacher for a question/answer pair about `chunk`."""
    return [{"role": "user", "content": grounded_user_message(WRITE_PAIR, [chunk])}]


def parse_pair(reply: str, chunk: str) -> QAPair | None:
    """`Question: ...` / `Answer: ...` from a teacher reply, kept only when the question is a
    question and the answer occurs in the chunk (a pair the chunk does not support is a guess)."""
    fields = {m.group(1).lower(): m.group(2) for m in _LINE.finditer(reply)}
    question, answer = fields.get("question", ""), fields.get("answer", "").rstrip(".")
    if not question.endswith("?") or not normalize(answer) or not qa_correct(chunk, answer):
        return None
    return QAPair(question, answer, answer)


def written_pairs(chunks: list[str], write: Writer) -> list[QAPair]:
    """One pair per chunk from the teacher, the unsupported ones dropped."""
    replies = write([pair_request(chunk) for chunk in chunks])
    return [p for r, c in zip(replies, chunks, strict=True) if (p := parse_pair(r, c))]


def without(pairs: list[QAPair], exclude: Collection[str]) -> list[QAPair]:
    """Pairs whose normalised question is not in `exclude` (eval questions), duplicates dropped."""
    seen, kept = set(exclude), []
    for pair in pairs:
        key = normalize(pair.question)
        if key and key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept


def _sandbox_pairs(settings: Settings, names: set[str]) -> dict[str, list[QAPair]]:
    """Sandbox training pairs by document name, for the documents among `names`."""
    out: dict[str, list[QAPair]] = {}
    for day in sandbox_manifest(settings).days:
        if not day.train_questions_file:
            continue
        for row in read_jsonl(Path(day.train_questions_file)):
            if row["doc"] in names:
                out.setdefault(row["doc"], []).append(_training_pair(row))
    return out


def _training_pair(row: dict[str, str]) -> QAPair:
    """A row of a sandbox training-questions file as a pair."""
    return QAPair(row["question"], row["response"], row["answer"])


def _cached_or_written(
    path: Path, chunks: Callable[[], list[str]], write: Writer | None
) -> list[QAPair]:
    """The pairs cached at `path`, else the teacher's pairs of `chunks()` (then cached), else none."""
    if path.exists():
        return [QAPair(**row) for row in read_jsonl(path)]
    if write is None:
        return []
    pairs = written_pairs(chunks(), write)
    _write_cache(path, pairs)
    return pairs


def _chunk_texts(store: KnowledgeStore, doc_id: int) -> list[str]:
    return [c.text for c in store.chunks_for([doc_id])]


def _cache_path(settings: Settings, doc_id: int) -> Path:
    return settings.home / "qa_pairs" / f"{doc_id}.jsonl"


def _write_cache(path: Path, pairs: list[QAPair]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    os.replace(tmp, path)  # a crash leaves the old file or none, never half of one


def document_pairs(
    settings: Settings,
    store: KnowledgeStore,
    documents: list[Document],
    exclude: Collection[str],
    write: Writer | None,
) -> dict[int, list[QAPair]]:
    """QA pairs per document id (see the module doc); eval questions (`exclude`) left out.

    `write` is the teacher (None: only the sandbox's pairs or cached ones are available; a
    document without either gets none).
    """
    sandbox_names = sandbox_document_names(settings)
    by_name = _sandbox_pairs(settings, {d.name for d in documents}) if sandbox_names else {}
    out: dict[int, list[QAPair]] = {}
    for document in documents:
        path = _cache_path(settings, document.id)
        if document.name in sandbox_names:
            pairs = by_name.get(document.name, [])
        else:
            chunks = functools.partial(_chunk_texts, store, document.id)
            pairs = _cached_or_written(path, chunks, write)
        out[document.id] = without(pairs, exclude)
    return out


def background_pairs(
    settings: Settings, texts: list[str], exclude: Collection[str], write: Writer | None
) -> list[QAPair]:
    """QA pairs of the background documents (`texts`: what the model knew before any company
    document), eval questions left out: the sandbox's pre-training QA about its known entities,
    or pairs the teacher writes from each text's chunks (cached by content, like a document's)."""
    if uses_sandbox(settings) and not settings.learner.midtrain.background_documents_dir:
        path = sandbox_manifest(settings).background_train_questions_file
        rows = read_jsonl(path) if path is not None else []
        return without([_training_pair(r) for r in rows], exclude)
    size, overlap = settings.knowledge.chunk_tokens, settings.knowledge.chunk_overlap
    pairs: list[QAPair] = []
    for text in texts:
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        path = settings.home / "qa_pairs" / "background" / f"{digest}.jsonl"
        chunks = functools.partial(chunk_text, text, count_words, size, overlap)
        pairs += _cached_or_written(path, chunks, write)
    return without(pairs, exclude)


def forget_pairs(settings: Settings, doc_ids: Collection[int]) -> None:
    """Delete the cached pairs of forgotten document versions."""
    for doc_id in doc_ids:
        _cache_path(settings, doc_id).unlink(missing_ok=True)


def sample_pairs(pairs: list[QAPair], n: int, rng: random.Random) -> list[QAPair]:
    """`n` pairs drawn without replacement while they last (replay within a budget)."""
    return rng.sample(pairs, min(n, len(pairs)))
