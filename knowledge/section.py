"""The base of every settings section: unknown keys are errors, field docstrings are the
descriptions (docs/config.md is generated from them by knowledge/config_reference.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Each field's docstring (the string literal under it) is its description: the config
    # reference docs/config.md is generated from them (knowledge/config_reference.py).
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
