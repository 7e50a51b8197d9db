"""``python -m pathfusion.model_export.naming_policy``: when should the editor suggest a new name?

The generative head scores any name, the current one included, so the editor can stay quiet
while the current name is likely enough (:data:`pathfusion.server.code2vec.UNLIKELY_CURRENT_NAME`, a
floor on its mean log-probability per wordpiece).  This measures candidate floors on
*validation* functions (never the test split), twice per function: with its real name as
the current one (a good name: a suggestion there is a false alarm) and with the name of
another random validation function (a wrong name: a suggestion there is wanted).  For each
floor it prints the share of functions that get a suggestion in both cases, and picks the
floor with the largest difference (Youden's J).  The same table for a ratio rule on whole-name
probabilities ("an alternative k times as likely") shows why the floor is per wordpiece: a
long precise name is far less probable than a short common one.  It also reports how well the
shown probabilities are calibrated: expected calibration error (ECE, 10 equal-width bins) of
the top suggestion's probability against "it is the real name", with the bins for a
reliability plot — for the model's own probability and for the calibrated one the editor
shows (:mod:`pathfusion.server.name_confidence`), whose two parameters it fits here by
maximum likelihood on a grid.  ``--holdout N`` keeps the last N functions out of every choice
and scores the shipped calibration on them; ``--projects DIR`` scores it, and nothing else is
chosen, on held-out projects (functions as ``pathfusion eval naming --projects`` reads them).

And the least calibrated probability a name needs to be offered
(:data:`pathfusion.server.code2vec.LEAST_OFFERED_CONFIDENCE`): for each candidate floor, how often
a good and a wrong current name (flagged by the shipped per-wordpiece floor) get a name offered,
and how often the first name offered for a wrong one is helpful — subtoken F1 ≥ 0.5 with the
real name; the smallest floor at which it is helpful at least half the time is chosen (on the
held-out projects: the table alone).

And the length bonus names are ranked with (:data:`pathfusion.server.name_generator.LENGTH_BONUS`):
subtoken P/R/F1 of the top name re-ranked from the same beam results with each bonus; the
smallest bonus within 0.005 F1 of the best is chosen.

Writes ``data/results/naming-policy.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.code2vec import UNLIKELY_CURRENT_NAME, CurrentName, names_above
from pathfusion.server.embedder import load_embedder
from pathfusion.server.models import default_models_dir
from pathfusion.server.name_confidence import Calibration, leftover
from pathfusion.server.name_generator import (
    CALIBRATION,
    LENGTH_BONUS,
    NameGenerator,
    rank_score,
    shown,
)

from .corpus import read_jsonl_gz
from .evaluate import iter_project_examples
from .metrics import NamingScores

RATIOS = (1.0, 2.0, 5.0, 10.0)
BONUSES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
FLOORS = (-7.0, -6.0, -5.5, -5.0, -4.5, -4.0, -3.5, -3.0, -2.5, -2.0)
BINS = 10
OFFER_FLOORS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
HELPFUL_F1 = 0.5
"""A name offered for a wrong current name helps when its subtoken F1 with the real name is at
least this (half its subtokens right, in both directions)."""
HELPFUL_SHARE = 0.5
"""The offer floor chosen is the smallest at which at least this share of the names offered helps."""
SLOPES = tuple(round(0.5 + 0.02 * i, 2) for i in range(51))
NONE_LOGITS = tuple(round(-2.0 + 0.05 * i, 2) for i in range(101))


def validation_functions(corpus: Path, count: int, seed: int) -> list[dict[str, str]]:
    """``count`` seeded-random naming functions of the valid split (masked code, label)."""
    records = [{"masked": r["masked_code"], "label": r["label"]}
               for r in read_jsonl_gz(corpus / "valid.jsonl.gz") if r.get("naming") and r.get("label")]
    return random.Random(seed).sample(records, min(count, len(records)))


def project_functions(root: Path, count: int, seed: int) -> list[dict[str, str]]:
    """``count`` seeded-random naming functions of the held-out projects under ``root``."""
    records = [{"masked": e.masked, "label": e.label} for e in iter_project_examples(root)]
    return random.Random(seed).sample(records, min(count, len(records)))


def expected_calibration_error(probabilities: Sequence[float], correct: Sequence[bool],
                               bins: int = BINS) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width bins, and each bin's (mean probability, accuracy, count)."""
    p = np.asarray(probabilities, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    error, table = 0.0, []
    for b in range(bins):
        chosen = which == b
        if not chosen.any():
            continue
        confidence, accuracy = float(p[chosen].mean()), float(c[chosen].mean())
        error += chosen.sum() / len(p) * abs(confidence - accuracy)
        table.append({"from": round(float(edges[b]), 2), "to": round(float(edges[b + 1]), 2),
                      "confidence": round(confidence, 4), "accuracy": round(accuracy, 4), "count": int(chosen.sum())})
    return round(float(error), 4), table


def measure(generator: NameGenerator, functions: list[dict[str, str]], seed: int, top_k: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    rows = []
    for n, function in enumerate(functions):
        wrong = function["label"]
        while wrong == function["label"]:
            wrong = rng.choice(functions)["label"]
        names, real = generator.candidates(function["masked"], top_k, function["label"])
        _, other = generator.candidates(function["masked"], top_k, wrong)
        assert real is not None and other is not None
        rows.append({"label": function["label"], "wrong": wrong, "names": names,
                     "p_real": real.probability, "p_wrong": other.probability,
                     "per_wordpiece_real": real.per_wordpiece, "per_wordpiece_wrong": other.per_wordpiece})
        if (n + 1) % 50 == 0:
            print(f"{n + 1}/{len(functions)}", file=sys.stderr, flush=True)
    return rows


def fit_calibration(rows: Sequence[dict[str, Any]], bonus: float = LENGTH_BONUS) -> dict[str, float]:
    """The :class:`Calibration` of the grid (:data:`SLOPES` × :data:`NONE_LOGITS`) under which
    the real names of ``rows`` are likeliest: for each function, the probability of the
    candidate that is its real name, or of "none of them" when the beam missed it."""
    kept = [r for r in rows if r["names"]]
    if not kept:
        raise ValueError("no function has a suggested name: nothing to fit the calibration on")
    width = max(len(r["names"]) for r in kept)
    s = np.full((len(kept), width + 1), -np.inf)
    rest = np.zeros(len(kept))
    for i, r in enumerate(kept):
        s[i, :len(r["names"])] = [rank_score(label, p, bonus) for label, p in r["names"]]
        rest[i] = math.log(leftover([p for _, p in r["names"]]))
    hits = np.asarray([next((i for i, (label, _) in enumerate(r["names"]) if label == r["label"]), width)
                       for r in kept])
    best: tuple[float, float, float] | None = None
    for slope in SLOPES:
        for none in NONE_LOGITS:
            z = s * slope
            z[:, width] = none + slope * rest
            top = z.max(axis=1, keepdims=True)
            log_total = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
            likelihood = float((z[np.arange(len(kept)), hits] - log_total).mean())
            if best is None or likelihood > best[0]:
                best = (likelihood, slope, none)
    assert best is not None
    return {"slope": best[1], "none_logit": best[2], "mean_log_likelihood": round(best[0], 5)}


def top1_calibration(rows: Sequence[dict[str, Any]], calibration: Calibration | None) -> dict[str, Any]:
    """ECE and reliability bins of the top name's probability (the model's own with None)."""
    top = []
    for r in rows:
        if not r["names"]:
            continue
        label, p = r["names"][0]
        if calibration is not None:
            p = shown(r["names"], 1, calibration=calibration)[0][0][1]
        top.append((p, label == r["label"]))
    if not top:
        return {"ece": None, "mean_probability": None, "exact": None, "reliability": []}
    ece, table = expected_calibration_error([p for p, _ in top], [c for _, c in top])
    return {"ece": ece, "mean_probability": round(float(np.mean([p for p, _ in top])), 4),
            "exact": round(float(np.mean([c for _, c in top])), 4), "reliability": table}


def subtoken_f1(gold: str, predicted: str) -> float:
    """code2vec's subtoken F1 of one prediction."""
    scores = NamingScores()
    scores.add(gold, [predicted])
    return float(scores.result()["f1"])


def offered_names(row: dict[str, Any], current: str, probability: float, per_wordpiece: float
                  ) -> list[tuple[str, float]]:
    """The names the editor would offer (before the confidence floor) for ``row``'s function named
    ``current``: none while that name is likely enough, else those of
    :func:`~pathfusion.server.code2vec.names_above` (the rule of ``Suggestion.worth_offering``)."""
    if per_wordpiece >= UNLIKELY_CURRENT_NAME:
        return []
    # the wordpiece count only enters per_wordpiece, which the row holds already
    names, scored = shown(row["names"], len(row["names"]), CurrentName(probability, 1), current)
    assert scored is not None
    return [(label, p) for _, label, p in names_above([(label, label, p) for label, p in names], current,
                                                        scored.shown, least=0.0)]


def offer_floors(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The table of candidate :data:`OFFER_FLOORS` and the one the rule picks (module docstring)."""
    good = [offered_names(r, r["label"], r["p_real"], r["per_wordpiece_real"]) for r in rows]
    wrong = [offered_names(r, r["wrong"], r["p_wrong"], r["per_wordpiece_wrong"]) for r in rows]
    table = []
    for floor in OFFER_FLOORS:
        firsts = [(kept[0][0], r["label"]) for names, r in zip(wrong, rows, strict=True)
                  if (kept := [n for n in names if n[1] >= floor])]
        helpful = sum(subtoken_f1(real, name) >= HELPFUL_F1 for name, real in firsts)
        exact = sum(name == real for name, real in firsts)
        table.append({"floor": floor,
                      "good_name_gets_a_suggestion": round(sum(any(p >= floor for _, p in n) for n in good) / len(rows), 4),
                      "wrong_name_gets_a_suggestion": round(len(firsts) / len(rows), 4),
                      "wrong_name_gets_a_helpful_one": round(helpful / len(rows), 4),
                      "offered_helpful": round(helpful / len(firsts), 4) if firsts else None,
                      "offered_exact": round(exact / len(firsts), 4) if firsts else None})
    chosen = next((t["floor"] for t in table
                   if t["offered_helpful"] is not None and t["offered_helpful"] >= HELPFUL_SHARE), None)
    return {"offer_floors": table, "chosen_offer_floor": chosen}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def offered(row: dict[str, Any], current: str, p_current: float, ratio: float) -> list[tuple[str, float]]:
        return [(label, p) for label, p in row["names"] if label != current and p >= ratio * p_current]

    policy = []
    for ratio in RATIOS:
        alarms = [bool(offered(r, r["label"], r["p_real"], ratio)) for r in rows]
        wanted = [offered(r, r["wrong"], r["p_wrong"], ratio) for r in rows]
        caught = [bool(w) for w in wanted]
        right = [bool(w) and w[0][0] == r["label"] for w, r in zip(wanted, rows, strict=True)]
        policy.append({"ratio": ratio, "good_name_gets_a_suggestion": round(float(np.mean(alarms)), 4),
                       "wrong_name_gets_a_suggestion": round(float(np.mean(caught)), 4),
                       "wrong_name_top_suggestion_is_the_real_name": round(float(np.mean(right)), 4)})
    floors = []
    for floor in FLOORS:
        false_alarms = float(np.mean([r["per_wordpiece_real"] < floor for r in rows]))
        detected = float(np.mean([r["per_wordpiece_wrong"] < floor for r in rows]))
        floors.append({"floor": floor, "good_name_gets_a_suggestion": round(false_alarms, 4),
                       "wrong_name_gets_a_suggestion": round(detected, 4),
                       "youden_j": round(detected - false_alarms, 4)})
    chosen = max(floors, key=lambda f: (f["youden_j"], -abs(f["floor"])))
    bonuses = []
    for bonus in BONUSES:
        scores = NamingScores()
        for r in rows:
            ranked = sorted(r["names"], key=lambda item: -rank_score(item[0], item[1], bonus))
            scores.add(r["label"], [label for label, _ in ranked])
        result = scores.result()
        bonuses.append({"bonus": bonus, **{k: result[k] for k in ("precision", "recall", "f1", "exact_match")}})
    best_f1 = max(float(b["f1"]) for b in bonuses)
    chosen_bonus = min(b["bonus"] for b in bonuses if float(b["f1"]) >= best_f1 - 0.005)
    fitted = fit_calibration(rows)
    return {"functions": len(rows), "length_bonus": bonuses, "chosen_length_bonus": chosen_bonus,
            "floors": floors, "chosen_floor": chosen["floor"], **offer_floors(rows), "ratio_rule": policy,
            "top1_model_probability": top1_calibration(rows, None),
            "top1_shown": top1_calibration(rows, CALIBRATION), "calibration_fit": fitted,
            "top1_fitted": top1_calibration(rows, Calibration(fitted["slope"], fitted["none_logit"]))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.naming_policy", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--functions", type=int, default=500)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--holdout", type=int, default=0,
                        help="the last N of the functions are left out of every choice and score the shipped "
                             "calibration (default: %(default)s)")
    parser.add_argument("--projects", type=Path, default=None,
                        help="score the shipped calibration on these held-out projects instead (chooses nothing)")
    parser.add_argument("--rows", type=Path, default=None,
                        help="summarise the rows an earlier run wrote (its --out) instead of running the model, "
                             "e.g. to score the calibration chosen from them on its holdout")
    parser.add_argument("--out", type=Path, default=Path("data/results/naming-policy.json"))
    args = parser.parse_args(argv)
    if args.rows is not None:
        earlier = json.loads(args.rows.read_text(encoding="utf-8"))
        models, head, rows = earlier["models"], earlier["naming_head"], earlier["rows"]
    else:
        models = str(args.models or default_models_dir())
        generator = NameGenerator.load(Path(models), load_embedder("onnx", Path(models), device="cpu"), "cpu")
        head = generator.model_id
        functions = (validation_functions(args.corpus, args.functions, args.seed) if args.projects is None
                     else project_functions(args.projects, args.functions, args.seed))
        rows = measure(generator, functions, args.seed)
    if args.projects is not None:
        result = {"models": models, "naming_head": head, "seed": args.seed, "projects": str(args.projects),
                  "functions": len(rows), "calibration_shipped": dataclasses.asdict(CALIBRATION),
                  "top1_shown": top1_calibration(rows, CALIBRATION), "top1_model_probability": top1_calibration(rows, None),
                  **offer_floors(rows)}
        return _write(args.out, result, rows)
    if not 0 <= args.holdout < len(rows):
        parser.error(f"--holdout must be at least 0 and below the {len(rows)} functions")
    chosen, held = rows[:len(rows) - args.holdout], rows[len(rows) - args.holdout:]
    result = {"models": models, "naming_head": head, "seed": args.seed if args.rows is None else earlier.get("seed"),
              "calibration_shipped": dataclasses.asdict(CALIBRATION), **summarise(chosen)}
    if held:
        result["holdout"] = {"functions": len(held), "top1_shown": top1_calibration(held, CALIBRATION),
                             "top1_model_probability": top1_calibration(held, None), **offer_floors(held)}
    return _write(args.out, result, rows)


def _write(out: Path, result: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "rows": rows}, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
