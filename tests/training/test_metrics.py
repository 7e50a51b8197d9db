"""Naming metrics on hand-computed examples."""

from __future__ import annotations

import pytest

from pathfusion.model_export.metrics import NamingScores, first_legal


def test_first_legal_skips_special_names() -> None:
    assert first_legal(["<UNK>", "", "get|name"]) == "get|name"
    assert first_legal(["<UNK>"]) == ""


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
