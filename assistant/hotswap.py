"""Hot-swapping the served adapter without a restart and without failing a request.

    switcher = AdapterSwitcher(Registry(settings), engine)
    switcher.sync()                        # load whatever the registry says is served
    switcher.start(settings.serving.registry_poll_seconds)   # background polling
    with switcher.pin() as version:        # one request: this version from start to finish
        engine.generate(messages, params, version)
    switcher.reload()                      # POST /admin/adapters/reload: swap now, or raise
    switcher.apply(lambda: registry.promote(v))   # /admin/adapters/promote: write, swap as one

How a swap stays safe: every request pins the version it starts with (a refcount). A swap
verifies the new folder's checksum, loads it in the engine, then flips `served` in one step, so
new requests get the new version while pinned ones finish on the old. The old adapter is unloaded
when its last pin is released, never earlier. A folder that fails verification or loading is
refused: the current version stays served and the error is reported (409 on the endpoint).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from assistant.engine import Engine
from knowledge.errors import AdapterIntegrityError, NotFoundError
from learner.registry import BASE, Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwapResult:
    served: str
    previous: str
    changed: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class AdapterSwitcher:
    """Which adapter version is served, which are pinned by running requests, and the swaps."""

    def __init__(self, registry: Registry, engine: Engine) -> None:
        self.registry = registry
        self.engine = engine
        self._lock = threading.Lock()  # guards _served, _pins, _retired (held only briefly)
        self._swap_lock = threading.Lock()  # one swap at a time: the poller vs the endpoint
        self._served = BASE
        self._pins: Counter[str] = Counter()
        self._retired: set[str] = set()  # no longer served, still loaded, waiting for pins to drop
        self.last_error: str | None = None
        self.on_swap: Callable[[SwapResult], None] | None = None  # e.g. metrics; after each swap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def served(self) -> str:
        return self._served

    def pinned(self) -> dict[str, int]:
        """Versions held by running requests, with their counts (for tests and /healthz)."""
        with self._lock:
            return {version: n for version, n in self._pins.items() if n > 0}

    # ---- pins --------------------------------------------------------------------------------
    def acquire(self) -> str:
        """Pin the served version for one request; pair with `release` (or use `pin()`)."""
        with self._lock:
            version = self._served
            self._pins[version] += 1
            return version

    def release(self, version: str) -> None:
        """Drop a pin; the last pin of a version that is no longer served unloads it."""
        with self._lock:
            self._pins[version] -= 1
            if self._pins[version] > 0:
                return
            del self._pins[version]
            if version in self._retired and version != self._served:
                self._retired.discard(version)
                # queued under the lock so a swap back to this version cannot slip in between
                # (the engine runs its queue in order: this unload, then any later load)
                self._unload(version)

    @contextmanager
    def pin(self) -> Iterator[str]:
        """The version a request uses from start to finish; it cannot be unloaded meanwhile."""
        version = self.acquire()
        try:
            yield version
        finally:
            self.release(version)

    # ---- swaps -------------------------------------------------------------------------------
    def reload(self) -> SwapResult:
        """Serve what the registry says is served now. Raises AdapterIntegrityError on refusal."""
        with self._swap_lock:
            return self._reload_locked()

    def apply(self, change: Callable[[], object]) -> SwapResult:
        """Run `change` (a registry promote or rollback), then serve its result, as one swap.

        The poller cannot slip in between the registry write and the swap, so `previous` is what
        this server served before the change and `changed` says whether the change moved it.
        """
        with self._swap_lock:
            change()
            return self._reload_locked()

    def _reload_locked(self) -> SwapResult:
        """(With _swap_lock held) the body of `reload`."""
        previous = self._served
        target = self.registry.served_version()
        if target == previous:
            self.last_error = None
            return SwapResult(served=previous, previous=previous, changed=False)
        with self._lock:
            was_retired = target in self._retired
            self._retired.discard(target)  # claim it: a release must not unload it now
        try:
            folder = None if target == BASE else self.registry.verify(target)
            self.engine.ensure_loaded(target, folder)
        except Exception as exc:
            if was_retired:  # give back the claim: unload it now, or when its pins drop
                with self._lock:
                    self._retire(target)
            known = isinstance(exc, AdapterIntegrityError | NotFoundError)
            reason = str(exc) if known else f"load failed: {exc!r}"
            message = f"refusing adapter {target}: {reason}; still serving {previous}"
            if message != self.last_error:  # once per distinct problem, not every poll
                log.error(message)
            self.last_error = message
            raise AdapterIntegrityError(message) from exc
        with self._lock:
            self._served = target
            if previous != BASE:
                self._retire(previous)
        self.last_error = None
        log.info("serving adapter %s (was %s)", target, previous)
        result = SwapResult(served=target, previous=previous, changed=True)
        if self.on_swap is not None:
            self.on_swap(result)
        return result

    def sync(self) -> str:
        """Like `reload`, but never raises: logs a refusal and returns the version served."""
        try:
            self.reload()
        except AdapterIntegrityError:
            pass  # already logged and recorded in last_error
        except Exception:
            log.exception("adapter sync failed; still serving %s", self._served)
        return self._served

    def _retire(self, version: str) -> None:
        """(With _lock held) unload a no-longer-served version now, or at its last release."""
        if self._pins[version] == 0:
            self._unload(version)
        else:
            self._retired.add(version)

    def _unload(self, version: str) -> None:
        def check(future: Future[None]) -> None:
            if future.exception() is not None:
                log.error("unloading adapter %s failed: %r", version, future.exception())

        try:
            self.engine.unload(version).add_done_callback(check)
        except Exception:  # e.g. the engine is shutting down: nothing left to free it for
            log.exception("could not queue unloading adapter %s", version)

    # ---- background polling -------------------------------------------------------------------
    def start(self, poll_seconds: float) -> None:
        """Call `sync()` every `poll_seconds` in a daemon thread (a missed notify only delays)."""
        if self._thread is not None or poll_seconds <= 0:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(poll_seconds):
                self.sync()

        self._thread = threading.Thread(target=loop, name="protege-adapter-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
