"""Shared pytest fixtures.

`postgres_url` is a fresh, uniquely named database on the PostgreSQL server at
`PROTEGE_TEST_POSTGRES_URL` (default postgresql+psycopg://postgres@127.0.0.1:5432/test), dropped
afterwards; tests using it are skipped, saying why, when the server cannot be reached.
`sandbox_test` builds the test-size sandbox once and caches it across runs in
$PROTEGE_TEST_CACHE (default `<repo>/.protege/test-cache`); the build reuses a complete manifest.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from learner.sandbox.manifest import SandboxManifest

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "PROTEGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def sandbox_test(tmp_path_factory: pytest.TempPathFactory) -> SandboxManifest:
    from learner.sandbox.build import build_sandbox

    cache = Path(os.environ.get("PROTEGE_TEST_CACHE") or REPO / ".protege" / "test-cache")
    return build_sandbox(cache / "sandbox", "test", 0, progress=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    admin_url = make_url(POSTGRES_URL)
    conninfo = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {admin_url.render_as_string()}: {exc}")
    name = f"protege_test_{uuid.uuid4().hex[:12]}"
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends connections still open (pooled engines, open_database's cache).
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The application database URL, once on SQLite and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'protege.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def vllm_teacher_url(sandbox_test, tmp_path_factory) -> Iterator[str]:
    """A real vLLM-CPU server with the test sandbox's student, no LoRA (tests/vllm_server.py)."""
    from vllm_server import vllm_server

    log = tmp_path_factory.mktemp("vllm-teacher") / "server.log"
    with vllm_server(sandbox_test.student_dir, log, lora=False) as url:
        yield url


@pytest.fixture(scope="session")
def vllm_lora_url(sandbox_test, tmp_path_factory) -> Iterator[str]:
    """A real vLLM-CPU server with the test sandbox's student and runtime LoRA updating."""
    from vllm_server import vllm_server

    log = tmp_path_factory.mktemp("vllm-lora") / "server.log"
    with vllm_server(sandbox_test.student_dir, log, lora=True) as url:
        yield url
