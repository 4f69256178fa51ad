"""The embedded engine: transformers + peft in this process, one worker thread owning the model.

    engine = EmbeddedEngine.from_settings(settings)      # or EmbeddedEngine("/path/to/hf-folder")
    engine.ensure_loaded("v0002", Path(".../adapters/v0002"))
    print(engine.generate([{"role": "user", "content": "Hi"}], GenerationParams(), "v0002").text)
    engine.close()

Why one thread: a peft model has one *active* adapter, so loading, selecting and deleting
adapters must never interleave with a forward pass. Requests and adapter operations share one FIFO
queue; a generation at the head is batched with the other queued generations of the same adapter
and sampler (one `generate` call). No generation is moved past an adapter operation, so `unload`
runs only after everything queued before it.

Streaming is real: a per-row stopping criterion sees each new token as `generate` picks it and
hands the decoded delta to `on_text` (holding back a possible stop-string start or half a UTF-8
character).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from peft import PeftModel
from transformers import StoppingCriteria, StoppingCriteriaList

from assistant.engine import GenerationParams, GenerationResult, Message
from assistant.engine_queue import STOP, Control, Request, holdback, run_control
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
from learner.scoring import sequence_logprobs

log = logging.getLogger(__name__)
T = TypeVar("T")
_SCORE_TOKENS = 8_192  # padded tokens per prompt_logprobs forward pass


class _RowCriteria(StoppingCriteria):
    """Per-row stop logic for a batch: stop tokens, stop strings, each row's own max_tokens.

    Called by `generate` once per step with every row's newest token, so it also drives streaming.
    """

    def __init__(self, engine: EmbeddedEngine, rows: list[Request]) -> None:
        self.engine = engine
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw: Any) -> torch.Tensor:
        for i, row in enumerate(self.rows):
            if not row.done:
                self.engine._advance(row, int(input_ids[i, -1]))
        done = [row.done for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


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
        self.stats = {"batches": 0, "requests": 0, "max_batch": 0}  # written by the worker only
        self._thread = threading.Thread(target=self._run, name="protege-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings, max_batch_size: int = 8) -> EmbeddedEngine:
        """The student named by `settings.models.student`, on the configured device and dtype."""
        configure_threads(settings)
        path, device = resolve_model_ref(settings, settings.models.student), torch_device(settings)
        return cls(path, device=device, dtype=settings.models.dtype, max_batch_size=max_batch_size)

    # ---- public API (any thread) -----------------------------------------------------------
    def submit(
        self,
        messages: list[Message],
        params: GenerationParams,
        adapter_version: str,
        on_text: Callable[[str], None] | None = None,
        *,
        prompt_ids: list[int] | None = None,
    ) -> Future[GenerationResult]:
        future: Future[GenerationResult] = Future()
        self._put(Request(list(messages), params, adapter_version, on_text, future, prompt_ids))
        return future

    def prompt_logprobs(
        self, prompts: list[list[int]], adapter_version: str
    ) -> Future[list[list[float | None]]]:
        return self._call(lambda: self._score(prompts, adapter_version))

    def generate(
        self, messages: list[Message], params: GenerationParams, version: str
    ) -> GenerationResult:
        return self._wait(self.submit(messages, params, version))

    def ensure_loaded(self, version: str, folder: Path | None) -> None:
        if version == BASE:
            return
        if folder is None:
            raise NotFoundError(f"adapter {version}: no folder given")
        self._wait(self._call(lambda: self._load(version, Path(folder))))

    def unload(self, version: str) -> Future[None]:
        return self._call(lambda: self._unload(version))

    def loaded_versions(self) -> list[str]:
        return self._wait(self._call(lambda: sorted(self._loaded)))

    def count_tokens(self, text: str) -> int:
        with self._count_lock:
            return len(self._count_tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(STOP)
        self._thread.join(timeout)

    # ---- queueing ----------------------------------------------------------------------------
    def _put(self, item: Request | Control) -> None:
        if self._closed:
            raise ProtegeError("the engine is shut down")
        self._queue.put(item)

    def _call(self, fn: Callable[[], Any]) -> Future[Any]:
        # queued even from the worker itself (a done-callback releasing the last pin): running it
        # inline would change the model in the middle of finishing a batch
        future: Future[Any] = Future()
        self._put(Control(fn, future))
        return future

    def _wait(self, future: Future[T]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("the engine worker cannot wait for its own queue")
        return future.result()

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
            if head is STOP:
                while not self._queue.empty():  # items that raced close(): nobody will run them
                    backlog.append(self._queue.get_nowait())
                for item in backlog:
                    if item is not STOP and item.future.set_running_or_notify_cancel():
                        item.future.set_exception(ProtegeError("the engine is shut down"))
                return
            if isinstance(head, Control):
                run_control(head)
                continue
            batch = [head]
            for item in list(backlog):
                if len(batch) >= self.max_batch_size or not isinstance(item, Request):
                    break  # never move a generation past an adapter operation
                if item.key == head.key:
                    batch.append(item)
                    backlog.remove(item)
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if batch:
                self.stats["batches"] += 1
                self.stats["requests"] += len(batch)
                self.stats["max_batch"] = max(self.stats["max_batch"], len(batch))
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
            try:
                self._model.load_adapter(str(folder), adapter_name=version, is_trainable=False)
            except Exception:
                if version in self._model.peft_config:  # drop the half-loaded adapter
                    self._model.delete_adapter(version)
                raise
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
        # No gc.collect(): the adapter's tensors have no reference cycles and go with their last
        # reference (tests/test_hotswap.py checks it with the collector off); a full collection
        # here stalled every queued request for ~250 ms per swap.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("adapter %s unloaded", version)

    def _score(self, prompts: list[list[int]], version: str) -> list[list[float | None]]:
        """log p(token_t | tokens_<t) of each prompt under `version`; position 0 has none.

        Scored in micro-batches of about `_SCORE_TOKENS` padded tokens, so the logits of one
        forward pass stay bounded whatever a request asks for (400 x 900 tokens once took 2 GB).
        """
        if self._max_positions and max(map(len, prompts), default=0) > self._max_positions:
            raise BadInputError(f"a prompt exceeds the model's context of {self._max_positions}")
        out: list[list[float | None]] = []
        start = 0
        while start < len(prompts):
            end, longest = start, 0
            while end < len(prompts):
                longest = max(longest, len(prompts[end]))
                if end > start and longest * (end - start + 1) > _SCORE_TOKENS:
                    break
                end += 1
            group = prompts[start:end]
            enc = self.tokenizer.pad({"input_ids": group}, return_tensors="pt")  # left padding
            with torch.inference_mode(), self._adapter(version):
                lp_B_T = sequence_logprobs(
                    self._model,
                    enc["input_ids"].to(self.device),
                    enc["attention_mask"].to(self.device),
                )
            out += [[None, *lp_B_T[i, len(lp_B_T[i]) - len(ids) + 1 :].tolist()]
                    for i, ids in enumerate(group)]  # fmt: skip
            start = end
        return out

    @contextmanager
    def _adapter(self, version: str) -> Iterator[None]:
        if version != BASE:
            if version not in self._loaded:
                raise NotFoundError(f"adapter {version} is not loaded in the engine")
            self._model.set_adapter(version)
            yield
        elif isinstance(self._model, PeftModel):
            with self._model.disable_adapter():  # "base" = the same weights, LoRA switched off
                yield
        else:
            yield

    def _admit(self, request: Request) -> list[int] | None:
        """The prompt's token ids, or None after failing just this request (bad input)."""
        try:
            ids = request.prompt_ids
            if ids is None:
                prompt = chat_prompt(self.tokenizer, request.messages)
                ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            total = len(ids) + request.params.max_tokens
            if self._max_positions and total > self._max_positions:
                raise BadInputError(
                    f"prompt ({len(ids)} tokens) + max_tokens ({request.params.max_tokens}) exceeds "
                    f"the model's context of {self._max_positions} tokens"
                )
        except Exception as exc:
            request.future.set_exception(
                exc if isinstance(exc, ProtegeError) else BadInputError(str(exc))
            )
            return None
        request.prompt_tokens = len(ids)
        return ids

    def _generate_batch(self, batch: list[Request]) -> None:
        admitted = [(r, ids) for r in batch if (ids := self._admit(r)) is not None]
        if not admitted:
            return
        rows = [r for r, _ in admitted]
        try:
            enc = self.tokenizer.pad(
                {"input_ids": [ids for _, ids in admitted]}, return_tensors="pt"
            )
            params = rows[0].params  # one sampler for the whole batch (see Request.key)
            sampling: dict[str, Any] = {"do_sample": False}
            if params.temperature > 0:
                sampling = {
                    "do_sample": True,
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                }
                sampling["top_k"] = 0  # OpenAI semantics: no top-k unless asked (it cannot be)
            with torch.inference_mode(), self._adapter(rows[0].version):
                self._model.generate(
                    input_ids=enc["input_ids"].to(self.device),
                    attention_mask=enc["attention_mask"].to(self.device),
                    max_new_tokens=max(r.params.max_tokens for r in rows),
                    eos_token_id=sorted(self._stop_ids),
                    pad_token_id=self.tokenizer.pad_token_id,
                    stopping_criteria=StoppingCriteriaList([_RowCriteria(self, rows)]),
                    **sampling,
                )
        except Exception as exc:  # one bad batch must not kill the worker
            if isinstance(exc, ProtegeError):
                log.warning("generation refused for adapter %s: %s", rows[0].version, exc)
            else:
                log.exception("generation failed for adapter %s", rows[0].version)
            for row in rows:
                row.future.set_exception(exc)
            return
        for row in rows:
            if not row.done:  # generate ran out of new tokens before this row decided
                row.done = True
                self._emit(row)
            finish = "stop" if row.finish == "stop" else "length"
            result = GenerationResult(
                row.text, row.prompt_tokens, len(row.ids), row.version, finish
            )
            row.future.set_result(result)

    def _advance(self, row: Request, token: int) -> None:
        """Take one new token of `row`: update its text, decide whether it is finished, stream."""
        if token in self._stop_ids:
            row.done, row.finish = True, "stop"
        else:
            row.ids.append(token)
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
            if row.prompt_ids is None:  # a chat answer never starts with whitespace (think block)
                text = text.lstrip()
            cuts = [i for i in (text.find(s) for s in row.params.stop if s) if i >= 0]
            if cuts:
                text = text[: min(cuts)]
                row.done, row.finish = True, "stop"
            elif len(row.ids) >= row.params.max_tokens:
                row.done, row.finish = True, "length"
            row.text = text
        self._emit(row)

    def _emit(self, row: Request) -> None:
        if row.on_text is None:
            return
        end = len(row.text)
        if not row.done:
            end -= holdback(row.text, row.params.stop)
            while end > row.emitted and row.text[end - 1] == "\ufffd":  # half a UTF-8 character
                end -= 1
        if end > row.emitted:
            delta, row.emitted = row.text[row.emitted : end], end
            try:
                row.on_text(delta)
            except Exception:  # a broken listener (client gone) must not break the batch
                log.exception("on_text callback failed; no more deltas for this request")
                row.on_text = None
