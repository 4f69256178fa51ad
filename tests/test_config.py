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
