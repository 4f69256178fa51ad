"""A teacher behind an OpenAI-compatible completions server: vLLM, or another protege.

    teacher = ServerTeacher.from_ref("server:http://127.0.0.1:8000/v1#Qwen/Qwen3-8B", tokenizer)
    teacher_lp_B_T = teacher.logprobs(batch)      # [B, T], 0 outside completions

`models.teacher: "server:<base url ending in /v1>[#<model>]"` selects it (without `#model`: the
server's base model, the first entry of `/v1/models` that has no parent); the environment variable
PROTEGE_TEACHER_API_KEY, if set, is sent as a bearer key. Scoring is one
`POST /v1/completions` per chunk of sequences, each prompt given as the student's token ids, with
`max_tokens: 1` and `prompt_logprobs: 0`: the server answers, for every prompt position after the
first, the log-prob of the token that is there, which is exactly what OPD needs for the sampled
completion tokens.

Compatibility (checked when the teacher is built, before OPD trains anything): a server exposes
no tokenizer files, so the check is behavioural, through `POST /tokenize` (vLLM's endpoint; protege
serves the same one). The server must turn (1) the student's whole vocabulary, decoded and joined,
and (2) a probe conversation rendered by its own chat template, into exactly the student's token
ids. Identical tokenizers and templates always pass; a tokenizer that splits or numbers any of the
student's tokens differently, or a template that formats the probe differently, fails with
IncompatibleTeacherError. What it cannot see: template branches the probe does not take (tools,
multimodal parts).

The server also writes: `teacher.write(conversations, max_tokens)` asks its chat endpoint for
greedy replies (the cycle's eval items and QA pairs are written by the strongest model it has).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import torch
from transformers import PreTrainedTokenizerBase

from knowledge.errors import (
    ConfigError,
    IncompatibleTeacherError,
    ProtegeError,
    UpstreamUnavailableError,
)
from learner.generation import Message, chat_prompt
from learner.sampling import SampleBatch

PREFIX = "server:"
API_KEY_ENV = "PROTEGE_TEACHER_API_KEY"
PROBE_CHAT: list[Message] = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "Who leads the Lisbon office?"},
    {"role": "assistant", "content": "Ada Park leads it."},
    {"role": "user", "content": "And since when?"},
]


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`server:http://host:port/v1#model` -> ("http://host:port/v1", "model" or None)."""
    if not ref.startswith(PREFIX):
        raise ConfigError(f"not a server teacher reference: {ref!r} (want server:URL[#model])")
    url, _, model = ref[len(PREFIX) :].partition("#")
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")) or not url.endswith("/v1"):
        raise ConfigError(f"server teacher URL must be http(s)://host:port/v1, got {url!r}")
    return url, model or None


def base_model_name(http: httpx.Client, path: str = "/models") -> str:
    """The served base model: the first `/v1/models` entry without a parent (LoRAs have one)."""
    models = _json(http.get(path), "list models")["data"]
    for card in models:
        if card.get("parent") is None:
            return card["id"]
    raise ProtegeError(f"{http.base_url} serves no base model: {models}")


