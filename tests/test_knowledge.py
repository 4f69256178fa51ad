"""The knowledge layer with its real parts: SQLite, embedded Chroma, MiniLM embeddings.

    .venv/bin/python -m pytest tests/test_knowledge.py -q

Each test gets its own PROTEGE_HOME under tmp_path; the embedding model loads once per session.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

from knowledge.chunking import chunk_text, count_words
from knowledge.embeddings import Embedder, get_embedder
from knowledge.errors import (
    BadInputError,
    CorruptDocumentError,
    NotFoundError,
    UnsupportedDocumentError,
)
from knowledge.parsing import find_title, sanitize_name
from knowledge.settings import KnowledgeConfig, Settings
from knowledge.store import KnowledgeStore
from knowledge.tables import Chunk, Document, DocumentText

VACATION = """# Vacation policy

Every full-time employee receives 27 vacation days per calendar year. Unused vacation days
carry over until March 31 of the following year, after which they expire.

## Requesting leave

Request vacation in the HR portal at least two weeks ahead; your manager approves it.
"""

EXPENSES = """Travel and expenses

Keep every receipt. Expense reports are filed in the finance tool within 30 days of the trip.
Economy class is the default for flights shorter than six hours; hotels up to 180 euros a night.
"""

VPN = """# Remote access

Install the WireGuard client, import the configuration from the IT self-service page and
connect before opening internal dashboards. Lost laptops must be reported to IT security at once.
"""

SALARIES = """# Salary bands 2025

