"""``python -m pathfusion.model_export.similar_floor``: where "Similar functions" stops meaning similar.

Why: a hover lists the functions of the workspace closest to the hovered one
(:func:`pathfusion.server.feature_search.similar_finder`), and in a small workspace the
closest can be unrelated — a new user's hover over a three-function file listed ``main``
"similar" at −0.01.  The floor below which none is listed
(:data:`pathfusion.server.feature_search.SIMILAR_FLOOR`) is read here on the validation
split, with the served encoder and the texts the index embeds (each function's definition
under its class's header, :func:`pathfusion.server.parsing.search_text`):

* *unrelated*: pairs of functions drawn at random from two different projects — what a
  workspace shows when it holds nothing like the hovered function;
* *alike*: pairs of functions of two different projects that bear the same name of two or
  more words (``parse_args``, ``load_config``; one pair per name) — a stand-in for the
  functions a user would call similar, which a floor should not hide.

Per candidate floor it prints the share of each kind scoring below it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.embedder import load_embedder
from pathfusion.server.parsing import search_text
from pathfusion.server.paths import METHOD_NAME

from .corpus import read_jsonl_gz

SEED = 13


def served_text(row: dict[str, Any]) -> str:
    """What the index embeds for a corpus function: its masked definition with the name put
    back (the docstring kept), under its class's header."""
    return search_text(row["masked_code"].replace(METHOD_NAME, row["name"]), row["qualname"])


def pairs_of(rows: Sequence[dict[str, Any]], count: int, seed: int = SEED) -> tuple[list[tuple[int, int]],
                                                                                   list[tuple[int, int]]]:
    """(unrelated, alike) pairs of row positions, ``count`` of each at most (see the module)."""
    rng = random.Random(seed)
    by_name: dict[str, dict[str, int]] = defaultdict(dict)
    for position, row in enumerate(rows):
        if row["label"].count("|") >= 1 and not row["name"].startswith("__"):
            by_name[row["label"]].setdefault(row["project"], position)
    alike = [tuple(rng.sample(sorted(projects.values()), 2)) for _, projects in sorted(by_name.items())
             if len(projects) >= 2]
    rng.shuffle(alike)
    unrelated: list[tuple[int, int]] = []
    while len(unrelated) < count:
        a, b = rng.randrange(len(rows)), rng.randrange(len(rows))
        if rows[a]["project"] != rows[b]["project"]:
            unrelated.append((a, b))
    return unrelated, [(a, b) for a, b in alike[:count]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.similar_floor",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=1000, help="pairs of each kind (default 1,000)")
    parser.add_argument("--floors", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--json", type=Path, default=Path("data/results/similar-floor.json"))
    args = parser.parse_args(argv)
    split = args.corpus / "valid.jsonl.gz"
    if not split.is_file():
        print(f"similar_floor: error: {split} is missing; run `make corpus` first", file=sys.stderr)
        return 1
    rows = [row for row in read_jsonl_gz(split) if row.get("naming")]
    unrelated, alike = pairs_of(rows, args.pairs)
    used = sorted({p for pair in unrelated + alike for p in pair})
    embedder = load_embedder("onnx", args.models, device="cpu")
    vectors = np.asarray(embedder.embed([served_text(rows[p]) for p in used]), dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    row_of = {p: i for i, p in enumerate(used)}

    def cosines(pairs: list[tuple[int, int]]) -> np.ndarray:
        return np.asarray([vectors[row_of[a]] @ vectors[row_of[b]] for a, b in pairs])

    scores = {"unrelated": cosines(unrelated), "alike": cosines(alike)}
    report: dict[str, Any] = {"model": embedder.model_id, "pairs": {k: len(v) for k, v in scores.items()},
                              "quantiles": {k: {q: round(float(np.quantile(v, q / 100)), 4) for q in (1, 10, 50, 90, 99)}
                                            for k, v in scores.items()},
                              "floors": [{"floor": f, **{f"{k}_below": round(float((v < f).mean()), 4)
                                                         for k, v in scores.items()}} for f in args.floors]}
    for kind, quantiles in report["quantiles"].items():
        print(f"{kind:<9} ({len(scores[kind])} pairs) cosine quantiles "
              + "  ".join(f"p{q}={value:.3f}" for q, value in quantiles.items()))
    for row in report["floors"]:
        print(f"floor {row['floor']:<4}  unrelated below {row['unrelated_below']:.4f}  alike below {row['alike_below']:.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