def check_server_tokenizer(
    http: httpx.Client, model: str, tokenizer: PreTrainedTokenizerBase, root_url: str
) -> None:
    """Refuse a server whose tokenizer or chat template differs from `tokenizer`'s (see above)."""
    special = set(tokenizer.all_special_ids)
    vocab_ids = [i for i in range(len(tokenizer)) if i not in special]
    probe = tokenizer.decode(vocab_ids)
    want = tokenizer(probe, add_special_tokens=False)["input_ids"]
    got = _tokenize(http, root_url, {"model": model, "prompt": probe, "add_special_tokens": False})
    if got != want:
        raise IncompatibleTeacherError(
            f"model {model} at {root_url} tokenizes the student's vocabulary differently "
            f"({len(got)} tokens vs the student's {len(want)}, first difference at token "
            f"{_first_difference(got, want)}); OPD scores the student's token ids, so both must "
            "share one tokenizer"
        )
    want = tokenizer(chat_prompt(tokenizer, PROBE_CHAT), add_special_tokens=False)["input_ids"]
    chat = {
        "model": model,
        "messages": PROBE_CHAT,
        "add_generation_prompt": True,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    if _tokenize(http, root_url, chat) != want:
        raise IncompatibleTeacherError(
            f"model {model} at {root_url}: its chat template renders a conversation "
            "differently from the student's; OPD needs the teacher to read the same format"
        )


class ServerTeacher:
    """Teacher log-probs from a completions server (vLLM, or protege's own /v1/completions)."""

    def __init__(
        self,
        base_url: str,
        model: str | None,
        student_tokenizer: PreTrainedTokenizerBase,
        *,
        sequences_per_request: int = 8,
        parallel_requests: int = 4,
        timeout: float = 300.0,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")  # /tokenize lives beside /v1
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        try:
            self.model = model or base_model_name(self.http)
            check_server_tokenizer(self.http, self.model, student_tokenizer, self.root_url)
        except httpx.HTTPError as exc:
            self.http.close()
            raise UpstreamUnavailableError(
                f"teacher server {self.base_url} unreachable: {exc}"
            ) from exc
        except Exception:
            self.http.close()
            raise
        self.name = f"server:{self.base_url}#{self.model}"
        self.sequences_per_request = sequences_per_request
        self.parallel_requests = parallel_requests

    @classmethod
    def from_ref(cls, ref: str, student_tokenizer: PreTrainedTokenizerBase) -> ServerTeacher:
        url, model = parse_ref(ref)
        # a protege teacher (serving.auth: keys) or a vLLM started with --api-key wants a key
        return cls(url, model, student_tokenizer, api_key=os.environ.get(API_KEY_ENV))

    def close(self) -> None:
        self.http.close()

    @torch.no_grad()
    def logprobs(self, batch: SampleBatch) -> torch.Tensor:
        mask_B_T = batch.attention_mask_B_T.bool()
        rows = [batch.sequences_B_T[b][mask_B_T[b]].tolist() for b in range(len(mask_B_T))]
        step = self.sequences_per_request
        chunks = [rows[i : i + step] for i in range(0, len(rows), step)]
        with ThreadPoolExecutor(self.parallel_requests) as pool:
            scored = [lp for chunk in pool.map(self._score, chunks) for lp in chunk]
        out_B_T = torch.zeros(batch.sequences_B_T.shape, dtype=torch.float32)
        for b, lps in enumerate(scored):
            out_B_T[b, mask_B_T[b].cpu()] = torch.tensor([0.0, *lps[1:]])
        out_B_T = out_B_T.to(batch.sequences_B_T.device)
        return out_B_T * batch.completion_mask_B_T

    def write(self, conversations: list[list[Message]], max_tokens: int) -> list[str]:
        """Greedy chat replies (`POST /v1/chat/completions`, thinking off), one per conversation:
        the teacher writes the cycle's eval items and QA pairs (learner/doc_questions.py)."""
        with ThreadPoolExecutor(self.parallel_requests) as pool:
            return list(pool.map(lambda c: self._reply(c, max_tokens), conversations))

    def _reply(self, messages: list[Message], max_tokens: int) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "chat_template_kwargs": {"enable_thinking": False},
        }
        try:
            response = self.http.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(f"teacher server {self.base_url}: {exc}") from exc
        return _json(response, "chat")["choices"][0]["message"]["content"] or ""

    def _score(self, prompts: list[list[int]]) -> list[list[float | None]]:
        """Per-position log-probs of each token-id prompt (position 0: None)."""
        body = {
            "model": self.model,
            "prompt": prompts,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": 0,
        }
        try:
            response = self.http.post("/completions", json=body)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(f"teacher server {self.base_url}: {exc}") from exc
        choices = sorted(_json(response, "score")["choices"],
                         key=lambda c: c["index"])  # fmt: skip
        if len(choices) != len(prompts):
            raise ProtegeError(f"teacher answered {len(choices)} choices for {len(prompts)}")
        return [_prompt_logprobs(c, ids) for c, ids in zip(choices, prompts, strict=True)]


def _prompt_logprobs(choice: dict[str, Any], ids: list[int]) -> list[float | None]:
    """vLLM shape: [None, {"<id>": {"logprob": x, ...}, ...}, ...], one entry per prompt token."""
    entries = choice.get("prompt_logprobs")
    if not entries or len(entries) != len(ids):
        raise ProtegeError(
            f"teacher returned {len(entries or [])} prompt log-probs for {len(ids)} tokens"
        )
    out: list[float | None] = [None]
    for token, entry in zip(ids[1:], entries[1:], strict=True):
        if str(token) not in entry:  # the scored token must be the one we sent
            raise ProtegeError(f"teacher scored other tokens than sent (missing {token})")
        out.append(float(entry[str(token)]["logprob"]))
    return out


def _tokenize(http: httpx.Client, root_url: str, body: dict[str, Any]) -> list[int]:
    return _json(http.post(f"{root_url}/tokenize", json=body), "tokenize")["tokens"]


def _json(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise ProtegeError(
            f"teacher server {what} failed ({response.status_code}): {response.text[:500]}"
        )
    return response.json()


def _first_difference(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
