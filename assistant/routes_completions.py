"""Plain completions and tokenization, vLLM-shaped, so protege itself can be a teacher server.

    curl -s localhost:8321/v1/completions -H 'content-type: application/json' \
         -d '{"model": "protege", "prompt": [1, 87, 93], "max_tokens": 1, "prompt_logprobs": 0}'
    curl -s localhost:8321/tokenize -d '{"prompt": "Hello"}' -H 'content-type: application/json'

`POST /v1/completions`: `prompt` is text, one token-id list, or a list of token-id lists (one
choice each); no chat template, no retrieval. `prompt_logprobs: 0` adds, per choice, vLLM's list:
`[null, {"<token id>": {"logprob": x, "decoded_token": s}}, ...]`, the log-prob of each prompt
token given the ones before it (only 0 is supported: the token's own log-prob, no top-k). Every
prompt of a request is answered by the same pinned adapter version (`adapter_version`, and the
`X-Protege-Adapter-Version` header). `POST /tokenize` takes `prompt` or `messages` (rendered with
the student's chat template, `add_generation_prompt`, `chat_template_kwargs`) and answers
`{"count", "tokens"}`, as vLLM does: the ServerTeacher's compatibility check calls it.

Caps (assistant/request_limits.py): prompts per request, prompt tokens per request, characters of
a text prompt or of the messages (checked before tokenizing), stop strings; `chat_template_kwargs`
may set template variables only. Tokenizing runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from transformers import PreTrainedTokenizerBase

from assistant.engine import GenerationParams, GenerationResult
from assistant.hotswap import AdapterSwitcher
from assistant.request_limits import (
    check_chars,
    check_messages,
    check_prompt_count,
    check_prompts,
    checked_stops,
    checked_template_kwargs,
)
from knowledge.errors import BadInputError, NotFoundError
from knowledge.settings import Settings
from learner.modeling import load_tokenizer, resolve_model_ref

SERVED_MODEL = "protege"  # = assistant.app.MODEL_ID (app imports this module, not the reverse)
VERSION_HEADER = "X-Protege-Adapter-Version"

router = APIRouter()
_tokenizer_lock = threading.Lock()  # a fast tokenizer's Rust state is not thread-safe


class CompletionRequest(BaseModel):
    """The OpenAI/vLLM completion fields protege honours; others are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = SERVED_MODEL
    prompt: str | list[int] | list[list[int]]
    max_tokens: int = Field(default=16, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    prompt_logprobs: int | None = None
    stream: bool = False


class TokenizeMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: list[TokenizeMessage] | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool | None = None  # vLLM's defaults: True for prompt, False for messages
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)


def _tokenizer(request: Request) -> PreTrainedTokenizerBase:
    """The served student's tokenizer, loaded once per app."""
    state = request.app.state
    with _tokenizer_lock:
        if getattr(state, "completions_tokenizer", None) is None:
            settings = state.settings
            state.completions_tokenizer = load_tokenizer(
                resolve_model_ref(settings, settings.models.student)
            )
        return state.completions_tokenizer


def _check_model(model: str | None) -> None:
    if model not in (None, SERVED_MODEL):
        raise NotFoundError(f"unknown model {model!r}; this server serves {SERVED_MODEL!r}")


def _token_prompts(
    body: CompletionRequest, tokenizer: PreTrainedTokenizerBase, settings: Settings
) -> list[list[int]]:
    """The request's prompts as token ids, within the caps (blocking: run it in a thread)."""
    if isinstance(body.prompt, str):
        check_chars(settings, [body.prompt], "the prompt")  # before the tokenizer sees it
        with _tokenizer_lock:
            prompts = [tokenizer(body.prompt)["input_ids"]]
    elif body.prompt and isinstance(body.prompt[0], int):
        prompts = [list(body.prompt)]
    else:
        prompts = [list(p) for p in body.prompt]
    check_prompts(settings, prompts)
    vocab = len(tokenizer)
    for ids in prompts or [[]]:
        if not ids:
            raise BadInputError("empty prompt")
        if min(ids) < 0 or max(ids) >= vocab:
            raise BadInputError(f"token ids must be in [0, {vocab})")
    return prompts


