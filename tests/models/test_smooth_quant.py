"""int8 compute for a fine-tuned embedder (``model_export/smooth_quant.py``): smoothing keeps
every product, buys int8 precision where an input channel dwarfs the others, and the command
writes a models folder the server loads, the naming head re-pointed at the new embedder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pathfusion.model_export import smooth_quant  # noqa: E402
from pathfusion.model_export.export_embedder import ExportError  # noqa: E402

WIDTH = 64


def _outlier_graph(path: Path) -> None:
    """LayerNorm → two weighted MatMuls and a residual Add, with three LayerNorm channels 40×
    the others: the shape of a fine-tuned BERT layer's input that per-run int8 rounds badly."""
    rng = np.random.default_rng(0)
    gamma = np.ones(WIDTH, dtype=np.float32)
    gamma[[3, 17, 40]] = 40.0
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["normed"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["normed", "w1"], ["a"]),
        helper.make_node("MatMul", ["normed", "w2"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "normed"], ["y"]),  # the residual reads the LayerNorm too
    ]
    initializers = [
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(np.zeros(WIDTH, dtype=np.float32), "beta"),
        numpy_helper.from_array((rng.standard_normal((WIDTH, WIDTH)) * 0.1).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal((WIDTH, WIDTH)) * 0.1).astype(np.float32), "w2"),
    ]
    graph = helper.make_graph(nodes, "outliers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, WIDTH])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_smoothing_keeps_the_products_and_buys_int8_precision(tmp_path: Path) -> None:
    plain, smoothed = tmp_path / "plain.onnx", tmp_path / "smoothed.onnx"
    _outlier_graph(plain)
    rng = np.random.default_rng(1)
    calibration = [{"x": rng.standard_normal((20, WIDTH)).astype(np.float32)} for _ in range(8)]
    model = onnx.load(str(plain))
    peaks = smooth_quant.calibrate(model, calibration)
    assert set(peaks) == {"normed"} and peaks["normed"][3] > 10 * np.median(peaks["normed"])
    assert smooth_quant.smooth(model, peaks, 0.8) == 1
    onnx.save(model, str(smoothed))
    x = rng.standard_normal((50, WIDTH)).astype(np.float32)  # not the calibration inputs
    reference = _run(plain, x)
    assert np.abs(_run(smoothed, x) - reference).max() < 1e-4  # the same function
    errors = {}
    for name, source in (("plain", plain), ("smoothed", smoothed)):
        smooth_quant.quantize(source, tmp_path / f"{name}.int8.onnx")
        errors[name] = float(np.abs(_run(tmp_path / f"{name}.int8.onnx", x) - reference).mean())
    assert errors["smoothed"] < 0.5 * errors["plain"], errors


def test_smoothing_leaves_shared_weights_alone(tmp_path: Path) -> None:
    path = tmp_path / "shared.onnx"
    _outlier_graph(path)
    model = onnx.load(str(path))
    model.graph.node[2].input[1] = "w1"  # both MatMuls read w1, and each another activation…
    model.graph.node.insert(2, helper.make_node("Relu", ["normed"], ["other"]))
    model.graph.node[3].input[0] = "other"  # …so neither may rescale it for itself
    peaks = {"normed": np.full(WIDTH, 5.0, dtype=np.float32), "other": np.full(WIDTH, 5.0, dtype=np.float32)}
    assert smooth_quant.smooth(model, peaks) == 0
    with pytest.raises(ValueError, match="alpha"):
        smooth_quant.smooth(model, peaks, 1.5)


def test_calibration_texts_come_in_equal_shares(tmp_path: Path) -> None:
    split = tmp_path / "train.jsonl.gz"
    records = [{"code_without_docstring": f"def f{i}(x):\n    return x", "docstring_summary": f"Return x {i}.",
                "masked_code": "def METHOD_NAME(x):\n    return x", "search": i % 2 == 0} for i in range(10)]
    split.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    texts = smooth_quant.calibration_texts(split, 7)
    assert len(texts) == 7
    assert texts[:4] == ["def f0(x):\n    return x", "Return x 0.", "def METHOD_NAME(x):\n    return x",
                         "def METHOD_NAME(x):\n    return x"]  # record 1 has no docstring pair
    empty = tmp_path / "empty.jsonl.gz"
    empty.write_bytes(gzip.compress(b""))
    with pytest.raises(ExportError, match="no texts"):
        smooth_quant.calibration_texts(empty)


def test_requantize_writes_a_folder_the_server_loads(naming_models: Path, tmp_path: Path) -> None:
    from pathfusion.server.embedder import OnnxEmbedder
    from pathfusion.server.models import load_manifest
    from pathfusion.server.name_generator import NameGenerator
    from tests.helpers.models import file_stamps

    before = file_stamps(naming_models)
    texts = ["def load(path):\n    return json.load(open(path))", "Read the settings file.",
             "def METHOD_NAME(self, items):\n    return sorted(items)"] * 10
    out = tmp_path / "models"
    entry = smooth_quant.requantize(naming_models, out, texts, model_id="tiny-sq")
    assert file_stamps(naming_models) == before  # the source folder is only read
    assert entry["id"] == "tiny-sq" and entry["int8_storage"] == "dynamic"
    assert entry["metrics"]["smoothing_parity"]["max_abs_diff"] <= 1e-4
    assert entry["smoothing"]["activations"] > 0
    assert entry["metrics"]["int8_cosine"]["mean"] > 0.98
    manifest = load_manifest(out, verify=True)  # every file's hash matches
    assert manifest["models"]["naming"]["embedder_id"] == "tiny-sq"
    new = OnnxEmbedder.load(out)
    old = OnnxEmbedder.load(naming_models)
    assert new.model_id == "tiny-sq" and new.one_per_run
    probe = ["def save(path, data):\n    json.dump(data, open(path, 'w'))", "sort users by name"]
    assert np.all(np.sum(new.embed(probe) * old.embed(probe), axis=1) > 0.98)
    generator = NameGenerator.load(out, new)  # the head accepts the new embedder…
    assert generator.names("def METHOD_NAME(path):\n    return open(path).read()", 3)
    with pytest.raises(Exception, match="reads the embedder"):
        NameGenerator.load(out, old)  # …and no longer the old one
    with pytest.raises(ExportError, match="exists"):
        smooth_quant.requantize(naming_models, out, texts)
    with pytest.raises(ExportError, match="already computes in int8"):
        smooth_quant.requantize(out, tmp_path / "again", texts)
