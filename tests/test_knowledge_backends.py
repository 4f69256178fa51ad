"""The knowledge store on a real Chroma server (`chroma run`), started and stopped by the tests.

    .venv/bin/python -m pytest tests/test_knowledge_backends.py -q

PostgreSQL runs of the store are in tests/test_db.py (they share its database fixture).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from knowledge.chroma_index import ChromaIndex
from knowledge.consistency import check_index
from knowledge.embeddings import Embedder, get_embedder
from knowledge.errors import ConfigError
from knowledge.langchain_adapter import acl_filter, knowledge_vectorstore
from knowledge.settings import KnowledgeConfig, Settings
from knowledge.store import KnowledgeStore

CHROMA = Path(sys.executable).parent / "chroma"
V1 = b"# Parking\n\nStaff park in garage B. Visitors use level 1 of garage A.\n"
V2 = b"# Parking\n\nStaff now park in garage C. Visitors use level 2 of garage A.\n"
SALARIES = b"# Salary bands\n\nEngineering level 3 earns between 70,000 and 85,000 euros.\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Chroma server on a free port, with its data in a temporary folder."""
    if not CHROMA.exists():
        pytest.skip(f"no chroma CLI at {CHROMA}")
    port = free_port()
    folder = tmp_path_factory.mktemp("chroma-server")
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(folder / "data"), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chroma server did not start: {(folder / 'server.log').read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return get_embedder()


def test_store_on_a_chroma_server(chroma_server: str, tmp_path: Path, embedder: Embedder) -> None:
    knowledge = KnowledgeConfig(chunk_tokens=24, chunk_overlap=4, chroma_url=chroma_server)
    store = KnowledgeStore(Settings(home=tmp_path, knowledge=knowledge))
    assert isinstance(store.index, ChromaIndex)
    assert not (tmp_path / "chroma").exists()  # nothing embedded

    v1 = store.ingest_bytes("parking.md", V1).document
    hr = store.ingest_bytes("salaries.md", SALARIES, visibility="groups", groups=["hr"]).document
    v2 = store.ingest_bytes("parking.md", V2).document
    assert v2.version == 2 and store.chunks_for([v1.id]) == []
    [hit] = store.retrieve("Where do staff park?", k=1)
    assert hit.document_id == v2.id and "garage C" in hit.text
    assert hr.id not in {h.document_id for h in store.retrieve("salary band", k=5)}
    assert store.retrieve("salary band", k=1, groups=["hr"])[0].document_id == hr.id

    # The server keeps the vectors: a second store (another process, say) sees the same index.
    other = KnowledgeStore(Settings(home=tmp_path, knowledge=knowledge))
    assert sorted(other.index.ids()) == sorted(store.index.ids())
    [doc] = knowledge_vectorstore(other).similarity_search(
        "salary band", k=1, filter=acl_filter(other, ["hr"])
    )
    assert doc.metadata["document_id"] == hr.id

    other.index.add(["999-0"], embedder.embed(["stray"]), ["stray"], [{"visibility": "company"}])
    assert check_index(store).orphans == ["999-0"]
    assert check_index(store, repair=True).repaired and check_index(store).consistent

    store.delete_document(hr.id)
    assert {c.id for c in store.chunks_for([v2.id])} == set(store.index.ids())


def test_an_unreachable_server_is_a_clear_config_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    store = KnowledgeStore(Settings(home=tmp_path, knowledge=KnowledgeConfig(chroma_url=url)))
    with pytest.raises(ConfigError, match="not reachable"):
        store.index  # noqa: B018
    with pytest.raises(ConfigError, match="expected http"):
        ChromaIndex.server("ftp://example", "protege-chunks")
