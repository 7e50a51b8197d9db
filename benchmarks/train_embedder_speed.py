"""Training throughput of the embedder fine-tuning by code length (pairs/s), on this machine.

Why: the CPU route takes several sessions, and the code length the train pack is cut at is
the main lever on its cost.  One optimiser step of the real objective
(:func:`pathfusion.model_export.train_embedder.contrastive_loss`, both towers, AdamW) on batches of the
real packed train pairs, lengths interleaved (``--repeats`` rounds of every length) so that
a busy core slows every length alike; the median step time per length is reported.
``--precisions fp32 bf16`` times every length in both, interleaved too: ``bf16`` runs the
encoder under the CPU's bf16 autocast that ``--set cpu_bf16=true`` gives a training run
(only where the CPU computes bf16 natively), reported as ``<length>+bf16``.

    .venv/bin/python benchmarks/train_embedder_speed.py [--batch 64] [--lengths 64 128 256] [--precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pathfusion.model_export.export_embedder import MeanPooledEncoder, load_reference
from pathfusion.model_export.run_files import bf16_autocast
from pathfusion.model_export.search_pairs import Pairs, Ragged
from pathfusion.model_export.train_embedder import contrastive_loss, resolve_base


def _cut(ragged: Ragged, indices: np.ndarray, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [ragged[i] for i in indices]
    rows = [np.concatenate([r[:length - 1], r[-1:]]) if len(r) > length else r for r in rows]
    ids, mask = Ragged.build(rows).batch(range(len(rows)), 0)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=Path("data/embedder-pairs/valid.npz"),
                        help="pairs to time on (valid: codes kept up to 256 tokens)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32"])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_embedder_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = Pairs.load(args.pack)
    model, _ = load_reference(resolve_base("shipped", Path("data/runs/embedder"), Path("models")))
    encoder = MeanPooledEncoder(model).train()
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=1e-7)
    rng = np.random.default_rng(0)
    autocasts = {p: bf16_autocast(torch.device("cpu"), cpu=p == "bf16") for p in args.precisions}  # refuses
    runs = [(length, p) for length in args.lengths for p in args.precisions]
    names = {(length, p): str(length) if p == "fp32" else f"{length}+{p}" for length, p in runs}
    times: dict[str, list[float]] = {name: [] for name in names.values()}
    tokens: dict[str, list[int]] = {name: [] for name in names.values()}
    for _ in range(args.repeats):
        for length, precision in runs:
            name = names[(length, precision)]
            indices = rng.choice(len(pairs), args.batch, replace=False)
            q_ids, q_mask = _cut(pairs.query, indices, 64)
            c_ids, c_mask = _cut(pairs.code, indices, length)
            started = time.perf_counter()
            with autocasts[precision]():
                queries = encoder(q_ids, q_mask, torch.zeros_like(q_ids)).float()
                codes = encoder(c_ids, c_mask, torch.zeros_like(c_ids)).float()
            loss = contrastive_loss(queries, codes, 20.0, True)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            times[name].append(time.perf_counter() - started)
            tokens[name].append(int(c_mask.sum()))
    result = {"batch": args.batch, "threads": args.threads, "repeats": args.repeats,
              "per_length": {name: {"step_s_median": round(statistics.median(times[name]), 2),
                                    "pairs_per_s": round(args.batch / statistics.median(times[name]), 2),
                                    "code_tokens_mean": round(statistics.mean(tokens[name]) / args.batch, 1)}
                             for name in times}}
    for name, row in result["per_length"].items():
        print(f"code ≤ {name:>9} tokens: {row['step_s_median']:>6.2f} s/step, {row['pairs_per_s']:>6.2f} pairs/s "
              f"(mean code length {row['code_tokens_mean']})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
