"""Retrieval with access control: Chroma finds candidates, SQL (the truth) has the last word.

    hits = search_by_vector(store, vector, k=3, groups=["hr"])   # store.retrieve embeds first

Every hit Chroma returns is looked up in SQL, which drops vectors of replaced or deleted versions
(left by a crash, or mid-replace) and applies the ACL (`knowledge.acl.visible`), so a stale or
wrong vector can cost a result but never leak one. For callers who see little of the corpus the
fallback is a Chroma filter on the ids of the documents SQL lets them see
(`knowledge.acl.visible_where`); access data itself is never stored in the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from knowledge.acl import clean_groups, visible, visible_where
from knowledge.tables import CURRENT, Chunk, Document

_MAX_FILTER_IDS = 5_000  # more visible documents: look further unfiltered instead


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: str
    document_id: int
    title: str
    text: str
    score: float  # cosine similarity of query and chunk, higher is closer
    name: str = ""  # the document's file name
    position: int = 0  # the chunk's place in its document
    heading: str | None = None  # for citations: heading path and pages of the chunk
    page_start: int | None = None
    page_end: int | None = None
    version: int = 1


def search_by_vector(
    store: Any, vector: Sequence[float], k: int, groups: Sequence[str] | None = None
) -> list[RetrievedChunk]:
    """The `k` chunks nearest `vector` that `groups` may see, checked against SQL.

    First an unfiltered HNSW search for more than `k` (a few ms even at 100k vectors); SQL then
    drops what the caller may not see. Only when that leaves fewer than `k` (a caller who sees a
    small part of the corpus) does Chroma filter itself, on the ids of the documents SQL says the
    caller may see: exact, but its metadata pre-filter grows with the collection (~30 ms at 10k
    vectors on this machine). See bench/retrieval.py.
    """
    caller = clean_groups(groups, strict=False)
    fetch = max(4 * k, k + 16)
    hits = store.index.query(vector, fetch, payload=False)
    results = _checked(store, hits, caller)
    if len(results) >= k or len(hits) < fetch:
        return results[:k]
    with store.session() as session:
        where = visible_where(session, caller, max_ids=_MAX_FILTER_IDS)
    # headroom for vectors SQL no longer knows (mid-replace, after a crash); unfiltered: further
    fetch = 2 * k + 4 if where is not None else fetch * 4
    while True:
        hits = store.index.query(vector, fetch, where=where, payload=False)
        results = _checked(store, hits, caller)
        if len(results) >= k or len(hits) < fetch:
            return results[:k]
        fetch *= 4  # many stale hits: look further


def _checked(store: Any, hits: list[Any], caller: list[str]) -> list[RetrievedChunk]:
    """Hits that are chunks of current versions the caller may see, in hit order."""
    if not hits:
        return []
    with store.session() as session:
        # By chunk primary key only: with a `document.status` condition here SQLite would walk
        # every current document instead (O(corpus) per query); status is checked below.
        query = select(Chunk, Document).join(Document)
        rows = session.exec(query.where(col(Chunk.id).in_([h.id for h in hits])))
        found = {chunk.id: (chunk, document) for chunk, document in rows}
    results = []
    for hit in hits:
        # SQL is the truth: skip vectors of deleted/replaced versions, re-check the ACL.
        chunk, document = found.get(hit.id, (None, None))
        if chunk is None or document is None or document.status != CURRENT:
            continue
        if not visible(document, caller):
            continue
        results.append(
            RetrievedChunk(chunk.id, chunk.document_id, document.title, chunk.text,
                           hit.score, name=document.name, position=chunk.position,
                           heading=chunk.heading, page_start=chunk.page_start,
                           page_end=chunk.page_end, version=document.version)
        )  # fmt: skip
    return results
