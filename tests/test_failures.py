"""Failure messages (learner/failures.py): real exception objects in, operator advice out.

.venv/bin/python -m pytest tests/test_failures.py -q
"""

from __future__ import annotations

import errno
import os
import socket

import httpx
import pytest
import torch

from knowledge.errors import BadInputError, ConfigError, NoGPUError, ProtegeError
from knowledge.settings import ModelsConfig, Settings
from learner.failures import (
    DISK_FULL,
    NO_GPU,
    OTHER,
    OUT_OF_MEMORY,
    TEACHER_UNREACHABLE,
    classify,
    require_gpu,
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nobody listens


def test_out_of_memory_from_torch_cpu_cuda_and_python() -> None:
    settings = Settings(models=ModelsConfig(device="cuda"))
    with pytest.raises(RuntimeError) as cpu:  # the real CPU allocator failing
        torch.empty(2**62, dtype=torch.uint8)
    for exc in (
        cpu.value,
        torch.OutOfMemoryError("CUDA out of memory. Tried 2 GiB"),
        MemoryError(),
    ):
        failure = classify(exc, settings)
        assert failure.kind == OUT_OF_MEMORY, exc
        assert failure.message.startswith("out of memory on cuda")
        assert "learner.midtrain.batch_size" in failure.message


def test_disk_full_from_a_real_errno_even_when_wrapped(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "adapter.safetensors"))
    try:
        try:
            raise full
        except OSError as inner:
            raise RuntimeError("saving the adapter failed") from inner
    except RuntimeError as wrapped:
        failure = classify(wrapped, settings)
    assert failure.kind == DISK_FULL
    assert "disk full" in failure.message and str(tmp_path) in failure.message
    assert "No space left on device" in failure.message
    # other OS errors are not called a full disk
    assert classify(OSError(errno.EACCES, "Permission denied")).kind == OTHER


def test_teacher_unreachable_from_a_real_refused_connection() -> None:
    settings = Settings(models=ModelsConfig(teacher="http://127.0.0.1:9/v1"))
    port = _closed_port()
    with pytest.raises(httpx.ConnectError) as refused:
        httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={}, timeout=5)
    with pytest.raises(ConnectionRefusedError) as raw:
        socket.create_connection(("127.0.0.1", port), timeout=5)
    try:  # how a server teacher reports it: a domain error raised from the transport error
        raise ProtegeError("teacher server unreachable") from refused.value
    except ProtegeError as domain:
        wrapped = domain
    for exc in (refused.value, raw.value, wrapped):
        failure = classify(exc, settings)
        assert failure.kind == TEACHER_UNREACHABLE, exc
        assert (
            "http://127.0.0.1:9/v1" in failure.message and "models.teacher: base" in failure.message
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_gpu_profile_without_gpu_is_refused() -> None:
    require_gpu(Settings(models=ModelsConfig(device="cpu")))  # nothing to refuse
    require_gpu(Settings(models=ModelsConfig(device="auto")))  # falls back to CPU
    with pytest.raises(NoGPUError, match="models.device: cuda") as refused:
        require_gpu(Settings(profile="qwen3", models=ModelsConfig(device="cuda")))
    failure = classify(refused.value)
    assert failure.kind == NO_GPU
    assert "no GPU" in failure.message and "--config sandbox" in failure.message


def test_anything_else_keeps_its_type_and_text() -> None:
    failure = classify(BadInputError("mid-training needs at least one document"))
    assert (failure.kind, failure.message) == (
        OTHER,
        "BadInputError: mid-training needs at least one document",
    )


def test_a_hub_model_missing_from_the_local_cache_is_one_line_naming_the_fix(
    tmp_path, monkeypatch
) -> None:
    from huggingface_hub import constants

    from learner.modeling import require_local_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError) as missing:
        require_local_model("Qwen/Qwen3-1.7B")
    message = str(missing.value)
    assert "\n" not in message and "huggingface-cli download Qwen/Qwen3-1.7B" in message
    with pytest.raises(ConfigError, match="does not exist"):
        require_local_model(str(tmp_path / "no-such-model"))
    # a cached snapshot (the cache's own layout) passes, config without weights does not
    repo = tmp_path / "hub" / "models--Qwen--Qwen3-1.7B"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        require_local_model("Qwen/Qwen3-1.7B")
    (snapshot / "model.safetensors").write_bytes(b"")
    assert require_local_model("Qwen/Qwen3-1.7B") == "Qwen/Qwen3-1.7B"
    assert require_local_model(str(snapshot)) == str(snapshot)  # a folder: as it is


def test_serve_with_an_uncached_model_stops_with_that_line(tmp_path) -> None:
    import subprocess
    import sys

    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"home: {tmp_path / 'home'}\nmodels: {{student: Qwen/Qwen3-1.7B, device: cpu}}\n"
        "serving: {auth: open}\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "assistant.cli", "serve", "--config", str(profile)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode != 0
    assert "huggingface-cli download Qwen/Qwen3-1.7B" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
