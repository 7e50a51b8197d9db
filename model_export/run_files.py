"""What every resumable training run writes into its run folder, written one way.

Why shared: code2vec's and the embedder's runs are resumed across sessions; both append
events to ``log.jsonl`` (the learning curves in ``docs/results.md`` are read from it) and
replace checkpoints atomically, so that a run killed mid-write resumes from the previous
checkpoint instead of a truncated one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch


def log_event(run: Path, entry: dict[str, Any], echo: bool = True) -> None:
    """Append ``entry`` (time-stamped) to ``run/log.jsonl``; ``echo`` also prints it to stderr."""
    entry = {"time": round(time.time(), 1), **entry}
    with open(run / "log.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    if echo:
        print(json.dumps(entry), file=sys.stderr, flush=True)


def best_validation(run: Path) -> dict[str, Any]:
    """The last ``valid`` event of ``run/log.jsonl`` that made the run's ``best/`` (empty when
    none): what a GPU job reports of each run it trained."""
    best: dict[str, Any] = {}
    log = run / "log.jsonl"
    for line in log.read_text(encoding="utf-8").splitlines() if log.is_file() else []:
        event = json.loads(line)
        if event.get("event") == "valid" and event.get("best"):
            best = event
    return best


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename over it."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclasses.dataclass
class RunControls:
    """How long and where a resumable run runs, as opposed to what it trains: the fields a
    resumed run takes from the command line instead of its saved ``config.json``, so that a
    later session, another machine or a GPU job continues a run under its own budget
    (:func:`resumed_config`).  The training configs extend it."""

    checkpoint_minutes: float = 8.0
    """Write ``checkpoint.pt`` at least this often (an interrupted run loses at most this)."""
    time_budget_min: float = 0.0
    """Stop (after a checkpoint) once this many minutes have run in this process; 0 = none."""
    max_steps: int = 0
    """Stop after this many optimiser steps in all; 0 = the whole schedule."""
    stop_at: float = 0.0
    """Stop (after a checkpoint) at this Unix time; 0 = none.  How a job with a fixed wall
    clock (a lent GPU's command limit) ends its runs in time to return them, whatever their
    start-up took (``time_budget_min`` counts from the first step)."""
    threads: int = 0
    """torch's intra-op threads; 0 = torch's default."""
    device: str = "auto"
    eval_batch: int = 64
    log_every: int = 10
    """Write the running loss and throughput to ``log.jsonl`` every this many steps."""
    cpu_bf16: bool = False
    """On the CPU, the training steps' forward passes under bf16 autocast, where the CPU
    computes bf16 natively (AVX512-BF16 / AMX; refused elsewhere, :func:`bf16_autocast`):
    faster steps (docs/training.md), other numbers than fp32, so off by default.  The
    embedder's run validates in fp32; the naming run validates under the same autocast
    (its step-0 validation is then the bf16 score of its start)."""
    gradient_checkpointing: bool = False
    """Recompute each encoder layer's activations in the backward pass instead of keeping
    them: the same gradients for about a third more compute.  A CPU step of 256 search pairs
    holds ≈ 13 GB without it, a naming step with the encoder unfrozen (128 functions + 256
    pairs) ≈ 22 GB; turn it on where memory is short."""


Controlled = TypeVar("Controlled", bound=RunControls)


def out_of_time(controls: RunControls, started: float) -> bool:
    """Whether a run that started its steps at ``started`` has used its time budget or
    reached its ``stop_at``."""
    now = time.time()
    return bool(controls.time_budget_min and now - started > controls.time_budget_min * 60) or bool(
        controls.stop_at and now >= controls.stop_at)


def enable_checkpointing(model: Any) -> None:
    """Activation checkpointing of a transformers model under its current name (the older
    name warns); non-reentrant, so dropout replays the same masks and gradients match."""
    kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        try:
            enable(**kwargs)
            return
        except TypeError:
            enable()
            return
    model.gradient_checkpointing_enable(**kwargs)


def resumed_config(path: Path, config: Controlled, also: Sequence[str] = ()) -> Controlled:
    """The run's saved config (``path``) with ``config``'s :class:`RunControls` and the fields
    ``also`` names: what the run trains stays as it started, where and how long it runs is
    this invocation's."""
    saved = json.loads(path.read_text())
    for key in (*(f.name for f in dataclasses.fields(RunControls)), *also):
        saved[key] = getattr(config, key)
    return type(config)(**saved)


def set_fields(config: Any, overrides: Sequence[str]) -> None:
    """``KEY=VALUE`` items (``--set``) onto the dataclass ``config``, each parsed as its
    field's current type (booleans as true/false/1/0); an unknown key or a bad value is a
    :class:`ValueError` that names the known keys or the expected type."""
    fields = {f.name for f in dataclasses.fields(config)}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"bad --set {item!r}; known keys: {', '.join(sorted(fields))}")
        current = getattr(config, key)
        parsed: Any
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{key} takes true or false, not {value!r}")
            parsed = value.lower() in ("true", "1")
        else:
            try:
                parsed = type(current)(value)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from exc
        setattr(config, key, parsed)


