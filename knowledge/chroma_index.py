"""`VectorIndex` on Chroma: embedded (a folder on disk) or a Chroma server over HTTP.

    index = open_index(settings)     # knowledge.chroma_url set: HttpClient; else PersistentClient
    index = ChromaIndex(settings.chroma_dir, settings.knowledge.collection)
    index = ChromaIndex.server("http://127.0.0.1:8000", "protege-chunks")

Embeddings are always passed in: Chroma's default embedding function downloads a model (fails
offline), and a custom one is stored by name in the collection, which other processes then cannot
open. Only one process should write a given folder (the serving app); others read SQL. A server
(`chroma run --path DIR --port P`) lets several processes share one index.

Any Chroma failure is raised as IndexUnavailableError (503) naming the repair command; the index
holds nothing SQL does not (knowledge/acl.py), so `reset()` plus re-adding every chunk from SQL
(`protege knowledge check --repair`, knowledge/consistency.py) always brings it back.
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from knowledge.errors import ConfigError, IndexUnavailableError
from knowledge.settings import Settings
from knowledge.vector_index import Metadata, VectorHit

_ID_PAGE = 10_000
REPAIR_HINT = "run `protege knowledge check --repair` (with the server stopped) to rebuild it"
F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """Chroma's own errors (InternalError "Error in compaction", a corrupt folder) as 503s."""

    @functools.wraps(method)
    def call(self: ChromaIndex, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (ConfigError, ValueError):
            raise
        except Exception as exc:
            first = (str(exc).splitlines() or [""])[0][:300]
            raise IndexUnavailableError(
                f"the vector index failed ({type(exc).__name__}: {first}); {REPAIR_HINT}"
            ) from exc

    return call  # type: ignore[return-value]


def open_index(settings: Settings) -> ChromaIndex:
    """The index `settings` name: a Chroma server if `knowledge.chroma_url`, else embedded."""
    knobs = settings.knowledge
    if knobs.chroma_url:
        return ChromaIndex.server(knobs.chroma_url, knobs.collection)
    return ChromaIndex(settings.chroma_dir, knobs.collection)


class ChromaIndex:
    def __init__(self, path: Path | None, collection: str, *, client: Any = None) -> None:
        from chromadb.errors import InvalidArgumentError

        self.path = path
        if client is None and path is None:
            raise ConfigError("ChromaIndex needs a folder or a client")
        self.collection_name = collection
        try:
            self._client = client if client is not None else _open_folder(path)
            self._collection = self._open_collection()
        except (ValueError, InvalidArgumentError) as exc:  # e.g. a name of 2 characters
            raise ConfigError(f"chroma collection {collection!r}: {exc}") from exc
        except Exception as exc:  # a folder Chroma cannot read
            raise IndexUnavailableError(
                f"cannot open the vector index in {path}: {type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0][:300]}; {REPAIR_HINT}"
            ) from exc
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

    def _open_collection(self) -> Any:
        return self._client.get_or_create_collection(
            self.collection_name,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
        )

    def reset(self) -> None:
        """An empty collection instead of this one, whatever state it is in (for a rebuild).

        First Chroma's own delete (enough for a wedged log, "Error in compaction"); if Chroma
        cannot even do that, an embedded folder is moved aside (`chroma.broken-<time>`, kept for
        inspection) and a fresh one made.
        """
        with self._lock:
            try:
                self._client.delete_collection(self.collection_name)
                self._collection = self._open_collection()
                return
            except Exception:
                if self.path is None:  # a Chroma server: nothing more we can do from here
                    raise
            self.reset_folder(self.path)
            self._client = _open_folder(self.path)
            self._collection = self._open_collection()

    @staticmethod
    def reset_folder(path: Path) -> Path | None:
        """Move an embedded index folder aside (`<name>.broken-<time>`); returns where to."""
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()  # chromadb caches a client per path per process
        if not path.exists():
            return None
        aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(path), str(aside))
        return aside

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

    @_guarded
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

    @_guarded
    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._lock:
            for start in range(0, len(ids), self._max_batch):
                self._collection.delete(ids=list(ids[start : start + self._max_batch]))

    @_guarded
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

    @_guarded
    def count(self) -> int:
        with self._lock:
            return int(self._collection.count())

    @_guarded
    def ids(self) -> list[str]:
        out: list[str] = []
        with self._lock:
            while True:
                page = self._collection.get(include=[], limit=_ID_PAGE, offset=len(out))["ids"]
                out.extend(page)
                if len(page) < _ID_PAGE:
                    return out


def _open_folder(path: Path) -> Any:
    import chromadb

    # owner-only: the index holds every document's text (issue 11)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return chromadb.PersistentClient(path=str(path), settings=_chroma_settings())


def _chroma_settings() -> Any:
    from chromadb.config import Settings as ChromaSettings

    # Telemetry would try the network on every start; this machine may have none.
    return ChromaSettings(anonymized_telemetry=False)
