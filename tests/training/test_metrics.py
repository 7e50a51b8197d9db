"""Naming metrics on hand-computed examples."""

from __future__ import annotations

import random

import pytest

from pathfusion.model_export.metrics import (
    SEARCH_SEED,
    NamingScores,
    legal_names,
    protocol_group,
    protocol_order,
    protocol_pairs,
    ranks_of_scores,
)


def test_legal_names_skip_special_names_and_keep_order() -> None:
    assert legal_names(["<UNK>", "", "get|name", "<PAD>", "set|name"]) == ["get|name", "set|name"]
    assert legal_names(["<UNK>"]) == []


def test_code2vec_subtoken_metric_by_hand() -> None:
    scores = NamingScores()
    scores.add("get|file|name", ["<UNK>", "get|name", "get|file|name"])  # tp 2, fp 0, fn 1
    scores.add("set|value", ["set|set|value|x"])  # tp 3 (set, set, value), fp 1 (x), fn 0
    scores.add("run", ["<UNK>"])  # empty prediction: fn 1
    result = scores.result()
    assert (scores.tp, scores.fp, scores.fn) == (5, 1, 2)
    assert result["precision"] == pytest.approx(5 / 6, abs=1e-4)
    assert result["recall"] == pytest.approx(5 / 7, abs=1e-4)
    p, r = 5 / 6, 5 / 7
    assert result["f1"] == pytest.approx(2 * p * r / (p + r), abs=1e-4)
    # code2seq, sets: ex1 tp 2 fn 1; ex2 tp 2 (set, value) fp 1 (x); ex3 fn 1.
    assert (scores.set_tp, scores.set_fp, scores.set_fn) == (4, 1, 2)
    assert result["exact_match"] == 0.0
    assert result["top5_accuracy"] == pytest.approx(1 / 3, abs=1e-4)


def test_exact_and_top5() -> None:
    scores = NamingScores()
    scores.add("load|config", ["load|config", "read|config"])
    scores.add("save", ["write", "store", "dump", "put", "persist", "save"])
    result = scores.result()
    assert result["exact_match"] == 0.5 and result["top5_accuracy"] == 0.5
    assert result["f1"] < 1.0


def test_protocol_order_is_the_seeded_shuffle_in_whole_groups() -> None:
    expected = list(range(2_500))
    random.Random(SEARCH_SEED).shuffle(expected)
    assert protocol_order(2_500) == expected[:2_000]  # the trailing 500 are no whole group
    assert protocol_order(2_500, 1_500) == expected[:1_000]
    assert protocol_order(2_500, 10_000) == expected[:2_000]
    # Shuffling the pairs themselves gives the same order (the callers used to do that).
    letters = [f"pair{i}" for i in range(2_500)]
    shuffled = list(letters)
    random.Random(SEARCH_SEED).shuffle(shuffled)
    assert protocol_pairs(letters) == shuffled[:2_000]


def test_protocol_order_short_group() -> None:
    expected = list(range(7))
    random.Random(SEARCH_SEED).shuffle(expected)
    assert protocol_order(7) == expected  # fewer than a group: one smaller group of all
    assert protocol_group(len(protocol_order(7))) == 7
    assert protocol_order(7, short_group=False) == []
    assert protocol_order(7, 5, group=3) == expected[:3]
    assert protocol_order(7, group=3, seed=1) != protocol_order(7, group=3)
    assert protocol_group(3_000) == 1_000


def test_ranks_of_scores_by_hand() -> None:
    """Ranks within each group, ties against the query (a tied distractor is named first),
    the trailing incomplete group left out, as the MRR does."""
    import numpy as np

    matrices = {0: np.array([[0.9, 0.1], [0.5, 0.5]]), 2: np.array([[0.2, 0.8], [0.1, 0.7]])}
    ranks, firsts = ranks_of_scores(lambda start: matrices[start], pairs=5, group=2)
    assert ranks.tolist() == [1, 2, 2, 1]
    assert firsts.tolist() == [0, 0, 3, 3]
    empty_ranks, empty_firsts = ranks_of_scores(lambda start: matrices[start], pairs=1, group=2)
    assert len(empty_ranks) == len(empty_firsts) == 0
