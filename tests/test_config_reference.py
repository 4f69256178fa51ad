"""One source of defaults: the code's settings models. docs/config.md is generated from them and
current, every field has a description, and the default profile states only the defaults.

    .venv/bin/python -m pytest tests/test_config_reference.py -q
"""

from __future__ import annotations

from pathlib import Path

import yaml

from knowledge.config_reference import render, sections
from knowledge.settings import CONFIG_DIR, Settings

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "docs" / "config.md"
REGENERATE = ".venv/bin/python -m knowledge.config_reference > docs/config.md"


def test_docs_config_md_is_current() -> None:
    assert REFERENCE.exists(), f"docs/config.md is missing; generate it: {REGENERATE}"
    assert REFERENCE.read_text() == render(), (
        f"docs/config.md is out of date with knowledge/settings.py; regenerate it: {REGENERATE}"
    )


def test_every_field_of_every_section_has_a_description() -> None:
    missing = [
        f"{path}.{name}" if path else name
        for path, model in sections(Settings)
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert not missing, (
        f"fields without a description (a docstring under the field in knowledge/settings.py): "
        f"{missing}"
    )
    # every section is reached: each model's nested sections are in the walk
    assert {p for p, _ in sections(Settings)} >= {"models", "learner.distill", "schedule"}


def _leaves(data: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _leaves(value, (*path, key))
        else:
            out.append((*path, key))
    return out


def _at(settings: Settings, path: tuple[str, ...]) -> object:
    value: object = settings
    for key in path:
        value = getattr(value, key)
    return value


def test_the_sandbox_profile_states_only_the_code_defaults() -> None:
    raw = yaml.safe_load((CONFIG_DIR / "sandbox.yaml").read_text())
    assert "extends" not in raw  # the default profile is the code defaults, stated in full
    stated = Settings.model_validate(raw)  # values as the models read them (10 -> 10.0, ...)
    defaults = Settings()
    leaves = _leaves(raw)
    assert len(leaves) > 20
    differ = {
        ".".join(path): (_at(stated, path), _at(defaults, path))
        for path in leaves
        if _at(stated, path) != _at(defaults, path)
    }
    assert not differ, (
        "configs/sandbox.yaml and the code defaults in knowledge/settings.py disagree "
        f"(path: (sandbox.yaml, code)): {differ}; change the code default (and pin the old value "
        "in configs/qwen3.yaml where it does not set the field)"
    )
