"""Issue 11, item 4: slow clients cannot hold connections (slowloris), and a cap holds.

    .venv/bin/python -m pytest tests/test_hardening_slow.py -q

A real `protege serve` process (tests/serve_process.py) with a 1 s header deadline, a 1.5 s body
deadline and at most 40 connections, attacked with raw sockets: half-sent requests are answered
408 and closed on time (a byte every 0.2 s does not keep one open), connections past the cap are
answered 503 and closed at once, a half-sent body is cut at its deadline, and meanwhile normal
requests are answered; a kept-alive connection may wait between requests.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from serve_process import protege_serve

from assistant.auth import create_key
from knowledge.db import open_database

SLOW = {"header_timeout_seconds": 1.0, "body_timeout_seconds": 1.5, "max_connections": 40,
        "keep_alive_seconds": 5}  # fmt: skip


@pytest.fixture(scope="module")
def server(sandbox_test, tmp_path_factory):
    with protege_serve(tmp_path_factory.mktemp("slow"), sandbox_test.student_dir,
                       serving=SLOW) as running:  # fmt: skip
        db = open_database(running.db_url)
        running.key = create_key(db, "ana", role="admin").secret
        running.other_key = create_key(db, "bo", role="user").secret
        running.port = int(running.url.rsplit(":", 1)[1])
        yield running


def connect(server, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    if first:
        sock.sendall(first)
    return sock


def answer_of(sock: socket.socket, wait: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when the close came."""
    sock.settimeout(wait)
    started, data = time.monotonic(), b""
    try:
        while part := sock.recv(65536):
            data += part
    except (TimeoutError, ConnectionResetError):
        pass
    return data, time.monotonic() - started


def test_half_sent_requests_get_408_and_the_connection_cap_holds(server) -> None:
    started = time.monotonic()
    attack = [connect(server, b"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ")
              for _ in range(60)]  # fmt: skip
    outcomes = [answer_of(sock) for sock in attack]
    for sock in attack:
        sock.close()
    refused = [data for data, _ in outcomes if data.startswith(b"HTTP/1.1 503")]
    timed_out = [data for data, _ in outcomes if data.startswith(b"HTTP/1.1 408")]
    assert len(refused) + len(timed_out) == 60, [d[:40] for d, _ in outcomes]
    assert len(refused) >= 20 and b"too many connections" in refused[0]
    assert b"request headers not received within 1 s" in timed_out[0]
    assert time.monotonic() - started < 1.0 + 4  # every one closed on time, none left open
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200


def test_a_trickling_client_is_cut_at_the_header_deadline(server) -> None:
    sock = connect(server)
    started = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 100
    try:
        for byte in request:  # one byte every 0.2 s: activity does not reset the deadline
            sock.sendall(bytes([byte]))
            time.sleep(0.2)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data, _ = answer_of(sock)
    sock.close()
    assert data.startswith(b"HTTP/1.1 408"), data
    assert time.monotonic() - started < 1.0 + 1.5


def test_a_half_sent_body_is_cut_at_the_body_deadline_others_unaffected(server) -> None:
    head = (f"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")  # fmt: skip
    # as many as the key may have in flight (serving.max_concurrent_per_key, 8 by default)
    slow = [connect(server, head.encode() + b'{"query": ') for _ in range(8)]
    started = time.monotonic()
    # below the connection cap, other clients go on while the slow bodies hang
    for _ in range(5):
        ok = httpx.post(f"{server.url}/v1/search", json={"query": "parking"},
                        headers={"Authorization": f"Bearer {server.other_key}"}, timeout=10)  # fmt: skip
        assert ok.status_code == 200
    assert time.monotonic() - started < 1.5  # answered before the slow ones timed out
    outcomes = [answer_of(sock) for sock in slow]
    for sock in slow:
        sock.close()
    assert all(data.startswith(b"HTTP/1.1 408") for data, _ in outcomes), outcomes[0]
    assert b"request body not received within 1.5 s" in outcomes[0][0]
    assert time.monotonic() - started < 1.5 + 3


def test_a_kept_alive_connection_may_wait_between_requests(server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        time.sleep(2.0)  # longer than both deadlines, shorter than keep-alive
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
