"""Issue 11, item 1: one upload must not be able to wedge the vector index; a broken one recovers.

    .venv/bin/python -m pytest tests/test_hardening_index.py -q

Against real `protege serve` processes (tests/serve_process.py): an upload listing 20,000 groups
is refused with 422 before anything is written, and the index holds no access data at all. Then
the index is wedged the way such an upload wedged it before the fix (one record with 20,000
metadata keys: Chroma 1.5's compaction fails on every later call): the server still starts, not
ready, naming the repair command; `protege knowledge check --repair` rebuilds the vectors from
SQL; the next start is ready and search finds the documents again, access rules intact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serve_process import REPO, protege_serve, restart

from assistant.auth import create_key
from knowledge.chroma_index import ChromaIndex
from knowledge.db import open_database
from knowledge.errors import IndexUnavailableError

HANDBOOK = b"# Parking\n\nVisitors park in garage C, level 2, next to the loading bay.\n"
SALARIES = b"# Salary bands\n\nEngineering level 3 earns between 70,000 and 85,000 euros.\n"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(url: str, key: str, name: str, data: bytes, **form: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/documents", files={"file": (name, data)}, data=form, headers=bearer(key),
        timeout=120,
    )  # fmt: skip


def search(url: str, key: str, query: str, k: int = 3) -> httpx.Response:
    return httpx.post(f"{url}/v1/search", json={"query": query, "k": k}, headers=bearer(key),
                      timeout=60)  # fmt: skip


def check(config: Path, *args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, "-m", "assistant.cli", "--config", str(config),
         "knowledge", "check", "--json", *args],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def keys_for(tmp_path):
    def make(url: str) -> dict[str, str]:
        db = open_database(url)
        return {
            "admin": create_key(db, "ana", role="admin").secret,
            "hr": create_key(db, "hella", role="user", groups=["hr"]).secret,
        }

    return make


def test_thousands_of_groups_are_refused_before_anything_is_written(
    sandbox_test, tmp_path, keys_for
) -> None:
    with protege_serve(tmp_path / "home", sandbox_test.student_dir) as server:
        keys = keys_for(server.db_url)
        assert upload(server.url, keys["admin"], "parking.md", HANDBOOK).status_code == 201
        many = ",".join(f"team{i:05d}" for i in range(20_000))
        refused = upload(server.url, keys["admin"], "salaries.md", SALARIES,
                         visibility="groups", groups=many)  # fmt: skip
        assert refused.status_code == 422, refused.text
        assert "at most 32 groups" in refused.json()["error"]["message"]
        assert refused.json()["error"]["type"] == "InvalidGroupsError"
        for bad, why in [("a" * 65, "1 to 64"), ("hr,<script>", "ASCII letters"),
                         ("hr,équipe", "ASCII letters"),
                         (",".join(f"g{i}" for i in range(33)), "33 groups given")]:  # fmt: skip
            answer = upload(server.url, keys["admin"], "salaries.md", SALARIES,
                            visibility="groups", groups=bad)  # fmt: skip
            assert answer.status_code == 422 and why in answer.json()["error"]["message"], bad
        # nothing was written, and the index still takes uploads and answers searches
        listed = httpx.get(f"{server.url}/v1/documents", headers=bearer(keys["admin"])).json()
        assert [d["name"] for d in listed["data"]] == ["parking.md"]
        ok = upload(server.url, keys["admin"], "salaries.md", SALARIES,
                    visibility="groups", groups="hr,finance")  # fmt: skip
        assert ok.status_code == 201, ok.text
        hits = search(server.url, keys["hr"], "salary of engineering level 3").json()["data"]
        assert hits[0]["name"] == "salaries.md"
        public = search(server.url, keys["admin"], "salary of engineering level 3").json()["data"]
        assert "salaries.md" not in {h["name"] for h in public}  # admins have no groups
    code, report = check(server.config)
    assert code == 0 and report["consistent"] and report["n_vectors"] == report["n_chunks"] >= 2
    # the index holds small integers beside each vector, never access data or request input
    index = ChromaIndex(server.home / "chroma", "protege-chunks")
    stored = index._collection.get(include=["metadatas"])["metadatas"]
    assert stored and all(set(m) == {"document_id", "position", "version"} for m in stored)


def wedge(chroma_dir: Path) -> None:
    """What a pre-fix upload with 20,000 groups did: one record with one metadata key each."""
    index = ChromaIndex(chroma_dir, "protege-chunks")
    poison = {"document_id": 99, "visibility": "groups"}
    poison |= {f"group:g{i:05d}": True for i in range(20_000)}
    with pytest.raises(IndexUnavailableError, match="knowledge check --repair"):
        index.add(["99-0"], [[1.0] + [0.0] * 383], ["x"], [poison])
    with pytest.raises(IndexUnavailableError, match="compaction|compactor"):
        index.ids()  # and every call after it


def test_a_wedged_index_starts_not_ready_and_repair_rebuilds_it_from_sql(
    sandbox_test, tmp_path, keys_for
) -> None:
    with protege_serve(tmp_path / "home", sandbox_test.student_dir) as server:
        keys = keys_for(server.db_url)
        assert upload(server.url, keys["admin"], "parking.md", HANDBOOK).status_code == 201
        assert upload(server.url, keys["admin"], "salaries.md", SALARIES,
                      visibility="groups", groups="hr").status_code == 201  # fmt: skip
    wedge(server.home / "chroma")

    broken = restart(server)  # starts instead of crashing
    try:
        ready = httpx.get(f"{broken.url}/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        assert "protege knowledge check --repair" in ready.json()["checks"]["index"]
        refused = search(broken.url, keys["hr"], "salary")
        assert refused.status_code == 503 and "knowledge check --repair" in refused.text
        listed = httpx.get(f"{broken.url}/v1/documents", headers=bearer(keys["admin"]))
        assert listed.status_code == 200 and len(listed.json()["data"]) == 2  # SQL still serves
    finally:
        broken.stop()
    assert broken.stopped_cleanly()

    code, report = check(server.config)  # without --repair: reports, changes nothing
    assert code == 1 and report["broken"] and not report["rebuilt"]
    code, report = check(server.config, "--repair")
    assert code == 0 and report["rebuilt"] and len(report["missing"]) == report["n_chunks"] >= 2

    fixed = restart(server)
    try:
        assert httpx.get(f"{fixed.url}/readyz").status_code == 200
        hits = search(fixed.url, keys["hr"], "salary of engineering level 3").json()["data"]
        assert hits[0]["name"] == "salaries.md"
        public = search(fixed.url, keys["admin"], "salary of engineering level 3").json()["data"]
        assert {h["name"] for h in public} == {"parking.md"}  # access still from SQL
        assert upload(fixed.url, keys["admin"], "more.md", b"# More\n\nA new upload works.\n"
                      ).status_code == 201  # fmt: skip
    finally:
        fixed.stop()
    code, report = check(server.config)
    assert code == 0 and report["consistent"] and report["n_vectors"] == report["n_chunks"] >= 3


def test_a_corrupt_index_folder_is_moved_aside_and_rebuilt(sandbox_test, tmp_path, keys_for):
    with protege_serve(tmp_path / "home", sandbox_test.student_dir) as server:
        keys = keys_for(server.db_url)
        assert upload(server.url, keys["admin"], "parking.md", HANDBOOK).status_code == 201
    (server.home / "chroma" / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    code, report = check(server.config, "--repair")
    assert code == 0 and report["rebuilt"] and "cannot open" in report["broken"], report
    assert [p.name.startswith("chroma.broken-") for p in server.home.iterdir()].count(True) == 1
    code, report = check(server.config)
    assert code == 0 and report["consistent"] and report["n_vectors"] == report["n_chunks"] >= 1
