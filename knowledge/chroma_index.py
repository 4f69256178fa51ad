"""`VectorIndex` on Chroma: embedded (a folder on disk) or a Chroma server over HTTP.

    index = open_index(settings)     # knowledge.chroma_url set: HttpClient; else PersistentClient
    index = ChromaIndex(settings.chroma_dir, settings.knowledge.collection)
    index = ChromaIndex.server("http://127.0.0.1:8000", "protege-chunks")

Embeddings are always passed in: Chroma's default embedding function downloads a model (fails
offline), and a custom one is stored by name in the collection, which other processes then cannot
open. Only one process should write a given folder (the serving app); others read SQL. A server
(`chroma run --path DIR --port P`) lets several processes share one index.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from knowledge.errors import ConfigError
from knowledge.settings import Settings
from knowledge.vector_index import Metadata, VectorHit

_ID_PAGE = 10_000


def open_index(settings: Settings) -> ChromaIndex:
    """The index `settings` name: a Chroma server if `knowledge.chroma_url`, else embedded."""
    knobs = settings.knowledge
    if knobs.chroma_url:
        return ChromaIndex.server(knobs.chroma_url, knobs.collection)
    return ChromaIndex(settings.chroma_dir, knobs.collection)


class ChromaIndex:
    def __init__(self, path: Path | None, collection: str, *, client: Any = None) -> None:
        from chromadb.errors import InvalidArgumentError

        if client is None:
            import chromadb

            if path is None:
                raise ConfigError("ChromaIndex needs a folder or a client")
            path.mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(path), settings=_chroma_settings())
        self._client = client
        self.collection_name = collection
        try:
            self._collection = self._client.get_or_create_collection(
                collection,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
            )
        except (ValueError, InvalidArgumentError) as exc:  # e.g. a name of 2 characters
            raise ConfigError(f"chroma collection {collection!r}: {exc}") from exc
        # The raw JSON: `.configuration` warns about the (intended) absent embedding function.
        hnsw = (self._collection.configuration_json or {}).get("hnsw") or {}
        if hnsw.get("space", "cosine") != "cosine":
            raise ConfigError(
                f"chroma collection {collection!r} in {path} uses {hnsw.get('space')!r} "
                "distance; protege needs cosine (delete the folder to rebuild)"
            )
        self._max_batch = max(1, int(self._client.get_max_batch_size()))
        # Calls are short (a query ~2 ms); one lock keeps the client's use simple and safe.
        self._lock = threading.Lock()

    @classmethod
    def server(cls, url: str, collection: str) -> ChromaIndex:
        """A Chroma server at `url` ("http://host:port"); fails fast if it does not answer."""
        from urllib.parse import urlsplit

        import chromadb

        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(f"knowledge.chroma_url {url!r}: expected http(s)://host:port")
        try:
            client = chromadb.HttpClient(
                host=parts.hostname,
                port=parts.port or (443 if parts.scheme == "https" else 8000),
                ssl=parts.scheme == "https",
                settings=_chroma_settings(),
            )
            client.heartbeat()
        except Exception as exc:  # connection refused, DNS, TLS: all mean "not reachable"
            raise ConfigError(f"Chroma server {url} is not reachable: {exc}") from exc
        return cls(None, collection, client=client)

    @property
    def client(self) -> Any:
        """The chromadb client (LangChain's Chroma wrapper shares it)."""
        return self._client

    def add(
        self,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        documents: Sequence[str],
        metadatas: Sequence[Metadata],
    ) -> None:
        if not (len(ids) == len(embeddings) == len(documents) == len(metadatas)):
            raise ValueError("ids, embeddings, documents and metadatas differ in length")
        with self._lock:
            # Chroma caps one call's size; upsert (not add) so a leftover vector with a reused id
            # (say, after a crash) is replaced instead of silently kept.
            for start in range(0, len(ids), self._max_batch):
                end = start + self._max_batch
                self._collection.upsert(
                    ids=list(ids[start:end]),
                    embeddings=[list(map(float, e)) for e in embeddings[start:end]],
                    documents=list(documents[start:end]),
                    metadatas=[dict(m) for m in metadatas[start:end]],
                )

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._lock:
            for start in range(0, len(ids), self._max_batch):
                self._collection.delete(ids=list(ids[start : start + self._max_batch]))

    def query(
        self,
        embedding: Sequence[float],
        k: int,
        where: Mapping[str, Any] | None = None,
        *,
        payload: bool = True,
    ) -> list[VectorHit]:
        if k <= 0:
            return []
        # Chroma 1.5 answers n_results > count (and an empty collection) with what it has, so no
        # count() first: that round trip cost ~1 ms per query at 10k vectors.
        include = ["documents", "metadatas", "distances"] if payload else ["distances"]
        with self._lock:
            result = self._collection.query(
                query_embeddings=[list(map(float, embedding))],
                n_results=k,
                where=dict(where) if where else None,
                include=include,
            )
        ids = result["ids"][0]
        distances = (result.get("distances") or [[]])[0]
        documents = (result.get("documents") or [[None] * len(ids)])[0]
        metadatas = (result.get("metadatas") or [[None] * len(ids)])[0]
        return [
            # cosine space: distance = 1 - cosine similarity
            VectorHit(id=i, score=1.0 - float(d), document=doc or "", metadata=dict(meta or {}))
            for i, d, doc, meta in zip(ids, distances, documents, metadatas, strict=True)
        ]

    def count(self) -> int:
        with self._lock:
            return int(self._collection.count())

    def ids(self) -> list[str]:
        out: list[str] = []
        with self._lock:
            while True:
                page = self._collection.get(include=[], limit=_ID_PAGE, offset=len(out))["ids"]
                out.extend(page)
                if len(page) < _ID_PAGE:
                    return out


def _chroma_settings() -> Any:
    from chromadb.config import Settings as ChromaSettings

    # Telemetry would try the network on every start; this machine may have none.
    return ChromaSettings(anonymized_telemetry=False)
