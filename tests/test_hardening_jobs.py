"""Issue 11, item 8: large uploads are ingested as jobs, with progress; a crash loses nothing.

    .venv/bin/python -m pytest tests/test_hardening_jobs.py -q

Against real `protege serve` processes (tests/serve_process.py) with a small job threshold: a
large upload is answered 202 at once with a status URL whose progress moves through the stages
while other requests are answered; the queue is bounded (429); `protege upload` follows the job
with a progress bar. A server killed with SIGKILL mid-job comes back with that job `failed`
("interrupted ..."), nothing of it stored, the index consistent, and the same upload then works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from serve_process import REPO, protege_serve, restart

from assistant.auth import create_key
from knowledge.db import open_database

JOBS = {"job_threshold_bytes": 20_000, "max_queued_jobs": 1}


def handbook(paragraphs: int, tag: str) -> bytes:
    lines = [f"# Handbook {tag}\n"]
    for i in range(paragraphs):
        lines.append(
            f"## Rule {i}\n\nRule {i} of handbook {tag}: requests of type {i * 7 % 13} go to desk "
            f"{i % 17}, are answered within {i % 5 + 1} days and are filed under code {tag}-{i}.\n"
        )
    return "\n".join(lines).encode()


def admin(server) -> tuple[str, httpx.Client]:
    key = create_key(open_database(server.db_url), "ana", role="admin").secret
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                        timeout=120)  # fmt: skip
    return key, http


def poll_until_done(http: httpx.Client, url: str, seen: list[dict], limit: float = 240) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        job = http.get(url).json()
        seen.append(job)
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job not done after {limit} s: {seen[-1]}")


def test_a_large_upload_is_a_job_with_progress_while_others_are_served(sandbox_test, tmp_path):
    with protege_serve(tmp_path / "home", sandbox_test.student_dir, knowledge=JOBS) as server:
        key, http = admin(server)
        data = handbook(500, "A")  # ~90 KB, ~1,000 chunks
        started = time.perf_counter()
        queued = http.post("/v1/documents", files={"file": ("handbook.md", data)})
        assert queued.status_code == 202 and time.perf_counter() - started < 3, queued.text
        job = queued.json()
        assert queued.headers["location"] == job["status_url"] == f"/v1/jobs/{job['id']}"
        assert job["status"] == "queued" and job["stored_name"] == "handbook.md"
        # the queue holds one job here (knowledge.max_queued_jobs): a second waits its turn
        busy = http.post("/v1/documents", files={"file": ("other.md", handbook(200, "B"))})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "10"
        assert "knowledge.max_queued_jobs" in busy.json()["error"]["message"]

        seen: list[dict] = []
        answered_meanwhile = []
        deadline = time.monotonic() + 240
        while (job := http.get(job["status_url"]).json())["status"] not in ("succeeded", "failed"):
            seen.append(job)
            t = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            assert http.post("/v1/search", json={"query": "desk"}).status_code == 200
            answered_meanwhile.append(time.perf_counter() - t)
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert job["status"] == "succeeded", job
        embedding = [j for j in seen if j["stage"] == "embedding" and 0 < j["done"] < j["total"]]
        assert embedding, [(j["stage"], j["done"], j["total"]) for j in seen]
        progress = [j["progress"] for j in seen] + [job["progress"]]
        assert progress == sorted(progress) and job["progress"] == 1.0
        assert max(answered_meanwhile) < 5  # the ingest runs beside the requests, not in them
        document = http.get(f"/v1/documents/{job['document_id']}").json()
        assert document["name"] == "handbook.md" and document["n_chunks"] == job["total"] > 500

        cli = subprocess.run(
            [sys.executable, "-m", "assistant.cli", "--config", str(server.config), "upload",
             str(write(tmp_path / "second.md", handbook(300, "C"))), "--url", server.url],
            capture_output=True, text=True, cwd=REPO, timeout=300,
            env={**os.environ, "PROTEGE_API_KEY": key},
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert "100%" in cli.stderr and "embedding" in cli.stderr  # the progress bar
        assert "second.md: document" in cli.stdout and "(job " in cli.stdout


def write(path, data: bytes):  # noqa: ANN001, ANN201
    path.write_bytes(data)
    return path


def test_a_job_killed_mid_ingest_is_failed_at_restart_with_nothing_half_written(
    sandbox_test, tmp_path
) -> None:
    with protege_serve(tmp_path / "home", sandbox_test.student_dir, knowledge=JOBS) as server:
        _, http = admin(server)
        assert http.post("/v1/documents", files={"file": ("small.md", b"# Small\n\nTiny.\n")}
                         ).status_code == 201  # fmt: skip
        data = handbook(600, "K")
        job = http.post("/v1/documents", files={"file": ("big.md", data)}).json()
        seen: list[dict] = []
        while not seen or seen[-1]["stage"] != "embedding" or seen[-1]["done"] == 0:
            seen.append(http.get(job["status_url"]).json())
            assert seen[-1]["status"] in ("queued", "running"), seen[-1]
            time.sleep(0.1)
        assert list((server.home / "jobs").glob("*.upload"))  # the bytes wait there
        server.stop(signal.SIGKILL)

        back = restart(server)
        try:
            after = http.get(job["status_url"]).json()
            assert after["status"] == "failed" and "interrupted" in after["error"], after
            assert "upload the file again" in after["error"]
            names = [d["name"] for d in http.get("/v1/documents").json()["data"]]
            assert names == ["small.md"]  # nothing of big.md
            assert not list((server.home / "jobs").glob("*.upload"))
            again = http.post("/v1/documents", files={"file": ("big.md", data)})  # the same again
            assert again.status_code == 202
            assert poll_until_done(http, again.json()["status_url"], [])["status"] == "succeeded"
        finally:
            back.stop()
    check = subprocess.run(
        [sys.executable, "-m", "assistant.cli", "--config", str(server.config), "knowledge",
         "check", "--json"], capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    report = json.loads(check.stdout)
    assert check.returncode == 0 and report["consistent"], report


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):  # the CLI's httpx must reach loopback directly
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
