"""``pathfusion train code2vec``: vocabularies, encoding, training with early stopping.

Why it is built to be interrupted: on two CPU cores a run takes about an hour, and a
session can end at any moment.  Every artefact is written atomically into the run folder
(``data/runs/code2vec`` by default) and reused: vocabularies, encoded splits, the latest
checkpoint (model, optimiser, epoch, step, best score, RNG state), the best model, the
config and a JSONL run log.  Running the same command again resumes where it stopped.

Model selection uses the validation split only; the test split is scored once, at the end,
for reporting (never for tuning).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .c2v_data import EncodedSplit, Vocabs, batch_arrays, encode_corpus
from .code2vec import Code2Vec, Code2VecConfig, resolve_device
from .metrics import NamingScores
from .run_files import atomic_torch_save, log_event

DEFAULT_CORPUS = Path("data/corpus")
DEFAULT_RUN = Path("data/runs/code2vec")


def prepare(corpus: Path, run: Path, config: Code2VecConfig) -> tuple[Vocabs, dict[str, EncodedSplit]]:
    """Vocabularies and encoded splits, built once (one read of each split) and cached."""
    run.mkdir(parents=True, exist_ok=True)
    vocab_dir = run / "vocab"
    caches = {split: run / f"{split}.npz" for split in ("train", "valid", "test")}
    if not (vocab_dir / "targets.json").exists() or not all(p.exists() for p in caches.values()):
        started = time.time()
        vocabs, stats, encoded = encode_corpus(
            corpus, config.token_vocab, config.path_vocab, config.target_vocab, config.min_count
        )
        for split, data in encoded.items():
            data.save(caches[split])
        info: dict[str, object] = dict(stats)
        info |= {"tokens": len(vocabs.tokens), "paths": len(vocabs.paths), "targets": len(vocabs.targets),
                  "examples": {split: len(data) for split, data in encoded.items()}}
        (run / "vocab_stats.json").write_text(json.dumps(info, indent=1))
        vocabs.save(vocab_dir)
        log_event(run, {"event": "encoded", "seconds": round(time.time() - started, 1), **info})
    vocabs = Vocabs.load(vocab_dir)
    return vocabs, {split: EncodedSplit.load(path) for split, path in caches.items()}


@torch.no_grad()
def predict_top(
    model: Code2Vec, split: EncodedSplit, indices: np.ndarray, config: Code2VecConfig, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` target ids and probabilities for the examples ``indices`` (eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    ids_out, probs_out = [], []
    for start in range(0, len(indices), 512):
        part = indices[start : start + 512]
        contexts, mask, _ = batch_arrays(split, part, config.max_contexts, None)
        _, _, logits = model(torch.from_numpy(contexts).to(device), torch.from_numpy(mask).to(device))
        probs = torch.softmax(logits, dim=-1)
        top_p, top_i = torch.topk(probs, min(k, probs.shape[-1]), dim=-1)
        ids_out.append(top_i.cpu().numpy())
        probs_out.append(top_p.cpu().numpy())
    return np.concatenate(ids_out), np.concatenate(probs_out)


def evaluate(
    model: Code2Vec, split: EncodedSplit, vocabs: Vocabs, config: Code2VecConfig, limit: int | None = None
) -> dict[str, float | int]:
    """Naming metrics (pathfusion.model_export.metrics) on a split, gold names outside the vocab kept."""
    indices = np.arange(len(split)) if limit is None else np.arange(min(limit, len(split)))
    top_ids, _ = predict_top(model, split, indices, config)
    scores = NamingScores()
    targets = vocabs.targets.items
    for row, example in enumerate(indices):
        scores.add(split.gold[example], [targets[i] for i in top_ids[row]])
    return scores.result()


def train(corpus: Path, run: Path, config: Code2VecConfig, resume: bool = True) -> dict[str, Any]:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    vocabs, splits = prepare(corpus, run, config)
    (run / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    train_split = splits["train"]
    trainable = np.flatnonzero(train_split.labels > 1)  # examples whose target is in vocabulary
    if config.max_train_examples:
        trainable = trainable[: config.max_train_examples]
    device = resolve_device(config.device)
    model = Code2Vec(len(vocabs.tokens), len(vocabs.paths), len(vocabs.targets), config).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = {"epoch": 0, "step_in_epoch": 0, "step": 0, "best_f1": -1.0, "bad_epochs": 0, "elapsed": 0.0}
    checkpoint = run / "checkpoint.pt"
    if resume and checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True, map_location=device)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        state = saved["state"]
        log_event(run, {"event": "resume", **state})
    loss_fn = nn.CrossEntropyLoss()
    steps_per_epoch = math.ceil(len(trainable) / config.batch_size)
    started = time.time() - float(state["elapsed"])
    last_save = time.time()

    def save_checkpoint() -> None:
        state["elapsed"] = time.time() - started
        atomic_torch_save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                            "state": state}, checkpoint)

    def validate() -> dict[str, float | int]:
        result = evaluate(model, splits["valid"], vocabs, config, config.max_valid_examples)
        if result["f1"] > state["best_f1"]:
            state["best_f1"] = float(result["f1"])
            atomic_torch_save(model.state_dict(), run / "best.pt")
        model.train()
        return result

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    out_of_time = False
    while state["epoch"] < config.epochs and not out_of_time:
        epoch = int(state["epoch"])
        if int(state["step_in_epoch"]) == 0:
            state["best_at_epoch_start"] = float(state["best_f1"])
        order = np.random.default_rng(config.seed + epoch).permutation(trainable)
        rng = np.random.default_rng([config.seed, epoch, int(state["step_in_epoch"])])
        model.train()
        bar = tqdm(total=steps_per_epoch, initial=int(state["step_in_epoch"]), desc=f"epoch {epoch + 1}",
                   file=sys.stderr, mininterval=5) if tqdm else None
        running = 0.0
        for step in range(int(state["step_in_epoch"]), steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            contexts, mask, labels = batch_arrays(train_split, batch, config.max_contexts, rng)
            _, _, logits = model(torch.from_numpy(contexts).to(device), torch.from_numpy(mask).to(device))
            loss = loss_fn(logits, torch.from_numpy(labels).to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            value = loss.item()
            running = 0.98 * running + 0.02 * value if step else value
            state["step"] = int(state["step"]) + 1
            state["step_in_epoch"] = step + 1
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{running:.3f}", best_f1=f"{state['best_f1']:.3f}")
            if config.eval_every and state["step"] % config.eval_every == 0:
                result = validate()
                log_event(run, {"event": "valid", "epoch": epoch, "step": state["step"], "loss": round(running, 4), **result})
            if time.time() - last_save > 300:
                save_checkpoint()
                last_save = time.time()
            if config.time_budget_min and time.time() - started > config.time_budget_min * 60:
                out_of_time = True
                break
        if bar:
            bar.close()
        result = validate()
        # An epoch counts as an improvement when any validation in it (mid-epoch ones
        # included) raised the best score.
        improved = float(state["best_f1"]) > float(state.get("best_at_epoch_start", -1.0))
        state["bad_epochs"] = 0 if improved else int(state["bad_epochs"]) + 1
        log_event(run, {"event": "epoch", "epoch": epoch, "step": state["step"], "loss": round(running, 4),
                   "minutes": round((time.time() - started) / 60, 1), **result})
        if not out_of_time:
            state["epoch"] = epoch + 1
            state["step_in_epoch"] = 0
        save_checkpoint()
        if state["bad_epochs"] >= config.patience:
            log_event(run, {"event": "early_stop", "epoch": epoch})
            break
    model.load_state_dict(torch.load(run / "best.pt", weights_only=True, map_location=device))
    test = evaluate(model, splits["test"], vocabs, config)
    valid = evaluate(model, splits["valid"], vocabs, config)
    summary = {"event": "final", "valid": valid, "test": test, "best_valid_f1": state["best_f1"],
               "minutes": round((time.time() - started) / 60, 1), "train_examples": len(trainable)}
    (run / "final.json").write_text(json.dumps(summary, indent=1))
    log_event(run, summary)
    return summary


def parse_overrides(pairs: Sequence[str], config: Code2VecConfig) -> Code2VecConfig:
    """``key=value`` overrides of the config, typed after the field's default."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown config key {key!r}; known: {', '.join(sorted(fields))}")
        current = getattr(config, key)
        if value.lower() in ("none", "null"):
            changes[key] = None
        elif isinstance(current, bool):
            changes[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, int) or key in ("max_train_examples",):
            changes[key] = int(value)
        elif isinstance(current, float) or key in ("time_budget_min",):
            changes[key] = float(value)
        else:
            changes[key] = value
    return dataclasses.replace(config, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathfusion train code2vec", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    if not (args.corpus / "train.jsonl.gz").exists():
        print(f"error: {args.corpus}/train.jsonl.gz not found; run `make corpus` first", file=sys.stderr)
        return 1
    config = Code2VecConfig()
    saved = args.run / "config.json"
    if saved.exists() and not args.no_resume:
        config = Code2VecConfig(**json.loads(saved.read_text()))
    config = parse_overrides(args.set, config)
    summary = train(args.corpus, args.run, config, resume=not args.no_resume)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
