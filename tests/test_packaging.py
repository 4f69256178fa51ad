"""protege as a user installs it: a wheel in a fresh virtual environment, no source checkout."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

REPO = Path(__file__).resolve().parent.parent
PROFILES = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_the_package_list_is_the_source_tree():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = set(find_packages(str(REPO), include=["assistant*", "learner*", "knowledge*"]))
    assert listed - {"knowledge.profiles"} == found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return next(out.glob("protege-*.whl"))


def test_the_wheel_carries_every_profile(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"knowledge/profiles/{p}.yaml" for p in PROFILES} <= set(names)
    assert not [n for n in names if n.startswith(("configs/", "tests/"))]


def test_every_profile_loads_from_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The dependencies come from this environment's site-packages (a path line: its .pth files,
    # the editable install's finder among them, are not run), protege itself from the wheel.
    target = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (target / "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = (
        "import knowledge.settings as s, sys\n"
        "assert 'site-packages' in s.__file__ and str(s.CONFIG_DIR).endswith('profiles'), s.__file__\n"
        f"for name in {PROFILES!r}:\n"
        "    print(name, s.load_settings(name).models.student)\n"
        "from pathlib import Path\n"
        "from learner.datasets import eval_sets, read_jsonl\n"
        "sets = eval_sets(s.load_settings('qwen3'), [], Path('evals'))\n"
        "assert 'site-packages' in str(sets.ifeval_file) and sets.qa_file is None, sets\n"
        "print('ifeval', len(read_jsonl(sets.ifeval_file)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [str(python), "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PROTEGE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ifeval 390" in result.stderr  # the shipped IFEval-format set, from the wheel
    assert result.stdout.split() == [w for p in PROFILES for w in (p, _student(p))]
    cli = subprocess.run(
        [str(python), "-m", "assistant.cli", "--config", "qwen3", "adapters", "list"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PROTEGE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert "unknown config profile" not in cli.stderr, cli.stderr


def _student(profile: str) -> str:
    from knowledge.settings import load_settings

    return load_settings(profile).models.student
