"""int8 *compute* for a fine-tuned embedder: activation outliers moved into the weights
(SmoothQuant, Xiao et al. 2023), then onnxruntime's dynamic per-channel int8.

Why: the shipped embedder stores its weights int8 per row but computes in fp32
(``int8_storage: rows``), half the speed of int8 kernels (``docs/performance.md``): indexing,
query embedding and the naming head's encoder all pay for it.  Dynamic int8 quantises each
matrix multiplication's input with one scale per run, so a few input channels far larger
than the rest (the fine-tuned encoder's LayerNorm outputs reach 14× their median) cost the
other channels their precision.  Dividing each input channel ``j`` by

    s_j = max|X_j|^α / max|W_j,:|^(1-α)

and multiplying row ``j`` of the weight by ``s_j`` leaves the product exactly as it was
(``X W = (X / s)(s W)``) and spreads the range between the two sides.  ``X / s`` is a ``Mul``
node inserted before the matrices that read ``X`` (in a post-LayerNorm BERT the LayerNorm's
output is also the residual stream, so the division cannot be folded into its weights).
``max|X_j|`` is calibrated on training texts only.

``python -m pathfusion.model_export.smooth_quant --models models --out DIR`` re-quantises the
embedder of a models folder into a copy of it: the graph is folded to fp32 (int8-stored rows
dequantised once), smoothed (parity with the folded graph is checked ≤ 1e-4), quantised
(``MatMul`` and the embedding ``Gather``, per-channel int8 weights), and written as
``int8_storage: dynamic`` under a new id; a naming head in the folder is re-pointed at it (its
quality over the new graph is measured with ``pathfusion eval naming``, not assumed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.models import load_manifest, model_entry, model_file, sha256_file

from .export_embedder import ENTRY_NAME, QUALITY_TEXTS, ExportError

ALPHA = 0.8
"""Migration strength, chosen on validation texts (cosine to the fp32 graph: 0.5 → 0.989,
0.7 → 0.9979, 0.8 → 0.9979, 0.9 → 0.9975, none → 0.9946; ``docs/results.md``)."""
CALIBRATION_TEXTS = 400
DIVISOR_SUFFIX = "_smooth_divisor"
"""Names of the inserted divisors; not ``…_scale``, which the quantiser gives its own tensors."""


def fold_to_fp32(graph: Path, out: Path) -> None:
    """``graph`` with every constant ``DequantizeLinear`` replaced by the fp32 initializer it
    computes (what the runtime computes from an ``int8_storage: rows`` graph).  Nothing else
    changes: every initializer and node keeps its name, which the rebuild of a training base
    (:mod:`~pathfusion.model_export.onnx_to_hf`) finds the weights by."""
    import onnx
    from onnx import numpy_helper

    from .onnx_to_hf import folded_graph

    model, folded = folded_graph(graph)
    # A node whose output is now an initializer is one the fold replaced.
    kept = [node for node in model.graph.node if not any(name in folded for name in node.output)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {name for node in kept for name in node.input} | {output.name for output in model.graph.output}
    initializers = [numpy_helper.from_array(np.asarray(value), name) for name, value in folded.items() if name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(initializers)
    onnx.save(model, str(out))


def weight_inputs(model: Any) -> dict[str, list[Any]]:
    """Activation name → the ``MatMul`` nodes that multiply it by a constant weight."""
    constants = {init.name for init in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in constants:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def calibrate(model: Any, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``max |x_j|`` over every token of ``feeds`` for each input channel of each weighted
    ``MatMul`` (the graph is run with those activations as extra outputs)."""
    import onnx
    import onnxruntime as ort

    from pathfusion.server.onnx_session import session_options

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = sorted(weight_inputs(model))
    present = {output.name for output in probe.graph.output}
    for name in names:
        if name not in present:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), session_options(None),
                                   providers=["CPUExecutionProvider"])
    peaks: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            peaks[name] = peak if name not in peaks else np.maximum(peaks[name], peak)
    return peaks


