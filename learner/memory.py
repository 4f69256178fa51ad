"""Peak resident memory of named stages (the cycle's run log, the benches).

    peaks = StagePeaks()
    with peaks.stage("midtrain"):
        ...
    peaks.mb  # {"midtrain": 812.0}

A thread samples the process's resident set every 20 ms while a stage runs (Linux /proc; 0
elsewhere). Resident memory, not the Python heap: what an operator's OOM killer sees.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_STATM = Path("/proc/self/statm")


def rss_mb() -> float:
    """The process's resident set in MiB (0 where /proc is not available)."""
    try:
        return int(_STATM.read_text().split()[1]) * 4096 / 2**20
    except OSError:
        return 0.0


class StagePeaks:
    def __init__(self) -> None:
        self.mb: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        peak = [rss_mb()]
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], rss_mb())

        thread = threading.Thread(target=poll, daemon=True, name=f"rss-{name}")
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.mb[name] = round(max(self.mb.get(name, 0.0), peak[0], rss_mb()), 1)
