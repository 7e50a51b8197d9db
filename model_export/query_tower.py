"""A query tower trained against the served encoder's frozen code vectors — a probe of issue 10.

``python -m pathfusion.model_export.query_tower [--layers 2] [--steps 470] [--train-pairs 120000]
[--projects DIR] --json`` embeds train docstring/code pairs' code with the *served* embedder (the
int8 graph of ``models/``, exactly the vectors a workspace index stores), then fine-tunes a copy of
that encoder on the queries alone — its top ``--layers`` transformer layers, the rest frozen —
so that a query lands on its own code vector: cross-entropy over the batch's codes plus a bank of
``--bank`` random cached codes (paper eq. 2 with a larger, free set of negatives: the code side
costs nothing once cached).  It prints validation MRR (hybrid and dense, plain and anonymised,
the served ranking of :func:`~pathfusion.model_export.evaluate.evaluate_search`) of the served
queries and of the tower's, and the same on ``--projects`` when given.

Why: the shipped encoder reads queries and code with one set of weights.  A query side of its
own could learn the terse docstrings of held-out code (the standard library's "Return the current
file position.") without moving a single stored vector — no index re-embeds, and training needs
no pass over code once it is embedded: two CPU cores train a pass over 120,000 queries in 25
minutes (the joint run: ≈ 46 hours an epoch).  Only the top layers are trained because only they
could ship: the bottom layers stay shared with the code side, so serving would add the top
layers' graph (≈ 1.8 MB int8 a layer), not a second encoder.
A probe, not an exporter: whether the lever lifts MRR is measured before any serving is built
(``docs/results.md``, "A query tower over frozen code vectors").

The cache (``--out``, default ``data/query-tower``): ``train_meta.json`` (the chosen pairs' query,
served code text and project) and ``train_code_NNN.npy`` chunks of 4,096 code vectors, written as
they finish, so an interrupted embedding resumes at its last chunk.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import read_jsonl_gz
from .evaluate import (
    SearchSpace,
    _unit,
    evaluate_search,
    iter_project_pairs,
    iter_split_pairs,
    search_example,
)
from .export_embedder import ExportError, MeanPooledEncoder, load_reference, reference_embeddings
from .onnx_to_hf import ConversionError
from .search_pairs import project_batches
from .train_embedder import lr_lambda, resolve_base

CHUNK = 4096
QUERY_TOKENS = 64
"""Wordpieces of a query in training (the embedder's fine-tuning packs cut queries there too)."""


@dataclass(frozen=True)
class TowerConfig:
    """One probe's hyper-parameters (printed with its result)."""

    layers: int = 2
    lr: float = 1e-4
    steps: int = 470
    batch: int = 256
    bank: int = 4096
    scale: float = 20.0
    anonymise_share: float = 0.2
    seed: int = 2025


def choose_pairs(corpus: Path, count: int, anonymise_share: float, seed: int) -> dict[str, list[Any]]:
    """``count`` train pairs (a seeded shuffle), each query with the code as the index embeds it
    (:func:`~pathfusion.model_export.evaluate.search_example`); a seeded share anonymised, as the
    embedder's fine-tuning does, so that anonymised code keeps being read."""
    path = corpus / "train.jsonl.gz"
    if not path.is_file():
        raise ValueError(f"{path} not found; build the corpus first (make corpus)")
    records = [r for r in read_jsonl_gz(path) if r.get("search") and r.get("docstring_summary")]
    random.Random(7).shuffle(records)
    records = records[:count]
    rng = random.Random(seed)
    anonymised = [rng.random() < anonymise_share for _ in records]
    pairs = [search_example(r["docstring_summary"], r["code_without_docstring"], r["name"], r["qualname"], a,
                            with_contexts=False) for r, a in zip(records, anonymised, strict=True)]
    projects = {p: i for i, p in enumerate(sorted({r["project"] for r in records}))}
    return {"query": [p.query for p in pairs], "code": [p.code for p in pairs],
            "project": [projects[r["project"]] for r in records]}


def load_or_choose_pairs(out: Path, corpus: Path, count: int, config: TowerConfig) -> dict[str, list[Any]]:
    """The cache's chosen pairs when they were chosen alike, else a new choice (the old code
    vectors deleted: they belong to the old choice)."""
    path = out / "train_meta.json"
    wanted = {"count": count, "anonymise_share": config.anonymise_share, "seed": config.seed}
    if path.is_file():
        meta = json.loads(path.read_text())
        if meta.get("chosen") == wanted:
            return meta
    meta = {**choose_pairs(corpus, count, config.anonymise_share, config.seed), "chosen": wanted}
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("train_code_*.npy"):
        old.unlink()
    path.write_text(json.dumps(meta))
    return meta


def cached_code_vectors(out: Path, codes: Sequence[str], embedder: Any) -> np.ndarray:
    """The served embedder's unit vectors of ``codes``, computed by chunks of :data:`CHUNK` that
    are kept in ``out`` (a chunk already there is read, not recomputed)."""
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for start in range(0, len(codes), CHUNK):
        path = out / f"train_code_{start // CHUNK:03d}.npy"
        if not path.is_file():
            np.save(path, _unit(embedder.embed(list(codes[start:start + CHUNK]))).astype(np.float32))
        parts.append(np.load(path))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def bank_loss(queries: Any, codes: Any, batch: np.ndarray, bank: np.ndarray, code_key: np.ndarray,
              query_key: np.ndarray, scale: float) -> Any:
    """Cross-entropy of each query (row ``i`` belongs with ``codes[batch[i]]``) over the batch's
    codes and the ``bank`` rows.  A candidate holding the same code text as the query's own, or
    paired with the same query text, is no negative: masked (not counted against the model)."""
    import torch

    candidates = np.concatenate([batch, bank])
    logits = scale * queries @ codes[torch.from_numpy(candidates)].T
    same = ((code_key[batch][:, None] == code_key[candidates][None, :])
            | (query_key[batch][:, None] == query_key[candidates][None, :]))
    same[np.arange(len(batch)), np.arange(len(batch))] = False
    logits = logits.masked_fill(torch.from_numpy(same), float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))


