"""Compact storage of an ONNX graph's large weight matrices: int8 with one scale per row,
dequantised inside the graph (``DequantizeLinear``, axis 0).

Why: ``models/`` must stay ≤ 100 MB (design §6) while every variant ships its naming head
(width × 10k names) and a query encoder with its own word embeddings.  Unlike dynamic
quantisation (which also quantises activations, per batch, and made the int8 MiniLM's
vectors depend on the batch), this stores only the *weights* in int8: the computation stays
fp32, every output is independent of the batch, and the graph is 4× smaller.  The cost is a
weight rounding error of at most half a step (``max|row| / 254``) per entry; its effect on
the task metrics is measured by the export (``docs/results.md``).
"""

from __future__ import annotations

from pathlib import Path

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
