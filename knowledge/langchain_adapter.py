"""protege's knowledge for LangChain: a retriever, a (read-only) VectorStore, the embeddings.

    from knowledge.langchain_adapter import knowledge_retriever, knowledge_vectorstore
    retriever = knowledge_retriever(store, groups=["hr"], k=4)
    docs = retriever.invoke("How many vacation days?")       # [langchain Document, ...]
    vectorstore = knowledge_vectorstore(store)               # langchain_chroma.Chroma, same index
    vectorstore.as_retriever(search_kwargs={"k": 4, "filter": acl_filter(store, ["hr"])})

`knowledge_retriever` goes through `KnowledgeStore.retrieve`, so every hit is checked against SQL
(deleted or replaced versions and ACL); prefer it. The VectorStore reads Chroma directly, for code
that needs LangChain's VectorStore API: pass `acl_filter(store, groups)` as `filter`, or it sees
every document (the filter lists the ids of the documents SQL lets `groups` see when it is made;
make a new one after uploads). Its hits carry `document_id`, `position` and `version` only:
names, titles and headings are in SQL (`store.get_document`). It refuses writes: documents enter through `KnowledgeStore.ingest_bytes`, which keeps
SQL and the index in step. Both embed with the same offline all-MiniLM-L6-v2 as the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_chroma import Chroma
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from knowledge.acl import clean_groups, visible_where
from knowledge.embeddings import Embedder, get_embedder
from knowledge.errors import ConfigError

_READ_ONLY = "protege's index is read-only here: add documents with KnowledgeStore.ingest_bytes"


class OfflineEmbeddings(Embeddings):
    """LangChain `Embeddings` over protege's offline MiniLM embedder (384 dims, unit length)."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(list(texts))

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text])[0]


class ReadOnlyChroma(Chroma):
    """langchain_chroma's `Chroma` on protege's collection, with every write refused."""

    def add_texts(self, *args: Any, **kwargs: Any) -> list[str]:
        raise NotImplementedError(_READ_ONLY)

    def add_images(self, *args: Any, **kwargs: Any) -> list[str]:
        raise NotImplementedError(_READ_ONLY)

    def update_documents(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(_READ_ONLY)

    def delete(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(_READ_ONLY)

    def delete_collection(self) -> None:
        raise NotImplementedError(_READ_ONLY)

    def reset_collection(self) -> None:
        raise NotImplementedError(_READ_ONLY)


def acl_filter(store: Any, groups: Sequence[str] | None = None) -> dict[str, Any]:
    """The Chroma `filter` that limits a search to what callers in `groups` may see (now)."""
    with store.session() as session:
        where = visible_where(session, clean_groups(groups, strict=False))
    assert where is not None  # no max_ids given
    return where


def knowledge_vectorstore(store: Any) -> ReadOnlyChroma:
    """The store's Chroma collection as a LangChain VectorStore (sharing the store's client)."""
    index = store.index
    client = getattr(index, "client", None)
    if client is None:
        raise ConfigError("the LangChain VectorStore needs a Chroma index")
    return ReadOnlyChroma(
        collection_name=index.collection_name,
        embedding_function=OfflineEmbeddings(store.embedder),
        client=client,
        create_collection_if_not_exists=False,
        # Our collection is cosine (see ChromaIndex). Saying so here also spares LangChain
        # reading the collection's configuration, which warns about the absent embedding function.
        relevance_score_fn=lambda distance: 1.0 - distance,
    )


class KnowledgeRetriever(BaseRetriever):
    """A LangChain retriever over `KnowledgeStore.retrieve` (SQL-checked, ACL-filtered)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any
    groups: list[str] = []
    k: int | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[LCDocument]:
        hits = self.store.retrieve(query, self.k, groups=self.groups)
        return [
            LCDocument(
                id=hit.chunk_id,
                page_content=hit.text,
                metadata={
                    key: value
                    for key, value in {
                        "chunk_id": hit.chunk_id,
                        "document_id": hit.document_id,
                        "name": hit.name,
                        "title": hit.title,
                        "version": hit.version,
                        "position": hit.position,
                        "heading": hit.heading,
                        "page_start": hit.page_start,
                        "page_end": hit.page_end,
                        "score": hit.score,
                    }.items()  # fmt: skip
                    if value is not None
                },
            )
            for hit in hits
        ]


def knowledge_retriever(
    store: Any, *, groups: Sequence[str] | None = None, k: int | None = None
) -> KnowledgeRetriever:
    """A retriever for callers in `groups` (None: company documents only); k: config top_k."""
    return KnowledgeRetriever(store=store, groups=list(groups or []), k=k)
