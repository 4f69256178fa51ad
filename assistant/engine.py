"""The inference engine contract the app and the hot-swapper code against.

An engine turns chat messages into an answer with a named adapter version ("base" = no adapter).
Implementations: `assistant/embedded_engine.py` (transformers + peft in this process) and
`assistant/vllm_engine.py` (a client of a vLLM server with runtime LoRA); `serving.engine` picks.

    result = engine.generate(messages, GenerationParams(max_tokens=32), "v0002")
    future = engine.submit(messages, params, "base", on_text=print)   # streaming deltas
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

Message = dict[str, str]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one request (OpenAI names). temperature 0 means greedy decoding."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationResult:
    """One finished answer and the adapter version that produced every token of it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    adapter_version: str
    finish_reason: FinishReason = field(default="stop")


@runtime_checkable
class Engine(Protocol):
    """What serving needs from an inference backend.

    Adapter management (`ensure_loaded`, `unload`) is ordered with generation by the engine itself,
    so a swap can never pull an adapter out from under a running batch.
    """

    def submit(
        self,
        messages: list[Message],
        params: GenerationParams,
        adapter_version: str,
        on_text: Callable[[str], None] | None = None,
        *,
        prompt_ids: list[int] | None = None,
    ) -> Future[GenerationResult]:
        """Queue a generation; `on_text` (if given) receives text deltas as they are decided.

        With `prompt_ids` the prompt is those token ids as they are (no chat template; `messages`
        is ignored) and the text is not stripped: a plain completion.
        """
        ...

    def prompt_logprobs(
        self, prompts: list[list[int]], adapter_version: str
    ) -> Future[list[list[float | None]]]:
        """log p(token_t | tokens_<t) for each prompt position under the adapter (t=0: None)."""
        ...

    def generate(
        self, messages: list[Message], params: GenerationParams, adapter_version: str
    ) -> GenerationResult:
        """Blocking `submit(...).result()`."""
        ...

    def ensure_loaded(self, version: str, folder: Path | None) -> None:
        """Load adapter `version` from `folder` unless already loaded ("base": nothing to do)."""
        ...

    def unload(self, version: str) -> Future[None]:
        """Queue freeing adapter `version`; runs after all work queued before it."""
        ...

    def loaded_versions(self) -> list[str]:
        """Adapter versions currently held in memory (sorted; "base" is implicit)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens of `text` in the model's tokenizer (for chunking documents)."""
        ...

    def close(self) -> None:
        """Finish queued work, then stop."""
        ...
