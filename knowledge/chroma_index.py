"""`VectorIndex` on an embedded Chroma database (a folder on disk, no server).

    index = ChromaIndex(settings.chroma_dir, settings.knowledge.collection)

Embeddings are always passed in: Chroma's default embedding function downloads a model (fails
offline), and a custom one is stored by name in the collection, which other processes then cannot
open. Only one process should write a given folder (the serving app); others read SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from knowledge.errors import ConfigError
from knowledge.vector_index import Metadata, VectorHit

_ID_PAGE = 10_000


class ChromaIndex:
    def __init__(self, path: Path, collection: str) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
        from chromadb.errors import InvalidArgumentError

        path.mkdir(parents=True, exist_ok=True)
        # Telemetry would try the network on every start; this machine may have none.
        self._client = chromadb.PersistentClient(
            path=str(path), settings=ChromaSettings(anonymized_telemetry=False)
        )
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
        self, embedding: Sequence[float], k: int, where: Mapping[str, Any] | None = None
    ) -> list[VectorHit]:
        with self._lock:
            total = self._collection.count()
            if total == 0 or k <= 0:
                return []
            result = self._collection.query(
                query_embeddings=[list(map(float, embedding))],
                n_results=min(k, total),
                where=dict(where) if where else None,
                include=["documents", "metadatas", "distances"],
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
