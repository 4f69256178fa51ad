"""Shared pytest fixtures.

`sandbox_test` builds the test-size sandbox once and caches it across runs in
$PROTEGE_TEST_CACHE (default `<repo>/.protege/test-cache`); the build reuses a complete manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from learner.sandbox.manifest import SandboxManifest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def sandbox_test(tmp_path_factory: pytest.TempPathFactory) -> SandboxManifest:
    from learner.sandbox.build import build_sandbox

    cache = Path(os.environ.get("PROTEGE_TEST_CACHE") or REPO / ".protege" / "test-cache")
    return build_sandbox(cache / "sandbox", "test", 0, progress=False)
