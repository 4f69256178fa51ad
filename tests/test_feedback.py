"""Feedback, per-user training opt-out and `protege conversations export`, against a real server.

    .venv/bin/python -m pytest tests/test_feedback.py -q

Chats are logged with the key's user; feedback is accepted only on the caller's own exchanges
(admins: any); the opt-out endpoint sets knowledge/optout.py's flag for the caller alone; the
export (through the CLI, on the same database) carries every field and the feedback.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
import yaml
from sqlmodel import Session

from assistant.app import create_app
from assistant.auth import create_key
from assistant.cli import main
from assistant.cli_keys import export_conversations, parse_since
from assistant.server import serve_in_thread
from knowledge.db import make_engine, upgrade_schema
from knowledge.optout import opted_out_users
from knowledge.settings import KnowledgeConfig, ModelsConfig, ServingConfig, Settings
from knowledge.tables import Exchange, Feedback

DOC = b"# Parking\n\nStaff park in garage B; visitors use level 1 of garage A.\n"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def served(sandbox_test, tmp_path_factory):
    home = tmp_path_factory.mktemp("feedback")
    settings = Settings(
        home=home,
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(max_new_tokens=4, registry_poll_seconds=3600),
        knowledge=KnowledgeConfig(chunk_tokens=64, chunk_overlap=8, top_k=1),
    )
    app = create_app(settings)
    db = app.state.db
    keys = SimpleNamespace(
        admin=create_key(db, "ops", role="admin").secret,
        alice=create_key(db, "alice").secret,
        bob=create_key(db, "bob").secret,
    )
    profile = home / "profile.yaml"  # the CLI reads the same database
    profile.write_text(yaml.safe_dump({"home": str(home)}))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        upload = http.post("/v1/documents", files={"file": ("parking.md", DOC)},
                           headers=bearer(keys.admin))  # fmt: skip
        assert upload.status_code == 201, upload.text
        yield SimpleNamespace(http=http, app=app, keys=keys, profile=profile)


def _chat(served, key: str, question: str) -> dict:
    body = {"model": "protege", "messages": [{"role": "user", "content": question}]}
    response = served.http.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def _feedback(served, key: str, **body) -> httpx.Response:
    return served.http.post("/v1/feedback", json=body, headers=bearer(key))


def _export(served, capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["--config", str(served.profile), "conversations", "export", *args]) == 0
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines()]


def test_feedback_only_on_your_own_exchanges(served) -> None:
    mine = _chat(served, served.keys.alice, "Where do visitors park?")["exchange_id"]
    ok = _feedback(served, served.keys.alice, exchange_id=mine, rating=-1, comment="too short")
    assert ok.status_code == 201
    assert ok.json() | {"id": None} == {"id": None, "exchange_id": mine, "rating": -1,
                                         "comment": "too short", "user": "alice"}  # fmt: skip
    # someone else's exchange, or none at all: 404, nothing stored
    assert _feedback(served, served.keys.bob, exchange_id=mine, rating=1).status_code == 404
    assert _feedback(served, served.keys.bob, exchange_id=999_999, rating=1).status_code == 404
    # only thumbs up or down
    assert _feedback(served, served.keys.alice, exchange_id=mine, rating=5).status_code == 422
    # an admin may rate anyone's
    assert _feedback(served, served.keys.admin, exchange_id=mine, rating=1).status_code == 201


def test_training_opt_out_is_per_user(served) -> None:
    db = served.app.state.db
    http = served.http
    out = http.post("/v1/me/training-opt-out", json={"opted_out": True},
                    headers=bearer(served.keys.bob))  # fmt: skip
    assert out.json() == {"user": "bob", "opted_out": True}
    assert "bob" in opted_out_users(db) and "alice" not in opted_out_users(db)
    me = http.get("/v1/me", headers=bearer(served.keys.bob)).json()
    assert me["user"] == "bob" and me["role"] == "user" and me["training_opt_out"] is True
    back = http.post("/v1/me/training-opt-out", json={"opted_out": False},
                     headers=bearer(served.keys.bob))  # fmt: skip
    assert back.status_code == 200 and "bob" not in opted_out_users(db)
    assert http.get("/v1/me", headers=bearer(served.keys.bob)).json()["training_opt_out"] is False
    bad = http.post("/v1/me/training-opt-out", json={"opted_out": True, "user": "alice"},
                    headers=bearer(served.keys.bob))  # fmt: skip
    assert bad.status_code == 422 and "alice" not in opted_out_users(db)  # no one else's choice


def test_conversations_export_jsonl(served, capsys, tmp_path) -> None:
    start = datetime.now(UTC)
    asked = _chat(served, served.keys.bob, "Where do staff park?")
    assert _feedback(served, served.keys.bob, exchange_id=asked["exchange_id"], rating=1,
                     comment="right").status_code == 201  # fmt: skip
    served.http.post("/v1/me/training-opt-out", json={"opted_out": True},
                     headers=bearer(served.keys.bob))  # fmt: skip

    records = _export(served, capsys)
    assert [r["id"] for r in records] == sorted(r["id"] for r in records) and len(records) >= 1
    [mine] = [r for r in records if r["id"] == asked["exchange_id"]]
    assert mine["user"] == "bob" and mine["training_opt_out"] is True
    assert mine["messages"] == [{"role": "user", "content": "Where do staff park?"}]
    assert mine["answer"] == asked["choices"][0]["message"]["content"]
    assert mine["chunk_ids"] == [s["chunk_id"] for s in asked["sources"]] and mine["chunk_ids"]
    assert mine["adapter_version"] == "base" and mine["latency_ms"] > 0
    assert mine["completion_tokens"] == asked["usage"]["completion_tokens"]
    assert [(f["rating"], f["comment"], f["user"]) for f in mine["feedback"]] == [
        (1, "right", "bob")
    ]
    assert all(r["training_opt_out"] is False for r in records if r["user"] == "alice")

    # --since keeps later exchanges only; --out writes the same lines to a file
    since = start.isoformat()
    assert {r["id"] for r in _export(served, capsys, "--since", since)} == {asked["exchange_id"]}
    assert _export(served, capsys, "--since", (start + timedelta(hours=1)).isoformat()) == []
    path = tmp_path / "chats.jsonl"
    assert _export(served, capsys, "--out", str(path)) == []
    assert [json.loads(line) for line in path.read_text().splitlines()] == records
    assert main(["--config", str(served.profile), "conversations", "export", "--since",
                 "yesterday"]) == 2  # fmt: skip


def test_export_filters_by_time_on_each_database(db_url) -> None:
    """The --since comparison and the feedback join, on SQLite and PostgreSQL."""
    engine = make_engine(db_url)
    try:
        upgrade_schema(engine)
        now = datetime.now(UTC)
        with Session(engine) as session:
            for user, age in [("old", timedelta(days=2)), ("new", timedelta(0))]:
                session.add(Exchange(created_at=now - age, user=user, messages_json="[]",
                                     answer=user, adapter_version="base", latency_ms=1.0))  # fmt: skip
            session.commit()
            session.add(Feedback(exchange_id=2, rating=-1, comment="meh", user="new"))
            session.commit()
        out = io.StringIO()
        assert (
            export_conversations(
                engine, out, parse_since((now - timedelta(days=1)).date().isoformat())
            )
            == 1
        )
        [record] = [json.loads(line) for line in out.getvalue().splitlines()]
        assert record["user"] == "new" and record["feedback"][0]["comment"] == "meh"
        assert export_conversations(engine, io.StringIO()) == 2
    finally:
        engine.dispose()
