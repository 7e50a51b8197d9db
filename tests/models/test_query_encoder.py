"""Query encoders (paper §3.2): tokeniser, vocabulary, torch encoders, ONNX export, runtime.

The properties that matter for search are tested on real models (tiny widths keep the file
fast): every kind × pooling gives unit vectors that do not depend on how a batch is padded,
exports to ONNX with the same outputs as torch, and the torch-free runtime returns those
same vectors for query text.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pathfusion.model_export.export_code2vec import ExportError
from pathfusion.model_export.query_encoder import (
    KINDS,
    POOLINGS,
    QueryEncoder,
    QueryEncoderConfig,
    build_vocab,
    export_query_encoder,
    parity_check,
    reverse_within_length,
)
from pathfusion.server.models import ModelError, sha256_file
from pathfusion.server.query import (
    MAX_QUERY_TOKENS,
    QUERY_TOKENIZER_VERSION,
    QueryEncoderRuntime,
    QueryVocab,
    tokenize_query,
)

COMBOS = list(itertools.product(KINDS, POOLINGS))
TEXTS = [
    "read a json config file",
    "parse the json response",
    "getHTTPResponse returns JSON",
    "write a file atomically",
    "read file lines",
    "sort a list of numbers",
    "open a socket connection",
    "parse command line arguments",
]
QUERIES = ["read json", "", "parse the HTTP response of a socket connection quickly", "zzz unknown"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # The machine is shared; one thread also makes torch's reductions deterministic.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def vocab() -> QueryVocab:
    return build_vocab(TEXTS, min_count=1)


def tiny_model(kind: str, pooling: str, vocab_size: int, seed: int = 0, **overrides: int) -> QueryEncoder:
    torch.manual_seed(seed)
    sizes = {"embed_dim": 8, "hidden": 12, "out_dim": 6, "heads": 2} | overrides
    return QueryEncoder(QueryEncoderConfig(kind, pooling, vocab_size, **sizes)).eval()


# --- tokeniser ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("getHTTPResponse returns JSON", ["get", "http", "response", "returns", "json"]),
        ("read_file2 from a URL", ["read", "file", "2", "from", "a", "url"]),
        ("How do I parse a .csv file?!", ["how", "do", "i", "parse", "a", "csv", "file"]),
        ("  __init__ --> self.maxValue ", ["init", "self", "max", "value"]),
        ("Café déjà vu", ["cafe", "deja", "vu"]),
        ("", []),
        ("?!. -- ()", []),
    ],
)
def test_tokenize_query_examples(text: str, expected: list[str]) -> None:
    assert tokenize_query(text) == expected


def test_tokenize_query_keeps_at_most_max_tokens() -> None:
    text = " ".join(f"word{i}" for i in range(40))  # 80 subtokens
    tokens = tokenize_query(text)
    assert len(tokens) == MAX_QUERY_TOKENS
    assert tokens[:4] == ["word", "0", "word", "1"]
    assert tokenize_query(text, max_tokens=3) == ["word", "0", "word"]


# --- vocabulary --------------------------------------------------------------------------


def test_build_vocab_is_deterministic_and_frequency_ordered() -> None:
    texts = ["read file", "read json", "parse json", "read config", "write file", "b a", "a b"]
    vocab = build_vocab(texts, min_count=2)
    # read ×3; then ties of 2 alphabetically: a, b, file, json; seen once: dropped.
    assert vocab.tokens == ["<PAD>", "<UNK>", "read", "a", "b", "file", "json"]
    assert build_vocab(list(reversed(texts)), min_count=2) == vocab
    assert build_vocab(texts, min_count=2, max_size=4).tokens == ["<PAD>", "<UNK>", "read", "a"]
    assert len(build_vocab(texts, min_count=1)) == 2 + 8


def test_vocab_encode_pads_right_and_maps_unknowns(vocab: QueryVocab) -> None:
    ids, mask = vocab.encode(["read json file", "json", "qqq read", ""])
    assert ids.dtype == np.int64 and mask.dtype == np.float32
    assert ids.shape == mask.shape == (4, 3)
    read, json_, file = vocab.id("read"), vocab.id("json"), vocab.id("file")
    assert min(read, json_, file) >= 2
    np.testing.assert_array_equal(ids, [[read, json_, file], [json_, 0, 0], [1, read, 0], [1, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0]])
    only_empty_ids, only_empty_mask = vocab.encode([""])
    np.testing.assert_array_equal(only_empty_ids, [[1]])
    np.testing.assert_array_equal(only_empty_mask, [[1.0]])
    long_ids, _ = vocab.encode(["read " * 50])
    assert long_ids.shape == (1, MAX_QUERY_TOKENS)
    with pytest.raises(TypeError):
        vocab.encode("read json")


def test_vocab_json_roundtrip_and_refusals(vocab: QueryVocab, tmp_path: Path) -> None:
    assert QueryVocab.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab
    path = tmp_path / "query_vocab.json"
    vocab.save(path)
    assert QueryVocab.load(path) == vocab
    assert [p.name for p in tmp_path.iterdir()] == ["query_vocab.json"]  # no temp file left
    with pytest.raises(ValueError):
        QueryVocab(["read", "<UNK>"])
    with pytest.raises(ValueError):
        QueryVocab(["<PAD>", "<UNK>", "a", "a"])
    other_rules = vocab.to_json() | {"tokenizer": "pf-query-0"}
    with pytest.raises(ModelError, match=QUERY_TOKENIZER_VERSION):
        QueryVocab.from_json(other_rules)
    with pytest.raises(ModelError, match="not a query vocabulary"):
        QueryVocab.from_json(["<PAD>", "<UNK>"])
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="unreadable"):
        QueryVocab.load(path)
    with pytest.raises(ModelError, match="not found"):
        QueryVocab.load(tmp_path / "missing.json")


# --- torch encoders ----------------------------------------------------------------------


def test_config_validation_and_dict_roundtrip() -> None:
    config = QueryEncoderConfig("selfatt", "attention", 100, embed_dim=16, heads=4, layers=2)
    assert QueryEncoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown query encoder config keys"):
        QueryEncoderConfig.from_dict(config.to_dict() | {"bogus": 1})
    for bad in ({"kind": "lstm"}, {"pooling": "sum"}, {"heads": 3}, {"vocab_size": 1}, {"dropout": 1.0}):
        with pytest.raises(ValueError):
            QueryEncoderConfig(**(config.to_dict() | bad))
    with pytest.raises(ValueError, match="even"):
        QueryEncoderConfig("birnn", "mean", 100, hidden=7)


def test_reverse_within_length_reverses_real_tokens_only() -> None:
    x = torch.arange(10, dtype=torch.float32).reshape(2, 5, 1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    reversed_x = reverse_within_length(x, mask)
    assert reversed_x[..., 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    assert torch.equal(reverse_within_length(reversed_x, mask), x)


@pytest.mark.parametrize(("kind", "pooling"), COMBOS)
def test_encoder_unit_vectors_independent_of_padding(kind: str, pooling: str) -> None:
    model = tiny_model(kind, pooling, 30, kernel=3, layers=2)
    rng = np.random.default_rng(1)
    lengths = [3, 1, 7]
    width = 11
    # Padding ids are random on purpose: only the mask may say what is padding.
    ids = torch.from_numpy(rng.integers(2, 30, size=(len(lengths), width)))
    mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths])
    with torch.no_grad():
        batch = model(ids, mask)
        alone = [model(ids[i : i + 1, :n], mask[i : i + 1, :n])[0] for i, n in enumerate(lengths)]
    assert batch.shape == (3, 6) and batch.dtype == torch.float32
    torch.testing.assert_close(batch.norm(dim=-1), torch.ones(3), atol=1e-6, rtol=0)
    for i, vector in enumerate(alone):
        assert float((batch[i] - vector).abs().max()) <= 1e-5, (kind, pooling, i)


@pytest.mark.parametrize(("kind", "pooling"), COMBOS)
def test_encoder_trains_with_finite_gradients(kind: str, pooling: str) -> None:
    model = tiny_model(kind, pooling, 30).train()
    ids = torch.tensor([[5, 6, 7], [8, 0, 0], [9, 9, 0]])
    mask = (ids > 0).float()
    mask[2, 0] = 0.0  # a row without any real token must not poison the batch with NaN
    mask[2, 1] = 0.0
    out = model(ids, mask)
    loss = -torch.log_softmax(out @ out.detach().T * 10, dim=-1).diagonal().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(out).all()


def test_selfatt_accepts_more_tokens_than_positions() -> None:
    model = tiny_model("selfatt", "mean", 30)
    ids = torch.full((1, MAX_QUERY_TOKENS + 5), 3)
    with torch.no_grad():
        out = model(ids, torch.ones(1, MAX_QUERY_TOKENS + 5))
    assert torch.isfinite(out).all()


# --- export and runtime ------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "pooling"), COMBOS)
def test_export_parity_and_runtime_match_torch(
    kind: str, pooling: str, vocab: QueryVocab, tmp_path: Path
) -> None:
    model = tiny_model(kind, pooling, len(vocab), seed=3)
    model.train()  # the export must not depend on (or change) the caller's mode
    result = export_query_encoder(model, vocab, tmp_path)
    assert model.training
    assert set(result["files"]) == {"query_encoder.onnx", "query_vocab.json"}
    for name, digest in result["files"].items():
        assert sha256_file(tmp_path / name) == digest
    assert result["parity_max_abs_diff"] <= 1e-4
    assert result["dim"] == 6 and result["config"] == model.config.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["query_encoder.onnx", "query_vocab.json"]

    runtime = QueryEncoderRuntime.load(tmp_path)
    assert runtime.dim == 6
    got = runtime.encode(QUERIES)
    model.eval()
    ids, mask = vocab.encode(QUERIES)
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert got.dtype == np.float32 and got.shape == (len(QUERIES), 6)
    assert float(np.max(np.abs(got - want))) <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    # Batch-independent at run time as well: one query alone = the same query in a batch.
    assert float(np.max(np.abs(runtime.encode(QUERIES[2:3])[0] - got[2]))) <= 1e-5
    assert runtime.encode([]).shape == (0, 6)


@pytest.fixture(scope="module")
def exported(vocab: QueryVocab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("query_model")
    export_query_encoder(tiny_model("nbow", "mean", len(vocab)), vocab, folder)
    return folder


def test_export_refuses_a_vocabulary_of_another_size(vocab: QueryVocab, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="tokens"):
        export_query_encoder(tiny_model("nbow", "mean", len(vocab) + 1), vocab, tmp_path)
    assert not any(tmp_path.iterdir())


def test_parity_check_raises_past_tolerance(vocab: QueryVocab, exported: Path) -> None:
    model = tiny_model("nbow", "mean", len(vocab))
    assert parity_check(model, exported / "query_encoder.onnx")["max_abs_diff"] <= 1e-4
    other = tiny_model("nbow", "mean", len(vocab), seed=99)
    with pytest.raises(ExportError, match="parity failed"):
        parity_check(other, exported / "query_encoder.onnx")


def test_runtime_missing_and_corrupt_files(vocab: QueryVocab, exported: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        QueryEncoderRuntime.load(tmp_path)
    (tmp_path / "query_vocab.json").write_bytes((exported / "query_vocab.json").read_bytes())
    with pytest.raises(ModelError, match=r"query_encoder\.onnx not found"):
        QueryEncoderRuntime.load(tmp_path)
    (tmp_path / "query_encoder.onnx").write_bytes(b"\x00not an onnx graph")
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        QueryEncoderRuntime.load(tmp_path)
    (tmp_path / "query_encoder.onnx").write_bytes((exported / "query_encoder.onnx").read_bytes())
    (tmp_path / "query_vocab.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(ModelError, match="unreadable"):
        QueryEncoderRuntime.load(tmp_path)
    bigger = QueryVocab([*vocab.tokens, *(f"extra{i}" for i in range(50))])
    bigger.save(tmp_path / "query_vocab.json")
    with pytest.raises(ModelError, match="do not belong together"):
        QueryEncoderRuntime.load(tmp_path)
    vocab.save(tmp_path / "query_vocab.json")
    runtime = QueryEncoderRuntime.load(tmp_path, providers=["CPUExecutionProvider"])
    with pytest.raises(TypeError):
        runtime.encode("read json")
