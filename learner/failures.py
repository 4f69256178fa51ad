"""What went wrong in a training cycle, said so an operator knows what to do next.

    classify(exc, settings).message   # "out of memory while training ...: lower ..."
    require_gpu(settings)             # NoGPUError before any training when a GPU is needed

The pipeline's failure path writes `describe_failure(exc, settings)` as the run's message
(`protege runs show ID`); `protege train --now` prints it. Classification goes by exception type
(and errno), looking through the chain of causes, because libraries wrap what they catch.

Tests: .venv/bin/python -m pytest tests/test_failures.py -q
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import torch

from knowledge.errors import NoGPUError
from knowledge.settings import Settings

OUT_OF_MEMORY = "out_of_memory"
TEACHER_UNREACHABLE = "teacher_unreachable"
NO_GPU = "no_gpu"
DISK_FULL = "disk_full"
OTHER = "error"

# httpx's connect/network failures and the OS's refused/reset connections: a server is not there.
_UNREACHABLE = (httpx.TransportError, ConnectionError)
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# PyTorch's CPU allocator reports failure as a plain RuntimeError with this text.
_CPU_ALLOC_FAILED = "can't allocate memory"


@dataclass(frozen=True)
class Failure:
    kind: str  # one of the constants above
    message: str  # what happened and what to do


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and _CPU_ALLOC_FAILED in str(exc)


def _kind(exc: BaseException) -> tuple[str, BaseException]:
    for link in _chain(exc):
        if isinstance(link, NoGPUError):
            return NO_GPU, link
        if _is_oom(link):
            return OUT_OF_MEMORY, link
        if isinstance(link, OSError) and link.errno in _DISK_FULL_ERRNOS:
            return DISK_FULL, link
        if isinstance(link, _UNREACHABLE):
            return TEACHER_UNREACHABLE, link
    return OTHER, exc


def classify(exc: BaseException, settings: Settings | None = None) -> Failure:
    """The kind of failure and a message saying what happened and what to do."""
    kind, cause = _kind(exc)
    what = f"{cause.__class__.__name__}: {cause}"
    if kind == NO_GPU:
        return Failure(
            kind,
            f"no GPU: {cause}. Run it on a host with a visible CUDA GPU (check nvidia-smi and "
            "CUDA_VISIBLE_DEVICES), or choose a CPU profile (--config sandbox, models.device: cpu).",
        )
    if kind == OUT_OF_MEMORY:
        device = settings.models.device if settings else "the device"
        return Failure(
            kind,
            f"out of memory on {device} ({what}). Lower learner.midtrain.batch_size or seq_len, "
            "learner.distill.prompts_per_step, group_size or max_new_tokens, or "
            "learner.eval.batch_size; or use a smaller student/teacher or a bigger GPU.",
        )
    if kind == DISK_FULL:
        where = str(settings.home) if settings else "PROTEGE_HOME"
        return Failure(
            kind,
            f"disk full ({what}). Free space under {where} (old adapters/, runs/), or move "
            "PROTEGE_HOME to a bigger disk; the unfinished adapter was not registered.",
        )
    if kind == TEACHER_UNREACHABLE:
        teacher = settings.models.teacher if settings else "the teacher"
        return Failure(
            kind,
            f"teacher unreachable: a model server could not be reached or did not answer ({what}). Check that the "
            f"teacher ({teacher}) is running and reachable from this host, or set "
            "models.teacher: base to distill from the student before mid-training.",
        )
    return Failure(kind, what)


def describe_failure(exc: BaseException, settings: Settings | None = None) -> str:
    return classify(exc, settings).message


def require_gpu(settings: Settings) -> None:
    """Refuse a GPU profile on a host without a GPU, before anything is loaded or trained."""
    if settings.models.device == "cuda" and not torch.cuda.is_available():
        raise NoGPUError(
            f"profile {settings.profile!r} sets models.device: cuda and no CUDA GPU is visible"
        )
