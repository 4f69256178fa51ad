"""The embedded engine's work queue items: generation requests and adapter operations.

Used only by assistant/embedded_engine.py: one worker thread takes these off one FIFO queue.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from assistant.engine import GenerationParams, GenerationResult, Message


@dataclass(eq=False)
class Request:
    messages: list[Message]
    params: GenerationParams
    version: str
    on_text: Callable[[str], None] | None
    future: Future[GenerationResult]
    prompt_ids: list[int] | None = None  # a raw token-id prompt instead of chat messages
    # decoding state, touched only by the worker thread
    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    done: bool = False
    finish: str = "length"
    prompt_tokens: int = 0

    @property
    def key(self) -> tuple[str, float, float]:
        # requests can share one generate() call only with the same adapter and sampler
        if self.params.temperature <= 0:
            return (self.version, 0.0, 1.0)
        return (self.version, self.params.temperature, self.params.top_p)


@dataclass(eq=False)
class Control:
    fn: Callable[[], Any]
    future: Future[Any]


STOP = object()  # the worker exits when it takes this


def holdback(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters might still be the start of a stop string."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold


def run_control(control: Control) -> None:
    if not control.future.set_running_or_notify_cancel():
        return
    try:
        control.future.set_result(control.fn())
    except Exception as exc:
        control.future.set_exception(exc)