def smooth(model: Any, peaks: dict[str, np.ndarray], alpha: float = ALPHA) -> int:
    """Move activation range into the weights, in place (module docstring); returns how many
    activations were smoothed.  The product of every weighted ``MatMul`` is unchanged."""
    import onnx
    from onnx import numpy_helper

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], not {alpha}")
    initializers = {init.name: init for init in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    inserted: list[tuple[Any, Any]] = []
    for activation, nodes in weight_inputs(model).items():
        if activation not in peaks or any(readers[n.input[1]] != 1 for n in nodes):
            continue  # a weight shared with another node cannot be rescaled for this one alone
        weights = [numpy_helper.to_array(initializers[n.input[1]]) for n in nodes]
        if any(w.ndim != 2 or w.shape[0] != peaks[activation].shape[0] for w in weights):
            continue
        weight_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scale = np.clip(np.maximum(peaks[activation], 1e-5) ** alpha / np.maximum(weight_peak, 1e-5) ** (1 - alpha),
                        1e-2, 1e2).astype(np.float32)
        for node, weight in zip(nodes, weights, strict=True):
            initializers[node.input[1]].CopyFrom(
                numpy_helper.from_array((weight * scale[:, None]).astype(np.float32), node.input[1]))
        divided = activation + "_smoothed"
        model.graph.initializer.append(numpy_helper.from_array(1.0 / scale, divided + DIVISOR_SUFFIX))
        inserted.append((nodes[0], onnx.helper.make_node("Mul", [activation, divided + DIVISOR_SUFFIX], [divided],
                                                         name=divided + "_Mul")))
        for node in nodes:
            node.input[0] = divided
    for first_reader, node in inserted:  # just before its first reader: the graph stays sorted
        position = list(model.graph.node).index(first_reader)
        model.graph.node.insert(position, node)
    return len(inserted)


def quantize(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8: per-channel int8 weights of every ``MatMul`` and the embedding tables."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # the quantiser logs every tensor it skips on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), op_types_to_quantize=["MatMul", "Gather"],
                         per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def calibration_texts(corpus_split: Path, count: int = CALIBRATION_TEXTS) -> list[str]:
    """Texts the embedder meets, from a corpus split (``train.jsonl.gz``: never the split that
    scores it): code without its docstring, the docstring's summary, and the masked code the
    naming head reads, in equal shares."""
    texts: list[str] = []
    with gzip.open(corpus_split, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            for key in ("code_without_docstring", "docstring_summary", "masked_code"):
                if record.get(key) and (key == "masked_code" or record.get("search")):
                    texts.append(str(record[key]))
            if len(texts) >= count:
                break
    if not texts:
        raise ExportError(f"{corpus_split}: no texts to calibrate on")
    return texts[:count]


def _feeds(tokenizer: Any, inputs: Sequence[str], texts: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    for text in texts:  # one text per run, as the CPU embedder runs (no padding in the ranges)
        ids = np.asarray([tokenizer.encode(text).ids], dtype=np.int64)
        arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        yield {name: arrays[name] for name in inputs}


def _outputs(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    from pathfusion.server.onnx_session import session_options

    session = ort.InferenceSession(str(path), session_options(None, fold_weights=False),
                                   providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def requantize(models: Path, out: Path, calibration: Sequence[str], *, alpha: float = ALPHA,
               model_id: str | None = None) -> dict[str, Any]:
    """A copy of ``models`` at ``out`` whose embedder computes in int8 (module docstring);
    returns the embedder's new manifest entry."""
    import onnx

    from pathfusion.server.embedder import OnnxEmbedder

    manifest = load_manifest(models, verify=True, models=(ENTRY_NAME,))
    entry = model_entry(manifest, ENTRY_NAME, models)
    config_path = model_file(models, str(entry["config"]))
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("int8_storage", "dynamic") == "dynamic" and not config["files"].get("fp32"):
        raise ExportError(f"{config_path}: this embedder already computes in int8 (int8_storage: dynamic) "
                          "and has no fp32 graph to start from")
    source_name = config["files"]["fp32"] or config["files"]["int8"]
    source = config_path.parent / source_name
    embedder = OnnxEmbedder.load(models, quantized=source_name == config["files"]["int8"], threads=None)
    inputs = list(entry["inputs"])
    folder = Path(str(entry["config"])).parent
    if out.exists():
        raise ExportError(f"{out} exists; choose a new folder (nothing is overwritten)")
    with tempfile.TemporaryDirectory() as scratch:
        folded, smoothed, quantised = (Path(scratch) / name for name in ("folded.onnx", "smoothed.onnx", "int8.onnx"))
        fold_to_fp32(source, folded)
        model = onnx.load(str(folded))
        peaks = calibrate(model, list(_feeds(embedder.tokenizer, inputs, calibration)))
        count = smooth(model, peaks, alpha)
        onnx.save(model, str(smoothed))
        checks = list(_feeds(embedder.tokenizer, inputs, QUALITY_TEXTS))
        reference = _outputs(folded, checks)
        parity = max(float(np.abs(a - b).max()) for ref, new in zip(reference, _outputs(smoothed, checks), strict=True)
                     for a, b in zip(ref, new, strict=True))
        if parity > 1e-4:
            raise ExportError(f"smoothing changed the graph's outputs by {parity:.2g} (> 1e-4); not written")
        quantize(smoothed, quantised)
        quantised_out = _outputs(quantised, checks)
        embedding = np.array([_cosine(ref[0][0], new[0][0]) for ref, new in zip(reference, quantised_out, strict=True)])
        states = np.array([float(_cosine(ref[1][0], new[1][0]).mean())
                           for ref, new in zip(reference, quantised_out, strict=True)]) if len(reference[0]) > 1 else None
        shutil.copytree(models, out)
        target_name = "embedder.int8.onnx"
        fp32_name = config["files"].get("fp32")
        if fp32_name:
            (out / folder / fp32_name).unlink()
        shutil.copyfile(quantised, out / folder / target_name)
    new_id = model_id or f"{entry['id']}-sq"
    config.update({"id": new_id, "int8_storage": "dynamic", "default": "int8",
                   "smoothing": {"alpha": alpha, "activations": count, "calibration_texts": len(calibration),
                                 "from": entry["id"]}})
    config["files"] = {"fp32": None, "int8": target_name}
    new_config = out / str(entry["config"])
    new_config.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    graph = (folder / target_name).as_posix()
    files = [graph, str(entry["tokenizer"]), str(entry["config"])]
    metrics = {"smoothing_parity": {"max_abs_diff": parity, "tolerance": 1e-4, "texts": len(checks)},
               "int8_cosine": {"mean": round(float(embedding.mean()), 6), "min": round(float(embedding.min()), 6),
                               "texts": len(checks),
                               "token_states_mean": None if states is None else round(float(states.mean()), 6)}}
    new_entry = dict(entry, id=new_id, onnx=graph, onnx_fp32=None, onnx_int8=graph, int8_storage="dynamic",
                     files={name: sha256_file(out / name) for name in files},
                     sizes={name: (out / name).stat().st_size for name in files},
                     metrics={**entry.get("metrics", {}), **metrics}, smoothing=config["smoothing"])
    _rewrite_manifest(out, new_entry)
    return new_entry


def _rewrite_manifest(models: Path, entry: dict[str, Any]) -> None:
    """The embedder's entry replaced; a naming head re-pointed at the new embedder id."""
    from .export_embedder import write_manifest_entry

    manifest = write_manifest_entry(models, entry)
    naming = manifest.get("models", {}).get("naming")
    if isinstance(naming, dict):
        write_manifest_entry(models, {**naming, "embedder_id": entry["id"]}, name="naming")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.smooth_quant",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, required=True, help="a new folder: the copy with the int8 embedder")
    parser.add_argument("--calibration", type=Path, default=Path("data/corpus/train.jsonl.gz"),
                        help="corpus split whose texts set the activation ranges (default: the train split)")
    parser.add_argument("--texts", type=int, default=CALIBRATION_TEXTS)
    parser.add_argument("--alpha", type=float, default=ALPHA)
    parser.add_argument("--id", default=None, help="the new embedder id (default: the old one + '-sq')")
    args = parser.parse_args(argv)
    try:
        entry = requantize(args.models, args.out, calibration_texts(args.calibration, args.texts),
                           alpha=args.alpha, model_id=args.id)
    except (ExportError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"id": entry["id"], "metrics": entry["metrics"], "sizes": entry["sizes"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