class TowerSpace(SearchSpace):
    """Code through the served embedder (cached per pair list: only the queries change between
    scorings), queries through ``tower`` — or through the served embedder while it is None."""

    def __init__(self, embedder: Any, tokenizer: Any) -> None:
        super().__init__("query-tower", None, embedder)
        self.tokenizer = tokenizer
        self.tower: Any = None
        self._codes: dict[tuple[int, int], np.ndarray] = {}

    def codes(self, pairs: Sequence[Any]) -> np.ndarray:
        key = id(pairs[0]), len(pairs)  # the same pair objects each scoring (the protocol's order)
        if key not in self._codes:
            self._codes[key] = super().codes(pairs)
        return self._codes[key]

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        if self.tower is None:
            return super().queries(texts)
        self.tower.eval()  # no dropout: the queries as the tower would serve them
        parts = [reference_embeddings(self.tower.model, self.tokenizer, texts[start:start + 256], 256)
                 for start in range(0, len(texts), 256)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def trainable_top(encoder: Any, layers: int) -> list[Any]:
    """Freeze ``encoder`` but its top ``layers`` transformer layers; their parameters."""
    stack = encoder.model.encoder.layer
    if not 1 <= layers <= len(stack):
        raise ValueError(f"--layers must be between 1 and {len(stack)}, not {layers}")
    for parameter in encoder.parameters():
        parameter.requires_grad = False
    chosen = [p for layer in stack[len(stack) - layers:] for p in layer.parameters()]
    for parameter in chosen:
        parameter.requires_grad = True
    return chosen


def train_tower(encoder: Any, tokenizer: Any, meta: dict[str, list[Any]], codes: np.ndarray,
                config: TowerConfig, log: Any = None) -> list[float]:
    """Train the top layers of ``encoder`` on the queries of ``meta`` against the frozen
    ``codes`` (bf16 autocast on the CPU); the step losses."""
    import torch

    parameters = trainable_top(encoder, config.layers)
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_lambda(min(50, config.steps // 10), config.steps))
    count = len(codes)
    queries = meta["query"][:count]
    code_key = np.asarray([hash(code) for code in meta["code"][:count]])
    query_key = np.asarray([hash(query) for query in queries])
    batches = project_batches(np.asarray(meta["project"][:count]), config.batch, 32, config.seed)
    if not batches:
        raise ValueError(f"{count} train pairs is less than one batch of {config.batch}")
    rng = np.random.default_rng(11)
    vectors = torch.from_numpy(codes)
    losses = []
    for step in range(config.steps):
        batch = batches[step % len(batches)]
        bank = rng.choice(count, min(config.bank, count), replace=False)
        encoder.train()
        tokens = tokenizer([queries[i] for i in batch], padding=True, truncation=True, max_length=QUERY_TOKENS,
                           return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            encoded = encoder(tokens["input_ids"], tokens["attention_mask"], tokens.get("token_type_ids")).float()
        loss = bank_loss(encoded, vectors, batch, bank, code_key, query_key, config.scale)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
        losses.append(float(loss.item()))
        if log is not None and step % 20 == 0:
            print(f"step {step} loss {losses[-1]:.4f}", file=log, flush=True)
    return losses


def scores(space: TowerSpace, plain: Sequence[Any], anonymised: Sequence[Any], limit: int) -> dict[str, float]:
    """Hybrid and dense MRR, plain and anonymised, of ``space`` as it stands."""
    result: dict[str, float] = {}
    for prefix, pairs in (("", plain), ("anonymised_", anonymised)):
        for ranking, value in evaluate_search(pairs, space, limit, ranking=("hybrid", "dense"))["by_ranking"].items():
            result[prefix + ranking] = value
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.query_tower",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="the served models (default %(default)s)")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--out", type=Path, default=Path("data/query-tower"), help="the code-vector cache")
    parser.add_argument("--train-pairs", type=int, default=120_000)
    parser.add_argument("--valid-limit", type=int, default=2000, help="validation pairs scored (whole groups of 1,000)")
    parser.add_argument("--projects", type=Path, default=None, help="also score this folder of held-out projects")
    parser.add_argument("--projects-limit", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    for field, default in asdict(TowerConfig()).items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(default), default=default)
    args = parser.parse_args(argv)
    config = TowerConfig(**{f: getattr(args, f) for f in asdict(TowerConfig())})
    if min(args.train_pairs, args.valid_limit, args.threads, config.steps, config.batch) < 1 or config.lr <= 0:
        parser.error("--train-pairs, --valid-limit, --threads, --steps, --batch and --lr must be positive")
    import torch

    from pathfusion.server.embedder import EmbedderError, load_embedder

    torch.set_num_threads(args.threads)
    torch.manual_seed(config.seed)
    try:
        meta = load_or_choose_pairs(args.out, args.corpus, args.train_pairs, config)  # a missing corpus fails first
        embedder = load_embedder("onnx", args.models, device="cpu", threads=args.threads)
        model, tokenizer = load_reference(resolve_base("shipped", args.out, args.models))
        started = time.perf_counter()
        codes = cached_code_vectors(args.out, meta["code"], embedder)
        embed_seconds = time.perf_counter() - started
        space = TowerSpace(embedder, tokenizer)
        sets = {"valid": (iter_split_pairs(args.corpus, "valid", with_contexts=False),
                          iter_split_pairs(args.corpus, "valid", anonymised=True, with_contexts=False),
                          args.valid_limit)}
        if args.projects is not None:
            sets[str(args.projects)] = (iter_project_pairs(args.projects, with_contexts=False),
                                        iter_project_pairs(args.projects, anonymised=True, with_contexts=False),
                                        args.projects_limit)
        served = {name: scores(space, plain, anon, limit) for name, (plain, anon, limit) in sets.items()}
        started = time.perf_counter()
        space.tower = MeanPooledEncoder(model)
        losses = train_tower(space.tower, tokenizer, meta, codes, config, log=sys.stderr)
        train_seconds = time.perf_counter() - started
        tower = {name: scores(space, plain, anon, limit) for name, (plain, anon, limit) in sets.items()}
    except (EmbedderError, ExportError, ConversionError, ValueError, OSError) as error:
        print(f"query_tower: error: {error}", file=sys.stderr)
        return 1
    result = {"config": asdict(config), "train_pairs": len(codes), "served_queries": served, "tower": tower,
              "first_losses": [round(x, 4) for x in losses[:3]],
              "mean_loss_first_20": round(float(np.mean(losses[:20])), 4),
              "mean_loss_last_20": round(float(np.mean(losses[-20:])), 4),
              "embed_seconds": round(embed_seconds), "train_seconds": round(train_seconds),
              "seconds_per_step": round(train_seconds / config.steps, 2)}
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
