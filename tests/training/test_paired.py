"""The paired comparison of two evaluation listings (``python -m pathfusion.model_export.paired``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pathfusion.model_export.evaluate import write_jsonl
from pathfusion.model_export.metrics import NamingScores
from pathfusion.model_export.paired import compare_files, main


def _ranks(path: Path, ranks: list[int]) -> Path:
    write_jsonl(path, [{"query": f"query {i}", "qualname": f"f{i}", "rank": rank, "first": "x"}
                       for i, rank in enumerate(ranks)])
    return path


def _predictions(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    write_jsonl(path, [{"gold": gold, "predicted": predicted} for gold, predicted in rows])
    return path


def test_a_listing_against_itself_differs_by_nothing(tmp_path: Path) -> None:
    ranks = _ranks(tmp_path / "a.jsonl", [1, 2, 5, 1, 10, 3] * 20)
    result = compare_files(ranks, ranks)
    mrr = result["metrics"]["mrr"]
    assert result["task"] == "search" and result["rows"] == 120
    assert mrr["a"] == mrr["b"] == round((1 + 1 / 2 + 1 / 5 + 1 + 1 / 10 + 1 / 3) / 6, 4)
    assert (mrr["difference"], mrr["interval_low"], mrr["interval_high"]) == (0, 0, 0)
    assert (mrr["rows_b_better"], mrr["rows_b_worse"]) == (0, 0)


def test_a_candidate_better_on_every_pair_has_an_interval_above_zero(tmp_path: Path) -> None:
    a = _ranks(tmp_path / "a.jsonl", [2] * 50)
    b = _ranks(tmp_path / "b.jsonl", [1] * 50)
    metrics = compare_files(a, b)["metrics"]
    assert metrics["mrr"]["a"] == 0.5 and metrics["mrr"]["b"] == 1.0
    assert metrics["mrr"]["interval_low"] == metrics["mrr"]["interval_high"] == 0.5
    assert metrics["top1"]["difference"] == 1.0 and metrics["mrr"]["rows_b_better"] == 50


def test_the_resampling_is_paired(tmp_path: Path) -> None:
    """20 of 400 pairs move from rank 2 to 1 (+0.025 MRR): resampled together, the rows that
    rank alike cancel and the interval excludes 0; two independent resamples of metrics that
    vary by ±0.02 each would not."""
    a_ranks = [1] * 100 + [2] * 100 + [10] * 200
    b_ranks = [1] * 120 + [2] * 80 + [10] * 200
    mrr = compare_files(_ranks(tmp_path / "a.jsonl", a_ranks), _ranks(tmp_path / "b.jsonl", b_ranks))["metrics"]["mrr"]
    assert mrr["difference"] == 0.025
    assert 0 < mrr["interval_low"] < 0.025 < mrr["interval_high"] < 0.05


def test_wins_and_losses_that_cancel_give_an_interval_around_zero(tmp_path: Path) -> None:
    """Half the changed pairs move up, half down by as much: the difference is 0 and its
    interval straddles 0 — a tie, though 100 of 400 pairs changed."""
    a_ranks = [1, 2] * 50 + [3] * 300
    b_ranks = [2, 1] * 50 + [3] * 300
    metrics = compare_files(_ranks(tmp_path / "a.jsonl", a_ranks), _ranks(tmp_path / "b.jsonl", b_ranks))["metrics"]
    mrr = metrics["mrr"]
    assert mrr["difference"] == 0
    assert mrr["interval_low"] < 0 < mrr["interval_high"]
    assert (mrr["rows_b_better"], mrr["rows_b_worse"]) == (50, 50)


def test_naming_scores_are_eval_namings_and_f1_is_micro_averaged(tmp_path: Path) -> None:
    rows = [("get|file|name", ["<UNK>", "get|name", "get|file|name"]), ("set|value", ["set|set|value|x"]),
            ("run", ["<UNK>"]), ("load|config", ["read|config", "load|config"])] * 10
    better = [(gold, [gold]) for gold, _ in rows]
    result = compare_files(_predictions(tmp_path / "a.jsonl", rows), _predictions(tmp_path / "b.jsonl", better))
    expected = NamingScores()
    for gold, predicted in rows:
        expected.add(gold, predicted)
    metrics = result["metrics"]
    assert result["task"] == "naming"
    assert metrics["f1"]["a"] == expected.result()["f1"]
    assert metrics["exact_match"]["a"] == expected.result()["exact_match"]
    assert metrics["top5_accuracy"]["a"] == expected.result()["top5_accuracy"]
    assert metrics["f1"]["b"] == 1.0 and metrics["exact_match"]["b"] == 1.0
    # a's first legal name is imperfect on every row (get|name, set|set|value|x, the empty name,
    # read|config), so the perfect candidate is better on all 40.
    assert metrics["f1"]["rows_b_better"] == 40 and metrics["f1"]["rows_b_worse"] == 0
    assert 0 < metrics["f1"]["interval_low"] <= metrics["f1"]["difference"] <= metrics["f1"]["interval_high"]


@pytest.mark.parametrize("mismatch", ["count", "order", "kind"])
def test_listings_of_different_rows_are_refused(tmp_path: Path, mismatch: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    a = _ranks(tmp_path / "a.jsonl", [1, 2, 3])
    if mismatch == "count":
        b = _ranks(tmp_path / "b.jsonl", [1, 2])
    elif mismatch == "order":
        b = tmp_path / "b.jsonl"
        rows = [json.loads(line) for line in a.read_text().splitlines()]
        write_jsonl(b, rows[::-1])
    else:
        b = _predictions(tmp_path / "b.jsonl", [("run", ["run"])] * 3)
    assert main([str(a), str(b)]) == 1
    assert "error:" in capsys.readouterr().err


def test_a_file_that_is_no_listing_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _ranks(tmp_path / "a.jsonl", [1])
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"mrr": 0.8}\n')
    assert main([str(a), str(junk)]) == 1
    assert "neither" in capsys.readouterr().err
    junk.write_text("not json\n")
    assert main([str(a), str(junk)]) == 1
    assert "not a JSON line" in capsys.readouterr().err
    assert main([str(a), str(tmp_path / "missing.jsonl")]) == 1


def test_the_command_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _ranks(tmp_path / "a.jsonl", [1, 4])
    assert main([str(a), str(a), "--resamples", "200"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["resamples"] == 200 and printed["metrics"]["mrr"]["a"] == round((1 + 0.25) / 2, 4)
