"""What the shipped int8 embedder costs on the task metrics.

The fusions were trained on int8 embeddings (what the server computes).  Here the first
test group (1,000 search pairs) and the first 1,000 test naming functions are embedded
again with the fp32 export, and every trained variant plus the zero-shot LLM is scored on
both inputs: the difference is the price of quantisation.

    python -m pathfusion.model_export.quantisation_effect --fp32-models data/models-fp32
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathfusion.server.atomic import write_atomic
from pathfusion.server.embedder import OnnxEmbedder

from .embed_corpus import GROUP, load_field, read_selection, selection_path
from .export_fusion import load_variant
from .metrics import mrr
from .train_fusion import EMBEDDINGS, RUNS, naming_scores

NAMING = 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.quantisation_effect", description=__doc__.split("\n")[0])
    parser.add_argument("--embeddings", type=Path, default=EMBEDDINGS)
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--fp32-models", type=Path, default=Path("data/models-fp32"))
    parser.add_argument("--out", type=Path, default=Path("data/results/quantisation.json"))
    args = parser.parse_args(argv)
    out = args.embeddings
    search_rows = read_selection(selection_path(out, "test", "search"))[:GROUP]
    naming_rows = read_selection(selection_path(out, "test", "naming"))[:NAMING]
    fp32 = OnnxEmbedder.load(args.fp32_models, quantized=False)
    inputs: dict[str, dict[str, np.ndarray]] = {
        "int8": {"code": load_field(out, "test", "search", "code", GROUP),
                 "query": load_field(out, "test", "search", "query", GROUP),
                 "naming": load_field(out, "test", "naming", "code", NAMING)},
        "fp32": {"code": fp32.embed([r["code"] for r in search_rows]),
                 "query": fp32.embed([r["query"] or "" for r in search_rows]),
                 "naming": fp32.embed([r["code"] for r in naming_rows])},
    }
    c2v_search = torch.from_numpy(np.load(out / "test-search-c2v.npy")[:GROUP])
    c2v_naming = torch.from_numpy(np.load(out / "test-naming-c2v.npy")[:NAMING])
    targets = json.loads((args.models / "code2vec" / "targets.json").read_text(encoding="utf-8"))
    labels = [r["label"] for r in naming_rows]
    texts = [r["query"] or "" for r in search_rows]
    cosine = {name: float(np.mean(np.sum(inputs["int8"][name] * inputs["fp32"][name], axis=1)))
              for name in ("code", "query", "naming")}
    result: dict[str, Any] = {"search_pairs": GROUP, "naming_functions": NAMING, "mean_cosine_int8_fp32": cosine,
                              "llm_zero_shot": {}, "variants": {}}
    for kind, data in inputs.items():
        result["llm_zero_shot"][kind] = mrr(data["query"], data["code"])
    for folder in sorted(p for p in args.runs.iterdir() if (p / "model.pt").is_file()):
        model, query, _ = load_variant(folder)
        scores: dict[str, Any] = {}
        with torch.no_grad():
            for kind, data in inputs.items():
                llm_code, llm_naming = torch.from_numpy(data["code"]), torch.from_numpy(data["naming"])
                codes = model.search_vector(llm_code, c2v_search).numpy()
                queries = query(texts, torch.from_numpy(data["query"])).numpy()
                naming = naming_scores(model.naming_logits(llm_naming, c2v_naming), labels, targets)
                scores[kind] = {"mrr": mrr(queries, codes), "naming_f1": naming["f1"]}
        result["variants"][folder.name] = scores
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(result, indent=1).encode())
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
