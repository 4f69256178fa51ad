"""Every YAML profile in configs/ loads and validates; overrides and errors behave."""

from pathlib import Path

import pytest

from knowledge.errors import ConfigError
from knowledge.settings import CONFIG_DIR, load_settings

PROFILES = sorted(CONFIG_DIR.glob("*.yaml"))


def test_there_are_profiles():
    assert {p.stem for p in PROFILES} >= {"sandbox", "qwen3"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_profile_validates(path: Path, monkeypatch, tmp_path):
    monkeypatch.setenv("PROTEGE_HOME", str(tmp_path))
    settings = load_settings(path.stem)
    assert settings.home == tmp_path.resolve()
    assert settings.db_url.startswith("sqlite:///")
    assert settings.learner.midtrain.doc_fraction <= 1


def test_qwen3_profile_is_the_gpu_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("PROTEGE_HOME", str(tmp_path))
    s = load_settings("qwen3")
    assert (s.models.student, s.models.teacher, s.models.device) == (
        "Qwen/Qwen3-1.7B",
        "Qwen/Qwen3-8B",
        "cuda",
    )


def test_database_url_override(monkeypatch, tmp_path):
    monkeypatch.setenv("PROTEGE_HOME", str(tmp_path))
    monkeypatch.setenv("PROTEGE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert load_settings("sandbox").db_url.startswith("postgresql")


def test_unknown_profile_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown config profile"):
        load_settings("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner:\n  midtrain:\n    doc_fraction: 1.5\n")
    with pytest.raises(ConfigError, match="doc_fraction"):
        load_settings(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("modles: {}\n")
    with pytest.raises(ConfigError, match="modles"):
        load_settings(str(typo))


def test_extends_merges_sections_over_the_named_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("PROTEGE_HOME", str(tmp_path))
    child = tmp_path / "site.yaml"
    child.write_text("extends: qwen3\nlearner:\n  distill:\n    steps: 7\n")
    settings, parent = load_settings(str(child)), load_settings("qwen3")
    assert settings.learner.distill.steps == 7
    # everything else, down to sibling fields of the overridden one, comes from qwen3
    assert settings.learner.distill.lr == parent.learner.distill.lr
    assert settings.models == parent.models
    grandchild = tmp_path / "team.yaml"
    grandchild.write_text("extends: site.yaml\nserving:\n  port: 9999\n")  # relative to the file
    settings = load_settings(str(grandchild))
    assert (settings.learner.distill.steps, settings.serving.port) == (7, 9999)


def test_extends_errors(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_settings(str(loop))
    missing = tmp_path / "missing.yaml"
    missing.write_text("extends: nope\n")
    with pytest.raises(ConfigError, match="unknown config profile 'nope'"):
        load_settings(str(missing))
