"""Compact storage of an ONNX graph's large weight matrices: int8 with one scale per row,
dequantised inside the graph (``DequantizeLinear``, axis 0).

Why: the tracked tree, ``models/`` included, must stay ≤ 40 MiB (docs/design.md §6), so that
a remote GPU job can carry it with its data, while code2vec ships its embeddings and its
naming head (10k names), the embedder its transformer weights, and a fusion variant its
naming head and a query encoder with its own word embeddings.  Unlike dynamic quantisation
(which also quantises activations, per batch, and made the int8 MiniLM's vectors depend on
the batch), this stores only the *weights* in int8: the computation stays fp32, every
output is independent of the batch, and the graph is 4× smaller.  The cost is a weight
rounding error of at most half a step (``max|row| / 254``) per entry; its effect on the
task metrics is measured by the export (``docs/results.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MIN_ELEMENTS = 65536
"""Smaller initializers are left in fp32 (they weigh little and some are biases/norms)."""


def compact(source: Path, target: Path, min_elements: int = MIN_ELEMENTS) -> dict[str, int]:
    """Write ``source`` to ``target`` with every 2-D float32 initializer of at least
    ``min_elements`` entries stored as int8 + per-row scale; returns counts for reports."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    kept, nodes = [], []
    converted = 0
    for initializer in graph.initializer:
        weights = numpy_helper.to_array(initializer)
        if weights.dtype != np.float32 or weights.ndim != 2 or weights.size < min_elements:
            kept.append(initializer)
            continue
        scale = np.abs(weights).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        quantised = np.clip(np.rint(weights / scale[:, None]), -127, 127).astype(np.int8)
        name = initializer.name
        kept += [numpy_helper.from_array(quantised, f"{name}__int8"),
                 numpy_helper.from_array(scale.astype(np.float32), f"{name}__scale"),
                 numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), f"{name}__zero")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}__int8", f"{name}__scale", f"{name}__zero"],
                                      [name], name=f"{name}__dequantize", axis=0))
        converted += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return {"matrices": converted, "bytes_before": source.stat().st_size, "bytes_after": target.stat().st_size}


def _sessions(*paths: Path) -> list[Any]:
    from pathfusion.server.models import providers
    from pathfusion.server.onnx_session import create_session

    return [create_session(path, providers("cpu"), 1, fix="re-export the model") for path in paths]


def compact_effect(fp32_path: Path, compact_path: Path, batches: Sequence[dict[str, np.ndarray]],
                   outputs: Sequence[str]) -> dict[str, Any]:
    """Largest |compact − fp32| per output over ``batches``, and how often the first output
    named ``top_ids`` (when there is one) keeps its top-1 id: the price of int8 storage."""
    full, small = _sessions(fp32_path, compact_path)
    worst = dict.fromkeys(outputs, 0.0)
    same_top1, rows = 0, 0
    for feeds in batches:
        want = dict(zip(outputs, full.run(list(outputs), feeds), strict=True))
        got = dict(zip(outputs, small.run(list(outputs), feeds), strict=True))
        for name in outputs:
            if name == "top_ids":
                same_top1 += int(np.sum(want[name][:, 0] == got[name][:, 0]))
                rows += len(want[name])
            else:
                worst[name] = max(worst[name], float(np.max(np.abs(want[name] - got[name]), initial=0.0)))
    worst.pop("top_ids", None)
    result: dict[str, Any] = {"max_abs_diff": worst}
    if rows:
        result["top1_agreement"] = round(same_top1 / rows, 4)
    return result


def compact_manifest_entry(models: Path, name: str, batches: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Compact the ONNX graph of manifest entry ``name`` in place (an fp32 graph only), measure
    the effect against the fp32 graph on ``batches`` and record both in the manifest."""
    import json
    import os
    import tempfile

    from pathfusion.server.atomic import write_atomic
    from pathfusion.server.models import sha256_file

    manifest_path = models / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    entry = manifest["models"][name]
    if entry.get("storage", {}).get("weights") == "int8-rows":
        raise ValueError(f"{name}: already compact")
    relative = entry["onnx"]
    path = models / relative
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        sizes = compact(path, staged)
        effect = compact_effect(path, staged, batches, entry["outputs"])
        os.replace(staged, path)
    entry["files"][relative] = sha256_file(path)
    entry["storage"] = {"weights": "int8-rows", "bytes_fp32": sizes["bytes_before"],
                        "bytes": sizes["bytes_after"], "effect": effect}
    write_atomic(manifest_path, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"), mode=0o644)
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pathfusion.model_export.compact_onnx [--models DIR] code2vec``: compact a shipped
    fp32 code2vec graph in place (new exports are compacted by ``pathfusion export code2vec``)."""
    import argparse
    import json

    from .export_code2vec import PARITY_SHAPES, random_batch

    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.compact_onnx", description=main.__doc__)
    parser.add_argument("entry", choices=("code2vec",))
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    manifest = json.loads((args.models / "manifest.json").read_text(encoding="utf-8"))
    sizes = manifest["models"]["code2vec"]["vocab_sizes"]
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, batch, contexts, (sizes["tokens"], sizes["paths"], sizes["targets"]))
               for batch, contexts in [*PARITY_SHAPES, (256, 200)]]
    try:
        entry = compact_manifest_entry(args.models, args.entry, batches)
    except ValueError as exc:
        print(f"error: {exc}")
        return 1
    print(json.dumps(entry["storage"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
