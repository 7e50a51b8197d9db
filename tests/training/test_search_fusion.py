"""The search fusions over cached encoder vectors (issue 10, deliverable 5): each variant
starts as the encoder's own space, the context encoder learns what the code vectors lack,
and the command reads the embed_corpus cache and writes the comparison."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pathfusion.model_export import search_fusion
from pathfusion.model_export.anonymise import anonymise
from pathfusion.model_export.embed_corpus import Unit, save_npy, selection_path, write_selection
from pathfusion.model_export.search_fusion import (
    VARIANTS,
    SearchFusion,
    SearchFusionConfig,
    SearchSplit,
    context_ids,
    scores,
    train_variant,
)
from pathfusion.server.context_vocab import VOCAB_FILE, ContextCounts, ContextVocab
from pathfusion.server.paths import contexts_of_text

DIM = 16
TOPICS = 200


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(7))


def _pairs(n: int, seed: int) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray]:
    """``n`` pairs whose topic (one of 200, each with its own call) is in the query vector and
    in the code's text only: the code vectors are noise, so only the contexts can match them."""
    words = [_word(random.Random(t)) for t in range(TOPICS)]
    centres = np.random.default_rng(0).standard_normal((TOPICS, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, TOPICS, n)
    rows = [{"code": f"def run(value):\n    return {words[t]}(value) + 1\n"} for t in topics]
    for row in rows:
        row["anon"] = anonymise(row["code"])
    queries = centres[topics] + 0.1 * rng.standard_normal((n, DIM)).astype(np.float32)
    noise = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows, queries, noise / np.linalg.norm(noise, axis=1, keepdims=True)  # unit, as the encoder's


def _vocab(rows: list[dict[str, str]]) -> ContextVocab:
    counts = ContextCounts()
    for row in rows:
        counts.add(contexts_of_text(row["code"]))
        counts.add(contexts_of_text(row["anon"]))
    return ContextVocab.build(counts, tokens=400, paths=50)


def _split(rows: list[dict[str, str]], queries: np.ndarray, noise: np.ndarray, vocab: ContextVocab) -> SearchSplit:
    from pathfusion.model_export.context_pack import contexts_of_sources

    return SearchSplit(queries, noise, noise[::-1].copy(), contexts_of_sources([r["code"] for r in rows], vocab, 1),
                       contexts_of_sources([r["anon"] for r in rows], vocab, 1))


def test_every_variant_starts_as_the_encoders_space_but_weighted() -> None:
    rows, queries, noise = _pairs(8, 1)
    split = _split(rows, queries, noise, _vocab(rows))
    ids, pad = context_ids(split.contexts, np.arange(8), 400, 50)
    for variant in VARIANTS:
        model = SearchFusion(SearchFusionConfig(variant=variant, tokens=400, paths=50, dropout=0.0), DIM).eval()
        out = model(torch.from_numpy(noise), ids, pad)
        assert out.shape == (8, DIM) and torch.allclose(out.norm(dim=-1), torch.ones(8))
        start = torch.nn.functional.normalize(torch.from_numpy(noise), dim=-1)
        assert torch.allclose(out, start, atol=1e-6) == (variant != "weighted"), variant
    clipped, _ = context_ids(split.contexts, np.arange(8), 2, 3)
    assert clipped[..., 1].max() <= 4 and clipped[..., 0].max() <= 3 and (clipped[..., 0] == 1).any()
    with pytest.raises(ValueError, match="variant must be one of"):
        SearchFusionConfig(variant="sum")


@pytest.mark.parametrize("variant", ["concat", "attention"])
def test_a_fusion_learns_from_the_contexts_what_the_code_vectors_lack(variant: str, tmp_path: Path) -> None:
    train_rows, train_q, train_noise = _pairs(3000, 2)
    valid_rows, valid_q, valid_noise = _pairs(1000, 3)
    vocab = _vocab(train_rows)
    train, valid = _split(train_rows, train_q, train_noise, vocab), _split(valid_rows, valid_q, valid_noise, vocab)
    config = SearchFusionConfig(variant=variant, tokens=400, paths=50, epochs=10, batch_size=100, lr=1e-2,
                                dropout=0.0, patience=10, project_llm=variant == "concat")
    model, trained = train_variant(config, train, valid, tmp_path / variant, log=lambda _: None)
    start, best = trained["history"][0], trained["best"]
    assert start["mrr"] < 0.05 and best["mrr"] > 0.3 and best["mrr_anonymised"] > 0.3
    assert scores(model, valid) == {"mrr": best["mrr"], "mrr_anonymised": best["mrr_anonymised"]}  # best kept
    assert (tmp_path / variant / "model.pt").is_file()
    assert torch.equal(model.llm.weight, torch.eye(DIM)) != config.project_llm  # A trains only when asked
    logged = [json.loads(line) for line in (tmp_path / variant / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in logged] == list(range(len(logged)))


def _cache(tmp_path: Path, splits: tuple[tuple[str, int, int], ...]) -> Path:
    """An embed_corpus cache of ``(split, pairs, seed)`` (rows of 20 projects) and the
    context vocabulary of the last split, in ``tmp_path``."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for split, n, seed in splits:
        rows, queries, noise = _pairs(n, seed)
        for i, row in enumerate(rows):
            row["project"] = f"project{i % 20}"
        write_selection(selection_path(cache, split, "search"), rows)
        for field, array in (("query", queries), ("code", noise), ("anon", noise[::-1].copy())):
            save_npy(Unit(split, "search", field, 0).path(cache), array)
    _vocab(rows).save(tmp_path / VOCAB_FILE)
    return cache


def test_the_command_reads_the_embedding_cache_and_writes_the_comparison(tmp_path: Path) -> None:
    cache = _cache(tmp_path, (("train", 600, 4), ("valid", 1000, 5), ("test", 1000, 6), ("heldout", 1000, 7)))
    out = tmp_path / "result.json"
    assert search_fusion.main(["--cache", str(cache), "--runs", str(tmp_path / "runs"), "--json", str(out),
                               "--vocab", str(tmp_path / VOCAB_FILE), "--variants", "llm,concat", "--train-pairs",
                               "500", "--set", "epochs=1", "tokens=400", "paths=50", "project_llm=false"]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"] == {"train": 500, "valid": 1000, "test": 1000, "heldout": 1000}
    assert set(result["variants"]["llm"]["heldout"]) == {"mrr", "mrr_anonymised"}
    assert set(result["variants"]) == {"llm", "concat"}
    assert set(result["variants"]["concat"]["test"]) == {"mrr", "mrr_anonymised"}
    assert result["variants"]["llm"]["history"][0]["mrr"] == result["zero-shot"]["valid"]["mrr"]
    assert (cache / "train-search-code-contexts.npz").is_file()  # extracted once, reused next time
    assert json.loads((tmp_path / "runs" / "concat" / "config.json").read_text())["project_llm"] is False
    with pytest.raises(ValueError, match="true or false"):
        search_fusion.main(["--cache", str(cache), "--vocab", str(tmp_path / VOCAB_FILE), "--set", "project_llm=maybe"])
    with pytest.raises(ValueError, match="known keys"):
        search_fusion.main(["--cache", str(cache), "--vocab", str(tmp_path / VOCAB_FILE), "--set", "epoch=3"])
    missing = tmp_path / "empty"
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match="embed_corpus"):
        search_fusion.main(["--cache", str(missing), "--vocab", str(tmp_path / VOCAB_FILE)])


def test_split_by_project_keeps_projects_whole_and_is_seeded() -> None:
    projects = [f"p{i % 13}" for i in range(1_300)]
    fit, choose = search_fusion.split_by_project(projects, 0.3)
    assert sorted(np.concatenate([fit, choose]).tolist()) == list(range(1_300))
    assert not {projects[i] for i in fit} & {projects[i] for i in choose}
    assert 0.3 <= len(choose) / len(projects) < 0.3 + 1 / 13 + 1e-9  # whole projects, just past the share
    again = search_fusion.split_by_project(projects, 0.3)
    assert choose.tolist() == again[1].tolist()
    assert choose.tolist() != search_fusion.split_by_project(projects, 0.3, seed=8)[1].tolist()
    with pytest.raises(ValueError, match="cannot split"):
        search_fusion.split_by_project(["one"] * 10, 0.3)


def test_the_command_can_fit_on_validation_projects_and_choose_on_others(tmp_path: Path) -> None:
    cache = _cache(tmp_path, (("train", 300, 4), ("valid", 3_000, 5), ("test", 1000, 6)))
    out = tmp_path / "result.json"
    assert search_fusion.main(["--cache", str(cache), "--runs", str(tmp_path / "runs"), "--json", str(out),
                               "--vocab", str(tmp_path / VOCAB_FILE), "--variants", "concat", "--fit", "valid",
                               "--choose-share", "0.35", "--set", "epochs=10", "batch_size=100", "lr=0.01", "dropout=0",
                               "tokens=400", "paths=50"]) == 0
    result = json.loads(out.read_text())
    assert result["fit"] == "valid"
    assert result["pairs"]["train"] + result["pairs"]["valid"] == 3_000  # the validation pairs, split
    assert result["pairs"]["valid"] >= 0.35 * 3_000 and result["pairs"]["test"] == 1000
    concat = result["variants"]["concat"]
    # Only the contexts match queries to code here (the code vectors are noise): the fusion
    # fitted on some projects' pairs must rank the other projects' pairs far above chance.
    assert result["zero-shot"]["valid"]["mrr"] < 0.05 and concat["best"]["mrr"] > 0.2
    assert result["zero-shot"]["test"]["mrr"] < 0.05 and concat["test"]["mrr"] > 0.2
    # --init starts each variant from a run's kept model: its first validation is that model's.
    again = tmp_path / "again.json"
    assert search_fusion.main(["--cache", str(cache), "--runs", str(tmp_path / "runs2"), "--json", str(again),
                               "--vocab", str(tmp_path / VOCAB_FILE), "--variants", "concat", "--fit", "valid",
                               "--choose-share", "0.35", "--init", str(tmp_path / "runs"), "--set", "epochs=1",
                               "dropout=0", "tokens=400", "paths=50"]) == 0
    start = json.loads(again.read_text())["variants"]["concat"]["history"][0]
    assert (start["mrr"], start["mrr_anonymised"]) == (concat["best"]["mrr"], concat["best"]["mrr_anonymised"])
