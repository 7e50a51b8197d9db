"""code2vec training on a tiny real corpus: learns, checkpoints, resumes, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pathfusion.model_export import train_code2vec
from pathfusion.model_export.c2v_data import EncodedSplit, RawEncoder, batch_arrays
from pathfusion.model_export.code2vec import Code2Vec, Code2VecConfig
from tests.helpers.corpus import TEMPLATES, write_corpus


def test_raw_encoding_matches_vocab(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 5)
    encoder = RawEncoder()
    raw = encoder.encode(tmp_path / "corpus" / "train.jsonl.gz")
    vocabs, stats = encoder.vocabs(raw, 1000, 1000, 100, min_count=1)
    encoded = encoder.remap(raw, vocabs)
    assert stats["target_coverage"] == 1.0
    assert sorted(vocabs.targets.items[2:]) == sorted(TEMPLATES)
    assert [vocabs.targets.items[i] for i in encoded.labels] == encoded.gold
    tokens = {vocabs.tokens.items[i] for i in encoded.contexts[:, [0, 2]].ravel()}
    assert "METHOD_NAME" in tokens and "get|value" not in tokens and "set|value" not in tokens


def test_batches_pad_and_sample() -> None:
    split = EncodedSplit(
        labels=np.array([2, 3], dtype=np.int32), gold=["a", "b"],
        offsets=np.array([0, 5, 6]), contexts=np.arange(18, dtype=np.int32).reshape(6, 3) + 1,
    )
    contexts, mask, labels = batch_arrays(split, np.array([0, 1]), 3, np.random.default_rng(0))
    assert contexts.shape == (2, 3, 3) and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert labels.tolist() == [2, 3]
    again, _, _ = batch_arrays(split, np.array([0, 1]), 3, None)
    assert np.array_equal(again, batch_arrays(split, np.array([0, 1]), 3, None)[0])


def test_masked_padding_does_not_change_the_code_vector() -> None:
    torch.manual_seed(0)
    model = Code2Vec(50, 50, 10, Code2VecConfig()).eval()
    contexts = torch.randint(2, 50, (1, 4, 3))
    mask = torch.ones(1, 4)
    padded = torch.cat([contexts, torch.zeros(1, 3, 3, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 3)], dim=1)
    with torch.no_grad():
        code, _, _ = model(contexts, mask)
        code2, weights2, _ = model(padded, padded_mask)
    assert torch.allclose(code, code2, atol=1e-6)
    assert torch.allclose(weights2[0, 4:], torch.zeros(3)) and float(weights2.sum()) == pytest.approx(1.0, abs=1e-5)


def test_training_learns_resumes_and_reports(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", 40)
    run = tmp_path / "run"
    config = Code2VecConfig(token_vocab=500, path_vocab=2000, target_vocab=50, min_count=1, batch_size=16,
                            epochs=1, lr=0.01, dropout=0.0, threads=1)
    first = train_code2vec.train(tmp_path / "corpus", run, config)
    assert (run / "checkpoint.pt").exists() and (run / "best.pt").exists()
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1
    # Resume with more epochs: continues from epoch 1, does not start over.
    config2 = Code2VecConfig(**{**config.to_dict(), "epochs": 4})
    final = train_code2vec.train(tmp_path / "corpus", run, config2)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any(e["event"] == "resume" and e["epoch"] == 1 for e in log)
    epochs = [e["epoch"] for e in log if e["event"] == "epoch"]
    assert epochs[0] == 0 and epochs[1] == 1  # the second run started at epoch 1
    assert final["test"]["f1"] >= 0.8, final  # four easy names, distinct code shapes
    assert final["test"]["examples"] == 24 and first["test"]["examples"] == 24
    assert json.loads((run / "final.json").read_text())["test"] == final["test"]
