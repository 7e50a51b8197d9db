"""``python -m pathfusion.model_export.query_tower``: the loss over a bank of cached code vectors,
which layers train, the resumable code-vector cache, and a refusal before anything loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pathfusion.model_export import query_tower
from pathfusion.model_export.export_embedder import MeanPooledEncoder, load_reference
from pathfusion.model_export.query_tower import (
    TowerConfig,
    bank_loss,
    cached_code_vectors,
    main,
    train_tower,
    trainable_top,
)
from tests.helpers.models import write_tiny_bert


def _unit_rows(count: int, dim: int, seed: int) -> torch.Tensor:
    rows = torch.from_numpy(np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32))
    return rows / rows.norm(dim=1, keepdim=True)


def test_bank_loss_is_the_cross_entropy_over_batch_and_bank() -> None:
    codes = _unit_rows(6, 8, 0)
    queries = _unit_rows(2, 8, 1)
    batch, bank = np.array([0, 1]), np.array([4, 5])
    keys = np.arange(6)
    loss = bank_loss(queries, codes, batch, bank, keys, keys, scale=20.0)
    logits = 20.0 * queries @ codes[[0, 1, 4, 5]].T
    expected = -torch.log_softmax(logits, dim=1)[[0, 1], [0, 1]].mean()
    assert torch.isclose(loss, expected, atol=1e-6)


def test_a_copy_of_the_positive_in_the_bank_is_no_negative() -> None:
    """A bank row with the same code text as the query's own (or the same query text) would
    push the query away from its own code: it is masked, so the loss is as if it were absent."""
    codes = _unit_rows(6, 8, 0)
    codes[4] = codes[0]
    queries = codes[:2] + 0.3 * _unit_rows(2, 8, 1)  # each query near its own code
    queries = queries / queries.norm(dim=1, keepdim=True)
    batch = np.array([0, 1])
    code_key = np.array([10, 11, 12, 13, 10, 15])  # row 4 is row 0's code
    query_key = np.array([20, 21, 22, 23, 24, 21])  # row 5 is paired with row 1's query
    with_copies = bank_loss(queries, codes, batch, np.array([2, 4, 5]), code_key, query_key, 20.0)
    # row 0 ranks against every candidate but row 4 (its own code again), row 1 against all but row 5
    kept = {0: [0, 1, 2, 5], 1: [0, 1, 2, 4]}
    expected = torch.stack([-torch.log_softmax(20.0 * queries[i] @ codes[kept[i]].T, dim=0)[kept[i].index(i)]
                            for i in (0, 1)]).mean()
    assert torch.isclose(with_copies, expected, atol=1e-5)
    unmasked = bank_loss(queries, codes, batch, np.array([2, 4, 5]), np.arange(6), np.arange(6), 20.0)
    assert unmasked > with_copies + 0.1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[MeanPooledEncoder, object]:
    model, tokenizer = load_reference(write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), dropout=0.0))
    return MeanPooledEncoder(model), tokenizer


def test_only_the_top_layers_train(tiny: tuple[MeanPooledEncoder, object]) -> None:
    encoder, _ = tiny
    chosen = trainable_top(encoder, 1)
    top = set(map(id, encoder.model.encoder.layer[-1].parameters()))
    assert {id(p) for p in chosen} == top
    assert all(p.requires_grad == (id(p) in top) for p in encoder.parameters())
    with pytest.raises(ValueError, match="between 1 and 2"):
        trainable_top(encoder, 3)


def test_the_tower_learns_to_reach_frozen_code_vectors(tiny: tuple[MeanPooledEncoder, object]) -> None:
    """Queries that name a topic learn to land on that topic's (random, frozen) code vector;
    the frozen layers do not move."""
    encoder, tokenizer = tiny
    topics = ["parse the json file", "open a socket", "sort the list", "resize the image"]
    targets = _unit_rows(len(topics), 32, 3).numpy()
    # rows of one topic share their code (masked as negatives of each other), as copies do
    meta = {"query": [f"{topics[i % 4]} number {i}" for i in range(64)],
            "code": [f"def topic{i % 4}(): pass" for i in range(64)], "project": [i % 8 for i in range(64)]}
    codes = targets[[i % 4 for i in range(64)]]
    frozen = [p.detach().clone() for p in encoder.model.embeddings.parameters()]
    top_before = [p.detach().clone() for p in encoder.model.encoder.layer[-1].parameters()]
    torch.manual_seed(0)
    config = TowerConfig(layers=1, lr=3e-3, steps=40, batch=16, bank=8)
    losses = train_tower(encoder, tokenizer, meta, codes, config)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert all(torch.equal(a, b) for a, b in zip(frozen, encoder.model.embeddings.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(top_before, encoder.model.encoder.layer[-1].parameters(),
                                                      strict=True))


class _CountingEmbedder:
    def __init__(self) -> None:
        self.texts = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return np.asarray([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


def test_the_code_vector_cache_resumes_by_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query_tower, "CHUNK", 3)
    texts = [f"def f{'x' * i}(): pass" for i in range(7)]
    embedder = _CountingEmbedder()
    first = cached_code_vectors(tmp_path, texts, embedder)
    assert embedder.texts == 7 and first.shape == (7, 2)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0)
    (tmp_path / "train_code_002.npy").unlink()  # as if interrupted before the last chunk
    again = cached_code_vectors(tmp_path, texts, embedder)
    assert embedder.texts == 8 and np.array_equal(first, again)


def test_a_missing_corpus_is_refused_before_the_models_load(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / "cache"),
                 "--models", str(tmp_path / "no-models")]) == 1
    assert "build the corpus first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--steps", "0"])
