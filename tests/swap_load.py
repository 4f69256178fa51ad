"""Shared by the hot-swap tests of both engines: swap adapters while clients keep asking.

results, failures = swap_under_load(url, ask, swap, start=v1, versions=[v2, v3])
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx


def swap_under_load(
    url: str,
    ask: Callable[[httpx.Client], dict],
    swap: Callable[[str], None],
    start: str,
    versions: list[str],
    clients: int = 8,
) -> tuple[list[dict], list[str]]:
    """`clients` threads call `ask` in a loop; once `start` has answered 8 times each version in
    `versions` is swapped in (and answers 8 times). Returns (response bodies, failures)."""
    results: list[dict] = []
    failures: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for n in range(1000):
                if done.is_set() and n >= 3:
                    return
                try:
                    body = ask(http)
                except Exception as exc:  # collected: any failure fails the caller's test
                    with lock:
                        failures.append(repr(exc))
                    continue
                with lock:
                    results.append(body)

    def wait_for_answers_from(version: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if sum(body["adapter_version"] == version for body in results) >= 8:
                    return
            time.sleep(0.01)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    wait_for_answers_from(start)
    for version in versions:
        swap(version)
        wait_for_answers_from(version)
    done.set()
    for thread in threads:
        thread.join()
    return results, failures
