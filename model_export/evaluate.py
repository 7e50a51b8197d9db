"""``pathfusion eval naming``: score the *exported* model on held-out code.

Why the ONNX model and not the torch one: what ships is what is measured.  Two sources of
examples:

* ``--projects DIR``: any folder with one sub-folder per project.  Files and functions go
  through the corpus rules (``model_export.corpus.skip_reason``; non-dunder functions of at
  least 3 lines) and the serving extractor (``sample(200)``, deterministic) — exactly what
  the editor computes for code the model has never seen.
* ``--corpus data/corpus --split test``: the deduplicated, project-disjoint split.  A
  function stored with more than 200 contexts gets a fixed subset seeded by its position in
  the split (the same subset the training run's evaluation uses).

Metrics are defined in :mod:`model_export.metrics`.  No torch is imported here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server.code2vec import Code2VecModel
from server.models import ModelError
from server.parsing import Document, SourceError, decode_source
from server.paths import MAX_CONTEXTS, context_space, name_label

from .c2v_data import iter_naming
from .corpus import skip_reason
from .metrics import NamingScores

VARIANTS = ("code2vec",)
"""Variants that can be scored now (the fusions arrive with the LLM embedder)."""


def iter_project_examples(root: Path) -> Iterator[tuple[str, list[str]]]:
    """(gold label, contexts) of the naming functions under ``root``'s project folders."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory (expected one sub-folder per project)")
    for project in sorted(p for p in root.iterdir() if p.is_dir()):
        for dirpath, dirnames, filenames in os.walk(project):
            dirnames.sort()
            for filename in sorted(filenames):
                path = Path(dirpath, filename)
                relative = path.relative_to(project).as_posix()
                if not filename.endswith(".py"):
                    continue
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                if skip_reason(relative, data[:2048]) is not None:
                    continue
                try:
                    doc = Document(decode_source(data, origin=str(path)))
                except SourceError:
                    continue
                for func in doc.functions():
                    label = name_label(func.name)
                    dunder = func.name.startswith("__") and func.name.endswith("__")
                    if not label or dunder or func.line_count < 3:
                        continue
                    contexts = context_space(func.node, doc.source, func.name).sample(MAX_CONTEXTS)
                    yield label, [c.to_text() for c in contexts]


def iter_split_examples(corpus: Path, split: str) -> Iterator[tuple[str, list[str]]]:
    path = corpus / f"{split}.jsonl.gz"
    if not path.exists():
        raise ValueError(f"{path} not found; run `make corpus` first")
    for index, (label, contexts) in enumerate(iter_naming(path)):
        if len(contexts) > MAX_CONTEXTS:
            chosen = np.sort(np.random.default_rng(index).choice(len(contexts), MAX_CONTEXTS, replace=False))
            contexts = [contexts[i] for i in chosen]
        yield label, contexts


def evaluate_naming(
    examples: Iterator[tuple[str, list[str]]], model: Code2VecModel, limit: int | None = None
) -> dict[str, Any]:
    scores = NamingScores()
    in_vocab, out_of_vocab = NamingScores(), NamingScores()
    known = set(model.targets)
    batch: list[tuple[str, list[str]]] = []
    seconds = 0.0

    def flush() -> None:
        nonlocal seconds
        started = time.perf_counter()
        predictions = model.predict([contexts for _, contexts in batch], top_k=10)
        seconds += time.perf_counter() - started
        for (gold, _), ranked in zip(batch, predictions, strict=True):
            candidates = [label for label, _ in ranked]
            scores.add(gold, candidates)
            (in_vocab if gold in known else out_of_vocab).add(gold, candidates)
        batch.clear()

    for count, example in enumerate(examples):
        if limit is not None and count >= limit:
            break
        batch.append(example)
        if len(batch) == 256:
            flush()
    if batch:
        flush()
    result: dict[str, Any] = dict(scores.result())
    result["model_ms_per_function"] = round(seconds / max(1, scores.examples) * 1000, 3)
    # Why the split: a whole-name classifier can only be exactly right on gold names in its
    # target vocabulary; the rest earn partial subtoken credit at best.
    result["gold_in_vocabulary"] = {"share": round(in_vocab.examples / max(1, scores.examples), 4),
                                    **in_vocab.result()}
    result["gold_out_of_vocabulary"] = out_of_vocab.result()
    result["samples"] = [{"gold": g, "predicted": p} for g, p in scores.samples[:10]]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathfusion eval", description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("naming", "search"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--projects", type=Path, help="folder with one sub-folder per project")
    source.add_argument("--corpus", type=Path, help="corpus folder (with --split)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--variant", default="code2vec")
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.task == "search" or args.variant not in VARIANTS:
        print(f"pathfusion eval: {args.task} with variant {args.variant!r} is not available yet "
              f"(available: naming with {', '.join(VARIANTS)})", file=sys.stderr)
        return 2
    try:
        model = Code2VecModel.load(args.models, device=args.device, threads=os.cpu_count() or 1)
        examples = (iter_project_examples(args.projects) if args.projects
                    else iter_split_examples(args.corpus, args.split))
        result = evaluate_naming(examples, model, args.limit)
    except (ModelError, ValueError) as exc:
        print(f"pathfusion eval: error: {exc}", file=sys.stderr)
        return 1
    result = {"task": "naming", "variant": args.variant,
              "source": str(args.projects) if args.projects else f"{args.corpus}:{args.split}", **result}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            if key != "samples":
                print(f"{key:>24}: {value}")
        for sample in result["samples"]:
            print(f"    gold {sample['gold']:<30} predicted {sample['predicted']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
