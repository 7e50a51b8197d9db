"""``run_validations``: the validations a run logged, and their mean over a range of steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pathfusion.model_export.run_validations import main, run_validations


def _write_log(run: Path, events: list[dict[str, object]]) -> Path:
    run.mkdir(parents=True)
    (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


def _valid(step: int, f1: float, exact: float) -> dict[str, object]:
    return {"event": "valid", "step": step, "score": f1, "naming": {"f1": f1, "exact_match": exact}}


def test_mean_from_a_step_with_the_last_validation_of_a_step_winning(tmp_path: Path) -> None:
    run = _write_log(tmp_path / "weighted-rest", [
        {"event": "start"}, _valid(0, 0.30, 0.09), {"event": "train", "step": 50, "loss": 2.0},
        _valid(100, 0.32, 0.10),
        _valid(100, 0.34, 0.11),  # resumed before the checkpoint: validated again
        _valid(200, 0.36, 0.12), {"event": "finished", "step": 200}])
    rows = run_validations(run, "f1", from_step=100)
    assert (rows.steps, rows.values) == ([0, 100, 200], [0.30, 0.34, 0.36])
    assert rows.mean == pytest.approx(0.35) and rows.best == 0.36 and rows.finished
    assert run_validations(run, "exact_match", from_step=1).mean == pytest.approx(0.115)
    assert run_validations(run, "score", from_step=0).mean == pytest.approx((0.30 + 0.34 + 0.36) / 3, abs=1e-4)
    assert run_validations(run, "f1", from_step=300).mean is None


def test_a_running_run_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = _write_log(tmp_path / "code2vec", [_valid(0, 0.2, 0.05), _valid(300, 0.25, 0.06)])
    assert main([str(running), "--from-step", "100", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["finished"] is False and row["mean"] == 0.25 and row["steps"] == [0, 300]
    assert main([str(running)]) == 0
    assert "not finished" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 1
    assert "log.jsonl not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="metric"):
        run_validations(running, "loss")
