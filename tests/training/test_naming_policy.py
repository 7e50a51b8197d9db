"""The naming policy's calibration fit (model_export/naming_policy.py): maximum likelihood of
which beam name, if any, is the real one, and its scoring on functions left out."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from pathfusion.model_export.naming_policy import (
    expected_calibration_error,
    fit_calibration,
    main,
    offer_floors,
)
from pathfusion.server.name_confidence import Calibration, leftover
from pathfusion.server.name_generator import CALIBRATION, rank_score

WORDS = ("get", "set", "value", "load", "config", "read", "file", "name", "path")


def synthetic_rows(calibration: Calibration, count: int, seed: int = 3) -> list[dict[str, object]]:
    """Functions whose real name is drawn from ``calibration``'s distribution over their beam
    names (and "none of these"), so that a correct fit finds ``calibration`` again."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for n in range(count):
        labels = ["|".join(rng.sample(WORDS, rng.randint(1, 3))) + f"|{n}|{i}" for i in range(5)]
        found = sorted(((label, rng.uniform(0.005, 0.15)) for label in labels), key=lambda x: -rank_score(*x))
        confidences = calibration.confidences([rank_score(label, p) for label, p in found],
                                              leftover([p for _, p in found]))
        draw, real = rng.random(), f"other|{n}"
        for (label, _), confidence in zip(found, confidences, strict=True):
            if draw < confidence:
                real = label
                break
            draw -= confidence
        rows.append({"label": real, "wrong": "x", "names": [list(x) for x in found], "p_real": 0.1, "p_wrong": 0.01,
                     "per_wordpiece_real": -1.0, "per_wordpiece_wrong": -6.0})
    return rows


def test_the_fit_finds_the_calibration_that_made_the_names() -> None:
    truth = Calibration(0.8, 1.2)
    fitted = fit_calibration(synthetic_rows(truth, 4000))
    assert fitted["slope"] == pytest.approx(truth.slope, abs=0.1)
    assert fitted["none_logit"] == pytest.approx(truth.none_logit, abs=0.25)
    other = fit_calibration(synthetic_rows(Calibration(1.4, 2.5), 4000))
    assert other["slope"] > fitted["slope"] + 0.3 and other["none_logit"] > fitted["none_logit"] + 0.8


def test_expected_calibration_error_is_the_bins_weighted_gap() -> None:
    ece, table = expected_calibration_error([0.05, 0.05, 0.95, 0.95], [False, True, True, True])
    assert ece == pytest.approx(0.5 * abs(0.05 - 0.5) + 0.5 * abs(0.95 - 1.0))
    assert [(b["count"], b["accuracy"]) for b in table] == [(2, 0.5), (2, 1.0)]


def test_rows_of_an_earlier_run_are_scored_on_their_holdout(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    rows = synthetic_rows(Calibration(1.0, 1.35), 300)
    earlier = tmp_path / "policy.json"
    earlier.write_text(json.dumps({"models": "models", "naming_head": "head", "seed": 7, "rows": rows}))
    out = tmp_path / "again.json"
    assert main(["--rows", str(earlier), "--holdout", "100", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["functions"] == 200 and result["holdout"]["functions"] == 100 and result["seed"] == 7
    assert result["calibration_shipped"] == {"slope": CALIBRATION.slope, "none_logit": CALIBRATION.none_logit}
    assert not math.isnan(result["holdout"]["top1_shown"]["ece"]) and result["rows"] == rows
    with pytest.raises(SystemExit):
        main(["--rows", str(earlier), "--holdout", "300", "--out", str(out)])
    assert "--holdout" in capsys.readouterr().err


def test_held_out_projects_score_the_shipped_calibration_and_choose_nothing(naming_models: Path,
                                                                             tmp_path: Path) -> None:
    pytest.importorskip("torch")
    project = tmp_path / "projects" / "demo"
    project.mkdir(parents=True)
    (project / "config.py").write_text(
        "import json\n\n\ndef load_config(path):\n    with open(path) as fh:\n        return json.load(fh)\n\n\n"
        "def save_config(path, data):\n    with open(path, 'w') as fh:\n        json.dump(data, fh)\n\n\n"
        "def read_text(path):\n    with open(path) as fh:\n        text = fh.read()\n    return text\n")
    out = tmp_path / "held.json"
    assert main(["--models", str(naming_models), "--projects", str(tmp_path / "projects"), "--functions", "5",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["functions"] == 3 and {r["label"] for r in result["rows"]} == {"load|config", "save|config", "read|text"}
    assert 0 <= result["top1_shown"]["ece"] <= 1 and "calibration_fit" not in result and "chosen_floor" not in result


def _offer_row(real: str, names: list[tuple[str, float]], *, flagged: bool = True) -> dict[str, object]:
    """A function with a wrong current name ``x`` (flagged or not) and a good one (never flagged)."""
    return {"label": real, "wrong": "x", "names": [list(n) for n in names], "p_real": 0.5, "p_wrong": 1e-9,
            "per_wordpiece_real": -0.5, "per_wordpiece_wrong": -20.0 if flagged else -0.5}


def test_the_offer_floor_is_the_smallest_at_which_what_is_offered_helps_half_the_time() -> None:
    """Confident first names that are right, unsure ones that are wrong: the table counts what
    each floor offers, and the rule picks the smallest floor where at least half of the first
    names offered for wrong current names share half their subtokens with the real name."""
    sure = [("load|config", 0.6), ("read|config", 0.2)]
    unsure = [("run", 0.02), ("call", 0.015)]
    rows = [_offer_row("load|config", sure) for _ in range(3)]  # helpful, ≥ 0.3 shown
    rows += [_offer_row("parse|args", unsure) for _ in range(5)]  # never helpful, well below 0.1 shown
    rows += [_offer_row("save|file", sure, flagged=False)]  # the current name passes: nothing offered
    result = offer_floors(rows)
    table = {t["floor"]: t for t in result["offer_floors"]}
    assert table[0.0]["wrong_name_gets_a_suggestion"] == pytest.approx(8 / 9, abs=1e-4)
    assert table[0.0]["offered_helpful"] == pytest.approx(3 / 8, abs=1e-4)
    assert table[0.0]["good_name_gets_a_suggestion"] == 0.0  # good names here are never flagged
    chosen = result["chosen_offer_floor"]
    assert chosen is not None and table[chosen]["offered_helpful"] >= 0.5
    assert all(t["offered_helpful"] is None or t["offered_helpful"] < 0.5
               for t in result["offer_floors"] if t["floor"] < chosen)
    assert table[chosen]["wrong_name_gets_a_helpful_one"] == pytest.approx(3 / 9, abs=1e-4)  # the sure ones stay
    assert table[0.3]["offered_exact"] == 1.0
