"""A real `protege serve` process for the tests that attack the server (tests/test_hardening_*.py).

    with protege_serve(home, sandbox_test.student_dir, serving={"max_body_bytes": 4096}) as server:
        httpx.get(f"{server.url}/healthz")
        server.rss_mb()                     # the server's resident memory, from /proc
        server.stop()                       # SIGTERM and wait (returns the exit code)

`protege --config <home>-serve.yaml serve` (what `make demo` and a deployment run), its own
profile beside `home` (the server creates `home` itself, as a first start does), the test
sandbox's student, a free port on loopback; stdout and stderr go to `<home>-serve.log` (shown
when it fails to start). The context manager waits for /healthz (not
/readyz: some tests start a server that must come up not ready) and stops the process at the
end (SIGTERM, then SIGKILL after 30 s).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    def __init__(self, proc: subprocess.Popen, url: str, home: Path, config: Path) -> None:
        self.proc, self.url, self.home, self.config = proc, url, home, config
        self.log = home.parent / f"{home.name}-serve.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.home / 'protege.db'}"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stopped_cleanly(self) -> bool:
        return self.proc.returncode in (0, -signal.SIGTERM) and (
            "Application shutdown complete." in self.log_text()
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process and wait; its exit code (uvicorn re-raises SIGTERM after a clean
        shutdown, so that is -15 with "Application shutdown complete." in the log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def write_config(home: Path, student_dir: Path, port: int, **sections: dict[str, Any]) -> Path:
    serving = {
        "host": "127.0.0.1", "port": port, "max_new_tokens": 8, "registry_poll_seconds": 3600,
        **sections.pop("serving", {}),
    }  # fmt: skip
    knowledge = {"chunk_tokens": 48, "chunk_overlap": 8, **sections.pop("knowledge", {})}
    config = {
        "home": str(home),
        "models": {"student": str(student_dir), "torch_threads": 1},
        "serving": serving,
        "knowledge": knowledge,
        **sections,
    }
    path = home.parent / f"{home.name}-serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(
    home: Path,
    config: Path,
    port: int,
    env: dict[str, str] | None = None,
    argv: list[str] | None = None,
) -> ServeProcess:
    """Start the process (`argv`: the CLI arguments, default `--config <config> serve`) and wait
    for /healthz on `port`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PROTEGE_")}
    environment.update(env or {})
    log = (home.parent / f"{home.name}-serve.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant.cli", *(argv or ["--config", str(config), "serve"])],
        stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=REPO,
    )  # fmt: skip
    log.close()
    server = ServeProcess(proc, f"http://127.0.0.1:{port}", home, config)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"protege serve exited ({proc.returncode}):\n{server.log_text()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"protege serve did not answer /healthz:\n{server.log_text()}")


@contextmanager
def protege_serve(
    home: Path, student_dir: Path, env: dict[str, str] | None = None, **sections: dict[str, Any]
) -> Iterator[ServeProcess]:
    """`protege serve` with `sections` (serving, knowledge, ...) over the test defaults."""
    home.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_config(home, student_dir, port, **sections)
    server = start(home, config, port, env)
    try:
        yield server
    finally:
        server.stop()


def restart(server: ServeProcess, env: dict[str, str] | None = None) -> ServeProcess:
    """The same profile (and port) again, after `server` stopped."""
    port = int(server.url.rsplit(":", 1)[1])
    return start(server.home, server.config, port, env)
