"""The student samples through a vLLM server with the adapter being trained loaded at runtime.

    sampler = VllmSampler("http://127.0.0.1:8000", model, tokenizer, workdir, refresh_every=1)
    batch = sampler.sample(prompts, n=4, temperature=1.0, max_tokens=256)   # a SampleBatch
    sampler.close()                                                      # unloads its adapter
    with opd_sampler(settings, model, tokenizer, run_dir) as sampler: ...  # from the config

The `Sampler` of learner/sampling.py for the GPU profile, where transformers' generate is the
slow part of OPD. The server must run with `--enable-lora` and
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, with `--max-lora-rank` at least the adapter's rank.

Every `refresh_every` calls the trained adapter is saved to `<workdir>/opd-sampler/r<N>` and
loaded under a new name (`protege-opd-<id>-r<N>`: vLLM caches adapters by name, so a name is never
reused for other weights), and the previous one is unloaded. Between refreshes the server samples
with weights a few updates old; the importance-sampling loss corrects for exactly that, since each
sampled token comes back with the log-prob the server drew it with (`logprobs: 0`, vLLM's raw
log-probs: those of the sampling distribution at temperature 1, OPD's default).

Prompts go as token ids rendered with the student's chat template, one request per prompt with
`n` samples, several requests in flight; sequences come back left-padded like LocalSampler's.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from knowledge.errors import ProtegeError, UpstreamUnavailableError
from knowledge.settings import Settings
from learner.generation import Message, chat_prompt
from learner.modeling import stop_token_ids
from learner.sampling import SampleBatch


class VllmSampler:
    def __init__(
        self,
        base_url: str,
        model: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        workdir: Path,
        refresh_every: int = 1,
        *,
        parallel_requests: int = 8,
        timeout: float = 600.0,
    ) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self.model = model
        self.tokenizer = tokenizer
        self.dir = Path(workdir) / "opd-sampler"
        self.refresh_every = max(1, refresh_every)
        self.parallel_requests = parallel_requests
        self.stops = stop_token_ids(tokenizer)
        self.prefix = f"protege-opd-{uuid.uuid4().hex[:8]}"
        self.name: str | None = None  # the adapter name sampled with now
        self.calls = self.refreshes = 0
        self.refresh_seconds = 0.0  # saving and loading adapters (bench/opd_throughput.py)

    def sample(
        self, prompts: list[list[Message]], n: int, temperature: float, max_tokens: int
    ) -> SampleBatch:
        if self.calls % self.refresh_every == 0:
            self.refresh()
        self.calls += 1
        ids = [
            self.tokenizer(chat_prompt(self.tokenizer, m), add_special_tokens=False)["input_ids"]
            for m in prompts
        ]
        body = {"n": n, "temperature": temperature, "top_p": 1.0, "top_k": -1,
                "max_tokens": max_tokens, "logprobs": 0, "return_tokens_as_token_ids": True,
                "stop_token_ids": self.stops, "include_stop_str_in_output": True,
                "skip_special_tokens": False}  # fmt: skip
        with ThreadPoolExecutor(self.parallel_requests) as pool:
            answers = list(pool.map(lambda p: self._complete(p, body, n), ids))
        rows = [(i, p, c) for i, (p, a) in enumerate(zip(ids, answers, strict=True)) for c in a]
        return _left_padded(rows, self.tokenizer.pad_token_id, self.model.device)

    def refresh(self) -> None:
        """Save the trained adapter and serve it under a new name; unload the old one."""
        start = time.perf_counter()
        self.refreshes += 1
        folder = self.dir / f"r{self.refreshes}"
        self.model.save_pretrained(str(folder))
        name = f"{self.prefix}-r{self.refreshes}"
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder)})
        old, self.name = self.name, name
        if old is not None:
            self._post("/v1/unload_lora_adapter", {"lora_name": old})
            shutil.rmtree(self.dir / f"r{self.refreshes - 1}", ignore_errors=True)
        self.refresh_seconds += time.perf_counter() - start

    def close(self) -> None:
        if self.name is not None:
            self._post("/v1/unload_lora_adapter", {"lora_name": self.name})
            self.name = None
        shutil.rmtree(self.dir, ignore_errors=True)
        self.http.close()

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            response = self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(f"vLLM sampler {self.http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise ProtegeError(
                f"vLLM sampler {path} failed ({response.status_code}): {response.text[:300]}"
            )
        return response

    def _complete(
        self, prompt: list[int], body: dict[str, Any], n: int
    ) -> list[tuple[list[int], list[float]]]:
        """(completion token ids, their log-probs) for each of the `n` samples."""
        reply = self._post("/v1/completions", {**body, "model": self.name, "prompt": prompt})
        choices = sorted(reply.json()["choices"], key=lambda c: c["index"])
        if len(choices) != n:
            raise ProtegeError(f"vLLM sampler: {len(choices)} samples for n={n}")
        out = []
        for choice in choices:
            lp = choice["logprobs"]
            tokens = [int(t.removeprefix("token_id:")) for t in lp["tokens"]]
            out.append((tokens, [float(x) for x in lp["token_logprobs"]]))
        return out


def _left_padded(
    rows: list[tuple[int, list[int], tuple[list[int], list[float]]]], pad_id: int, device: Any
) -> SampleBatch:
    """Rows (prompt index, prompt ids, (completion ids, log-probs)) as one left-padded batch."""
    T = max(len(p) + len(c) for _, p, (c, _) in rows)
    B = len(rows)
    sequences = torch.full((B, T), pad_id, dtype=torch.long)
    attention = torch.zeros(B, T, dtype=torch.bool)
    completion = torch.zeros(B, T, dtype=torch.bool)
    logprobs = torch.zeros(B, T)
    for b, (_, prompt, (tokens, lps)) in enumerate(rows):
        start = T - len(prompt) - len(tokens)
        sequences[b, start:] = torch.tensor(prompt + tokens)
        attention[b, start:] = True
        completion[b, T - len(tokens) :] = True
        logprobs[b, T - len(tokens) :] = torch.tensor(lps)
    return SampleBatch(
        sequences.to(device), attention.to(device), completion.to(device), logprobs.to(device),
        [i for i, _, _ in rows],
    )  # fmt: skip


@contextmanager
def opd_sampler(
    settings: Settings, model: PeftModel, tokenizer: PreTrainedTokenizerBase, workdir: Path
) -> Iterator[VllmSampler | None]:
    """The cycle's OPD sampler: a VllmSampler when `learner.distill.sampler_url` is set (closed
    after the block), else None (distill uses transformers' generate)."""
    cfg = settings.learner.distill
    if cfg.sampler_url is None:
        yield None
        return
    sampler = VllmSampler(cfg.sampler_url, model, tokenizer, workdir, cfg.sampler_refresh_every)
    try:
        yield sampler
    finally:
        sampler.close()
