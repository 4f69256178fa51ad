"""A process killed (SIGKILL) in the middle of a write, then `protege knowledge check --repair`.

    .venv/bin/python -m pytest tests/test_knowledge_crash.py -q

A child process ingests with `PROTEGE_TEST_PAUSE_AT` set (knowledge/faults.py): it stops at that
point of the write path and says so through a marker file; the test kills it there. Then the CLI
checks SQL against the index, repairs, and checks again. Whatever the point, no half-written
document is ever visible, and after the repair SQL and Chroma agree exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from assistant.cli import main as cli_main
from knowledge.faults import MARKER_ENV
from knowledge.settings import KnowledgeConfig, Settings
from knowledge.store import KnowledgeStore

REPO = Path(__file__).resolve().parent.parent
V1 = b"# Parking\n\nStaff park in garage B. Visitors use level 1 of garage A.\n"
V2 = b"# Parking\n\nStaff now park in garage C. Visitors use level 2 of garage A.\n"
LUNCH = b"# Lunch\n\nThe canteen serves lunch from noon to two on weekdays.\n"
KNOBS = {"chunk_tokens": 12, "chunk_overlap": 2}

# The child embeds with a stand-in (hash-seeded unit vectors of the real 384 dimensions): the
# crash is what is under test, and skipping the model load makes each child ~3x faster.
CHILD = f"""
import hashlib, os, sys
from pathlib import Path
import numpy as np
from knowledge.faults import PAUSE_ENV
from knowledge.settings import KnowledgeConfig, Settings
from knowledge.store import KnowledgeStore

class HashEmbedder:
    dim = 384
    def embed(self, texts):
        out = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(384)
            out.append((v / np.linalg.norm(v)).tolist())
        return out

home, point, v1, v2, lunch = sys.argv[1:6]
settings = Settings(home=Path(home), knowledge=KnowledgeConfig(**{KNOBS!r}))
store = KnowledgeStore(settings, embedder=HashEmbedder())
store.ingest_bytes("parking.md", v1.encode())          # lands completely
os.environ[PAUSE_ENV] = point                          # the next write stops at `point`
if point == "after_commit":
    store.ingest_bytes("parking.md", v2.encode())      # a new version of parking.md
elif point == "after_delete_commit":
    store.delete_document(1)
else:
    store.ingest_bytes("lunch.md", lunch.encode())     # a new document
print("the pause point was never reached", flush=True)
"""


def run_child_until_killed(home: Path, point: str, tmp_path: Path) -> None:
    marker = tmp_path / "paused"
    env = {**os.environ, MARKER_ENV: str(marker)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), point, V1.decode(), V2.decode(), LUNCH.decode()],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"child ended before pausing:\n{child.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("child never reached the pause point")
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)  # no cleanup, no atexit, no finally: a real crash
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()


def check(profile: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, dict]:
    code = cli_main(["--config", str(profile), "knowledge", "check", "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("point", "orphans_of", "visible"),
    [
        ("before_vectors", None, {"parking.md": 1}),  # rows were never committed: nothing to fix
        ("after_vectors", "lunch", {"parking.md": 1}),  # vectors of an upload that never landed
        ("after_commit", "v1", {"parking.md": 2}),  # the replaced version's vectors stayed
        ("after_delete_commit", "v1", {}),  # a deleted document's vectors stayed
    ],
)
def test_kill_mid_write_then_check_repair(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    point: str,
    orphans_of: str | None,
    visible: dict[str, int],
) -> None:
    home = tmp_path / "home"
    run_child_until_killed(home, point, tmp_path)
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"home": str(home), "knowledge": KNOBS}))

    store = KnowledgeStore(Settings(home=home, knowledge=KnowledgeConfig(**KNOBS)))
    documents = store.list_documents()
    assert {d.name: d.version for d in documents} == visible  # all or nothing in SQL
    served = {h.chunk_id for h in store.retrieve("parking garage lunch canteen", k=10)}
    current = {c.id for c in store.chunks_for([d.id for d in documents])}
    assert served <= current  # leftovers are never served

    code, report = check(profile, capsys)
    if orphans_of is None:
        assert code == 0 and report["consistent"]
        return
    expected = {"lunch": "2-", "v1": "1-"}[orphans_of]
    assert code == 1 and not report["consistent"] and report["missing"] == []
    assert report["orphans"] and all(o.startswith(expected) for o in report["orphans"])

    code, repaired = check(profile, capsys, "--repair")
    assert code == 0 and repaired["repaired"] and repaired["orphans"] == report["orphans"]
    code, after = check(profile, capsys)
    assert code == 0 and after["consistent"] and after["n_vectors"] == len(current)
