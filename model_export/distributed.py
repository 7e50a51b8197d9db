"""Data parallelism for the training runs, on PyTorch's own engine (``torchrun`` + DDP).

Why it is exact rather than approximately equal: every process sees the *global* batch (the
same seeded batches everywhere) and takes its contiguous share of the rows
(:meth:`Distributed.share`).  The losses are then arranged so that DDP's gradient average
equals the single-process gradient of the whole batch:

* a mean over target wordpieces is summed locally and divided by the global count, times the
  world size (:meth:`Distributed.global_mean`): DDP's average of the shares is the global mean;
* the contrastive search loss needs every in-batch negative, so each process gathers all
  embeddings with an autograd-aware all-gather (:meth:`Distributed.gather_rows`) and computes
  the whole batch's loss; the gather's backward sums the identical losses' gradients over the
  processes (× world size), which DDP's average divides again.

So ``torchrun --nproc_per_node N -m pathfusion.model_export.train_naming …`` follows the loss
curve of one process (up to floating-point summation order and dropout streams), which
``tests/training/test_distributed.py`` checks with two CPU processes (gloo).  Without
``torchrun`` (no ``WORLD_SIZE`` in the environment) every method is the identity and no
process group is created.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """What ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process without it."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def main(self) -> bool:
        """The process that validates, logs, shows progress and writes the run's files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def start(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on GPUs, gloo on CPUs) and return this process's device."""
        if not self.active:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(minutes=30))
        return device

    def stop(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``model`` under DistributedDataParallel (gradients averaged in buckets during backward)."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sizes(self, count: int) -> list[int]:
        """How many of ``count`` rows each process takes (contiguous, as even as possible)."""
        return [len(part) for part in np.array_split(np.arange(count), self.world)]

    def share(self, rows: np.ndarray) -> tuple[np.ndarray, bool]:
        """This process's contiguous share of a global batch, and whether it is real.  A batch
        smaller than the world leaves some processes nothing: they compute one borrowed row with
        weight 0, because every process must take part in each step's collectives."""
        if not self.active:
            return rows, True
        part = np.array_split(rows, self.world)[self.rank]
        return (part, True) if len(part) else (rows[:1], False)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over processes of a value without gradient."""
        value = value.detach().clone()
        if self.active:
            dist.all_reduce(value)
        return value

    def global_mean(self, local_sum: torch.Tensor, local_count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what to back-propagate, the global mean to log) for a mean over all processes' items:
        ``local_sum × world / global_count`` averages, under DDP, to ``global_sum / global_count``."""
        count = self.sum(local_count.float()).clamp(min=1)
        return local_sum * self.world / count, self.sum(local_sum) / count

    def gather_rows(self, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Every process's rows in rank order (the global batch), with gradients flowing back to
        the process that computed them.  ``sizes`` (the same everywhere) may be uneven: each part
        travels padded to the largest and is cut back after the gather."""
        if not self.active:
            return local
        from torch.distributed.nn.functional import all_gather

        width = max(sizes)
        padded = local[:width]
        if padded.shape[0] < width:
            padded = torch.cat([padded, padded.new_zeros((width - padded.shape[0], *padded.shape[1:]))])
        parts = all_gather(padded)
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on one (stopping must be collective)."""
        if not self.active:
            return flag
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def unwrap(self, model: Any) -> Any:
        """The module DDP wraps (what is saved, validated and exported)."""
        return getattr(model, "module", model)
