"""code2vec at run time: manifest verification, prediction, suggestions, ``pathfusion suggest``."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")  # only to build the tiny model; the runtime itself has no torch

from pathfusion.server.cli import main
from pathfusion.server.code2vec import Code2VecModel, Suggestion, suggest_for_document
from pathfusion.server.models import ModelError, default_models_dir, load_manifest, providers
from pathfusion.server.parsing import Document
from pathfusion.server.paths import EXTRACTOR_VERSION, Context, context_space
from tests.helpers.models import SAMPLE


@pytest.fixture(scope="module")
def models_dir(code2vec_models: Path) -> Path:
    """The tiny code2vec models folder (shared: read only, :func:`copy_models` to change it)."""
    return code2vec_models


@pytest.fixture(scope="module")
def model(models_dir: Path) -> Code2VecModel:
    return Code2VecModel.load(models_dir, device="cpu")


def copy_models(models_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models"
    shutil.copytree(models_dir, target)
    return target


def sample_contexts() -> list[list[Context]]:
    doc = Document(SAMPLE)
    return [context_space(f.node, doc.source, f.name).sample(200) for f in doc.functions()]


# -- manifest -------------------------------------------------------------------------------
def test_manifest_loads(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    assert manifest["extractor_version"] == EXTRACTOR_VERSION
    assert "code2vec" in manifest["models"]


def test_wrong_extractor_version_is_refused(models_dir: Path, tmp_path: Path) -> None:
    folder = copy_models(models_dir, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["extractor_version"] = "pf-paths-0"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=rf"'pf-paths-0'.*'{EXTRACTOR_VERSION}'.*re-export"):
        load_manifest(folder)
    with pytest.raises(ModelError, match="upgrade pathfusion"):
        Code2VecModel.load(folder)


def test_tampered_file_is_refused(models_dir: Path, tmp_path: Path) -> None:
    folder = copy_models(models_dir, tmp_path)
    targets = folder / "code2vec" / "targets.json"
    targets.write_text(targets.read_text().replace("load|config", "load|konfig"))
    with pytest.raises(ModelError, match=r"targets\.json does not match .*manifest\.json: sha256"):
        load_manifest(folder)


def test_file_rewritten_after_a_successful_check_is_refused(models_dir: Path, tmp_path: Path) -> None:
    """Hashes are remembered per process with size and mtime: a file changed since is hashed
    again (same size, new content, new mtime — what a re-export or a bad copy does)."""
    import os

    folder = copy_models(models_dir, tmp_path)
    load_manifest(folder)
    Code2VecModel.load(folder)
    targets = folder / "code2vec" / "targets.json"
    before = targets.stat()
    text = targets.read_text()
    tampered = text.replace("load|config", "load|konfig")
    assert tampered != text and len(tampered) == len(text)
    targets.write_text(tampered)
    os.utime(targets, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    with pytest.raises(ModelError, match=r"targets\.json does not match"):
        load_manifest(folder)
    with pytest.raises(ModelError, match=r"targets\.json does not match"):
        Code2VecModel.load(folder)


def test_verified_files_are_trusted_across_processes_until_they_change(
        models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user cache's record spares a new process the hashing of unchanged files, and
    never vouches for a file changed since it was hashed — even with its size and mtime
    put back, since the change time and inode cannot be."""
    import os

    from pathfusion.server import models as models_module

    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(tmp_path / "cache"))
    folder = copy_models(models_dir, tmp_path)
    load_manifest(folder)  # hashes every file and records them
    record = json.loads((tmp_path / "cache" / models_module.RECORD_NAME).read_text())
    targets = folder / "code2vec" / "targets.json"
    assert os.path.realpath(targets) in record

    hashed: list[str] = []
    real_sha256 = models_module.sha256_file
    monkeypatch.setattr(models_module, "sha256_file", lambda path: hashed.append(str(path)) or real_sha256(path))
    monkeypatch.setattr(models_module, "_HASHES", {})  # a new process
    load_manifest(folder)
    assert hashed == []  # trusted from the record

    before = targets.stat()
    text = targets.read_text()
    targets.write_text(text.replace("load|config", "load|konfig"))
    os.utime(targets, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as before
    assert targets.stat().st_size == before.st_size
    monkeypatch.setattr(models_module, "_HASHES", {})
    with pytest.raises(ModelError, match=r"targets\.json does not match"):
        load_manifest(folder)
    assert hashed == [str(targets)]

    (tmp_path / "cache" / models_module.RECORD_NAME).write_text("{not json")
    targets.write_text(text)
    monkeypatch.setattr(models_module, "_HASHES", {})
    load_manifest(folder)  # an unreadable record is rewritten, not fatal
    assert json.loads((tmp_path / "cache" / models_module.RECORD_NAME).read_text())


def test_a_loader_verifies_only_its_own_model(models_dir: Path, tmp_path: Path) -> None:
    folder = copy_models(models_dir, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    other = folder / "other.bin"
    other.write_bytes(b"not what the manifest says")
    manifest["models"]["other"] = {"files": {"other.bin": "0" * 64}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert Code2VecModel.load(folder) is not None  # other's file exists; its hash is not code2vec's business
    with pytest.raises(ModelError, match=r"other\.bin does not match"):
        load_manifest(folder)
    other.unlink()
    with pytest.raises(ModelError, match=r"other\.bin is missing"):
        Code2VecModel.load(folder)


def test_missing_file_and_folder_are_refused(models_dir: Path, tmp_path: Path) -> None:
    folder = copy_models(models_dir, tmp_path)
    (folder / "code2vec" / "code2vec.onnx").unlink()
    with pytest.raises(ModelError, match=r"code2vec\.onnx is missing"):
        load_manifest(folder)
    with pytest.raises(ModelError, match=r"models folder .* not found"):
        load_manifest(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"manifest\.json not found"):
        load_manifest(tmp_path / "empty")


def test_bad_manifest_json_and_escaping_paths(models_dir: Path, tmp_path: Path) -> None:
    folder = copy_models(models_dir, tmp_path)
    (folder / "manifest.json").write_text("{half")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_manifest(folder)
    (folder / "manifest.json").write_text(json.dumps({
        "format": 1, "extractor_version": EXTRACTOR_VERSION,
        "models": {"x": {"files": {"../outside": "0"}}}}))
    with pytest.raises(ModelError, match="not a path inside the models folder"):
        load_manifest(folder)


def test_default_models_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PATHFUSION_MODELS", raising=False)
    assert default_models_dir() == Path(__file__).resolve().parents[2] / "models"
    monkeypatch.setenv("PATHFUSION_MODELS", str(tmp_path))
    assert default_models_dir() == tmp_path


def test_providers(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    assert providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert providers("auto") == ["CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING):
        assert providers("cuda") == ["CPUExecutionProvider"]
    assert "cuda" in caplog.text.lower()
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers("auto")[0] == providers("cuda")[0] == "CUDAExecutionProvider"
    with pytest.raises(ModelError, match="unknown device"):
        providers("tpu")


# -- inference ------------------------------------------------------------------------------
def test_encode_pads_and_maps_unknown(model: Code2VecModel) -> None:
    known = sample_contexts()[0][0]
    feeds = model.encode([[known, Context("zz-unknown", "zz-path", known.end)], [], ["a,b,c"]])
    assert feeds["starts"].shape == feeds["mask"].shape == (3, 2)
    assert feeds["starts"].dtype == np.int64 and feeds["mask"].dtype == np.float32
    assert feeds["mask"].tolist() == [[1, 1], [0, 0], [1, 0]]
    assert feeds["starts"][0, 0] == model.tokens[known.start] > 1
    assert feeds["starts"][0, 1] == 1 and feeds["paths"][0, 1] == 1
    assert feeds["starts"][2, 0] == 1 and feeds["starts"][1].tolist() == [0, 0]
    assert model.encode([[known] * 500])["mask"].shape == (1, 200)


def test_predict_sorted_probabilities(model: Code2VecModel) -> None:
    functions = sample_contexts()
    for k in (1, 5, 8):
        predictions = model.predict(functions, top_k=k)
        assert len(predictions) == len(functions)
        for names in predictions:
            assert 1 <= len(names) <= k
            probs = [p for _, p in names]
            assert probs == sorted(probs, reverse=True)
            assert all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
            assert not {label for label, _ in names} & {"<PAD>", "<UNK>"}
    assert model.predict(functions, top_k=50)[0] and len(model.predict(functions, top_k=50)[0]) <= 10


def test_predict_is_deterministic_and_batch_independent(model: Code2VecModel) -> None:
    functions = sample_contexts()
    alone = [model.predict([f])[0] for f in functions]
    many = model.predict(functions * 30)  # 150 functions: three batches
    assert many[: len(functions)] == alone
    assert many[-len(functions):] == alone
    vectors = model.code_vectors(functions * 30)
    assert vectors.shape == (len(functions) * 30, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[: len(functions)], model.code_vectors(functions), atol=1e-6)


def test_all_padding_rows(model: Code2VecModel) -> None:
    functions = sample_contexts()
    predictions = model.predict([[], functions[0], []])
    assert predictions[0] == [] and predictions[2] == [] and predictions[1]
    vectors = model.code_vectors([[], functions[0]])
    assert np.all(vectors[0] == 0) and np.all(np.isfinite(vectors)) and np.any(vectors[1] != 0)
    assert model.predict([]) == [] and model.code_vectors([]).shape == (0, 384)
    # The graph itself gives finite outputs for an all-padding batch.
    zeros = np.zeros((2, 3), np.int64)
    outputs = model.session.run(None, {"starts": zeros, "paths": zeros, "ends": zeros,
                                       "mask": np.zeros((2, 3), np.float32)})
    assert all(np.all(np.isfinite(o)) for o in outputs)


# -- suggestions ----------------------------------------------------------------------------
class FixedModel:
    """Predicts the same names for every function."""

    def __init__(self, names: list[tuple[str, float]]) -> None:
        self.names = names
        self.sources: Sequence[str] | None = None

    def predict(self, functions: Sequence[Sequence[object]], top_k: int = 5,
                sources: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        self.sources = sources
        return [[] if not f else self.names[:top_k] for f in functions]


def test_suggest_for_document_real_model(model: Code2VecModel) -> None:
    doc = Document(SAMPLE)
    result = suggest_for_document(doc, model, top_k=3)
    assert [s.qualname for s in result] == ["load_config", "Store.get_item", "Store.size", "empty"]
    first = result[0]
    assert isinstance(first, Suggestion) and first.line == 5 and first.current_label == "load|config"
    assert first.contexts > 0 and 1 <= len(first.suggestions) <= 3
    for rendered, label, prob in first.suggestions:
        assert rendered == label.replace("|", "_") and 0 < prob <= 1
    for s in result:
        labels = [label for _, label, _ in s.suggestions]
        assert s.current_rank == (labels.index(s.current_label) + 1 if s.current_label in labels else None)
    assert [s.qualname for s in suggest_for_document(doc, model, line=16)] == ["Store.get_item"]
    assert suggest_for_document(doc, model, line=12) == []  # __init__: no suggestions
    assert suggest_for_document(doc, model, line=3) == []  # no function there


def test_suggest_rank_and_rendering() -> None:
    doc = Document("class A:\n    def _getItem(self, k):\n        return self.d[k]\n")
    fake = FixedModel([("fetch|item", 0.5), ("get|item", 0.3), ("lookup", 0.1)])
    (s,) = suggest_for_document(doc, fake, top_k=3)
    assert s.qualname == "A._getItem" and s.current_label == "get|item" and s.line == 2
    assert s.suggestions == [("_fetchItem", "fetch|item", 0.5), ("_getItem", "get|item", 0.3),
                             ("_lookup", "lookup", 0.1)]
    assert s.current_rank == 2
    # what a fusion's LLM sees: the masked source, never the name (docs/design.md §2)
    assert fake.sources == ["def METHOD_NAME(self, k):\n        return self.d[k]"]
    (s,) = suggest_for_document(doc, fake, top_k=1)
    assert s.current_rank is None


def test_suggest_handles_partial_code(model: Code2VecModel) -> None:
    doc = Document("def ok(a):\n    x = a +\n    return x\n\ndef fine(b):\n    return b.c(\n")
    result = suggest_for_document(doc, model)
    assert [s.qualname for s in result] == ["ok", "fine"]
    assert all(s.suggestions for s in result)


# -- command line ---------------------------------------------------------------------------
def test_cli_suggest_json(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.py"
    source.write_text(SAMPLE)
    assert main(["suggest", str(source), "--json", "--models", str(models_dir), "--top-k", "3",
                 "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file"] == str(source)
    assert data["model"]["name"] == "code2vec" and data["model"]["extractor_version"] == EXTRACTOR_VERSION
    assert len(data["model"]["sha256"]) == 64
    functions = data["functions"]
    assert [f["qualname"] for f in functions] == ["load_config", "Store.get_item", "Store.size", "empty"]
    first = functions[0]
    assert set(first) >= {"qualname", "name", "line", "suggestions", "current_rank"}
    assert first["name"] == "load_config" and first["line"] == 5
    assert 1 <= len(first["suggestions"]) <= 3
    assert set(first["suggestions"][0]) == {"name", "label", "probability"}
    assert main(["suggest", str(source), "--json", "--line", "16", "--models", str(models_dir)]) == 0
    assert [f["qualname"] for f in json.loads(capsys.readouterr().out)["functions"]] == ["Store.get_item"]


def test_cli_suggest_text(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.py"
    source.write_text(SAMPLE)
    assert main(["suggest", str(source), "--models", str(models_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("load_config (line 5): ") and "current name `load_config`" in lines[0]


@pytest.mark.parametrize(("text", "note"), [
    ("x = 1\n", "no function definitions"),
    ("class A:\n    def __init__(self):\n        pass\n", "only dunder methods here"),
    ("def f(x:\n    return x +\n", "no function found (the file has syntax errors"),
])
def test_cli_suggest_says_why_there_are_no_names(text: str, note: str, models_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An empty answer would read as a silent failure: the text form says why there is none."""
    source = tmp_path / "m.py"
    source.write_text(text)
    assert main(["suggest", str(source), "--models", str(models_dir)]) == 0
    assert capsys.readouterr().out.startswith(f"{source}: {note}")
    assert main(["suggest", str(source), "--models", str(models_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["functions"] == []


@pytest.mark.parametrize("case", ["missing", "binary", "latin1", "no_models", "bad_models", "no_function"])
def test_cli_suggest_errors(case: str, models_dir: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.py"
    source.write_text(SAMPLE)
    models = models_dir
    extra: list[str] = []
    if case == "missing":
        source = tmp_path / "nope.py"
    elif case == "binary":
        source.write_bytes(b"\x00\x01\x02ELF" * 100)
    elif case == "latin1":
        source.write_bytes("x = 'caf\u00e9'\n".encode("latin-1"))
    elif case == "no_models":
        models = tmp_path / "no-models"
    elif case == "bad_models":
        models = copy_models(models_dir, tmp_path)
        (models / "code2vec" / "paths.json.gz").write_bytes(b"not gzip")
    elif case == "no_function":
        extra = ["--line", "2"]
    assert main(["suggest", str(source), "--models", str(models), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pathfusion suggest: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
