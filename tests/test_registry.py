"""Adapter registry: atomic versioned folders, checksums, promotion and rollback."""

import json

import pytest

from knowledge.errors import AdapterIntegrityError, NotFoundError
from knowledge.settings import Settings
from learner.registry import BASE, Registry, folder_sha256


def _save(payload: bytes):
    def save(folder):
        (folder / "adapter_model.safetensors").write_bytes(payload)
        (folder / "adapter_config.json").write_text("{}")

    return save


def _register(reg: Registry, payload: bytes, docs=(1,)):
    version = reg.next_version()
    return reg.register(
        version,
        _save(payload),
        parent_version=None,
        base_model="m",
        config={"a": 1},
        documents=list(docs),
        metrics={"qa_closed_book": 0.5},
    )


@pytest.fixture
def registry(tmp_path):
    return Registry(Settings(home=tmp_path))


def test_register_writes_complete_folder_with_checksum(registry):
    row = _register(registry, b"weights")
    folder = registry.verify(row.version)
    meta = json.loads((folder / "meta.json").read_text())
    assert row.version == "v0001" and meta["sha256"] == row.sha256 == folder_sha256(folder)
    assert meta["documents"] == [1] and meta["config"] == {"a": 1}
    assert not list(registry.root.glob("*.tmp"))


def test_failed_save_leaves_no_registered_adapter(registry):
    def broken(folder):
        (folder / "partial").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        registry.register(
            "v0001",
            broken,
            parent_version=None,
            base_model="m",
            config={},
            documents=[],
            metrics={},
        )
    assert registry.list() == [] and not (registry.root / "v0001").exists()
    assert registry.next_version() == "v0002"  # the partial .tmp folder's number is not reused


def test_promote_rollback_and_served(registry):
    assert registry.served_version() == BASE and registry.served_documents() == []
    a = _register(registry, b"a", docs=(1,))
    b = _register(registry, b"b", docs=(1, 2))
    registry.promote(a.version)
    registry.promote(b.version)
    assert registry.served_version() == b.version and registry.served_documents() == [1, 2]
    assert registry.get(a.version).status == "retired"
    assert registry.rollback() == a.version
    assert registry.served_version() == a.version and registry.get(a.version).status == "promoted"
    assert registry.rollback() == b.version


def test_tampered_adapter_is_refused(registry):
    row = _register(registry, b"weights")
    (registry.root / row.version / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(AdapterIntegrityError, match="checksum"):
        registry.verify(row.version)
    with pytest.raises(AdapterIntegrityError):
        registry.promote(row.version)
    assert registry.served_version() == BASE


def test_rejected_adapter_cannot_be_promoted(registry):
    row = _register(registry, b"w")
    registry.reject(row.version)
    with pytest.raises(AdapterIntegrityError, match="rejected"):
        registry.promote(row.version)
    with pytest.raises(NotFoundError):
        registry.get("v9999")
