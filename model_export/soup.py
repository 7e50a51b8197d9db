"""A weight average ("model soup") of runs fine-tuned from the same start.

``python -m pathfusion.model_export.soup --run A/best --run B/best [--weights 0.5 0.5] --out DIR``
writes a run ``best/`` folder whose every trained tensor — the encoder (``model.safetensors``),
the naming decoder (``decoder.pt``) and its fusion (``fusion.pt``) — is the weighted sum of the
runs' tensors; ``pathfusion export embedder`` / ``export naming`` read it as any run's ``best/``.

Why: two runs from one checkpoint that differ in one setting (the GPU job's search code length
128 vs 256) stay in one basin of the loss, and the average of such fine-tuned weights scores at
least as well as each on data unlike the training data while costing nothing when served —
the same graph, the same size, the same speed (Wortsman et al., 2022, "Model soups").  Whether
it does here is decided on validation like every other choice (docs/results.md).

Only runs that can be averaged are: every file other than the weights (the encoder's config,
the tokenizer, the decoder's vocabulary, the fusion's shape, the context vocabulary) must be
byte-identical, every tensor present in all runs with one shape, and integer tensors (position
ids) equal; the weights must sum to 1 (an affine combination keeps the scale of every layer).
Anything else is refused before a byte is written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .fusion_memory import FUSION_FILE
from .naming_model import DECODER_FILE
from .run_files import atomic_torch_save

ENCODER_FILE = "model.safetensors"
WEIGHT_FILES = (ENCODER_FILE, DECODER_FILE, FUSION_FILE)
"""The files averaged; every other file of a ``best/`` folder must be the same in all runs."""


def average_states(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float],
                   what: str) -> dict[str, torch.Tensor]:
    """The weighted sum of same-keyed state dicts (floating tensors; others must be equal)."""
    keys = set(states[0])
    for number, state in enumerate(states[1:], 2):
        if set(state) != keys:
            missing = sorted(keys ^ set(state))[:3]
            raise ValueError(f"{what}: run {number} has other tensors than run 1 (e.g. {missing})")
    averaged: dict[str, torch.Tensor] = {}
    for key in sorted(keys):
        tensors = [state[key] for state in states]
        if any(tensor.shape != tensors[0].shape for tensor in tensors):
            raise ValueError(f"{what}: {key} has different shapes {[tuple(t.shape) for t in tensors]}")
        if not tensors[0].is_floating_point():
            if any(not torch.equal(tensor, tensors[0]) for tensor in tensors[1:]):
                raise ValueError(f"{what}: {key} is not a float tensor and differs between runs")
            averaged[key] = tensors[0].clone()
            continue
        total = torch.zeros_like(tensors[0], dtype=torch.float64)
        for tensor, weight in zip(tensors, weights, strict=True):
            total += weight * tensor.to(torch.float64)
        averaged[key] = total.to(tensors[0].dtype).contiguous()
    return averaged


def check_runs(runs: Sequence[Path], weights: Sequence[float]) -> list[str]:
    """The names of the files shared by the runs; refuses what cannot be averaged."""
    if len(runs) < 2:
        raise ValueError("a soup needs at least two runs")
    if len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
    if abs(sum(weights) - 1.0) > 1e-9:
        raise ValueError(f"the weights sum to {sum(weights)}, not 1")
    for run in runs:
        if not (run / ENCODER_FILE).is_file():
            raise ValueError(f"{run}: not a run's best/ folder (no {ENCODER_FILE})")
    names = sorted(path.name for path in runs[0].iterdir() if path.is_file())
    for run in runs[1:]:
        other = sorted(path.name for path in run.iterdir() if path.is_file())
        if other != names:
            raise ValueError(f"{run}: holds other files than {runs[0]} ({sorted(set(names) ^ set(other))})")
        for name in names:
            if name not in WEIGHT_FILES and (run / name).read_bytes() != (runs[0] / name).read_bytes():
                raise ValueError(f"{run / name} differs from {runs[0] / name}: not runs of one model")
    return names


def soup(runs: Sequence[Path], weights: Sequence[float], out: Path) -> Path:
    """Write the weighted average of ``runs`` to ``out`` (replaced only once complete)."""
    names = check_runs(runs, weights)
    if any(out.resolve() == run.resolve() for run in runs):
        raise ValueError(f"{out}: is one of the runs; write the soup to a new folder")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in names:
        if name == ENCODER_FILE:
            state = average_states([load_file(str(run / name)) for run in runs], weights, name)
            save_file(state, str(staging / name), metadata={"format": "pt"})
        elif name in WEIGHT_FILES:
            states = [torch.load(run / name, map_location="cpu") for run in runs]
            atomic_torch_save(average_states(states, weights, name), staging / name)
        else:
            shutil.copy2(runs[0] / name, staging / name)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.soup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True,
                        help="a run's best/ folder (give two or more)")
    parser.add_argument("--weights", type=float, nargs="+", help="one per run, summing to 1 (default: equal)")
    parser.add_argument("--out", type=Path, required=True, help="the averaged best/ folder to write")
    args = parser.parse_args(argv)
    weights = args.weights or [1.0 / len(args.run)] * len(args.run)
    try:
        out = soup(args.run, weights, args.out)
    except ValueError as error:
        print(f"soup: {error}", file=sys.stderr)
        return 2
    print(f"averaged {len(args.run)} runs (weights {', '.join(f'{w:g}' for w in weights)}) → {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
