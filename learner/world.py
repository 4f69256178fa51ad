"""The ranks that train together, as the recipes see them: one process, or N under
`accelerate launch` (learner/data_parallel.py starts them).

Every rank builds the same global batch (same seed, same data), takes its `share`, scales its
token-mean loss by `token_weight` and averages gradients with `average_gradients` before
clipping: the update is then the one a single process makes on the whole batch, so 1 process x
batch B and N processes x batch B/N give the same losses (tests/test_data_parallel.py).
With `SINGLE` every call is the identity, so the one-process path is the plain loop.

    world = current_world()           # SINGLE unless torch.distributed is initialised
    rows = rows_B[world.share(len(rows_B))]
    (loss * world.token_weight(n_tokens)).backward(); world.average_gradients(params)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: str = "cpu"  # where the collectives' scalars live: NCCL only moves CUDA tensors

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, shows progress and saves the adapter."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous part of n items (sizes differ by at most one; may be empty)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def sum(self, value: float) -> float:
        """`value` summed over the ranks."""
        if self.size == 1:
            return value
        total = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total.item())

    def token_weight(self, n_local: int) -> float:
        """size x this rank's share of the step's loss tokens: a rank's token-mean loss times
        this, gradients averaged over ranks, is the gradient of the token-mean over all ranks."""
        if self.size == 1:
            return 1.0
        return self.size * n_local / max(1.0, self.sum(n_local))

    def token_mean(self, value: float, n_local: int) -> float:
        """The mean over all ranks' tokens of a per-rank token mean `value` (for reporting)."""
        if self.size == 1:
            return value
        return self.sum(value * n_local) / max(1.0, self.sum(n_local))

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Mean of every trainable parameter's gradient over the ranks, in one flat all-reduce
        (a LoRA's parameters are few: one message beats DDP's buckets here). A rank whose share
        was empty contributes zeros."""
        if self.size == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for param, grad in zip(params, grads, strict=True):
            n = grad.numel()
            param.grad = flat[offset : offset + n].view_as(grad).clone()
            offset += n

    def gather(self, items: list[T]) -> list[T]:
        """Every rank's list, concatenated in rank order, on every rank."""
        if self.size == 1:
            return items
        parts: list[list[T] | None] = [None] * self.size
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part or []]


SINGLE = World()


def current_world() -> World:
    """The ranks torch.distributed was initialised with (by accelerate), else SINGLE."""
    if dist.is_available() and dist.is_initialized():
        nccl = dist.get_backend() == "nccl"
        device = f"cuda:{torch.cuda.current_device()}" if nccl else "cpu"
        return World(dist.get_rank(), dist.get_world_size(), device)
    return SINGLE
