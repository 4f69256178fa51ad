"""Issue 11, item 9: odd input gets a clear 4xx, aborted streams are logged, open mode is guarded,
unknown /v1 paths need a key, nothing is loaded from outside, data files are owner-only.

    .venv/bin/python -m pytest tests/test_hardening_misc.py -q

Against real `protege serve` processes (tests/serve_process.py): one with API keys, one in
`serving.auth: open` (the local demo's mode).
"""

from __future__ import annotations

import re
import socket
import stat
import time

import httpx
import pytest
from serve_process import protege_serve
from sqlmodel import Session, select

from assistant.auth import create_key
from knowledge.db import open_database
from knowledge.settings import ModelsConfig, Settings
from knowledge.tables import Exchange
from learner.registry import Registry

HUGE = 99_999_999_999_999_999_999_999  # past 64 bits


@pytest.fixture(scope="module")
def server(sandbox_test, tmp_path_factory):
    home = tmp_path_factory.mktemp("misc") / "home"  # created by the server itself
    with protege_serve(home, sandbox_test.student_dir, serving={"max_new_tokens": 256}) as running:
        running.key = create_key(open_database(running.db_url), "ana", role="admin").secret
        running.http = httpx.Client(
            base_url=running.url, headers={"Authorization": f"Bearer {running.key}"}, timeout=60
        )
        yield running


def raw_post(server, path: str, body: str) -> httpx.Response:
    return server.http.post(
        path, content=body.encode(), headers={"content-type": "application/json"}
    )


def test_ids_past_64_bits_get_422(server) -> None:
    http = server.http
    for answer in (
        http.get(f"/v1/documents/{HUGE}"),
        http.delete(f"/v1/documents/{HUGE}"),
        http.get(f"/v1/jobs/{HUGE}"),
        http.post("/v1/feedback", json={"exchange_id": HUGE, "rating": 1}),
    ):
        assert answer.status_code == 422 and "9223372036854775807" in answer.text, answer.text
    tokens = http.post("/v1/completions", json={"prompt": [1, HUGE], "max_tokens": 1})
    assert tokens.status_code == 400 and "token ids must be in" in tokens.text


def test_lone_surrogates_in_json_get_400(server) -> None:
    lone = "\\ud800"
    for path, body in [
        ("/v1/chat/completions", f'{{"messages": [{{"role": "user", "content": "hi {lone}"}}]}}'),
        ("/v1/search", f'{{"query": "parking {lone}"}}'),
        ("/tokenize", f'{{"prompt": "{lone}"}}'),
        ("/v1/feedback", f'{{"exchange_id": 1, "rating": 1, "comment": "{lone}"}}'),
        ("/v1/search", '{"query": "parking", "\\udfff": 1}'),  # in a key
    ]:
        answer = raw_post(server, path, body)
        assert answer.status_code == 400, (path, answer.text)
        assert "lone UTF-16 surrogate" in answer.json()["error"]["message"]
    pair = raw_post(server, "/v1/search", '{"query": "parking \\ud83d\\ude97"}')  # an escaped car
    assert pair.status_code == 200
    literal = raw_post(server, "/v1/search", '{"query": "backslash-u text \\\\ud800"}')
    assert literal.status_code == 200  # an escaped backslash, not a surrogate


def test_odd_chat_template_kwargs_get_400(server) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    for kwargs, why in [
        ({"tokenize": True}, "may not set tokenize"),
        ({"conversation": 5}, "may not set conversation"),
        (
            {"chat_template": "{% for i in range(10**9) %}x{% endfor %}"},
            "may not set chat_template",
        ),
        ({"enable_thinking": [1, 2]}, "must be strings, numbers"),
        ({f"k{i}": 1 for i in range(17)}, "at most 16"),
    ]:
        answer = server.http.post(
            "/tokenize", json={"messages": messages, "chat_template_kwargs": kwargs}
        )
        assert answer.status_code == 400 and why in answer.json()["error"]["message"], answer.text
    fine = server.http.post(
        "/tokenize", json={"messages": messages, "chat_template_kwargs": {"enable_thinking": False}}
    )
    assert fine.status_code == 200 and fine.json()["count"] > 0


