"""/readyz and /metrics against a real server: readiness checks fail for real, counters move.

    .venv/bin/python -m pytest tests/test_metrics.py -q

Counters are read back with prometheus_client's own text parser. The swap is a real LoRA adapter
registered, promoted and hot-swapped through the admin API; the database outage is a real
PostgreSQL database refusing connections.
"""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import psycopg
import pytest
import torch
from conftest import POSTGRES_URL
from fastapi.testclient import TestClient
from peft import LoraConfig, get_peft_model
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from assistant.app import create_app
from assistant.auth import create_key
from assistant.server import serve_in_thread
from knowledge.settings import KnowledgeConfig, ModelsConfig, ServingConfig, Settings
from learner.modeling import load_causal_lm
from learner.registry import BASE, Registry


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _settings(home, sandbox_test, **serving) -> Settings:
    return Settings(
        home=home,
        models=ModelsConfig(student=str(sandbox_test.student_dir)),
        serving=ServingConfig(max_new_tokens=4, registry_poll_seconds=3600, **serving),
        knowledge=KnowledgeConfig(chunk_tokens=64, chunk_overlap=8, top_k=1),
    )


@pytest.fixture(scope="module")
def served(sandbox_test, tmp_path_factory):
    settings = _settings(tmp_path_factory.mktemp("metrics"), sandbox_test)
    app = create_app(settings)
    keys = SimpleNamespace(
        admin=create_key(app.state.db, "ops", role="admin").secret,
        user=create_key(app.state.db, "uma").secret,
    )
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        yield SimpleNamespace(http=http, app=app, settings=settings, keys=keys, url=url)


def scrape(http: httpx.Client) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one /metrics scrape."""
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_readyz_is_ready_once_started(served) -> None:
    response = served.http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"startup": "ok", "index": "ok", "engine": "ok", "database": "ok"},
    }


def test_readyz_is_503_before_startup(served, tmp_path) -> None:
    # the same loaded engine, a second app whose lifespan has not run (a TestClient used
    # without `with` does not run it)
    settings = _settings(tmp_path, SimpleNamespace(student_dir="unused"), retrieval=False)
    app = create_app(settings, engine=served.app.state.engine)
    response = TestClient(app).get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["startup"] == "still starting"


@pytest.mark.postgres
def test_readyz_is_503_when_the_database_refuses(served, sandbox_test, tmp_path, postgres_url):
    settings = _settings(tmp_path, sandbox_test, retrieval=False)
    settings.database_url = postgres_url
    name = make_url(postgres_url).database
    admin_info = make_url(POSTGRES_URL).set(drivername="postgresql")
    app = create_app(settings, engine=served.app.state.engine)
    with (
        serve_in_thread(app) as url,
        httpx.Client(base_url=url, timeout=60) as http,
        psycopg.connect(admin_info.render_as_string(hide_password=False), autocommit=True) as pg,
    ):
        assert http.get("/readyz").status_code == 200
        pg.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        try:
            down = http.get("/readyz")
            assert down.status_code == 503, down.text
            checks = down.json()["checks"]
            assert checks["database"].startswith("error:") and checks["engine"] == "ok"
        finally:
            pg.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert http.get("/readyz").status_code == 200  # back once the database is


def test_request_and_token_counters_move(served) -> None:
    http, keys = served.http, served.keys
    before = scrape(http)
    body = {"model": "protege", "messages": [{"role": "user", "content": "Hello there"}]}
    reply = http.post("/v1/chat/completions", json=body, headers=bearer(keys.user))
    assert reply.status_code == 200
    assert http.post("/v1/chat/completions", json=body).status_code == 401  # no key
    assert http.get("/no/such/path").status_code == 404
    after = scrape(http)

    chat = {"route": "/v1/chat/completions", "method": "POST"}
    assert value(after, "protege_requests_total", **chat, status="200") == (
        value(before, "protege_requests_total", **chat, status="200") + 1
    )
    assert value(after, "protege_requests_total", **chat, status="401") == (
        value(before, "protege_requests_total", **chat, status="401") + 1
    )
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(after, "protege_requests_total", **unmatched) == (
        value(before, "protege_requests_total", **unmatched) + 1
    )
    route = {"route": "/v1/chat/completions"}
    assert value(after, "protege_request_seconds_count", **route) == (
        value(before, "protege_request_seconds_count", **route) + 2
    )
    assert value(after, "protege_request_seconds_sum", **route) > value(
        before, "protege_request_seconds_sum", **route
    )
    usage = reply.json()["usage"]
    for kind in ("prompt", "completion"):
        name = f"protege_{kind}_tokens_total"
        assert value(after, name) == value(before, name) + usage[f"{kind}_tokens"] > 0
    assert value(after, "protege_adapter_served", version=BASE) == 1


def test_swaps_and_served_version_follow_promote_and_rollback(served, sandbox_test) -> None:
    http, admin = served.http, bearer(served.keys.admin)
    registry = Registry(served.settings)
    model = load_causal_lm(sandbox_test.student_dir, torch.device("cpu"))
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    version = registry.next_version()
    registry.register(
        version, save=lambda folder: lora.save_pretrained(folder), parent_version=None,
        base_model="test-student", config={}, documents=[], metrics={},
    )  # fmt: skip
    before = scrape(http)
    registry.promote(version)
    assert http.post("/admin/adapters/reload", headers=admin).json()["changed"] is True
    swapped = scrape(http)
    assert value(swapped, "protege_adapter_swaps_total") == (
        value(before, "protege_adapter_swaps_total") + 1
    )
    assert value(swapped, "protege_adapter_served", version=version) == 1
    assert value(swapped, "protege_adapter_served", version=BASE) == 0  # one version at a time

    assert http.post("/admin/adapters/reload", headers=admin).json()["changed"] is False
    rolled = http.post("/admin/adapters/rollback", headers=admin)
    assert rolled.status_code == 200 and rolled.json()["served"] == BASE
    back = scrape(http)
    assert (
        value(back, "protege_adapter_swaps_total")
        == value(before, "protege_adapter_swaps_total") + 2
    )
    assert value(back, "protege_adapter_served", version=BASE) == 1
