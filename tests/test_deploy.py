"""The deployment files in docker/: compose validates, and the README describes what it defines.

    .venv/bin/python -m pytest tests/test_deploy.py -q

The compose client is Debian's `docker-compose` (1.29; `make test` installs it as root). No
engine runs here: `config` parses, interpolates and validates the file without one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from knowledge.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker" / "compose.yaml"
SERVICES = {"postgres", "chroma", "vllm", "api", "scheduler"}
VOLUMES = {"pgdata", "chroma", "protege", "hf-cache"}


def test_compose_validates_with_docker_compose() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (`apt-get install -y docker-compose` as root)")
    out = subprocess.run(
        [binary, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == SERVICES
    assert set(resolved["volumes"]) == VOLUMES


def test_compose_services_have_health_checks_volumes_and_lora() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == SERVICES and set(compose["volumes"]) == VOLUMES
    assert all("healthcheck" in s for s in services.values())
    vllm = services["vllm"]
    assert "--enable-lora" in vllm["command"]
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # vLLM reads adapters from the path the registry records: the same volume at /data
    for name in ("vllm", "api", "scheduler"):
        assert any(v.startswith("protege:/data") for v in services[name]["volumes"])
    assert services["scheduler"]["build"]["dockerfile"] == "docker/Dockerfile.trainer"
    for name in ("api", "scheduler"):
        env = services[name]["environment"]
        assert env["PROTEGE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["PROTEGE_CONFIG"] == "/etc/protege/protege.yaml"
    trainer = (REPO / "docker" / "Dockerfile.trainer").read_text()
    assert trainer.startswith("#") and "FROM nvidia/cuda:" in trainer


def test_deployment_profile_points_at_the_compose_services(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PROTEGE_HOME", str(tmp_path))
    settings = load_settings(str(REPO / "docker" / "protege.yaml"))
    assert settings.knowledge.chroma_url == "http://chroma:8000"
    assert settings.server_url == "http://api:8321"


def test_readme_deployment_section_matches_compose() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deployment", 1)[1].split("\n## ", 1)[0]
    for name in SERVICES | VOLUMES:
        assert f"`{name}`" in section, name
    for path in ("docker/compose.yaml", "docker/Dockerfile.trainer", "docker/protege.yaml"):
        assert path in section
    assert "docker-compose -f docker/compose.yaml config" in section