def test_a_stream_the_client_aborts_is_still_logged_as_aborted(server) -> None:
    # temperature 2: near-uniform sampling, a long answer (the tiny model still stops some time)
    body = {"messages": [{"role": "user", "content": "Say something."}], "stream": True,
            "max_tokens": 256, "temperature": 2.0}  # fmt: skip
    with server.http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the first event, then hang up
    db = open_database(server.db_url)
    deadline = time.monotonic() + 60
    rows: list[Exchange] = []
    while not rows and time.monotonic() < deadline:
        time.sleep(0.3)
        with Session(db) as session:
            rows = list(session.exec(select(Exchange).where(Exchange.aborted == True)))  # noqa: E712
    assert len(rows) == 1 and rows[0].user == "ana", rows
    assert rows[0].completion_tokens > 0 and rows[0].answer  # the whole answer, once done
    whole = server.http.post(
        "/v1/chat/completions", json={**body, "temperature": 0.0, "max_tokens": 8}
    )
    assert whole.status_code == 200
    with Session(db) as session:
        assert session.exec(select(Exchange).where(Exchange.aborted == False)).first()  # noqa: E712


def test_unknown_v1_paths_need_a_key_and_docs_load_nothing_from_outside(server) -> None:
    for method, path in [("GET", "/v1/nope"), ("POST", "/v1/secret/admin"), ("GET", "/v1")]:
        anonymous = httpx.request(method, f"{server.url}{path}")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        assert server.http.request(method, path).status_code in (404, 405)
    for path in ("/docs", "/redoc"):  # Swagger UI / ReDoc would load code from a CDN
        assert httpx.get(f"{server.url}{path}").status_code == 404
    for page in ("/", "/ui/documents", "/ui/learning"):
        html = httpx.get(f"{server.url}{page}").text
        external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
        assert not external, (page, external)


def test_the_database_and_data_folders_are_owner_only(server, sandbox_test) -> None:
    home = server.home
    assert stat.S_IMODE((home / "protege.db").stat().st_mode) == 0o600
    for sidecar in ("protege.db-wal", "protege.db-shm"):
        if (home / sidecar).exists():  # SQLite gives them the database file's mode
            assert stat.S_IMODE((home / sidecar).stat().st_mode) & 0o077 == 0
    for folder in (home, home / "adapters", home / "chroma", home / "jobs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    registry = Registry(
        Settings(home=home, models=ModelsConfig(student=str(sandbox_test.student_dir)))
    )
    adapter = registry.register(
        registry.next_version(), save=lambda folder: (folder / "adapter_config.json").write_text("{}"),
        parent_version=None, base_model="test", config={}, documents=[], metrics={},
    )  # fmt: skip
    assert stat.S_IMODE((home / "adapters" / adapter.version).stat().st_mode) == 0o700


@pytest.fixture(scope="module")
def open_server(sandbox_test, tmp_path_factory):
    with protege_serve(tmp_path_factory.mktemp("open"), sandbox_test.student_dir,
                       serving={"auth": "open"}) as running:  # fmt: skip
        yield running


def test_open_mode_refuses_cross_origin_writes_and_foreign_hosts(open_server) -> None:
    url = open_server.url
    note = {"file": ("note.md", b"# Note\n\nA note.\n")}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):  # fmt: skip
        refused = httpx.post(f"{url}/v1/documents", files=note, headers=headers)
        assert refused.status_code == 403 and "cross-origin" in refused.json()["error"]["message"]
    rebinding = httpx.get(f"{url}/v1/documents", headers={"Host": "evil.example:8321"})
    assert rebinding.status_code == 403 and "loopback host" in rebinding.text
    assert httpx.get(f"{url}/v1/documents").json()["data"] == []  # nothing was stored
    same_origin = httpx.post(f"{url}/v1/documents", files=note, headers={"Origin": url})
    assert same_origin.status_code == 201  # the web UI, served from the server itself
    assert httpx.post(f"{url}/v1/search", json={"query": "note"}).status_code == 200  # curl


def test_open_mode_has_no_per_key_cap_but_keys_mode_counts_keys(open_server) -> None:
    # many parallel requests of the one local user are fine in open mode (no keys to count)
    port = int(open_server.url.rsplit(":", 1)[1])
    socks = []
    head = (b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 30\r\n\r\n")  # fmt: skip
    for _ in range(10):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head)
        socks.append(sock)
    try:
        assert httpx.post(f"{open_server.url}/v1/search", json={"query": "x"}).status_code == 200
    finally:
        for sock in socks:
            sock.close()
