"""``python -m pathfusion.model_export.tune_ranking``: choose the hybrid ranking's weights on validation.

Why: ``pathfusion.search`` ranks by cosine + a lexical bonus of the function's name
(:func:`pathfusion.server.lexical.lexical_bonus`) + a BM25 bonus over the function's terms
(:func:`pathfusion.server.lexical.bm25_bonuses`) + a small prior against private helpers
(:func:`pathfusion.server.lexical.name_prior`); their weights must come from held-out data, and only
from the validation split (the test split and unseen projects score the choice once).

The validation pairs of the corpus (docstring summary → function without docstring, the
CodeSearchNet protocol of ``pathfusion eval search``) are embedded once by the served search
space; then every (subtoken weight, private penalty) of the grid is scored from the cached
vectors.  Queries are sentences, so only the subtoken part of the name bonus applies and
scales linearly with its weight; the BM25 bonus scales linearly with its weight for a given
name-column weight.  Prints the grid and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.lexical import (
    BM25_WEIGHT,
    NAME_TERMS_WEIGHT,
    PRIVATE_PENALTY,
    SUBTOKEN_BONUS,
    bm25_matrix,
    is_private,
)

from .evaluate import SearchExample, iter_split_pairs, lexical_matrix, load_search_space
from .metrics import SEARCH_GROUP, mrr_of_scores, protocol_group, protocol_pairs


def valid_pairs(corpus: Path, groups: int) -> list[SearchExample]:
    """The first ``groups`` CodeSearchNet groups of the validation split (seeded shuffle)."""
    return protocol_pairs(iter_split_pairs(corpus, "valid", with_contexts=False), groups * SEARCH_GROUP)


def grid(pairs: Sequence[SearchExample], codes: np.ndarray, queries: np.ndarray,
         subtoken: Sequence[float], private: Sequence[float], bm25: Sequence[float] = (0.0,),
         name_weights: Sequence[float] = (NAME_TERMS_WEIGHT,)) -> list[dict[str, Any]]:
    """MRR of every (subtoken weight, BM25 weight, name-column weight, private penalty) from
    cached vectors."""
    group = protocol_group(len(pairs))
    blocks = []
    for start in range(0, len(pairs) - group + 1, group):
        chosen = pairs[start:start + group]
        dense = queries[start:start + group].astype(np.float64) @ codes[start:start + group].astype(np.float64).T
        texts = [p.query for p in chosen]
        lexical = lexical_matrix(texts, chosen) / SUBTOKEN_BONUS
        unit_bm25 = {w: bm25_matrix(texts, [p.name for p in chosen], [p.code for p in chosen], dense, weight=1.0,
                                    name_weight=w) for w in name_weights}
        prior = -np.asarray([is_private(p.name) for p in chosen], dtype=np.float64)
        blocks.append((dense, lexical, unit_bm25, prior))
    rows = []
    for weight in subtoken:
        for bm25_weight in bm25:
            for name_weight in name_weights if bm25_weight else name_weights[:1]:
                for penalty in private:
                    def scores(start: int, weight: float = weight, bm25_weight: float = bm25_weight,
                               name_weight: float = name_weight, penalty: float = penalty) -> np.ndarray:
                        dense, lexical, unit_bm25, prior = blocks[start // group]
                        return (dense + weight * lexical + bm25_weight * unit_bm25[name_weight]
                                + penalty * prior[None, :])
                    rows.append({"subtoken": weight, "bm25": bm25_weight, "name_weight": name_weight,
                                 "private": penalty,
                                 "mrr": round(mrr_of_scores(scores, len(blocks) * group, group), 4)})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.tune_ranking", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--variant", default="default", help="search space (as pathfusion eval search)")
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--subtoken", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--private", type=float, nargs="+", default=[0.0, 0.02])
    parser.add_argument("--bm25", type=float, nargs="+", default=[0.0, 0.1, 0.15, 0.2, 0.25, 0.3])
    parser.add_argument("--name-weight", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                        help="FTS5 column weight of the name's subtokens against the body's")
    parser.add_argument("--json", type=Path, default=Path("data/results/ranking-grid.json"))
    args = parser.parse_args(argv)
    pairs = valid_pairs(args.corpus, args.groups)
    if len(pairs) < 2:
        print("tune_ranking: error: no validation pairs; run `make corpus` first", file=sys.stderr)
        return 1
    space = load_search_space(args.variant, args.models, "cpu")
    codes, queries = space.codes(pairs), space.queries([p.query for p in pairs])
    rows = grid(pairs, codes, queries, args.subtoken, args.private, args.bm25, args.name_weight)
    best = max(rows, key=lambda r: r["mrr"])
    current = next((r for r in rows if r["subtoken"] == SUBTOKEN_BONUS and r["private"] == PRIVATE_PENALTY
                    and r["bm25"] == BM25_WEIGHT and r["name_weight"] == NAME_TERMS_WEIGHT), None)
    for row in rows:
        mark = " ← best" if row is best else (" ← shipped" if row is current else "")
        print(f"subtoken {row['subtoken']:<5} bm25 {row['bm25']:<5} name weight {row['name_weight']:<4} "
              f"private {row['private']:<5} MRR {row['mrr']:.4f}{mark}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"space": space.name, "pairs": len(pairs), "rows": rows, "best": best,
                                     "shipped": current}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
