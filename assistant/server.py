"""Run the protege API with uvicorn on `settings.serving.host:port`.

    python -m assistant.server              # profile from PROTEGE_CONFIG, else "sandbox"
    python -m assistant.server demo         # configs/demo.yaml (or a path to a .yaml)

    with serve_in_thread(create_app(settings)) as url:   # tests, benches: a real server
        httpx.get(f"{url}/healthz")

One process, one worker: the model lives in this process (embedded engine), so running several
uvicorn workers would load it several times and each would hot-swap on its own. Both run with
`assistant.http_protocol.uvicorn_config`: header and body read deadlines, a connection cap, a
bounded graceful shutdown (README, "Limits").
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI

from assistant.app import create_app
from assistant.http_protocol import uvicorn_config
from knowledge.parse_worker import shutdown_workers
from knowledge.settings import Settings, load_settings


class ProtegeServer(uvicorn.Server):
    """uvicorn's server, stopping parser processes as soon as a shutdown is asked for.

    uvicorn waits for requests in flight (up to `serving.shutdown_timeout_seconds`) before the
    app's own shutdown runs; an upload stuck in a parser bomb would hold it that long. Killing
    the parsers first ends such a request at once (503, "shutting down").
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # a signal handler: the kill (locks, waits) runs in a thread of its own
        threading.Thread(target=shutdown_workers, name="protege-stop-parsers").start()
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    """Load the student (`resolve_model_ref(settings, settings.models.student)`) and serve."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    ProtegeServer(uvicorn_config(app, settings)).run()


@contextmanager
def serve_in_thread(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 120.0
) -> Iterator[str]:
    """Run `app` under uvicorn in a daemon thread; yields its base URL, stops it on exit.

    port 0 lets the OS pick a free port (read back from the bound socket: no race).
    """
    config = uvicorn_config(app, app.state.settings, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="protege-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the API server did not start (see the log above)")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)


if __name__ == "__main__":
    serve(load_settings(sys.argv[1] if len(sys.argv) > 1 else None))
