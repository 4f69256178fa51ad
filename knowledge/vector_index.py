"""The vector index the knowledge store talks to: a small protocol so the backend can change.

The store computes embeddings itself and passes them in (no backend-side embedding functions).
`knowledge.chroma_index.ChromaIndex` is the implementation used today.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Metadata = Mapping[str, str | int | float | bool]


@dataclass(frozen=True)
class VectorHit:
    """One nearest neighbour: `score` is cosine similarity (1 = same direction)."""

    id: str
    score: float
    document: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class VectorIndex(Protocol):
    def add(
        self,
        ids: Sequence[str],
        embeddings: Sequence[Sequence[float]],
        documents: Sequence[str],
        metadatas: Sequence[Metadata],
    ) -> None:
        """Add (or replace) vectors; ids are unique."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Remove vectors; unknown ids are ignored."""
        ...

    def query(
        self,
        embedding: Sequence[float],
        k: int,
        where: Mapping[str, Any] | None = None,
        *,
        payload: bool = True,
    ) -> list[VectorHit]:
        """Up to `k` nearest vectors, best first, restricted by a Chroma-style `where` filter.

        `payload=False`: ids and scores only (no stored text or metadata), for callers that
        read those from SQL anyway.
        """
        ...

    def count(self) -> int: ...

    def ids(self) -> list[str]: ...
