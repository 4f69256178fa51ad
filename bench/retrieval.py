"""Retrieval bench: ingest throughput, query latency at 10k and 100k chunks, peak memory.

    .venv/bin/python bench/retrieval.py                        # ingest 400 chunks; 10k and 100k
    .venv/bin/python bench/retrieval.py --sizes 10000 --queries 100 --ingest-chunks 200

1. Ingest: synthetic Markdown documents through `KnowledgeStore.ingest_bytes` (parse, chunk,
   embed with the offline MiniLM on CPU, SQL + Chroma writes): chunks per second, all included.
2. Query latency at each size: SQL rows written in bulk and *precomputed* vectors (clustered
   random unit vectors, 384 dims) added to embedded Chroma, then timed queries without the
   embedding step (one query embedding costs ~15 ms on CPU on top). Four paths:
     chroma/no-acl    index.query, no filter
     chroma/acl       index.query with the ACL filter of a caller in one group
     store/company    store.retrieve_by_vector, no groups (company filter + SQL check of hits)
     store/acl        store.retrieve_by_vector for a caller in one group
   20% of documents are restricted to one of 5 groups. k = 5.
3. Peak memory: `resource.getrusage(RUSAGE_SELF).ru_maxrss` of this process (Chroma runs in it).

Prints figures only; nothing is asserted. Everything lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from knowledge.acl import acl_where, vector_metadata  # noqa: E402
from knowledge.settings import KnowledgeConfig, Settings  # noqa: E402
from knowledge.store import KnowledgeStore  # noqa: E402
from knowledge.tables import Chunk, Document, DocumentText  # noqa: E402

DIM = 384
CHUNKS_PER_DOC = 50
GROUPS = [f"team{i}" for i in range(5)]
WORDS = (
    "policy employee office travel expense laptop security badge meeting vacation salary "
    "team project release customer invoice contract support training parking lunch"
).split()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p50 = statistics.median(ms)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"p50 {p50:6.2f} ms  p95 {p95:6.2f} ms"


def bench_ingest(root: Path, n_chunks: int, rng: np.random.Generator) -> None:
    settings = Settings(
        home=root / "ingest", knowledge=KnowledgeConfig(chunk_tokens=64, chunk_overlap=8)
    )
    store = KnowledgeStore(settings)
    store.embedder.embed(["warm up"])  # model load is not ingest time
    docs, total = [], 0
    while total < n_chunks:
        paragraphs = [
            " ".join(rng.choice(WORDS, size=55)) + "." for _ in range(8)
        ]  # ~8 chunks of <=64 words
        docs.append(f"# Document {len(docs)}\n\n" + "\n\n".join(paragraphs) + "\n")
        total += 8
    started = time.perf_counter()
    chunks = 0
    for i, text in enumerate(docs):
        chunks += store.ingest_bytes(f"doc{i}.md", text.encode()).document.n_chunks
    seconds = time.perf_counter() - started
    print(f"ingest: {len(docs)} documents, {chunks} chunks in {seconds:.1f} s = "
          f"{chunks / seconds:.0f} chunks/s (parse+chunk+embed+SQL+Chroma)")  # fmt: skip
    texts = [c.text for c in store.chunks_for([d.id for d in store.list_documents()])]
    started = time.perf_counter()
    for start in range(0, len(texts), 8):  # the same batches as the ingest (one document each)
        store.embedder.embed(texts[start : start + 8])
    embed_s = time.perf_counter() - started
    print(f"  of which embedding: {embed_s:.1f} s ({len(texts) / embed_s:.0f} chunks/s alone, "
          f"{100 * embed_s / seconds:.0f}% of the ingest time)")  # fmt: skip


def build_index(
    root: Path, size: int, rng: np.random.Generator
) -> tuple[KnowledgeStore, np.ndarray]:
    settings = Settings(home=root / f"n{size}")
    store = KnowledgeStore(settings)
    n_docs = size // CHUNKS_PER_DOC
    centers = rng.standard_normal((max(size // 200, 10), DIM)).astype(np.float32)
    vectors = centers[rng.integers(0, len(centers), size)] + 0.35 * rng.standard_normal(
        (size, DIM)
    ).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    started = time.perf_counter()
    documents, chunks = [], []
    for d in range(1, n_docs + 1):
        restricted = rng.random() < 0.2
        documents.append(
            Document(id=d, name=f"doc{d}.md", title=f"Document {d}", sha256=f"{d:064x}",
                     size_bytes=1000, visibility="groups" if restricted else "company",
                     groups=GROUPS[d % len(GROUPS)] if restricted else "",
                     n_chunks=CHUNKS_PER_DOC)
        )  # fmt: skip
        for p in range(CHUNKS_PER_DOC):
            chunks.append(Chunk(id=f"{d}-{p}", document_id=d, position=p,
                                text=f"chunk {p} of document {d}", n_tokens=6))  # fmt: skip
    with store.session() as session:
        session.execute(insert(Document), [doc.model_dump() for doc in documents])
        session.execute(
            insert(DocumentText), [{"document_id": d, "text": "x"} for d in range(1, n_docs + 1)]
        )
        session.execute(insert(Chunk), [c.model_dump() for c in chunks])
        session.commit()
    sql_s = time.perf_counter() - started

    by_id = {doc.id: doc for doc in documents}
    started = time.perf_counter()
    batch = 5_000
    for start in range(0, size, batch):
        part = chunks[start : start + batch]
        store.index.add(
            [c.id for c in part],
            vectors[start : start + batch].tolist(),
            [c.text for c in part],
            [vector_metadata(by_id[c.document_id], c) for c in part],
        )
    index_s = time.perf_counter() - started
    print(f"\n{size:,} chunks ({n_docs:,} documents, 20% in groups): SQL rows {sql_s:.1f} s, "
          f"Chroma add {index_s:.1f} s ({size / index_s:,.0f} vectors/s)")  # fmt: skip
    return store, vectors


def bench_queries(store: KnowledgeStore, vectors: np.ndarray, n_queries: int,
                  rng: np.random.Generator) -> None:  # fmt: skip
    picks = rng.integers(0, len(vectors), n_queries)
    queries = vectors[picks] + 0.2 * rng.standard_normal((n_queries, DIM)).astype(np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).tolist()
    group = [GROUPS[0]]
    paths = {
        "chroma/no-acl": lambda q: store.index.query(q, 5),
        "chroma/acl": lambda q: store.index.query(q, 5, where=acl_where(group)),
        "store/company": lambda q: store.retrieve_by_vector(q, 5),
        "store/acl": lambda q: store.retrieve_by_vector(q, 5, groups=group),
    }
    for name, call in paths.items():
        for q in queries[:10]:  # warm-up: first queries load the HNSW index from disk
            call(q)
        samples = []
        for q in queries:
            started = time.perf_counter()
            hits = call(q)
            samples.append(time.perf_counter() - started)
            assert hits, name
        print(f"  {name:14} {percentiles(samples)}  ({n_queries} queries)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ingest-chunks", type=int, default=400)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"cpus: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="protege-bench-") as tmp:
        root = Path(tmp)
        if args.ingest_chunks:
            bench_ingest(root, args.ingest_chunks, rng)
        for size in args.sizes:
            store, vectors = build_index(root, size, rng)
            bench_queries(store, vectors, args.queries, rng)
            print(f"  peak memory so far: {peak_mb():,.0f} MB")
    print(f"\npeak memory (ru_maxrss): {peak_mb():,.0f} MB; load average now: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip


if __name__ == "__main__":
    main()