Engineering level 3 earns between 70,000 and 85,000 euros. Salary bands are confidential.
"""


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return get_embedder()  # loaded once; every store in this session shares it


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Small chunks so a short test document spans several of them.
    knowledge = KnowledgeConfig(chunk_tokens=24, chunk_overlap=6, max_upload_bytes=4_000)
    return Settings(home=tmp_path / "home", knowledge=knowledge)


@pytest.fixture
def store(settings: Settings, embedder: Embedder) -> KnowledgeStore:
    return KnowledgeStore(settings)


def row_counts(store: KnowledgeStore) -> tuple[int, int, int]:
    with Session(store.engine) as session:
        return tuple(  # type: ignore[return-value]
            session.exec(select(func.count()).select_from(table)).one()
            for table in (Document, Chunk, DocumentText)
        )


def assert_empty(store: KnowledgeStore) -> None:
    assert row_counts(store) == (0, 0, 0)
    assert store.index.count() == 0


def ingest_corpus(store: KnowledgeStore) -> dict[str, Document]:
    docs = {}
    for name, text in [("vacation.md", VACATION), ("expenses.txt", EXPENSES), ("vpn.md", VPN)]:
        docs[name] = store.ingest_bytes(name, text.encode()).document
    return docs


def list_ids(store: KnowledgeStore) -> list[int]:
    return [d.id for d in store.list_documents() if d.id is not None]


# -- pieces --------------------------------------------------------------------------------------


def test_embedder_is_shared_normalised_and_384_dims(embedder: Embedder) -> None:
    assert get_embedder() is embedder
    [vector] = embedder.embed(["hello world"])
    assert embedder.dim == len(vector) == 384
    assert sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-4)
    assert embedder.embed([]) == []


def test_chunks_respect_the_token_budget_and_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(200))
    chunks = chunk_text(text, count_words, chunk_tokens=30, overlap=10)
    assert len(chunks) > 1
    assert all(count_words(c) <= 30 for c in chunks)
    first, second = chunks[0].split(), chunks[1].split()
    assert first[-1] in second  # neighbours share words
    assert " ".join(chunks).split()[-1] == "w199"  # nothing lost at the end
    assert chunk_text("  \n ", count_words, 30, 10) == []


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("notes.txt", "notes.txt"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\ana\\plan.md", "plan.md"),
    ],
)
def test_sanitize_name(raw: str, clean: str) -> None:
    assert sanitize_name(raw) == clean


@pytest.mark.parametrize("raw", ["ev\x00il\n.md", ".hidden.md", ".md", "...md", "  ", "---.md"])
def test_names_that_would_collide_or_say_nothing_are_refused(raw: str) -> None:
    with pytest.raises(BadInputError, match="file name"):
        sanitize_name(raw)


def test_titles() -> None:
    assert find_title("intro line\n## C# tips ##\n", "a.md", markdown=True) == "C# tips"
    assert find_title("\n\nFirst line\nsecond", "a.txt", markdown=False) == "First line"
    assert find_title("no heading here", "a.md", markdown=True) == "no heading here"


# -- ingest --------------------------------------------------------------------------------------


def test_ingest_txt_and_md_files_and_folders(store: KnowledgeStore, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "vacation.md").write_text(VACATION)
    (folder / "sub" / "expenses.txt").write_text(EXPENSES)
    (folder / "sub" / "image.png").write_bytes(b"\x89PNG\r\n")  # not ours: skipped in folders
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD.txt").write_text("ref: main")  # hidden: skipped
    single = tmp_path / "vpn.md"
    single.write_text(VPN)

    results = store.ingest_paths([folder, single], uploaded_by="ana", progress=False)

    assert [r.created for r in results] == [True, True, True]
    by_name = {r.document.name: r.document for r in results}
    assert set(by_name) == {"vacation.md", "expenses.txt", "vpn.md"}
    vacation = by_name["vacation.md"]
    assert vacation.title == "Vacation policy"
    assert vacation.media_type == "text/markdown" and vacation.uploaded_by == "ana"
    assert by_name["expenses.txt"].title == "Travel and expenses"
    assert [d.name for d in store.list_documents()] == [r.document.name for r in results]
    assert store.get_document(vacation.id).sha256 == vacation.sha256
    assert store.document_text(vacation.id) == VACATION

    chunks = store.chunks_for([by_name["vpn.md"].id, vacation.id])
    assert [(c.document_id, c.position) for c in chunks] == sorted(
        (c.document_id, c.position) for c in chunks
    )
    assert vacation.n_chunks > 1
    assert sum(1 for c in chunks if c.document_id == vacation.id) == vacation.n_chunks
    assert all(c.id == f"{c.document_id}-{c.position}" for c in chunks)
    assert store.index.count() == sum(d.n_chunks for d in by_name.values())
    with pytest.raises(NotFoundError):
        store.ingest_paths([tmp_path / "missing"], progress=False)


def test_same_bytes_twice_are_one_document(store: KnowledgeStore) -> None:
    first = store.ingest_bytes("vacation.md", VACATION.encode())
    again = store.ingest_bytes("copy-of-vacation.md", VACATION.encode())
    assert first.created and not again.created
    assert again.document.id == first.document.id and again.document.name == "vacation.md"
    assert row_counts(store)[0] == 1
    assert store.index.count() == first.document.n_chunks


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("empty.txt", b"", BadInputError),
        ("blank.md", b" \n\t\n", BadInputError),
        ("big.txt", b"word " * 1_000, BadInputError),  # 5,000 bytes > 4,000
        ("junk.txt", bytes(range(256)) * 4, BadInputError),
        ("nuls.txt", b"h\x00e\x00l\x00l\x00o\x00", BadInputError),
        ("latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"), BadInputError),
        ("../..", b"some text", BadInputError),
        ("/etc/", b"some text", BadInputError),
        ("report.pdf", b"%PDF-1.7 text", CorruptDocumentError),
        ("image.png", b"\x89PNG\r\n\x1a\n" + bytes(64), UnsupportedDocumentError),
        ("noextension", b"\x89PNG\r\n\x1a\n" + bytes(64), UnsupportedDocumentError),
    ],
)
def test_bad_inputs_change_nothing(
    store: KnowledgeStore, name: str, data: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.ingest_bytes(name, data)
    assert_empty(store)


def test_path_traversal_name_is_reduced_to_a_file_name(
    store: KnowledgeStore, settings: Settings
) -> None:
    result = store.ingest_bytes("../../outside/secret.txt", b"The secret is safe.")
    assert result.document.name == "secret.txt"
    assert not (settings.home.parent / "outside").exists()


def test_bad_access_settings_are_refused(store: KnowledgeStore) -> None:
    data = SALARIES.encode()
    with pytest.raises(BadInputError, match="needs at least one group"):
        store.ingest_bytes("salaries.md", data, visibility="groups")
    with pytest.raises(BadInputError, match="visibility is 'company'"):
        store.ingest_bytes("salaries.md", data, visibility="company", groups=["hr"])
    with pytest.raises(BadInputError, match="visibility must be"):
        store.ingest_bytes("salaries.md", data, visibility="secret")
    with pytest.raises(BadInputError, match="invalid group"):
        store.ingest_bytes("salaries.md", data, visibility="groups", groups=["a,b"])
    assert_empty(store)


# -- all or nothing ------------------------------------------------------------------------------


def test_index_failure_leaves_no_rows(store: KnowledgeStore, monkeypatch) -> None:
    def broken_add(*args, **kwargs):
        raise RuntimeError("chroma is down")

    monkeypatch.setattr(store.index, "add", broken_add)
    with pytest.raises(RuntimeError, match="chroma is down"):
        store.ingest_bytes("vacation.md", VACATION.encode())
    assert_empty(store)

    monkeypatch.undo()  # the same upload works once the index is back
    assert store.ingest_bytes("vacation.md", VACATION.encode()).created


def test_index_failure_after_some_vectors_removes_them(store: KnowledgeStore, monkeypatch) -> None:
    real_add = store.index.add

    def add_then_fail(ids, embeddings, documents, metadatas):
        real_add(ids[:1], embeddings[:1], documents[:1], metadatas[:1])  # one batch landed
        raise RuntimeError("disk full")

    monkeypatch.setattr(store.index, "add", add_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        store.ingest_bytes("vacation.md", VACATION.encode())
    assert_empty(store)


def test_commit_failure_removes_the_vectors(store: KnowledgeStore, monkeypatch) -> None:
    def refuse_commit(dbapi_connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store.engine.dialect, "do_commit", refuse_commit)
    with pytest.raises(OperationalError, match="disk I/O error"):
        store.ingest_bytes("vacation.md", VACATION.encode())
    monkeypatch.undo()
    assert_empty(store)  # also: the failed transaction cannot be committed by a later user
    store.ingest_bytes("vpn.md", VPN.encode())
    assert row_counts(store)[0] == 1


# -- retrieval and access ------------------------------------------------------------------------


def test_retrieval_puts_the_relevant_chunk_first(store: KnowledgeStore) -> None:
    docs = ingest_corpus(store)
    hits = store.retrieve("How many vacation days does an employee get per year?", k=3)
    assert len(hits) == 3
    assert hits[0].document_id == docs["vacation.md"].id
    assert "27 vacation days" in hits[0].text
    assert hits[0].title == "Vacation policy" and hits[0].name == "vacation.md"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    [top] = store.retrieve("which VPN client should I install for remote access?", k=1)
    assert top.document_id == docs["vpn.md"].id
    assert len(store.retrieve("expense receipts")) == store.settings.knowledge.top_k
    assert store.retrieve("   ") == []
    with pytest.raises(BadInputError):
        store.retrieve("anything", k=0)


def test_empty_index_retrieves_nothing(store: KnowledgeStore) -> None:
    assert store.retrieve("vacation days") == []


def test_group_documents_reach_only_their_groups(store: KnowledgeStore) -> None:
    docs = ingest_corpus(store)
    hr = store.ingest_bytes("salaries.md", SALARIES.encode(), visibility="groups", groups=["hr"])
    assert hr.document.groups == "hr"
    question = "What is the salary band for engineering level 3?"

    def seen(groups):
        return {h.document_id for h in store.retrieve(question, k=10, groups=groups)}

    assert hr.document.id not in seen(None)
    assert hr.document.id not in seen([])
    assert hr.document.id not in seen(["eng", "sales"])
    assert hr.document.id not in seen(["h", "r"])
    assert store.retrieve(question, k=1, groups=["eng", "hr"])[0].document_id == hr.document.id
    assert docs["vacation.md"].id in seen(["hr"])  # company documents stay visible

    eligible = [d.id for d in store.training_eligible()]
    assert hr.document.id not in eligible
    assert eligible == sorted(d.id for d in docs.values())
    assert [d.id for d in store.training_eligible({docs["vpn.md"].id})] == sorted(
        d.id for name, d in docs.items() if name != "vpn.md"
    )


# -- lifecycle -----------------------------------------------------------------------------------


def test_a_new_store_sees_what_the_last_one_stored(
    store: KnowledgeStore, settings: Settings
) -> None:
    docs = ingest_corpus(store)
    reopened = KnowledgeStore(settings)
    assert [d.id for d in reopened.list_documents()] == sorted(d.id for d in docs.values())
    assert reopened.index.count() == store.index.count()
    [top] = reopened.retrieve("carry over unused vacation days", k=1)
    assert top.document_id == docs["vacation.md"].id
    assert not reopened.ingest_bytes("vpn.md", VPN.encode()).created


def test_delete_document_removes_rows_and_vectors(store: KnowledgeStore) -> None:
    docs = ingest_corpus(store)
    vacation = docs["vacation.md"]
    before = store.index.count()
    store.delete_document(vacation.id)
    assert store.index.count() == before - vacation.n_chunks
    assert all(h.document_id != vacation.id for h in store.retrieve("vacation days", k=10))
    assert store.chunks_for([vacation.id]) == []
    for call in (store.get_document, store.document_text, store.delete_document):
        with pytest.raises(NotFoundError):
            call(vacation.id)
    assert store.ingest_bytes("vacation.md", VACATION.encode()).created  # may come back


def test_sync_index_repairs_both_directions(store: KnowledgeStore, embedder: Embedder) -> None:
    docs = ingest_corpus(store)
    lost = [c.id for c in store.chunks_for([docs["vpn.md"].id])]
    store.index.delete(lost)
    store.index.add(["999-0"], embedder.embed(["stray"]), ["stray"], [{"visibility": "company"}])
    assert store.sync_index() == (1, len(lost))
    assert sorted(store.index.ids()) == sorted(c.id for c in store.chunks_for(list_ids(store)))
    assert store.sync_index() == (0, 0)


def test_stray_vectors_are_never_returned(store: KnowledgeStore, embedder: Embedder) -> None:
    ingest_corpus(store)
    text = "Every employee receives 27 vacation days per calendar year."
    store.index.add(["999-0"], embedder.embed([text]), [text], [{"visibility": "company"}])
    assert all(h.chunk_id != "999-0" for h in store.retrieve("vacation days per year", k=10))


def test_threads_share_one_store(store: KnowledgeStore) -> None:
    texts = [f"Team {i} meets every Tuesday in room {i} to plan sprint {i}." for i in range(6)]
    barrier = threading.Barrier(4)

    def work(i: int):
        if i < 4:
            barrier.wait()  # four ingests start together, two of them the same bytes
        data = texts[min(i, 2)].encode() if i < 4 else texts[i].encode()
        return store.ingest_bytes(f"team{i}.txt", data)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(6)))
        hits = list(pool.map(lambda q: store.retrieve(q, k=1), ["room 5", "sprint 0"] * 4))
    assert sum(r.created for r in results) == 5  # team2/team3 carried the same bytes
    assert len({r.document.id for r in results}) == 5
    assert row_counts(store)[0] == 5
    assert all(len(h) == 1 for h in hits)
