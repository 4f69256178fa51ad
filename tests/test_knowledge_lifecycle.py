"""Versions, deletion, access control, training eligibility, drift repair, LangChain.

    .venv/bin/python -m pytest tests/test_knowledge_lifecycle.py -q

Real SQLite, real embedded Chroma, the real offline embedder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from knowledge.catalog import catalog, describe
from knowledge.consistency import check_index
from knowledge.embeddings import Embedder, get_embedder
from knowledge.errors import NotFoundError
from knowledge.langchain_adapter import (
    OfflineEmbeddings,
    acl_filter,
    knowledge_retriever,
    knowledge_vectorstore,
)
from knowledge.settings import KnowledgeConfig, Settings
from knowledge.store import KnowledgeStore
from knowledge.tables import DELETED, SUPERSEDED

V1 = b"# Parking\n\nStaff park in garage B. Visitors use level 1 of garage A.\n"
V2 = b"# Parking\n\nStaff now park in garage C. Visitors use level 2 of garage A.\n"
SALARIES = b"# Salary bands\n\nEngineering level 3 earns between 70,000 and 85,000 euros.\n"
LUNCH = b"# Lunch\n\nThe canteen serves lunch from noon to two on weekdays.\n"


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return get_embedder()


def make_store(home: Path, **knobs: object) -> KnowledgeStore:
    knowledge = KnowledgeConfig(chunk_tokens=24, chunk_overlap=4, **knobs)
    return KnowledgeStore(Settings(home=home, knowledge=knowledge))


@pytest.fixture
def store(tmp_path: Path, embedder: Embedder) -> KnowledgeStore:
    return make_store(tmp_path / "home")


def add_adapter(store: KnowledgeStore, version: str, documents: list[int]) -> None:
    """An adapter row as the learner writes it (plain SQL: the test needs no training)."""
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO adapter (version, base_model, path, sha256, status, config_json, "
                "documents_json, metrics_json, created_at) VALUES (:v, 'm', 'p', 's', 'promoted', "
                "'{}', :d, '{}', CURRENT_TIMESTAMP)"
            ),
            {"v": version, "d": json.dumps(documents)},
        )


# -- versions ------------------------------------------------------------------------------------


def test_reupload_under_the_same_name_is_a_new_version(store: KnowledgeStore) -> None:
    first = store.ingest_bytes("parking.md", V1, uploaded_by="ana").document
    old_chunks = {c.id for c in store.chunks_for([first.id])}
    second = store.ingest_bytes("parking.md", V2, uploaded_by="bo")
    assert second.created and second.replaced is not None and second.replaced.id == first.id
    new = second.document
    assert (new.version, new.name) == (2, "parking.md") and new.id != first.id

    # The old chunks left SQL and the index; only the new version answers.
    assert store.chunks_for([first.id]) == []
    ids = set(store.index.ids())
    assert not (old_chunks & ids) and ids == {c.id for c in store.chunks_for([new.id])}
    [hit] = store.retrieve("Where do staff park?", k=1)
    assert hit.document_id == new.id and "garage C" in hit.text and hit.version == 2
    assert [d.id for d in store.list_documents()] == [new.id]
    assert [d.id for d in store.training_eligible()] == [new.id]

    # The old version stays listed (text kept, for what adapters were trained on).
    old = store.get_document(first.id)
    assert old.status == SUPERSEDED and old.superseded_at is not None
    assert "garage B" in store.document_text(first.id)
    info = describe(store, first.id)
    assert info.id == new.id and [v.version for v in info.versions] == [2, 1]
    assert [v.uploaded_by for v in info.versions] == ["bo", "ana"]


def test_same_bytes_are_one_document_but_old_bytes_may_return(store: KnowledgeStore) -> None:
    first = store.ingest_bytes("parking.md", V1).document
    again = store.ingest_bytes("other-name.md", V1)
    assert not again.created and again.document.id == first.id
    store.ingest_bytes("parking.md", V2)
    back = store.ingest_bytes("parking.md", V1)  # a revert: the old bytes as version 3
    assert back.created and back.document.version == 3
    [hit] = store.retrieve("Where do staff park?", k=1)
    assert hit.document_id == back.document.id and "garage B" in hit.text


def test_replaced_vectors_that_linger_are_never_served(
    store: KnowledgeStore, embedder: Embedder
) -> None:
    first = store.ingest_bytes("parking.md", V1).document
    chunk = store.chunks_for([first.id])[0]
    store.ingest_bytes("parking.md", V2)
    store.ingest_bytes("lunch.md", LUNCH)
    # Simulate a crash right after the commit: the old vectors are back in the index.
    store.index.add([chunk.id], embedder.embed([chunk.text]), [chunk.text],
                    [{"visibility": "company", "document_id": first.id}])  # fmt: skip
    hits = store.retrieve("Where do staff park?", k=2)
    assert len(hits) == 2 and chunk.id not in {h.chunk_id for h in hits}


# -- deletion ------------------------------------------------------------------------------------


def test_delete_forgets_every_version_and_never_reuses_ids(store: KnowledgeStore) -> None:
    lunch = store.ingest_bytes("lunch.md", LUNCH).document
    v1 = store.ingest_bytes("parking.md", V1).document
    v2 = store.ingest_bytes("parking.md", V2).document
    add_adapter(store, "v0001", [lunch.id, v1.id])

    result = store.delete_document(v1.id, deleted_by="dpo")  # any version's id names it
    assert result.document_ids == [v1.id, v2.id] and result.adapters == ["v0001"]
    assert result.chunks_removed == v2.n_chunks  # v1's chunks went when v2 replaced it
    for doc_id in (v1.id, v2.id):
        with pytest.raises(NotFoundError):
            store.get_document(doc_id)
        with pytest.raises(NotFoundError):
            store.document_text(doc_id)
        with pytest.raises(NotFoundError):
            describe(store, doc_id)
    with pytest.raises(NotFoundError):
        store.delete_document(v2.id)
    assert set(store.index.ids()) == {c.id for c in store.chunks_for([lunch.id])}
    assert all(h.document_id == lunch.id for h in store.retrieve("parking garage", k=5))

    # Tombstones keep no content, and the next upload gets a fresh id (SQLite would reuse the
    # highest id of a deleted row: an adapter's lineage would then claim the new file).
    with store.session() as session:
        rows = session.exec(text("SELECT status, name, title, sha256, deleted_by FROM document"))
        tombstones = [r for r in rows if r[0] == DELETED]
    assert tombstones == [(DELETED, "", "", "", "dpo")] * 2
    fresh = store.ingest_bytes("parking.md", V1).document
    assert fresh.id > v2.id and fresh.version == 1


def test_catalog_lists_versions_sizes_chunks_uploaders_and_adapters(store: KnowledgeStore) -> None:
    v1 = store.ingest_bytes("parking.md", V1, uploaded_by="ana").document
    add_adapter(store, "v0001", [v1.id])
    v2 = store.ingest_bytes("parking.md", V2, uploaded_by="bo").document
    add_adapter(store, "v0002", [v1.id, v2.id])
    hr = store.ingest_bytes("salaries.md", SALARIES, visibility="groups", groups=["hr"]).document

    infos = {info.name: info for info in catalog(store)}
    assert set(infos) == {"parking.md", "salaries.md"}
    parking = infos["parking.md"].as_dict()
    assert parking["id"] == v2.id and parking["version"] == 2 and parking["n_versions"] == 2
    assert [(v["version"], v["status"], v["adapters"], v["uploaded_by"]) for v in parking["versions"]] == [
        (2, "current", ["v0002"], "bo"),
        (1, "superseded", ["v0001", "v0002"], "ana"),
    ]  # fmt: skip
    assert parking["size_bytes"] == len(V2) and parking["n_chunks"] == v2.n_chunks
    assert parking["created_at"] and parking["versions"][1]["superseded_at"]
    salaries = infos["salaries.md"].as_dict()
    assert salaries["groups"] == ["hr"] and salaries["adapters"] == [] and salaries["id"] == hr.id


# -- access control and training eligibility -----------------------------------------------------


def test_group_documents_reach_only_their_groups(store: KnowledgeStore) -> None:
    lunch = store.ingest_bytes("lunch.md", LUNCH).document
    hr = store.ingest_bytes("salaries.md", SALARIES, visibility="groups", groups="hr,finance")
    question = "What does an engineer at level 3 earn?"

    def seen(groups):
        return {h.document_id for h in store.retrieve(question, k=5, groups=groups)}

    assert hr.document.groups == "finance,hr"
    assert seen(None) == seen([]) == seen(["eng"]) == seen(["h", "r"]) == {lunch.id}
    assert seen(["eng", "finance"]) == {lunch.id, hr.document.id}
    assert seen(["hr"]) == {lunch.id, hr.document.id}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("company_only", ["lunch.md"]), ("all", ["lunch.md", "salaries.md"]), ("none", [])],
)
def test_train_on_decides_what_is_eligible(
    tmp_path: Path, embedder: Embedder, rule: str, expected: list[str]
) -> None:
    store = make_store(tmp_path, train_on=rule)
    lunch = store.ingest_bytes("lunch.md", LUNCH).document
    store.ingest_bytes("salaries.md", SALARIES, visibility="groups", groups=["hr"])
    assert [d.name for d in store.training_eligible()] == expected
    assert lunch.id not in {d.id for d in store.training_eligible(exclude_ids=[lunch.id])}


def test_default_rule_is_company_only() -> None:
    assert KnowledgeConfig().train_on == "company_only"


# -- drift: check and repair ---------------------------------------------------------------------


def test_check_finds_and_repairs_orphans_and_missing_vectors(
    store: KnowledgeStore, embedder: Embedder
) -> None:
    lunch = store.ingest_bytes("lunch.md", LUNCH).document
    hr = store.ingest_bytes("salaries.md", SALARIES, visibility="groups", groups=["hr"]).document
    assert check_index(store).consistent
    lost = [c.id for c in store.chunks_for([hr.id])]
    store.index.delete(lost)
    store.index.add(["999-0"], embedder.embed(["stray"]), ["stray"], [{"visibility": "company"}])

    report = check_index(store)
    assert (report.orphans, report.missing, report.repaired) == (["999-0"], lost, False)
    assert store.retrieve("salary level 3", k=3, groups=["hr"])[0].document_id == lunch.id
    assert check_index(store, repair=True).repaired
    assert check_index(store).consistent
    # Re-added vectors carry the ACL again: the HR document is back for HR only.
    assert store.retrieve("salary level 3", k=1, groups=["hr"])[0].document_id == hr.id
    assert store.retrieve("salary level 3", k=1)[0].document_id == lunch.id
    assert store.sync_index() == (0, 0)


# -- LangChain -----------------------------------------------------------------------------------


def test_langchain_retriever_and_vectorstore(store: KnowledgeStore) -> None:
    store.ingest_bytes("lunch.md", LUNCH)
    hr = store.ingest_bytes("salaries.md", SALARIES, visibility="groups", groups=["hr"]).document

    docs = knowledge_retriever(store, groups=["hr"], k=1).invoke("engineer salary band")
    assert [d.metadata["document_id"] for d in docs] == [hr.id]
    assert docs[0].metadata["title"] == "Salary bands" and "70,000" in docs[0].page_content
    company_only = knowledge_retriever(store, k=2).invoke("engineer salary band")
    assert hr.id not in {d.metadata["document_id"] for d in company_only}

    vectorstore = knowledge_vectorstore(store)
    search = {"k": 1, "filter": acl_filter(store, ["hr"])}
    [doc] = vectorstore.as_retriever(search_kwargs=search).invoke("engineer salary band")
    # the index holds small integers only; names and access are SQL's (knowledge/acl.py)
    assert doc.metadata == {"document_id": hr.id, "position": 0, "version": 1}
    scored = vectorstore.similarity_search_with_relevance_scores(
        "engineer salary band", k=1, filter=acl_filter(store)
    )
    assert store.get_document(scored[0][0].metadata["document_id"]).name == "lunch.md"
    assert 0.0 < scored[0][1] <= 1.0
    with pytest.raises(NotImplementedError):
        vectorstore.add_texts(["sneaking past SQL"])
    vector = OfflineEmbeddings(store.embedder).embed_query("hello")
    assert len(vector) == 384


def test_a_new_version_keeps_its_access_unless_told_otherwise(store: KnowledgeStore) -> None:
    store.ingest_bytes("salaries.md", SALARIES, visibility="groups", groups=["hr"])
    v2 = store.ingest_bytes("salaries.md", SALARIES + b"\nReviewed yearly.\n").document
    assert (v2.version, v2.visibility, v2.groups) == (2, "groups", "hr")  # not published
    assert store.retrieve("engineering salary", k=1) == []
    v3 = store.ingest_bytes("salaries.md", SALARIES + b"\nPublic now.\n", visibility="company")
    assert v3.document.visibility == "company"  # widening access is an explicit choice
    assert store.retrieve("engineering salary", k=1)[0].document_id == v3.document.id
    v4 = store.ingest_bytes("salaries.md", SALARIES + b"\nFinance only.\n", groups=["finance"])
    assert (v4.document.visibility, v4.document.groups) == ("groups", "finance")


def test_callers_who_see_little_still_get_their_nearest_chunks(
    store: KnowledgeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20+ hidden chunks are nearer the question than the one visible: the unfiltered first pass
    # finds nothing the caller may see, and the ACL-filtered pass must find the visible chunk.
    hidden = "\n\n".join(
        f"Salary band {i}: engineering level {i} earns {50 + i},000 euros a year."
        for i in range(45)
    )
    store.ingest_bytes("bands.md", hidden.encode(), visibility="groups", groups=["hr"])
    lunch = store.ingest_bytes("lunch.md", LUNCH).document
    assert store.index.count() > 17 + 1  # more hidden chunks than the first pass fetches for k=1
    filters = []
    real_query = store.index.query

    def query(vector, k, where=None, **options):
        filters.append(where)
        return real_query(vector, k, where=where, **options)

    monkeypatch.setattr(store.index, "query", query)
    [hit] = store.retrieve("engineering salary band per year", k=1)
    assert hit.document_id == lunch.id
    # unfiltered first, then Chroma's filter on the ids SQL lets the caller see
    assert filters == [None, {"document_id": {"$in": [lunch.id]}}]
    assert (
        store.retrieve("engineering salary band per year", k=1, groups=["hr"])[0].name == "bands.md"
    )


def test_chunking_is_configured_in_tokens_with_a_valid_overlap(tmp_path: Path, embedder) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="chunk_overlap"):
        KnowledgeConfig(chunk_tokens=16, chunk_overlap=16)
    # A custom token counter (here: characters) sizes every chunk.
    store = KnowledgeStore(
        Settings(home=tmp_path, knowledge=KnowledgeConfig(chunk_tokens=40, chunk_overlap=8)),
        count_tokens=len,
    )
    document = store.ingest_bytes("lunch.md", LUNCH).document
    chunks = store.chunks_for([document.id])
    assert len(chunks) > 1 and all(c.n_tokens == len(c.text) <= 40 for c in chunks)
