"""``python -m pathfusion.model_export.search_code_length``: search MRR by how many wordpieces of a
function the embedder reads.

Why: the encoder is fine-tuned on code cut at 128 wordpieces and the server reads 256; a
shorter read indexes faster, a longer one sees more of a long function.  This scores the
served search space (hybrid and dense, the CodeSearchNet protocol of ``pathfusion eval
search``) on the validation pairs with the code — never the queries — cut at each
``--lengths`` value, plain or ``--anonymise``d (docs/results.md, "How much of a function
search reads").  Past the export's 256 the graph reads up to its 512 positions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import (
    SearchExample,
    SearchSpace,
    evaluate_search,
    iter_split_pairs,
    load_search_space,
)


@dataclass
class CutSearchSpace(SearchSpace):
    """A search space whose function vectors read the first ``tokens`` wordpieces of the code."""

    tokens: int = 256

    def codes(self, pairs: Sequence[SearchExample]) -> np.ndarray:
        # One process, one thread of requests: the shared tokenizer may change for the call.
        tokenizer: Any = getattr(self.embedder, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"{self.name}: not an ONNX embedder with a fast tokenizer")
        served = tokenizer.truncation
        tokenizer.enable_truncation(self.tokens)
        try:
            return super().codes(pairs)
        finally:
            if served:
                tokenizer.enable_truncation(**served)
            else:
                tokenizer.no_truncation()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.search_code_length",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 192, 256, 384, 512])
    parser.add_argument("--anonymise", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if any(not 2 <= n <= 512 for n in args.lengths):
        parser.error("--lengths: between 2 and 512 wordpieces (the encoder's positions)")
    pairs = iter_split_pairs(args.corpus, "valid", args.anonymise, with_contexts=False)
    space = load_search_space("default", args.models, "cpu")
    if space.runtime is not None:
        print("search_code_length: error: the served space is a fusion; this measures the embedder's own",
              file=sys.stderr)
        return 1
    results: dict[str, Any] = {}
    for tokens in args.lengths:
        cut = CutSearchSpace(space.name, None, space.embedder, tokens)
        result = evaluate_search(pairs, cut, ranking=("hybrid", "dense"))
        results[str(tokens)] = result
        print(f"code ≤ {tokens:>3} wordpieces{' (anonymised)' if args.anonymise else ''}: "
              f"hybrid {result['by_ranking']['hybrid']:.4f}, dense {result['by_ranking']['dense']:.4f} "
              f"({result['pairs']} pairs)", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"anonymised": args.anonymise, "by_length": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
