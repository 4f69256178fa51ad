"""The embedded engine: transformers + peft in this process, one worker thread owning the model.

    engine = EmbeddedEngine.from_settings(settings)      # or EmbeddedEngine("/path/to/hf-folder")
    engine.ensure_loaded("v0002", Path(".../adapters/v0002"))
    print(engine.generate([{"role": "user", "content": "Hi"}], GenerationParams(), "v0002").text)
    engine.close()

Why one thread: a peft model has one *active* adapter at a time, so loading, selecting and
deleting adapters must never interleave with a forward pass. Every request and every adapter
operation goes through one FIFO queue; the worker takes the head and, when it is a generation,
batches it with the other queued generations of the same adapter version and sampling settings
(they can share one `generate` call). Adapter operations are never reordered with each other and
no generation is moved past one, so `unload` runs only after everything queued before it.

Streaming is real: a per-row stopping criterion sees every new token as `generate` decides it,
decodes it and hands the text delta to the request's `on_text` callback (holding back text that
could still turn into a stop string, and half-decoded UTF-8).
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import StoppingCriteria, StoppingCriteriaList

from assistant.engine import GenerationParams, GenerationResult, Message
from knowledge.errors import BadInputError, NotFoundError, ProtegeError
from knowledge.settings import Settings
from learner.generation import chat_prompt
from learner.modeling import (
    configure_threads,
    load_causal_lm,
    load_tokenizer,
    resolve_model_ref,
    stop_token_ids,
    torch_device,
)
from learner.registry import BASE

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    messages: list[Message]
    params: GenerationParams
    version: str
    on_text: Callable[[str], None] | None
    future: Future[GenerationResult]
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
        greedy = self.params.temperature <= 0
        return (
            self.version,
            0.0 if greedy else self.params.temperature,
            1.0 if greedy else self.params.top_p,
        )


@dataclass(eq=False)
class _Control:
    fn: Callable[[], Any]
    future: Future[Any]


_STOP = object()


def _holdback(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters might still be the start of a stop string."""
    hold = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold


class _RowCriteria(StoppingCriteria):
    """Per-row stop logic for a batch: stop tokens, stop strings, each row's own max_tokens.

    Called by `generate` once per step with every row's newest token, so it also drives streaming.
    """

    def __init__(self, engine: EmbeddedEngine, rows: list[_Request]) -> None:
        self.engine = engine
        self.rows = rows

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        for i, row in enumerate(self.rows):
            if not row.done:
                self.engine._advance(row, int(input_ids[i, -1]))
        return torch.tensor(
            [row.done for row in self.rows], dtype=torch.bool, device=input_ids.device
        )


