"""Document and search endpoints against a real uvicorn server, SQLite and Chroma in tmp.

    .venv/bin/python -m pytest tests/test_documents_api.py -q

The app is the real one (`create_app`) with the test sandbox's student (chunks are sized in its
tokens); uploads are real multipart requests carrying generated PDF and DOCX files.
"""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from knowledge_docgen import make_docx, make_pdf, zip_bomb_docx

from assistant.app import create_app
from assistant.auth import create_key
from assistant.server import serve_in_thread
from knowledge.settings import KnowledgeConfig, ModelsConfig, ServingConfig, Settings

PDF = make_pdf(
    [
        ("Expenses", "File expense reports in the finance tool within 30 days of a trip. " * 3),
        ("Hotels", "Hotels may cost up to 180 euros a night in most cities. " * 3),
    ],
    title="Travel policy",
)
SALARIES = make_docx(
    [("h1", "Salary bands"), ("p", "Engineering level 3 earns between 70,000 and 85,000 euros.")]
)


@pytest.fixture(scope="module")
def served(sandbox_test, tmp_path_factory):
    settings = Settings(
        home=tmp_path_factory.mktemp("documents-api"),
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(max_new_tokens=8, registry_poll_seconds=3600),
        knowledge=KnowledgeConfig(chunk_tokens=48, chunk_overlap=8, max_upload_bytes=300_000),
    )
    app = create_app(settings)
    # Who uploads and which groups search sees come from API keys (tests/test_auth.py: refusals).
    keys = {name: create_key(app.state.db, name, role="admin").secret for name in ("ana", "bo")}
    keys["hr"] = create_key(app.state.db, "hella", role="user", groups=["hr"]).secret
    with serve_in_thread(app) as url:
        yield SimpleNamespace(url=url, settings=settings, app=app, keys=keys)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def http(served):  # as the admin "ana"
    with httpx.Client(base_url=served.url, timeout=120, headers=bearer(served.keys["ana"])) as c:
        yield c


def upload(
    http: httpx.Client, name: str, data: bytes, headers: dict | None = None, **form: str
) -> httpx.Response:
    return http.post("/v1/documents", files={"file": (name, data)}, data=form, headers=headers)


def test_upload_list_show_version_search_delete(http: httpx.Client, served) -> None:
    travel = upload(http, "travel.pdf", PDF)
    assert travel.status_code == 201, travel.text
    body = travel.json()
    assert body["created"] and body["title"] == "Travel policy" and body["version"] == 1
    assert body["media_type"] == "application/pdf" and body["uploaded_by"] == "ana"
    # Chunks are sized in the student's tokens, not in words.
    tokenizer_count = served.app.state.engine.count_tokens
    chunks = served.app.state.store.chunks_for([body["id"]])
    assert all(c.n_tokens == tokenizer_count(c.text) <= 48 for c in chunks)

    salaries = upload(http, "salaries.docx", SALARIES, visibility="groups", groups="hr, finance")
    assert salaries.status_code == 201 and salaries.json()["groups"] == ["finance", "hr"]
    same = upload(http, "copy.pdf", PDF)
    assert (
        same.status_code == 200 and same.json()["id"] == body["id"] and not same.json()["created"]
    )

    # Search: ACL from the key's groups (an admin key without groups too), citations in every hit.
    hits = http.post("/v1/search", json={"query": "hotel price per night", "k": 1}).json()["data"]
    assert hits[0]["name"] == "travel.pdf" and hits[0]["heading"] == "Hotels"
    assert hits[0]["page_start"] == hits[0]["page_end"] == 2
    question = {"query": "salary of engineering level 3", "k": 5}
    public = http.post("/v1/search", json=question).json()["data"]
    assert all(h["name"] != "salaries.docx" for h in public)
    hr = http.post("/v1/search", json=question, headers=bearer(served.keys["hr"])).json()["data"]
    assert hr[0]["name"] == "salaries.docx" and hr[0]["heading"] == "Salary bands"

    # A new version under the same name; the listing shows both, the search the new one only.
    newer = make_pdf([("Hotels", "Hotels may now cost up to 210 euros a night. " * 3)])
    v2 = upload(http, "travel.pdf", newer, headers=bearer(served.keys["bo"]))
    assert v2.status_code == 201 and v2.json()["version"] == 2
    assert v2.json()["replaced_id"] == body["id"]
    listed = {d["name"]: d for d in http.get("/v1/documents").json()["data"]}
    assert listed["travel.pdf"]["id"] == v2.json()["id"]
    assert [(v["version"], v["uploaded_by"]) for v in listed["travel.pdf"]["versions"]] == [
        (2, "bo"),
        (1, "ana"),
    ]
    shown = http.get(f"/v1/documents/{body['id']}").json()  # an old version's id works too
    assert shown["id"] == v2.json()["id"] and shown["n_versions"] == 2
    assert all(v["adapters"] == [] for v in shown["versions"])
    hits = http.post("/v1/search", json={"query": "hotel price per night", "k": 3}).json()["data"]
    assert {h["document_id"] for h in hits} == {v2.json()["id"]}

    gone = http.delete(f"/v1/documents/{v2.json()['id']}")
    assert gone.status_code == 200
    assert sorted(gone.json()["deleted"]) == sorted([body["id"], v2.json()["id"]])
    assert http.get(f"/v1/documents/{body['id']}").status_code == 404
    assert http.delete(f"/v1/documents/{body['id']}").status_code == 404
    assert [d["name"] for d in http.get("/v1/documents").json()["data"]] == ["salaries.docx"]


@pytest.mark.parametrize(
    ("name", "data", "form", "status", "kind"),
    [
        ("notes.pdf", b"plain words", {}, 415, "MislabeledDocumentError"),
        ("tool.exe", b"MZ\x90\x00" + bytes(32), {}, 415, "UnsupportedDocumentError"),
        ("bomb.docx", zip_bomb_docx(60_000_000), {}, 400, "CorruptDocumentError"),
        ("big.txt", b"word " * 70_000, {}, 413, "TooLargeError"),
        ("empty.md", b"", {}, 400, "BadInputError"),
        ("../../", b"words", {}, 400, "BadInputError"),
        ("a.md", b"words", {"visibility": "groups"}, 400, "BadInputError"),
        ("a.md", b"words", {"visibility": "company", "groups": "hr"}, 400, "BadInputError"),
    ],
)
def test_bad_uploads_get_clear_errors_and_change_nothing(
    http: httpx.Client, name: str, data: bytes, form: dict, status: int, kind: str
) -> None:
    before = http.get("/v1/documents").json()["data"]
    response = upload(http, name, data, **form)
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == kind and response.json()["error"]["message"]
    assert http.get("/v1/documents").json()["data"] == before


def test_bad_requests(http: httpx.Client) -> None:
    assert http.get("/v1/documents/999999").status_code == 404
    assert http.post("/v1/search", json={"query": ""}).status_code == 422
    assert http.post("/v1/search", json={"query": "x", "k": 0}).status_code == 422
    assert http.post("/v1/search", json={"query": "x", "user": "me"}).status_code == 422
    # groups come from the key: a body asking for other groups is refused, not half-trusted
    assert http.post("/v1/search", json={"query": "x", "groups": ["hr"]}).status_code == 422
