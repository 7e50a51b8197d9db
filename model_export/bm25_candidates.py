"""How many of a query's nearest functions BM25 should score: hybrid MRR on validation for
several :data:`~pathfusion.server.lexical.BM25_CANDIDATES`, against BM25 over every function
of the group.

``python -m pathfusion.model_export.bm25_candidates [--split valid | --projects DIR] [--groups 2]
[--anonymise] [--counts 0 20 50 100 200 400] [--json F]`` embeds the split's first ``groups`` CodeSearchNet
groups with the shipped search space (as ``pathfusion eval search`` does), then ranks each
group as the server does — cosine + name bonus + BM25 bonus + prior — with BM25 computed for
each query's ``N`` nearest functions by cosine and normalised over them (``0``: every
function of the group, how the server scored before).

Why it exists: scoring every match of a sentence query is most of a search's cost at 100k
functions (docs/performance.md); the candidates' count is a ranking choice, so it is chosen
here, on validation, and the held-out figures follow it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server import lexical
from pathfusion.server.lexical import bm25_matrix, name_prior

from .evaluate import iter_project_pairs, iter_split_pairs, lexical_matrix, load_search_space
from .metrics import SEARCH_GROUP, mrr_of_scores, protocol_pairs


def candidate_grid(pairs: Sequence[Any], codes: np.ndarray, queries: np.ndarray, counts: Sequence[int]
                   ) -> dict[str, float]:
    """Hybrid MRR (groups of :data:`SEARCH_GROUP`) for each candidate count (``0``: all)."""
    group = SEARCH_GROUP
    blocks = []
    for start in range(0, len(pairs) - group + 1, group):
        chosen = pairs[start:start + group]
        dense = queries[start:start + group].astype(np.float64) @ codes[start:start + group].astype(np.float64).T
        texts = [p.query for p in chosen]
        fixed = dense + lexical_matrix(texts, chosen) + np.asarray([name_prior(p.name) for p in chosen])[None, :]
        blocks.append((dense, fixed, texts, [p.name for p in chosen], [p.code for p in chosen]))
    result: dict[str, float] = {}
    for count in counts:
        totals = [fixed + bm25_matrix(texts, names, codes_, dense, count=count or group)
                  for dense, fixed, texts, names, codes_ in blocks]
        result[str(count or "all")] = round(mrr_of_scores(_blocks(totals, group), len(blocks) * group, group), 4)
    return result


def _blocks(totals: Sequence[np.ndarray], group: int) -> Callable[[int], np.ndarray]:
    return lambda start: totals[start // group]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.bm25_candidates",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--projects", type=Path, default=None,
                        help="projects outside the corpus instead of a split (reported, never used to choose)")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--anonymise", action="store_true")
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 20, 50, 100, 200, 400])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    pairs = (iter_project_pairs(args.projects, args.anonymise, with_contexts=False) if args.projects is not None
             else iter_split_pairs(args.corpus, args.split, args.anonymise, with_contexts=False))
    available = len(pairs)
    pairs = protocol_pairs(pairs, args.groups * SEARCH_GROUP, short_group=False)
    if not pairs:
        print(f"{args.split}: {available} pairs, fewer than one group of {SEARCH_GROUP}", file=sys.stderr)
        return 1
    space = load_search_space("default", args.models, "cpu")
    codes, queries = space.codes(pairs), space.queries([p.query for p in pairs])
    result = {"split": str(args.projects) if args.projects is not None else args.split, "pairs": len(pairs), "anonymised": args.anonymise,
              "shipped": lexical.BM25_CANDIDATES, "mrr": candidate_grid(pairs, codes, queries, args.counts)}
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