class EmbeddedEngine:
    """Implements `assistant.engine.Engine` with a local transformers model and peft adapters."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: torch.device | None = None,
        dtype: str = "float32",
        max_batch_size: int = 8,
    ) -> None:
        self.model_path = str(model_path)
        self.device = device or torch.device("cpu")
        self.max_batch_size = max_batch_size
        self.tokenizer = load_tokenizer(self.model_path)  # worker thread only
        # a second tokenizer for count_tokens: a fast tokenizer's Rust state is not safe to share
        # between threads ("Already borrowed"), and the worker uses the first one all the time
        self._count_tokenizer = load_tokenizer(self.model_path)
        self._count_lock = threading.Lock()
        self._base = load_causal_lm(self.model_path, self.device, dtype)
        self._model: Any = self._base  # becomes a PeftModel when the first adapter loads
        self._loaded: set[str] = set()
        self._stop_ids = set(stop_token_ids(self.tokenizer))
        self._max_positions = getattr(self._base.config, "max_position_embeddings", None)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="protege-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings, max_batch_size: int = 8) -> EmbeddedEngine:
        """The student named by `settings.models.student`, on the configured device and dtype."""
        configure_threads(settings)
        path = resolve_model_ref(settings, settings.models.student)
        return cls(
            path,
            device=torch_device(settings),
            dtype=settings.models.dtype,
            max_batch_size=max_batch_size,
        )

    # ---- public API (any thread) -----------------------------------------------------------
    def submit(
        self,
        messages: list[Message],
        params: GenerationParams,
        adapter_version: str,
        on_text: Callable[[str], None] | None = None,
    ) -> Future[GenerationResult]:
        future: Future[GenerationResult] = Future()
        self._put(_Request(list(messages), params, adapter_version, on_text, future))
        return future

    def generate(
        self, messages: list[Message], params: GenerationParams, adapter_version: str
    ) -> GenerationResult:
        return self.submit(messages, params, adapter_version).result()

    def ensure_loaded(self, version: str, folder: Path | None) -> None:
        if version == BASE:
            return
        if folder is None:
            raise NotFoundError(f"adapter {version}: no folder given")
        self._call(lambda: self._load(version, Path(folder))).result()

    def unload(self, version: str) -> Future[None]:
        return self._call(lambda: self._unload(version))

    def loaded_versions(self) -> list[str]:
        return self._call(lambda: sorted(self._loaded)).result()

    def count_tokens(self, text: str) -> int:
        with self._count_lock:
            return len(self._count_tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # ---- queueing ----------------------------------------------------------------------------
    def _put(self, item: _Request | _Control) -> None:
        if self._closed:
            raise ProtegeError("the engine is shut down")
        self._queue.put(item)

    def _call(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        if threading.current_thread() is self._thread:
            # already on the worker (e.g. from a future's done-callback): queueing would deadlock
            _run_control(_Control(fn, future))
        else:
            self._put(_Control(fn, future))
        return future

    def _run(self) -> None:
        backlog: deque[Any] = deque()
        while True:
            if not backlog:
                backlog.append(self._queue.get())
            while True:  # take everything already waiting, so concurrent requests can batch
                try:
                    backlog.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            head = backlog.popleft()
            if head is _STOP:
                for item in backlog:  # only items that raced close(); nobody else will run them
                    if item is not _STOP and item.future.set_running_or_notify_cancel():
                        item.future.set_exception(ProtegeError("the engine is shut down"))
                return
            if isinstance(head, _Control):
                _run_control(head)
                continue
            batch = [head]
            for item in list(backlog):
                if len(batch) >= self.max_batch_size or not isinstance(item, _Request):
                    break  # never move a generation past an adapter operation
                if item.key == head.key:
                    batch.append(item)
                    backlog.remove(item)
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if batch:
                self._generate_batch(batch)

    # ---- worker thread only ------------------------------------------------------------------
    def _load(self, version: str, folder: Path) -> None:
        if version in self._loaded:
            return
        if not isinstance(self._model, PeftModel):
            self._model = PeftModel.from_pretrained(
                self._base, str(folder), adapter_name=version, is_trainable=False
            )
        else:
            self._model.load_adapter(str(folder), adapter_name=version, is_trainable=False)
        self._model.eval()
        self._loaded.add(version)
        log.info("adapter %s loaded from %s", version, folder)

    def _unload(self, version: str) -> None:
        if version not in self._loaded:
            return
        if self._loaded == {version}:
            # peft cannot run with zero adapters (KeyError on forward): unwrap to the plain model
            self._base = self._model.unload()
            self._model = self._base
        else:
            if self._model.active_adapter == version:
                self._model.set_adapter(next(iter(self._loaded - {version})))
            self._model.delete_adapter(version)
        self._loaded.discard(version)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("adapter %s unloaded", version)

    @contextmanager
    def _adapter(self, version: str) -> Iterator[None]:
        if version == BASE:
            if isinstance(self._model, PeftModel):
                with self._model.disable_adapter():
                    yield
            else:
                yield
            return
        if version not in self._loaded:
            raise NotFoundError(f"adapter {version} is not loaded in the engine")
        self._model.set_adapter(version)
        yield

    def _generate_batch(self, batch: list[_Request]) -> None:
        try:
            prompts = [chat_prompt(self.tokenizer, r.messages) for r in batch]
            ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
            rows: list[_Request] = []
            kept: list[list[int]] = []
            for request, prompt_ids in zip(batch, ids, strict=True):
                total = len(prompt_ids) + request.params.max_tokens
                if self._max_positions and total > self._max_positions:
                    request.future.set_exception(
                        BadInputError(
                            f"prompt ({len(prompt_ids)} tokens) + max_tokens ({request.params.max_tokens}) "
                            f"exceeds the model's context of {self._max_positions} tokens"
                        )
                    )
                    continue
                request.prompt_tokens = len(prompt_ids)
                rows.append(request)
                kept.append(prompt_ids)
            if not rows:
                return
            enc = self.tokenizer.pad({"input_ids": kept}, padding=True, return_tensors="pt").to(
                self.device
            )
            params = rows[0].params  # same sampler for the whole batch (see _Request.key)
            if params.temperature > 0:
                sampling = {
                    "do_sample": True,
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "top_k": 0,
                }
            else:
                sampling = {"do_sample": False}
            with torch.inference_mode(), self._adapter(rows[0].version):
                self._model.generate(
                    input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"],
                    max_new_tokens=max(r.params.max_tokens for r in rows),
                    eos_token_id=sorted(self._stop_ids),
                    pad_token_id=self.tokenizer.pad_token_id,
                    stopping_criteria=StoppingCriteriaList([_RowCriteria(self, rows)]),
                    **sampling,
                )
            for row in rows:
                if not row.done:  # generate ran out of new tokens before this row decided
                    row.done = True
                    self._emit(row)
                row.future.set_result(
                    GenerationResult(
                        text=row.text,
                        prompt_tokens=row.prompt_tokens,
                        completion_tokens=len(row.ids),
                        adapter_version=row.version,
                        finish_reason="stop" if row.finish == "stop" else "length",
                    )
                )
        except Exception as exc:  # one bad batch must not kill the worker
            if isinstance(exc, ProtegeError):
                log.warning("generation refused for adapter %s: %s", batch[0].version, exc)
            else:
                log.exception("generation failed for adapter %s", batch[0].version)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)

    def _advance(self, row: _Request, token: int) -> None:
        """Take one new token of `row`: update its text, decide whether it is finished, stream."""
        if token in self._stop_ids:
            row.done, row.finish = True, "stop"
        else:
            row.ids.append(token)
            # leading whitespace (e.g. after an empty think block) is never part of the answer
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True).lstrip()
            cuts = [i for i in (text.find(s) for s in row.params.stop if s) if i >= 0]
            if cuts:
                text = text[: min(cuts)]
                row.done, row.finish = True, "stop"
            elif len(row.ids) >= row.params.max_tokens:
                row.done, row.finish = True, "length"
            row.text = text
        self._emit(row)

    def _emit(self, row: _Request) -> None:
        if row.on_text is None:
            return
        end = len(row.text)
        if not row.done:
            end -= _holdback(row.text, row.params.stop)
            while end > row.emitted and row.text[end - 1] == "\ufffd":  # half a UTF-8 character
                end -= 1
        if end > row.emitted:
            delta, row.emitted = row.text[row.emitted : end], end
            try:
                row.on_text(delta)
            except Exception:  # a broken listener (client gone) must not break the batch
                log.exception("on_text callback failed; no more deltas for this request")
                row.on_text = None


def _run_control(control: _Control) -> None:
    if not control.future.set_running_or_notify_cancel():
        return
    try:
        control.future.set_result(control.fn())
    except Exception as exc:
        control.future.set_exception(exc)
