"""The shipped int8 embedder graph turned back into a Hugging Face BERT folder.

Why: a remote GPU job carries at most 64 MiB including the repository, and the fp32
all-MiniLM-L6-v2 weights alone are 90 MB — they cannot travel, but the int8 graph in
``models/embedder`` travels anyway.  Dequantising its weights gives the model the server
actually runs (per-channel int8 matrices, uint8 embedding tables), as fp32 torch weights to
fine-tune from.  The weights differ from the fp32 original by at most half a quantisation
step; :func:`build` reports how close the rebuilt model's embeddings are to the graph's.

The graph comes from ``pathfusion export embedder`` (torch.onnx of transformers' BERT, then
``quantize_dynamic`` per channel): biases, LayerNorms and embedding tables keep their module
names (``model.…``); each linear layer is a ``MatMulInteger`` whose output is named after its
module (``/model/encoder/layer.0/attention/self/query/MatMul_output_0…``), with a weight
``[in, out]`` and one scale and zero point per output column.  A graph re-quantised by
:mod:`pathfusion.model_export.smooth_quant` multiplies each such weight's rows by ``s`` and
its input by ``1 / s`` (a ``Mul`` with a constant divisor before the quantiser): the rows are
divided back, so the BERT folder holds the model's own weights.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.embedder import tokenizer_json

_MATMUL_RE = re.compile(r"^/model/(?P<module>.+)/MatMul_output_0")
_SUFFIXES = ("_quantized", "_scale", "_zero_point")


class ConversionError(ValueError):
    """The graph is not a quantised BERT export this module understands."""


def folded_graph(onnx_path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The ONNX model at ``onnx_path`` and its initializers, constant dequantisation folded
    (:func:`fold_constant_dequantisation`)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return model, fold_constant_dequantisation(model, arrays)


def graph_constants(onnx_path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """:func:`folded_graph`, plus the names the exporter gives a constant through an
    ``Identity`` node when its contents equal another's (a fresh layer's equal biases)."""
    model, arrays = folded_graph(onnx_path)
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in arrays:
            arrays[node.output[0]] = arrays[node.input[0]]
    return model, arrays


def fold_constant_dequantisation(model: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Weights stored int8 per row (``int8_storage: rows``, ``model_export/compact_onnx.py``)
    back under their own names: every ``DequantizeLinear`` whose inputs are all initializers
    becomes the fp32 initializer it computes, and its int8/scale/zero inputs disappear."""
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not all(name in arrays for name in node.input):
            continue
        axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 1)
        q, scale = arrays[node.input[0]], arrays[node.input[1]]
        zero = arrays[node.input[2]] if len(node.input) > 2 else np.zeros_like(scale, dtype=np.int8)
        arrays[node.output[0]] = _dequantise(q, scale, zero, axis)
        for name in node.input:
            arrays.pop(name, None)
    return arrays


def _dequantise(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int | None) -> np.ndarray:
    q = q.astype(np.float32)
    zero = zero.astype(np.float32)
    if axis is None or scale.ndim == 0:
        return (q - zero) * scale
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zero.reshape(shape)) * scale.reshape(shape)


