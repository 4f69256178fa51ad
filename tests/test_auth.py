"""API keys and roles against a real uvicorn server (the test sandbox's student, SQLite in tmp).

    .venv/bin/python -m pytest tests/test_auth.py -q

Each role is refused what it may not do (401 without, with a bad or with a revoked key; 403 for a
`user` key doing an admin's job), groups of the key restrict search, listings and the sources chat
is grounded on, open mode is refused off loopback, and the `keys` CLI stores no secret.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import httpx
import openai
import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import Session, SQLModel

from assistant.app import create_app
from assistant.auth import authenticate, check_open_mode, create_key, revoke_key
from assistant.cli import main
from assistant.server import serve_in_thread
from assistant.tables import ApiKey
from knowledge.db import make_engine, upgrade_schema
from knowledge.errors import ConfigError, UnauthorizedError
from knowledge.settings import KnowledgeConfig, ModelsConfig, ServingConfig, Settings
from knowledge.tables import Exchange
from learner.pipeline import notify_serving

ZEPHYR = b"# Project Zephyr\n\nProject Zephyr is the new expense tool, led by Mara Quill.\n"
SALARIES = b"# Salary bands\n\nEngineering level 3 salary is between 70,000 and 85,000 euros.\n"
SALARY_QUESTION = "What is the salary of engineering level 3?"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def served(sandbox_test, tmp_path_factory):
    settings = Settings(
        home=tmp_path_factory.mktemp("auth"),
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(max_new_tokens=4, registry_poll_seconds=3600),  # auth: keys
        knowledge=KnowledgeConfig(chunk_tokens=64, chunk_overlap=8, top_k=2),
    )
    assert settings.serving.auth == "keys"  # the default
    app = create_app(settings)
    db = app.state.db
    keys = SimpleNamespace(
        admin=create_key(db, "ops", role="admin").secret,
        alice=create_key(db, "alice", role="user", groups=["hr"]).secret,
        bob=create_key(db, "bob", role="user").secret,
        carol=create_key(db, "carol", role="user").secret,
    )
    revoke_key(db, keys.carol[:12])  # by prefix
    with serve_in_thread(app) as url:
        with httpx.Client(base_url=url, timeout=120, headers=bearer(keys.admin)) as admin:
            docs = {}
            for name, data, form in [
                ("zephyr.md", ZEPHYR, {}),
                ("salaries.md", SALARIES, {"visibility": "groups", "groups": "hr"}),
            ]:
                response = admin.post("/v1/documents", files={"file": (name, data)}, data=form)
                assert response.status_code == 201, response.text
                docs[name] = response.json()["id"]
        yield SimpleNamespace(url=url, app=app, settings=settings, keys=keys, docs=docs)


@pytest.fixture
def http(served):
    with httpx.Client(base_url=served.url, timeout=120) as client:
        yield client


def _chat(http: httpx.Client, key: str, question: str) -> httpx.Response:
    body = {"model": "protege", "messages": [{"role": "user", "content": question}]}
    return http.post("/v1/chat/completions", json=body, headers=bearer(key))


KEYED = [
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": "protege", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/search", {"query": "expenses"}),
    ("GET", "/v1/documents", None),
    ("GET", "/v1/documents/1", None),
    ("POST", "/v1/feedback", {"exchange_id": 1, "rating": 1}),
    ("POST", "/v1/me/training-opt-out", {"opted_out": True}),
    ("POST", "/tokenize", {"prompt": "hi"}),  # beside /v1, as vLLM has it
    ("POST", "/admin/adapters/reload", None),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body"), KEYED)
def test_no_key_bad_key_and_revoked_key_get_401(served, http, method, path, body) -> None:
    for headers, why in [
        ({}, "required"),
        (bearer("prt_not-a-real-key"), "unknown"),
        ({"Authorization": f"Basic {served.keys.bob}"}, "required"),  # wrong scheme
        (bearer(served.keys.carol), "revoked"),
    ]:
        response = http.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["type"] == "UnauthorizedError" and why in error["message"]


def test_health_readiness_and_metrics_need_no_key(http) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 200
    assert http.get("/metrics").status_code == 200


def test_user_key_is_refused_every_admin_action_and_nothing_changes(served, http) -> None:
    bob = bearer(served.keys.bob)
    before = http.get("/v1/documents", headers=bearer(served.keys.admin)).json()["data"]
    served_version = served.app.state.switcher.served
    refused = [
        http.post("/v1/documents", files={"file": ("x.md", b"# X\n\nnew text")}, headers=bob),
        http.delete(f"/v1/documents/{served.docs['zephyr.md']}", headers=bob),
        http.post("/admin/adapters/reload", headers=bob),
        http.post("/admin/adapters/promote", json={"version": "base"}, headers=bob),
        http.post("/admin/adapters/rollback", headers=bob),
        http.get("/admin/adapters", headers=bob),  # a route of another router: the gate holds
    ]
    for response in refused:
        assert response.status_code == 403, response.request.url
        assert response.json()["error"]["type"] == "ForbiddenError"
        assert "bob" in response.json()["error"]["message"]
    assert http.get("/v1/documents", headers=bearer(served.keys.admin)).json()["data"] == before
    assert served.app.state.switcher.served == served_version
    # what a user may do, it may
    assert http.get("/v1/models", headers=bob).status_code == 200
    assert http.post("/v1/search", json={"query": "expense tool"}, headers=bob).status_code == 200
    # and an admin may do what the user may not
    admin = bearer(served.keys.admin)
    assert http.post("/admin/adapters/reload", headers=admin).json()["served"] == served_version
    made = http.post("/v1/documents", files={"file": ("tmp.md", b"# Tmp\n\nshort")}, headers=admin)
    assert made.status_code == 201 and made.json()["uploaded_by"] == "ops"
    assert http.delete(f"/v1/documents/{made.json()['id']}", headers=admin).status_code == 200


def test_groups_of_the_key_restrict_search_listing_and_chat_sources(served, http) -> None:
    salaries, zephyr = served.docs["salaries.md"], served.docs["zephyr.md"]
    alice, bob = bearer(served.keys.alice), bearer(served.keys.bob)

    def search(headers: dict) -> set[int]:
        body = {"query": SALARY_QUESTION, "k": 5}
        response = http.post("/v1/search", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return {hit["document_id"] for hit in response.json()["data"]}

    assert salaries in search(alice) and salaries not in search(bob)
    assert salaries not in search(bearer(served.keys.admin))  # admin is no group membership

    listed = {d["id"] for d in http.get("/v1/documents", headers=bob).json()["data"]}
    assert zephyr in listed and salaries not in listed
    assert http.get(f"/v1/documents/{salaries}", headers=bob).status_code == 404
    assert http.get(f"/v1/documents/{salaries}", headers=alice).json()["name"] == "salaries.md"

    bob_reply = _chat(http, served.keys.bob, SALARY_QUESTION)
    alice_reply = _chat(http, served.keys.alice, SALARY_QUESTION)
    assert bob_reply.status_code == alice_reply.status_code == 200
    assert {s["document_id"] for s in bob_reply.json()["sources"]} <= {zephyr}
    assert salaries in {s["document_id"] for s in alice_reply.json()["sources"]}
    with Session(served.app.state.db) as session:
        rows = [session.get(Exchange, r.json()["exchange_id"]) for r in (bob_reply, alice_reply)]
    assert [row.user for row in rows] == ["bob", "alice"]  # logged as the key's user


def test_openai_client_with_a_key(served) -> None:
    client = openai.OpenAI(
        base_url=f"{served.url}/v1", api_key=served.keys.alice, max_retries=0, timeout=120
    )
    reply = client.chat.completions.create(
        model="protege", messages=[{"role": "user", "content": SALARY_QUESTION}], max_tokens=4
    )
    assert reply.usage.completion_tokens > 0
    assert served.docs["salaries.md"] in {s["document_id"] for s in reply.model_extra["sources"]}
    with Session(served.app.state.db) as session:
        assert session.get(Exchange, reply.model_extra["exchange_id"]).user == "alice"
    wrong = openai.OpenAI(base_url=f"{served.url}/v1", api_key="prt_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_notify_serving_uses_the_admin_key_from_the_environment(served, monkeypatch) -> None:
    settings = served.settings.model_copy(deep=True)
    settings.serving.reload_url = served.url
    monkeypatch.delenv("PROTEGE_API_KEY", raising=False)
    assert notify_serving(settings).startswith("server answered 401")
    monkeypatch.setenv("PROTEGE_API_KEY", served.keys.bob)
    assert notify_serving(settings).startswith("server answered 403")
    monkeypatch.setenv("PROTEGE_API_KEY", served.keys.admin)
    assert notify_serving(settings).startswith("server answered 200")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "protege.example.com"])
def test_open_mode_is_refused_off_loopback(tmp_path, host) -> None:
    settings = Settings(
        home=tmp_path,
        models=ModelsConfig(student=str(tmp_path / "no-model")),  # refused before loading it
        serving=ServingConfig(auth="open", host=host),
    )
    with pytest.raises(ConfigError, match="loopback"):
        create_app(settings)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_open_mode_on_loopback_warns_loudly(tmp_path, host, caplog) -> None:
    settings = Settings(home=tmp_path, serving=ServingConfig(auth="open", host=host))
    with caplog.at_level(logging.WARNING, logger="assistant.auth"):
        check_open_mode(settings)
    assert "OPEN MODE" in caplog.text and "ADMIN" in caplog.text


def test_keys_cli_create_list_revoke_stores_no_secret(tmp_path, capsys) -> None:
    home = tmp_path / "home"
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"home": str(home)}))

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["--config", str(profile), *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = cli("keys", "create", "dana", "--role", "admin", "--groups", "hr,finance")
    assert code == 0
    secret = next(w for w in out.split() if w.startswith("prt_") and len(w) > 30)
    db = make_engine(f"sqlite:///{home / 'protege.db'}")
    try:
        principal = authenticate(db, secret)
        assert (principal.user, principal.role, principal.groups) == (
            "dana",
            "admin",
            ("finance", "hr"),
        )
        code, listing, _ = cli("keys", "list")
        assert code == 0 and secret[:12] in listing and secret not in listing
        # only the hash is stored: the secret is nowhere in the database file
        assert secret.encode() not in (home / "protege.db").read_bytes()
        with Session(db) as session:
            assert session.get(ApiKey, 1).key_hash != secret

        assert cli("keys", "revoke", secret[:12])[0] == 0
        with pytest.raises(UnauthorizedError, match="revoked"):
            authenticate(db, secret)
        code, _, err = cli("keys", "revoke", "prt_nosuchkey")
        assert code == 2 and "no API key" in err
        assert cli("keys", "create", "eve", "--groups", "bad group!")[0] == 2
    finally:
        db.dispose()


def test_api_key_migration_matches_the_model(db_url) -> None:
    engine = make_engine(db_url)
    try:
        upgrade_schema(engine)

        def only_apikey(name, type_, *_) -> bool:  # noqa: ANN001
            return type_ != "table" or name == "apikey"

        with engine.connect() as connection:
            opts = {
                "compare_type": True,
                "include_name": only_apikey,  # reflected tables
                "include_object": lambda obj, name, type_, *_: only_apikey(name, type_),  # models
            }
            diffs = compare_metadata(
                MigrationContext.configure(connection, opts=opts), SQLModel.metadata
            )
        assert diffs == []
        key = create_key(engine, "frank")
        assert authenticate(engine, key.secret).user == "frank"
    finally:
        engine.dispose()
