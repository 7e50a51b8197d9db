"""``python -m pathfusion.model_export.hub_penalty``: would a hubness penalty help search? (validation)

Why: in a shared vector space some code vectors ("hubs") lie close to many queries and crowd
the top of unrelated searches.  Cross-domain similarity local scaling (CSLS, Conneau et al.
2018) lowers each candidate by its mean cosine to its ``k`` nearest *reference queries*:
``score − weight × r(code)``.  Which references is the question: queries from the same
projects (the other CodeSearchNet groups of the split: not the candidates' own docstrings,
but the same kind of text) or a fixed seeded sample of train docstrings (what a server could
ship; in a workspace the candidates' docstrings would be the only in-domain references, and
scoring with them would use the evaluation's own queries).  Scores the served search space
on the validation pairs, dense and hybrid, for every (references, k, weight); the penalty
shifts whole columns, so the hybrid's other terms are computed once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import read_jsonl_gz
from .evaluate import SearchSpace, hybrid_terms, load_search_space
from .metrics import SEARCH_GROUP, mrr_of_scores
from .tune_ranking import valid_pairs

REFERENCE_SEED = 7


def train_queries(corpus: Path, count: int, seed: int = REFERENCE_SEED) -> list[str]:
    """``count`` docstring summaries of the train split's search pairs, a seeded sample."""
    path = corpus / "train.jsonl.gz"
    if not path.is_file():
        raise ValueError(f"{path} not found; build the corpus first (make corpus)")
    texts = [r["docstring_summary"] for r in read_jsonl_gz(path) if r.get("search") and r.get("docstring_summary")]
    if len(texts) < count:
        raise ValueError(f"{path} holds {len(texts)} search pairs, fewer than the {count} references asked for")
    return [texts[i] for i in np.random.default_rng(seed).choice(len(texts), count, replace=False)]


def nearest_mean(codes: np.ndarray, references: np.ndarray, k: int) -> np.ndarray:
    """``r(code)``: each code's mean cosine to its ``k`` nearest references (unit rows)."""
    similarity = codes.astype(np.float64) @ references.astype(np.float64).T
    return np.sort(similarity, axis=1)[:, -k:].mean(axis=1)


def group_rows(rows: np.ndarray, g: int) -> np.ndarray:
    """The rows of CodeSearchNet group ``g``."""
    return rows[g * SEARCH_GROUP:(g + 1) * SEARCH_GROUP]


def group_cosines(queries: np.ndarray, codes: np.ndarray) -> list[np.ndarray]:
    """Per group, the ``[group, group]`` cosines of its queries (rows) against its codes."""
    return [group_rows(queries, g).astype(np.float64) @ group_rows(codes, g).astype(np.float64).T
            for g in range(len(codes) // SEARCH_GROUP)]


References = dict[str, Callable[[int], np.ndarray]]
"""Name → the reference query vectors that group ``g``'s candidates are scored against."""


def penalty_grid(codes: np.ndarray, dense: Sequence[np.ndarray], hybrid: Sequence[np.ndarray],
                 references: References, ks: Sequence[int], weights: Sequence[float]) -> list[dict[str, Any]]:
    """MRR, dense and hybrid, for every (references, k, weight); ``dense[g]`` holds group
    ``g``'s cosines (:func:`group_cosines`), ``hybrid[g]`` the served ranking's terms beyond
    them.  The penalty shifts whole columns, so neither is computed again."""
    group, pairs = SEARCH_GROUP, len(dense) * SEARCH_GROUP

    def row(name: str, k: int, weight: float, nearest: Sequence[np.ndarray]) -> dict[str, Any]:
        def scores(start: int, extra: bool) -> np.ndarray:
            g = start // group
            return dense[g] + (hybrid[g] if extra else 0.0) - weight * nearest[g][None, :]
        return {"references": name, "k": k, "weight": weight,
                "dense": round(mrr_of_scores(lambda s: scores(s, False), pairs, group), 4),
                "hybrid": round(mrr_of_scores(lambda s: scores(s, True), pairs, group), 4)}

    rows = [row("none", 0, 0.0, [np.zeros(group)] * len(dense))]
    for name, of_group in references.items():
        for k in ks:
            nearest = [nearest_mean(group_rows(codes, g), of_group(g), k) for g in range(len(dense))]
            rows.extend(row(name, k, weight, nearest) for weight in weights)
    return rows


def measure(corpus: Path, space: SearchSpace, groups: int, train_references: int, ks: Sequence[int],
            weights: Sequence[float]) -> dict[str, Any]:
    pairs = valid_pairs(corpus, groups)
    groups = len(pairs) // SEARCH_GROUP
    if groups < 2:
        raise ValueError("fewer than two groups of validation pairs; run `make corpus` first")
    pairs = pairs[:groups * SEARCH_GROUP]
    codes, queries = space.codes(pairs), space.queries([p.query for p in pairs])
    train = space.queries(train_queries(corpus, train_references))
    dense = group_cosines(queries, codes)
    hybrid = [hybrid_terms(pairs[g * SEARCH_GROUP:(g + 1) * SEARCH_GROUP], dense[g]) for g in range(groups)]

    def other_groups(g: int) -> np.ndarray:
        return np.delete(queries, np.s_[g * SEARCH_GROUP:(g + 1) * SEARCH_GROUP], axis=0)

    references: References = {f"train sample ({train_references})": lambda g: train,
                               "other groups' queries": other_groups}
    return {"space": space.name, "pairs": len(pairs), "groups": groups,
            "rows": penalty_grid(codes, dense, hybrid, references, ks, weights)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.hub_penalty",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--groups", type=int, default=10, help="validation groups of 1,000 pairs (default: all 10)")
    parser.add_argument("--train-references", type=int, default=4000)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--json", type=Path, default=Path("data/results/hub-penalty.json"))
    args = parser.parse_args(argv)
    try:
        result = measure(args.corpus, load_search_space("default", args.models, "cpu"), args.groups,
                         args.train_references, args.k, args.weights)
    except ValueError as exc:
        print(f"hub_penalty: error: {exc}", file=sys.stderr)
        return 1
    for row in result["rows"]:
        print(f"{row['references']:<26} k {row['k']:<3} weight {row['weight']:<4} "
              f"dense {row['dense']:.4f} hybrid {row['hybrid']:.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