def smoothing_divisor(node: Any, producers: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """The constant ``1 / s`` that :mod:`~pathfusion.model_export.smooth_quant` put before the
    (quantised) input of the weighted ``node``, or ``None``."""
    from .smooth_quant import DIVISOR_SUFFIX

    producer = producers.get(node.input[0])
    if producer is not None and producer.op_type == "DynamicQuantizeLinear":
        producer = producers.get(producer.input[0])
    if producer is None or producer.op_type != "Mul":
        return None
    divisor = next((name for name in producer.input if name.endswith(DIVISOR_SUFFIX) and name in arrays), None)
    return None if divisor is None else arrays[divisor].astype(np.float32)


def state_dict(onnx_path: Path) -> dict[str, np.ndarray]:
    """transformers ``BertModel`` parameter names → fp32 arrays, from the int8 graph."""
    graph, arrays = graph_constants(onnx_path)  # shared initializers under their Identity names too
    producers = {output: node for node in graph.graph.node for output in node.output}
    state: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not name.startswith("model."):
            continue
        key = name[len("model."):]
        if name.endswith("_quantized"):
            base = name[: -len("_quantized")]
            state[key[: -len("_quantized")]] = _dequantise(value, arrays[f"{base}_scale"],
                                                           arrays[f"{base}_zero_point"], axis=0)
        elif not name.endswith(_SUFFIXES):
            state[key] = value.astype(np.float32)
    for node in graph.graph.node:
        if node.op_type not in ("MatMulInteger", "MatMul"):
            continue
        match = _MATMUL_RE.match(node.output[0])
        weight = node.input[1]
        if match is None or weight not in arrays:
            continue
        module = match.group("module").replace("/", ".")
        if node.op_type == "MatMulInteger":
            base = weight[: -len("_quantized")] if weight.endswith("_quantized") else weight
            scale = arrays.get(f"{base}_scale")
            if scale is None:
                raise ConversionError(f"{weight}: no scale next to the quantised weight")
            matrix = _dequantise(arrays[weight], scale, arrays[f"{base}_zero_point"], axis=1)
        else:
            matrix = arrays[weight].astype(np.float32)
        divisor = smoothing_divisor(node, producers, arrays)
        if divisor is not None:
            matrix = matrix * divisor[:, None]  # the graph's rows were multiplied by s = 1 / divisor
        state[f"{module}.weight"] = np.ascontiguousarray(matrix.T)  # torch Linear stores [out, in]
    if "embeddings.word_embeddings.weight" not in state or not any(".query.weight" in k for k in state):
        raise ConversionError(f"{onnx_path}: not a BERT embedder export (no embeddings or attention weights)")
    return state


def bert_config(state: dict[str, np.ndarray], template: dict[str, Any] | None = None) -> dict[str, Any]:
    """A BERT config matching the shapes of ``state`` (heads and the rest from ``template``
    or MiniLM-L6's values)."""
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    config = {"model_type": "bert", "architectures": ["BertModel"], "hidden_act": "gelu",
              "num_attention_heads": 12, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
              "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02, "pad_token_id": 0,
              **(template or {})}
    config |= {"vocab_size": int(vocab), "hidden_size": int(hidden), "num_hidden_layers": layers,
               "intermediate_size": int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
               "max_position_embeddings": int(state["embeddings.position_embeddings.weight"].shape[0]),
               "type_vocab_size": int(state["embeddings.token_type_embeddings.weight"].shape[0])}
    return config


def write_tokenizer_files(models: Path, folder: Path) -> None:
    """The shipped fast tokenizer as a Hugging Face tokenizer in ``folder``."""
    config_path = models / "embedder" / "embedder.json"
    embedder_config = json.loads(config_path.read_text(encoding="utf-8"))
    stored = config_path.parent / embedder_config.get("tokenizer", "tokenizer.json")
    # the exported bytes exactly: packed data is keyed by their sha256
    (folder / "tokenizer.json").write_bytes(tokenizer_json(stored))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizerFast", "do_lower_case": True,
        "model_max_length": int(embedder_config.get("max_length", 256)),
        "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
        "mask_token": "[MASK]"}, indent=1) + "\n")


def build(models: Path, out: Path, template: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a Hugging Face folder of the shipped embedder (``models/embedder``) to ``out``;
    returns what was measured: the largest |difference| between the rebuilt model's
    embeddings (torch, fp32 activations) and the int8 graph's on sample texts."""
    import torch
    from safetensors.torch import save_file

    from pathfusion.server.embedder import OnnxEmbedder

    from .export_embedder import SAMPLE_TEXTS, load_reference, reference_embeddings

    config_path = models / "embedder" / "embedder.json"
    embedder_config = json.loads(config_path.read_text(encoding="utf-8"))
    onnx_name = (embedder_config.get("files") or {}).get("int8")
    if not onnx_name:
        raise ConversionError(f"{config_path} lists no int8 graph")
    state = state_dict(config_path.parent / onnx_name)
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    template = {**(embedder_config.get("architecture") or {}), **(template or {})}
    (staging / "config.json").write_text(json.dumps(bert_config(state, template), indent=1) + "\n")
    save_file({k: torch.from_numpy(v.copy()) for k, v in state.items()}, str(staging / "model.safetensors"))
    write_tokenizer_files(models, staging)
    model, tokenizer = load_reference(staging)
    missing = set(model.state_dict()) - set(state) - {"pooler.dense.weight", "pooler.dense.bias"}
    if missing:
        raise ConversionError(f"the graph lacks weights for {sorted(missing)[:5]}")
    texts = [t for t in SAMPLE_TEXTS if len(t) > 3]
    rebuilt = reference_embeddings(model, tokenizer, texts)
    served = OnnxEmbedder.load(models, device="cpu", quantized=True, threads=1).embed(texts)
    cosine = np.sum(rebuilt * served, axis=1)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return {"tensors": len(state), "min_cosine_to_int8_graph": round(float(cosine.min()), 5),
            "mean_cosine_to_int8_graph": round(float(cosine.mean()), 5)}
