"""Held-out QA written from the documents: the gate's closed-book set when no QA file is given.

    n = write_items(engine, store, documents, write, exclude, set_name="run00007", cap=16)
    rows = qa_rows(items_for(engine, [d.id for d in documents]))   # QA eval rows
    add_item(engine, store, document_id=3, question="Who leads Zephyr?", answer="Ada Park")
    update_item(engine, 12, answer="Ada Park-Lee"); delete_item(engine, 12)
    forget_items(engine, [3, 4])                                   # forgetting a document

A company writes no QA file per night, so the cycle has its teacher write one question per chunk
of each new document version (at most `cap` chunks, spread over the document), in the same
`Question:/Answer:` format as the training pairs but asked for a question "a colleague could ask",
and keeps an item only when its short answer occurs in the chunk (learner.qa_pairs.parse_pair) and
its question, normalised, is none of `exclude` (OPD and background prompts, earlier items) or a
repeat. The training pairs are written after the items and leave every item's question out
(learner.qa_pairs.document_pairs' `exclude`), so nothing trains on what the gate measures.

Items live in the `evalitem` table, one document version each; all items one cycle wrote share a
set (`run<id>`), the unit the gate compares night to night. Each document's items are written in
one transaction: a crash leaves all of them or none. Items of documents outside the cycle's
lineage (forgotten, superseded) are not scored; forgetting deletes them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlmodel import Session, col, delete, select

from knowledge.errors import BadInputError, NotFoundError
from knowledge.prompting import grounded_user_message
from knowledge.settings import Settings
from knowledge.tables import utcnow
from learner.datasets import EvalSets, TrainingPrompts, eval_sets, sandbox_document_names
from learner.evals.qa import normalize
from learner.generation import Message
from learner.qa_pairs import Writer, parse_pair
from learner.tables import EvalItem

if TYPE_CHECKING:  # the store pulls in Chroma: only its type is needed here
    from knowledge.store import KnowledgeStore
    from knowledge.tables import Document

WRITE_ITEM = (
    "Write one question a colleague could ask about a fact in these documents, then its short "
    "answer. Reply in two lines:\nQuestion: <the question>\nAnswer: <the answer, copied from "
    "the documents>"
)
MAX_QUESTION_CHARS = 1000
MAX_ANSWER_CHARS = 200  # a short answer: replies are scored by containment


def item_request(chunk: str) -> list[Message]:
    """The conversation that asks the teacher for one eval item about `chunk`."""
    return [{"role": "user", "content": grounded_user_message(WRITE_ITEM, [chunk])}]


def spread(values: Sequence[Any], cap: int) -> list[Any]:
    """At most `cap` of `values`, evenly spaced from first to last (all of them when fewer)."""
    if len(values) <= cap:
        return list(values)
    if cap <= 1:
        return list(values[:cap])
    return [values[round(i * (len(values) - 1) / (cap - 1))] for i in range(cap)]


def items_for(engine: Engine, document_ids: Collection[int]) -> list[EvalItem]:
    """The items of these document versions, by document then id."""
    if not document_ids:
        return []
    with Session(engine) as session:
        query = select(EvalItem).where(col(EvalItem.document_id).in_(list(document_ids)))
        return list(session.exec(query.order_by(col(EvalItem.document_id), col(EvalItem.id))))


def list_items(engine: Engine, document_id: int | None = None) -> list[EvalItem]:
    """Every item (or one document version's), by document then id."""
    with Session(engine) as session:
        query = select(EvalItem)
        if document_id is not None:
            query = query.where(EvalItem.document_id == document_id)
        return list(session.exec(query.order_by(col(EvalItem.document_id), col(EvalItem.id))))


def get_item(engine: Engine, item_id: int) -> EvalItem:
    with Session(engine) as session:
        item = session.get(EvalItem, item_id)
    if item is None:
        raise NotFoundError(f"no eval item with id {item_id}")
    return item


def qa_rows(items: Sequence[EvalItem]) -> list[dict[str, Any]]:
    """QA eval rows (learner.evals.evaluate's format), the set and ids beside each."""
    return [
        {"question": i.question, "answer": i.answer, "set": i.set_name, "doc": i.document_id,
         "item": i.id}
        for i in items
    ]  # fmt: skip


def write_items(
    engine: Engine,
    store: KnowledgeStore,
    documents: Sequence[Document],
    write: Writer,
    exclude: Collection[str],
    set_name: str,
    cap: int,
) -> int:
    """Have the teacher write items for the documents that have none yet; returns how many."""
    have = {i.document_id for i in items_for(engine, [d.id for d in documents])}
    seen = set(exclude) | {normalize(i.question) for i in list_items(engine)}
    written = 0
    for document in documents:
        if document.id in have:
            continue
        chunks = spread([c.text for c in store.chunks_for([document.id])], cap)
        replies = write([item_request(chunk) for chunk in chunks]) if chunks else []
        rows = []
        for reply, chunk in zip(replies, chunks, strict=True):
            pair = parse_pair(reply, chunk)
            key = normalize(pair.question) if pair else ""
            if pair is None or key in seen or len(pair.answer) > MAX_ANSWER_CHARS:
                continue
            seen.add(key)
            rows.append(EvalItem(document_id=document.id, set_name=set_name,
                                 question=pair.question, answer=pair.answer))  # fmt: skip
        with Session(engine) as session:  # one document's items in one transaction
            session.add_all(rows)
            session.commit()
        written += len(rows)
    return written


def _checked(question: str, answer: str) -> tuple[str, str]:
    question, answer = question.strip(), answer.strip()
    if not normalize(question) or len(question) > MAX_QUESTION_CHARS:
        raise BadInputError(f"an eval question needs 1-{MAX_QUESTION_CHARS} characters of text")
    if not normalize(answer) or len(answer) > MAX_ANSWER_CHARS:
        raise BadInputError(
            f"an eval answer needs 1-{MAX_ANSWER_CHARS} characters of text (a short answer: a "
            "reply is right when it contains it)"
        )
    return question, answer


def add_item(
    engine: Engine, store: KnowledgeStore, document_id: int, question: str, answer: str
) -> EvalItem:
    """An admin's item about a document version (NotFoundError: no such document).

    It joins the set of the document's other items (`doc<id>` when it has none), and warns
    nobody when the document does not contain the answer: an admin may ask what it implies.
    """
    store.get_document(document_id)
    question, answer = _checked(question, answer)
    existing = items_for(engine, [document_id])
    set_name = existing[0].set_name if existing else f"doc{document_id}"
    item = EvalItem(document_id=document_id, set_name=set_name, question=question,
                    answer=answer, origin="admin")  # fmt: skip
    with Session(engine) as session:
        session.add(item)
        session.commit()
        session.refresh(item)
    return item


def update_item(
    engine: Engine, item_id: int, question: str | None = None, answer: str | None = None
) -> EvalItem:
    """Change an item's question and/or answer; it becomes the admin's (`origin: admin`)."""
    with Session(engine) as session:
        item = session.get(EvalItem, item_id)
        if item is None:
            raise NotFoundError(f"no eval item with id {item_id}")
        item.question, item.answer = _checked(
            item.question if question is None else question,
            item.answer if answer is None else answer,
        )
        item.origin, item.updated_at = "admin", utcnow()
        session.add(item)
        session.commit()
        session.refresh(item)
        return item


def delete_item(engine: Engine, item_id: int) -> None:
    with Session(engine) as session:
        item = session.get(EvalItem, item_id)
        if item is None:
            raise NotFoundError(f"no eval item with id {item_id}")
        session.delete(item)
        session.commit()


def forget_items(engine: Engine, document_ids: Collection[int]) -> int:
    """Delete the items of forgotten document versions; returns how many went."""
    if not document_ids:
        return 0
    with Session(engine) as session:
        result = session.exec(
            delete(EvalItem).where(col(EvalItem.document_id).in_(list(document_ids)))
        )
        session.commit()
        return result.rowcount


def prompt_questions(prompts: TrainingPrompts) -> set[str]:
    """Normalised user turns of the cycle's OPD and background prompts (items must differ)."""
    return {
        normalize(m["content"])
        for conversation in prompts.opd + prompts.chat
        for m in conversation
        if m["role"] == "user"
    }


def cycle_eval_sets(
    settings: Settings,
    store: KnowledgeStore,
    engine: Engine,
    documents: Sequence[Document],
    new_documents: Sequence[Document],
    write: Writer,
    prompts: TrainingPrompts,
    workdir: Path,
    run_id: int,
) -> EvalSets:
    """The cycle's eval sets (learner.datasets.eval_sets) over `documents` (the lineage), after
    the teacher has written items for the new documents that need them: no QA file configured
    and not a sandbox day's document (those bring their own QA)."""
    sandbox = sandbox_document_names(settings)
    written: list[dict[str, Any]] = []
    if settings.learner.eval.qa_file is None:
        cap = settings.learner.eval.written_items_per_document
        need = [d for d in new_documents if d.name not in sandbox]
        write_items(engine, store, need, write, prompt_questions(prompts), f"run{run_id:05d}", cap)
        written = qa_rows(items_for(engine, [d.id for d in documents if d.name not in sandbox]))
    return eval_sets(
        settings,
        [d.name for d in documents],
        workdir,
        [d.name for d in new_documents],
        written,
        {d.id for d in new_documents},
    )


def item_json(item: EvalItem) -> dict[str, Any]:
    """An item as JSON (the admin API and `protege evals ... --json`)."""
    return {
        "id": item.id,
        "document_id": item.document_id,
        "set": item.set_name,
        "question": item.question,
        "answer": item.answer,
        "origin": item.origin,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
    }
