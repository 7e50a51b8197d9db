"""``python -m pathfusion.model_export.relevance_floor``: what a relevance floor would hide, on validation.

Why: the server hides search results scoring below ``pathfusion.server.ranking.RELEVANCE_FLOOR``; the
floor must hide unrelated functions without hiding right answers.  MRR cannot say that, so
this scores the served hybrid ranking on the validation pairs (CodeSearchNet groups of
1,000, as ``tune_ranking``) and reports, per candidate floor, the share of correct answers
scoring below it, the share that did so while ranked in the top 10, and the share of the
top-10 distractors it cuts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .evaluate import hybrid_terms, load_search_space
from .metrics import SEARCH_GROUP
from .tune_ranking import valid_pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.relevance_floor",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--floors", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.25, 0.3])
    parser.add_argument("--json", type=Path, default=Path("data/results/relevance-floor.json"))
    args = parser.parse_args(argv)
    pairs = valid_pairs(args.corpus, args.groups)
    if len(pairs) < SEARCH_GROUP:
        print("relevance_floor: error: too few validation pairs; run `make corpus` first", file=sys.stderr)
        return 1
    space = load_search_space("default", args.models, "cpu")
    codes, queries = space.codes(pairs), space.queries([p.query for p in pairs])
    correct: list[float] = []
    ranks: list[int] = []
    distractors: list[float] = []
    for start in range(0, len(pairs) - SEARCH_GROUP + 1, SEARCH_GROUP):
        group = pairs[start:start + SEARCH_GROUP]
        dense = (queries[start:start + SEARCH_GROUP].astype(np.float64)
                 @ codes[start:start + SEARCH_GROUP].astype(np.float64).T)
        scores = dense + hybrid_terms(group, dense)
        for i in range(len(group)):
            correct.append(scores[i, i])
            ranks.append(int((scores[i] > scores[i, i]).sum()) + 1)
            distractors.extend(np.sort(np.delete(scores[i], i))[-10:])
    right, rank, wrong = np.asarray(correct), np.asarray(ranks), np.asarray(distractors)
    rows = [{"floor": floor, "correct_below": round(float((right < floor).mean()), 4),
             "correct_top10_below": round(float(((right < floor) & (rank <= 10)).mean()), 4),
             "top10_distractors_cut": round(float((wrong < floor).mean()), 4)} for floor in args.floors]
    for row in rows:
        print(f"floor {row['floor']:<5} correct below {row['correct_below']:.4f}  (in the top 10: "
              f"{row['correct_top10_below']:.4f})  top-10 distractors cut {row['top10_distractors_cut']:.4f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"space": space.name, "pairs": len(pairs), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
