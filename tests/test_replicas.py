"""Replicas sharing one database and adapter store converge on the promoted version.

    .venv/bin/python -m pytest tests/test_replicas.py -q        # SQLite and PostgreSQL

Two real servers (serve_in_thread), each with its own embedded engine, on the same database URL
and the same adapters folder: a promotion through the registry reaches both by polling; a
promotion or rollback through one replica's admin endpoint, or `protege adapters promote|rollback`
notifying one replica, swaps that one at once and the other at its next poll.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from test_completions import perturbed_lora, register

from assistant.app import create_app
from assistant.auth import create_key
from assistant.cli import main
from assistant.server import serve_in_thread
from knowledge.db import open_database
from knowledge.settings import ModelsConfig, ServingConfig, Settings
from learner.registry import BASE, Registry

PROMPT = [{"role": "user", "content": "Who leads the Lisbon office?"}]
POLL = 0.2
NEVER = 3600.0  # a replica that only a notification can swap within a test
CONVERGE_TIMEOUT = 30.0  # generous: the 2 CI cores are shared; polling itself is every POLL s


@pytest.fixture(scope="module")
def loras(sandbox_test) -> list:
    return [perturbed_lora(sandbox_test.student_dir, seed) for seed in (1, 2)]


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch) -> None:
    for name in ("PROTEGE_HOME", "PROTEGE_DATABASE_URL", "PROTEGE_CONFIG", "PROTEGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def _settings(student_dir: Path, home: Path, db_url: str, poll: float) -> Settings:
    return Settings(
        home=home,  # the shared adapters folder is home/adapters
        database_url=db_url,
        models=ModelsConfig(student=str(student_dir)),
        serving=ServingConfig(max_new_tokens=8, registry_poll_seconds=poll, retrieval=False),
    )


@contextmanager
def _replicas(
    student_dir: Path, home: Path, db_url: str, polls: tuple[float, float]
) -> Iterator[SimpleNamespace]:
    """Two replicas (own engine each) on one database; `admin` is a key both accept."""
    with ExitStack() as stack:
        servers = []
        for poll in polls:
            app = create_app(_settings(student_dir, home, db_url, poll))
            servers.append(SimpleNamespace(url=stack.enter_context(serve_in_thread(app)), app=app))
        admin = create_key(open_database(db_url), "ops", role="admin").secret
        for server in servers:
            server.http = stack.enter_context(
                httpx.Client(base_url=server.url, timeout=120, headers=_bearer(admin))
            )
        yield SimpleNamespace(
            a=servers[0], b=servers[1], admin=admin,
            registry=Registry(_settings(student_dir, home, db_url, NEVER)),
        )  # fmt: skip


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _ask(server: SimpleNamespace) -> dict:
    response = server.http.post(
        "/v1/chat/completions", json={"model": "protege", "messages": PROMPT, "max_tokens": 8}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return {"version": body["adapter_version"], "text": body["choices"][0]["message"]["content"]}


def _served(server: SimpleNamespace) -> str:
    return server.http.get("/v1/models").json()["data"][0]["adapter_version"]


def _converges(server: SimpleNamespace, version: str) -> None:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while _served(server) != version:
        assert time.monotonic() < deadline, f"{server.url} still serves {_served(server)}"
        time.sleep(0.05)


def test_replicas_converge_on_promotion_and_rollback(sandbox_test, tmp_path, db_url, loras):
    with _replicas(sandbox_test.student_dir, tmp_path, db_url, (POLL, POLL)) as rs:
        base = _ask(rs.a)
        assert base == _ask(rs.b) and base["version"] == BASE
        v1, v2 = register(rs.registry, loras[0]), register(rs.registry, loras[1])

        rs.registry.promote(v1)  # as a cycle on another host would: nobody is notified
        for server in (rs.a, rs.b):
            _converges(server, v1)
        first = _ask(rs.a)
        assert first == _ask(rs.b) and first["version"] == v1 and first["text"] != base["text"]

        promoted = rs.a.http.post("/admin/adapters/promote", json={"version": v2})
        assert promoted.json() == {"served": v2, "previous": v1, "changed": True}
        assert _ask(rs.a)["version"] == v2  # the replica that was asked swapped before answering
        _converges(rs.b, v2)
        second = _ask(rs.b)
        assert second == _ask(rs.a) and second["text"] not in {base["text"], first["text"]}

        rolled = rs.b.http.post("/admin/adapters/rollback")
        assert rolled.json() == {"served": v1, "previous": v2, "changed": True}
        assert _ask(rs.b) == first
        _converges(rs.a, v1)
        assert _ask(rs.a) == first
        for server in (rs.a, rs.b):  # v2 was freed on both, nothing else is loaded
            assert server.app.state.engine.loaded_versions() == [v1]


def test_cli_promote_and_rollback_swap_the_notified_replica_at_once(
    sandbox_test, tmp_path, loras, monkeypatch, capsys
):
    db_url = f"sqlite:///{tmp_path / 'protege.db'}"
    # replica a never polls within the test: only the CLI's notification can swap it
    with _replicas(sandbox_test.student_dir, tmp_path, db_url, (NEVER, POLL)) as rs:
        v1 = register(rs.registry, loras[0])
        config = tmp_path / "cli.yaml"
        config.write_text(
            yaml.safe_dump({
                "home": str(tmp_path), "database_url": db_url,
                "models": {"student": str(sandbox_test.student_dir)},
                "serving": {"reload_url": rs.a.url},
            })
        )  # fmt: skip
        monkeypatch.setenv("PROTEGE_API_KEY", rs.admin)  # the notification needs an admin key

        assert main(["--config", str(config), "adapters", "promote", v1]) == 0
        assert "server answered 200" in capsys.readouterr().out
        assert rs.a.app.state.switcher.served == v1  # swapped before the command returned
        assert _ask(rs.a)["version"] == v1
        _converges(rs.b, v1)

        assert main(["--config", str(config), "adapters", "rollback"]) == 0
        assert "server answered 200" in capsys.readouterr().out
        assert rs.a.app.state.switcher.served == BASE
        assert rs.a.app.state.engine.loaded_versions() == []  # the adapter was freed
        _converges(rs.b, BASE)
        assert _ask(rs.a) == _ask(rs.b) and _ask(rs.b)["version"] == BASE
