"""The vLLM engine: an HTTP client of a vLLM OpenAI server that holds the student and LoRAs.

    engine = VllmEngine.from_settings(settings)   # serving.engine: vllm, serving.vllm_url
    engine.ensure_loaded("v0002", Path(".../adapters/v0002"))    # POST /v1/load_lora_adapter
    print(engine.generate([{"role": "user", "content": "Hi"}], GenerationParams(), "v0002").text)

The server: `python -m vllm.entrypoints.openai.api_server --model STUDENT --enable-lora
--max-lora-rank R --max-loras 2` with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` (README, "vLLM"),
reading adapters from the very paths the registry records (a shared volume).

Adapter versions become LoRA names: the first load of `v0002` is `protege-v0002`; a name is
never loaded twice (vLLM keeps prefix-cache blocks of a name reloaded in place), so loading the
same version again later, or while another protege process sharing the server holds that name,
takes `protege-v0002.2`, `.3`, ... "base" is the server's base model. `unload` stops new requests
for the version at once, waits for the requests already sent with it, then calls
`/v1/unload_lora_adapter`; together with the AdapterSwitcher's pins this gives the hot-swap
guarantees of the embedded engine. `close` unloads the names this engine loaded.

Prompts are rendered here with the student's tokenizer and chat template (the same text the
embedded engine and training use) and sent as token ids to `/v1/completions`; streaming reads the
server's SSE stream. Before the first request the server's tokenizer is checked against the local
one (learner/teachers/server.py, `check_server_tokenizer`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx

from assistant.engine import GenerationParams, GenerationResult, Message
from knowledge.errors import (
    BadInputError,
    ConfigError,
    NotFoundError,
    ProtegeError,
    UpstreamUnavailableError,
)
from knowledge.settings import Settings
from learner.generation import chat_prompt
from learner.modeling import load_tokenizer, resolve_model_ref, stop_token_ids
from learner.registry import BASE
from learner.teachers.server import base_model_name, check_server_tokenizer

log = logging.getLogger(__name__)


class VllmEngine:
    """Implements `assistant.engine.Engine` against a vLLM server with runtime LoRA updating."""

    def __init__(
        self, base_url: str, tokenizer_path: str | Path, *, parallel: int = 32, timeout: float = 300
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self.tokenizer = load_tokenizer(tokenizer_path)
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe across threads
        self._stop_ids = stop_token_ids(self.tokenizer)
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="protege-vllm")
        self._adapters = ThreadPoolExecutor(1, thread_name_prefix="protege-vllm-adapters")
        self._lock = threading.Lock()  # guards _names, _loads, _inflight, stats
        self._names: dict[str, str] = {}  # loaded version -> its LoRA name on the server
        self._loads: Counter[str] = Counter()  # loads per version: names are never reused
        self._inflight: defaultdict[str, set[Future]] = defaultdict(set)
        self._base: str | None = None
        self._closed = False
        self.stats = {"requests": 0, "max_inflight": 0}

    @classmethod
    def from_settings(cls, settings: Settings) -> VllmEngine:
        """The server at `serving.vllm_url`; prompts rendered with `models.student`'s tokenizer."""
        if not settings.serving.vllm_url:
            raise ConfigError("serving.engine is 'vllm' but serving.vllm_url is not set")
        return cls(settings.serving.vllm_url, resolve_model_ref(settings, settings.models.student))

    # ---- Engine ------------------------------------------------------------------------------
    def submit(
        self,
        messages: list[Message],
        params: GenerationParams,
        adapter_version: str,
        on_text: Callable[[str], None] | None = None,
        *,
        prompt_ids: list[int] | None = None,
    ) -> Future[GenerationResult]:
        if self._closed:
            raise ProtegeError("the engine is shut down")
        with self._lock:
            name = self._names.get(adapter_version)
            if name is None and adapter_version != BASE:
                return _failed(NotFoundError(f"adapter {adapter_version} is not loaded in vLLM"))
            future = self._pool.submit(
                self._complete, name, list(messages), params, on_text, prompt_ids, adapter_version
            )
            inflight = self._inflight[adapter_version]
            inflight.add(future)
            self.stats["requests"] += 1
            total = sum(len(s) for s in self._inflight.values())
            self.stats["max_inflight"] = max(self.stats["max_inflight"], total)
        future.add_done_callback(lambda f: self._finished(adapter_version, f))
        return future

    def generate(
        self, messages: list[Message], params: GenerationParams, adapter_version: str
    ) -> GenerationResult:
        return self.submit(messages, params, adapter_version).result()

    def prompt_logprobs(
        self, prompts: list[list[int]], adapter_version: str
    ) -> Future[list[list[float | None]]]:
        # vLLM 0.32 (CPU) kills its engine when a prompt_logprobs request shares a step with any
        # other request on an --enable-lora server; a serving server has LoRA on, so refuse here
        return _failed(
            BadInputError(
                "prompt_logprobs is not served through the vLLM engine: vLLM crashes scoring "
                "prompts beside other requests with --enable-lora; score against a vLLM server "
                "started without LoRA (models.teacher: server:URL)"
            )
        )

    def ensure_loaded(self, version: str, folder: Path | None) -> None:
        if version == BASE:
            return
        if folder is None:
            raise NotFoundError(f"adapter {version}: no folder given")
        self._adapters.submit(self._load, version, Path(folder).resolve()).result()

    def unload(self, version: str) -> Future[None]:
        return self._adapters.submit(self._unload, version)

    def loaded_versions(self) -> list[str]:
        # behind queued loads/unloads, like the embedded engine's queue
        return self._adapters.submit(lambda: sorted(self._names)).result()

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        for version in list(self._names):  # free the names this engine loaded on the server
            self._adapters.submit(self._unload, version)
        self._adapters.shutdown(wait=True)
        self.http.close()

    def server_lora_names(self) -> list[str]:
        """LoRA names the server holds now (all clients'), from `/v1/models`."""
        cards = _json(self.http.get("/v1/models"), "list models")["data"]
        return sorted(c["id"] for c in cards if c.get("parent") is not None)

    # ---- adapters (the single adapter thread) ------------------------------------------------
    def _load(self, version: str, folder: Path) -> None:
        if version in self._names:
            return
        taken = set(self.server_lora_names())
        while True:
            self._loads[version] += 1
            n = self._loads[version]
            name = f"protege-{version}" if n == 1 else f"protege-{version}.{n}"
            if name not in taken:
                break
        body = {"lora_name": name, "lora_path": str(folder)}
        _check(self.http.post("/v1/load_lora_adapter", json=body), f"load adapter {version}")
        with self._lock:
            self._names[version] = name
        log.info("adapter %s loaded in vLLM as %s", version, name)

    def _unload(self, version: str) -> None:
        with self._lock:
            name = self._names.pop(version, None)  # new requests for it fail from here on
            pending = list(self._inflight.get(version, ()))
        if name is None:
            return
        wait(pending)  # requests already sent with it finish on it
        response = self.http.post("/v1/unload_lora_adapter", json={"lora_name": name})
        if response.status_code == 404:  # the server restarted meanwhile: nothing to free
            log.warning("adapter %s (%s) was not loaded in vLLM anymore", version, name)
            return
        _check(response, f"unload adapter {version}")
        log.info("adapter %s (%s) unloaded from vLLM", version, name)

    # ---- requests (pool threads) -------------------------------------------------------------
    def _finished(self, version: str, future: Future) -> None:
        with self._lock:
            self._inflight[version].discard(future)

    def _base_model(self) -> str:
        with self._lock:
            if self._base is not None:
                return self._base
        base = base_model_name(self.http, "/v1/models")
        with self._tokenizer_lock:
            check_server_tokenizer(self.http, base, self.tokenizer, self.base_url)
        with self._lock:
            self._base = base
        return base

    def _complete(
        self,
        name: str | None,
        messages: list[Message],
        params: GenerationParams,
        on_text: Callable[[str], None] | None,
        prompt_ids: list[int] | None,
        version: str,
    ) -> GenerationResult:
        chat = prompt_ids is None
        if prompt_ids is None:
            with self._tokenizer_lock:
                text = chat_prompt(self.tokenizer, messages)
                prompt_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        body: dict[str, Any] = {
            "model": name, "prompt": prompt_ids, "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p,
            "stop": list(params.stop) or None, "stop_token_ids": self._stop_ids,
        }  # fmt: skip
        try:
            base = self._base_model()  # the first call also checks the server's tokenizer
            body["model"] = name or base
            if on_text is None:
                reply = _json(self.http.post("/v1/completions", json=body), "complete")
                text, finish = reply["choices"][0]["text"], reply["choices"][0]["finish_reason"]
                usage = reply["usage"]
            else:
                text, finish, usage = self._stream(body, on_text, strip=chat)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(
                f"vLLM server {self.base_url} unreachable: {exc}"
            ) from exc
        return GenerationResult(
            text.lstrip() if chat else text, usage["prompt_tokens"], usage["completion_tokens"],
            version, "stop" if finish == "stop" else "length",
        )  # fmt: skip

    def _stream(
        self, body: dict[str, Any], on_text: Callable[[str], None], strip: bool
    ) -> tuple[str, str | None, dict[str, int]]:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        text, finish, usage = "", None, {}
        with self.http.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code >= 400:
                response.read()
                _json(response, "complete")
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    raise ProtegeError(f"vLLM stream failed: {chunk['error']}")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices", []):
                    delta = choice.get("text") or ""
                    if strip and not text:  # a chat answer never starts with whitespace
                        delta = delta.lstrip()
                    text += delta
                    finish = choice.get("finish_reason") or finish
                    if delta and on_text is not None:
                        try:
                            on_text(delta)
                        except Exception:  # a broken listener (client gone) stops only itself
                            log.exception("on_text callback failed; no more deltas")
                            on_text = None
        return text, finish, usage


def _json(response: httpx.Response, what: str) -> Any:
    _check(response, what)
    return response.json()


def _check(response: httpx.Response, what: str) -> None:
    """Raise the vLLM error of a failed call (the adapter endpoints answer plain text)."""
    if response.status_code == 400:  # the request itself (e.g. prompt + max_tokens too long)
        raise BadInputError(f"vLLM refused to {what}: {_message(response)}")
    if response.status_code >= 400:
        raise ProtegeError(f"vLLM failed to {what} ({response.status_code}): {_message(response)}")


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except Exception:
        return response.text[:500]


def _failed(exc: Exception) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(exc)
    return future