def check_ranges(config: Any, at_least_one: Sequence[str] = (), positive: Sequence[str] = (),
                 non_negative: Sequence[str] = (), shares: Sequence[str] = ()) -> None:
    """Refuse settings no run can use, naming the field: ``epochs=0`` or ``lr=-1`` would
    otherwise pack the data for minutes and then train nothing (or diverge).  The run
    controls every run has are checked too."""
    at_least_one = ("eval_batch", "log_every", *at_least_one)
    positive = ("checkpoint_minutes", *positive)
    non_negative = ("time_budget_min", "max_steps", "threads", *non_negative)
    for name in at_least_one:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, not {getattr(config, name)}")
    for name in positive:
        if not getattr(config, name) > 0:
            raise ValueError(f"{name} must be above 0, not {getattr(config, name)}")
    for name in non_negative:
        if not getattr(config, name) >= 0:
            raise ValueError(f"{name} must be 0 or more, not {getattr(config, name)}")
    for name in shares:
        if not 0 <= getattr(config, name) <= 1:
            raise ValueError(f"{name} is a share: between 0 and 1, not {getattr(config, name)}")


def optimise(loss: torch.Tensor, parameters: Iterable[torch.Tensor], optimiser: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, max_norm: float = 1.0) -> None:
    """One step of the resumable runs: gradients of ``loss``, clipped to ``max_norm``, the
    optimiser's step, then the schedule's."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    optimiser.step()
    scheduler.step()


def running_mean(previous: float, value: float) -> float:
    """The loss shown and logged: an exponential mean (0.95) that starts at the first value."""
    return value if math.isnan(previous) else 0.95 * previous + 0.05 * value



def bf16_autocast(device: torch.device, gpu: bool = True, cpu: bool = False) -> Callable[[], Any]:
    """A factory of the context that a run's forward passes go through: bf16 autocast on a
    GPU when ``gpu`` asks for it, on the CPU when ``cpu`` does — and there only on a CPU that
    computes bf16 natively (AVX512-BF16 or AMX: raises ValueError elsewhere, where emulated
    bf16 would be slower than fp32).

    Why opt-in on the CPU: it changes the numbers a run produces (as on a GPU), while fp32 on
    the CPU keeps a run's results exactly reproducible on any machine; where AMX is there, it
    runs a naming step of the frozen-encoder fusions ≈ 1.8× faster (docs/training.md)."""
    if gpu and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu and device.type == "cpu":
        if not native_cpu_bf16():
            raise ValueError("cpu_bf16=true needs a CPU that computes bf16 natively (AVX512-BF16 or AMX); "
                             "this one would emulate it, slower than fp32: set cpu_bf16=false")
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def native_cpu_bf16() -> bool:
    """Whether oneDNN computes bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