def _release_when_done(switcher: AdapterSwitcher, version: str, futures: list[Future]) -> None:
    """Drop the request's pin after its last engine job ends (even if the client has gone)."""
    left = [len(futures)]
    lock = threading.Lock()

    def done(_: Future) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            switcher.release(version)

    for future in futures:
        future.add_done_callback(done)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> JSONResponse:
    _check_model(body.model)
    if body.stream:
        raise BadInputError("streaming is supported on /v1/chat/completions only")
    if body.prompt_logprobs not in (None, 0):
        raise BadInputError(
            "only prompt_logprobs 0 (each prompt token's own log-prob) is supported"
        )
    settings, engine = request.app.state.settings, request.app.state.engine
    switcher: AdapterSwitcher = request.app.state.switcher
    if isinstance(body.prompt, list) and body.prompt and isinstance(body.prompt[0], list):
        check_prompt_count(settings, len(body.prompt))  # before copying them
    params = GenerationParams(
        max_tokens=min(body.max_tokens, settings.serving.max_new_tokens),
        temperature=body.temperature,
        top_p=body.top_p,
        stop=checked_stops(settings, body.stop),
    )
    tokenizer = await run_in_threadpool(_tokenizer, request)
    prompts = await run_in_threadpool(_token_prompts, body, tokenizer, settings)
    version = switcher.acquire()
    futures: list[Future] = []
    try:
        if body.prompt_logprobs is not None:
            futures.append(engine.prompt_logprobs(prompts, version))
        futures += [engine.submit([], params, version, prompt_ids=ids) for ids in prompts]
    finally:
        if futures:
            _release_when_done(switcher, version, futures)
        else:
            switcher.release(version)
    results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    scores = results.pop(0) if body.prompt_logprobs is not None else None
    choices = []
    for i, (ids, result) in enumerate(zip(prompts, results, strict=True)):
        choice: dict[str, Any] = {
            "index": i, "text": result.text, "logprobs": None,
            "finish_reason": result.finish_reason,
        }  # fmt: skip
        if scores is not None:
            choice["prompt_logprobs"] = _vllm_prompt_logprobs(tokenizer, ids, scores[i])
        choices.append(choice)
    content = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": SERVED_MODEL,
        "choices": choices,
        "usage": _usage(results),
        "adapter_version": version,
    }
    return JSONResponse(content, headers={VERSION_HEADER: version})


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    _check_model(body.model)
    if (body.prompt is None) == (body.messages is None):
        raise BadInputError("give exactly one of prompt or messages")
    settings = request.app.state.settings
    if body.messages is not None:
        check_messages(settings, len(body.messages))
        check_chars(settings, (m.content for m in body.messages), "the messages")
        template_kwargs = checked_template_kwargs(body.chat_template_kwargs)
    else:
        check_chars(settings, [body.prompt or ""], "the prompt")
    tokenizer = await run_in_threadpool(_tokenizer, request)

    def encode() -> list[int]:  # in a thread: a long prompt must not stall the event loop
        with _tokenizer_lock:
            if body.messages is not None:
                try:
                    text = tokenizer.apply_chat_template(
                        [m.model_dump() for m in body.messages],
                        tokenize=False,
                        add_generation_prompt=body.add_generation_prompt,
                        **template_kwargs,
                    )
                except Exception as exc:  # Jinja errors, raise_exception() in the template
                    raise BadInputError(
                        f"the chat template cannot render these messages: {exc}"
                    ) from exc
                special = bool(body.add_special_tokens)
            else:
                text = body.prompt
                special = body.add_special_tokens is not False
            return tokenizer(text, add_special_tokens=special)["input_ids"]

    tokens = await run_in_threadpool(encode)
    return {"count": len(tokens), "tokens": tokens}


def _vllm_prompt_logprobs(
    tokenizer: PreTrainedTokenizerBase, ids: list[int], scores: list[float | None]
) -> list[dict[str, dict[str, Any]] | None]:
    with _tokenizer_lock:
        decoded = tokenizer.convert_ids_to_tokens(ids)
    return [None] + [
        {str(token): {"logprob": score, "decoded_token": text}}
        for token, score, text in zip(ids[1:], scores[1:], decoded[1:], strict=True)
    ]


def _usage(results: list[GenerationResult]) -> dict[str, int]:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip
