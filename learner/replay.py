"""What a night replays of earlier knowledge: earlier nights' documents and QA pairs, and the
background's (what the model knew before any company document), drawn by mid-training
(learner/midtrain.py, within its token budget) and by OPD's replayed cross-entropy
(learner/distill.py).

    documents, pairs = replay_material(cfg, nights, texts, pairs_of, background_docs, background_qa)

`midtrain.replay_balance` says how the sources share the draws: "pooled" (one pool, each source
in proportion to its size) or "per_night" (each earlier night and the background equally).
"""

from __future__ import annotations

from typing import TypeVar

from knowledge.settings import MidtrainConfig
from learner.qa_pairs import QAPair

T = TypeVar("T")


def replay_pool(groups: list[list[T]], balance: str) -> list[T]:
    """One list to draw replay from: the groups joined ("pooled": each drawn in proportion to
    its size), or ("per_night") each smaller group repeated up to the largest one's length, so
    a uniform draw from the list picks every group equally often."""
    groups = [g for g in groups if g]
    if balance == "pooled" or not groups:
        return [x for g in groups for x in g]
    size = max(len(g) for g in groups)
    return [g[i % len(g)] for g in groups for i in range(size)]


def replay_material(
    cfg: MidtrainConfig,
    nights: list[list[int]],
    texts: dict[int, str],
    pairs_of: dict[int, list[QAPair]],
    background_documents: list[str],
    background_pairs: list[QAPair],
) -> tuple[list[str], list[QAPair]]:
    """(documents, pairs) to replay: `nights` are the earlier documents' ids grouped by the night
    that learned them (Registry.documents_by_night; ids without text, e.g. deleted since, are
    left out), `texts` and `pairs_of` their text and QA pairs by id."""
    doc_groups = [[texts[i] for i in night if i in texts] for night in nights]
    pair_groups = [
        [p for i in night if i in texts for p in pairs_of.get(i, [])] for night in nights
    ]
    documents = replay_pool(doc_groups + [background_documents], cfg.replay_balance)
    pairs = replay_pool(pair_groups + [background_pairs], cfg.replay_balance)
    return documents, pairs
