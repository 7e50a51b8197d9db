"""ONNX export of code2vec: parity with torch, files, manifest (docs/design.md §6)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from pathfusion.model_export.c2v_data import Vocabs  # noqa: E402
from pathfusion.model_export.code2vec import Code2Vec, Code2VecConfig, Code2VecExport  # noqa: E402
from pathfusion.model_export.export_code2vec import (  # noqa: E402
    CORPUS_MANIFEST,
    ExportError,
    export,
    main,
    parity_check,
    random_batch,
)
from pathfusion.server.code2vec import read_vocab_text  # noqa: E402
from pathfusion.server.paths import EXTRACTOR_VERSION  # noqa: E402
from tests.helpers.models import TinyCode2Vec, make_run  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def exported(code2vec_export: TinyCode2Vec) -> tuple[Path, Path, dict]:
    """The run, the models folder and the manifest of ``export(run, out, top_k=10)`` (shared:
    read only)."""
    return code2vec_export.run, code2vec_export.models, code2vec_export.manifest


def test_files_and_manifest(exported: tuple[Path, Path, dict]) -> None:
    run, out, manifest = exported
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["format"] == 1
    assert manifest["extractor_version"] == EXTRACTOR_VERSION
    assert manifest["corpus_manifest_sha256"] == sha256(CORPUS_MANIFEST)
    entry = manifest["models"]["code2vec"]
    names = {"code2vec/code2vec.onnx", "code2vec/tokens.json", "code2vec/paths.json.gz", "code2vec/targets.json"}
    assert set(entry["files"]) == names
    for name, digest in entry["files"].items():
        assert sha256(out / name) == digest
    for kind in ("tokens", "paths", "targets"):
        shipped = out / entry["vocab"][kind]
        assert read_vocab_text(shipped) == (run / "vocab" / f"{kind}.json").read_text()
        assert entry["vocab_sizes"][kind] == len(json.loads((run / "vocab" / f"{kind}.json").read_text()))
    assert entry["dims"] == {"code": 384, "embed": 128}
    assert entry["top_k"] == 10
    assert entry["metrics"] == {"f1": 0.25, "precision": 0.3, "recall": 0.2}
    assert entry["config"]["target_vocab"] == entry["vocab_sizes"]["targets"]
    assert entry["parity"]["max_abs_diff"] <= 1e-4
    storage = entry["storage"]
    assert storage["weights"] == "int8-rows" and storage["bytes"] < storage["bytes_fp32"]
    assert storage["bytes"] == (out / "code2vec" / "code2vec.onnx").stat().st_size
    assert 0 < storage["effect"]["max_abs_diff"]["code_vector"] <= COMPACT_TOLERANCE
    assert storage["effect"]["top1_agreement"] > 0.9
    assert not [p for p in (out / "code2vec").iterdir() if p.name.startswith(".")]  # no staging left


def test_graph_signature_dynamic_and_float32(exported: tuple[Path, Path, dict]) -> None:
    import onnx

    _, out, _ = exported
    graph = onnx.load(str(out / "code2vec" / "code2vec.onnx")).graph
    assert onnx.load(str(out / "code2vec" / "code2vec.onnx")).opset_import[0].version == 17
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert list(inputs) == ["starts", "paths", "ends", "mask"]
    for name, tensor in inputs.items():
        assert tensor.elem_type == (onnx.TensorProto.FLOAT if name == "mask" else onnx.TensorProto.INT64)
        assert [d.dim_param for d in tensor.shape.dim] == ["batch", "contexts"]
    assert [o.name for o in graph.output] == ["code_vector", "attention", "top_ids", "top_probs"]
    assert all(t.data_type != onnx.TensorProto.DOUBLE for t in graph.initializer)


COMPACT_TOLERANCE = 5e-3


@pytest.mark.parametrize("batch,contexts", [(1, 1), (3, 9), (7, 200), (33, 64)])
def test_parity_with_torch(exported: tuple[Path, Path, dict], batch: int, contexts: int) -> None:
    run, out, _ = exported
    vocabs = Vocabs.load(run / "vocab")
    config = Code2VecConfig(**json.loads((run / "config.json").read_text()))
    model = Code2Vec(len(vocabs.tokens), len(vocabs.paths), len(vocabs.targets), config)
    model.load_state_dict(torch.load(run / "best.pt", weights_only=True))
    wrapper = Code2VecExport(model.eval(), 10).eval()
    session = ort.InferenceSession(str(out / "code2vec" / "code2vec.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(batch * 1000 + contexts)
    feeds = random_batch(rng, batch, contexts, (len(vocabs.tokens), len(vocabs.paths), len(vocabs.targets)))
    code, attention, top_ids, top_probs = session.run(None, feeds)
    with torch.no_grad():
        t_code, t_attention, _, t_probs = wrapper(*(torch.from_numpy(feeds[n]) for n in
                                                        ("starts", "paths", "ends", "mask")))
    assert code.shape == (batch, 384) and attention.shape == (batch, contexts)
    assert top_ids.shape == top_probs.shape == (batch, 10)
    for got, want in ((code, t_code), (attention, t_attention), (top_probs, t_probs)):
        assert np.all(np.isfinite(got))
        # The shipped graph stores its large matrices as int8 rows (compact_onnx): each
        # weight is off by at most half a step; the fp32 graph's own parity (≤ 1e-4) is
        # enforced by the export and recorded in the manifest.
        assert np.max(np.abs(got - want.numpy())) <= COMPACT_TOLERANCE
    # Padding gets no attention; every real row's attention sums to 1.
    mask = feeds["mask"]
    assert np.all(attention[mask == 0] == 0)
    real = mask.any(axis=1)
    np.testing.assert_allclose(attention[real].sum(axis=1), 1.0, atol=1e-5)
    if batch >= 2:  # random_batch leaves the last row empty: zero vector, no NaN
        assert not real[-1] and np.all(code[-1] == 0)


def test_padding_does_not_change_outputs(exported: tuple[Path, Path, dict]) -> None:
    _, out, _ = exported
    session = ort.InferenceSession(str(out / "code2vec" / "code2vec.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[5, 9, 2, 7]], dtype=np.int64)
    short = {"starts": ids, "paths": ids + 1, "ends": ids + 2, "mask": np.ones((1, 4), np.float32)}
    padded = {k: np.concatenate([v, np.zeros((1, 6), v.dtype)], axis=1) for k, v in short.items()}
    a, b = session.run(None, short), session.run(None, padded)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    np.testing.assert_allclose(a[3], b[3], atol=1e-6)


def test_parity_check_detects_a_different_graph(tmp_path: Path, exported: tuple[Path, Path, dict]) -> None:
    _, out, _ = exported
    other = make_run(tmp_path / "other", seed=1)
    vocabs = Vocabs.load(other / "vocab")
    config = Code2VecConfig(**json.loads((other / "config.json").read_text()))
    model = Code2Vec(len(vocabs.tokens), len(vocabs.paths), len(vocabs.targets), config)
    model.load_state_dict(torch.load(other / "best.pt", weights_only=True))
    with pytest.raises(ExportError, match="parity failed"):
        parity_check(Code2VecExport(model.eval(), 10), out / "code2vec" / "code2vec.onnx", shapes=[(2, 5)])


def test_manifest_merge_keeps_other_models(tmp_path: Path) -> None:
    out = tmp_path / "models"
    out.mkdir()
    (out / "fusion.onnx").write_bytes(b"x")
    (out / "manifest.json").write_text(json.dumps({
        "format": 1, "extractor_version": EXTRACTOR_VERSION,
        "models": {"fusion": {"files": {"fusion.onnx": sha256(out / "fusion.onnx")}},
                   "code2vec": {"files": {}, "stale": True}}}))
    manifest = export(make_run(tmp_path / "run", final=False), out, top_k=500)
    assert set(manifest["models"]) == {"code2vec", "fusion"}
    assert manifest["models"]["fusion"]["files"] == {"fusion.onnx": sha256(out / "fusion.onnx")}
    entry = manifest["models"]["code2vec"]
    assert "stale" not in entry and entry["metrics"] is None
    assert entry["top_k"] == entry["vocab_sizes"]["targets"]  # capped by the vocabulary


def test_manifest_of_another_extractor_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "models"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({
        "format": 1, "extractor_version": "pf-paths-0", "models": {"fusion": {"files": {"f": "0"}}}}))
    manifest = export(make_run(tmp_path / "run"), out)
    assert manifest["extractor_version"] == EXTRACTOR_VERSION
    assert set(manifest["models"]) == {"code2vec"}


def test_main_reports_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--run", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pathfusion.server.cli import main as cli_main

    run = make_run(tmp_path / "run")
    assert cli_main(["export", "code2vec", "--run", str(run), "--out", str(tmp_path / "m")]) == 0
    assert "exported" in capsys.readouterr().out
    assert (tmp_path / "m" / "code2vec" / "code2vec.onnx").is_file()
