"""``python -m pathfusion.model_export.run_validations RUN...``: the validations each training run
logged, and their mean over a range of steps.

Why a mean: successive validations of one naming run move by up to 0.013 F1 on the 2,000
validation functions (docs/results.md, "Naming fusions"), so the best of six is luck as much
as a variant's quality; the fusions are compared on the mean of their validations after the
start of the pass over the rest of the split (``--from-step 100``).  Reads the ``valid``
events of each run's ``log.jsonl`` (:func:`pathfusion.model_export.run_files.log_event`);
a run still going is reported as such, with what it has so far.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

METRICS = ("f1", "exact_match", "score")
"""``f1`` / ``exact_match``: the naming validation's; ``score``: what the run selected on."""


@dataclass(frozen=True)
class RunValidations:
    """One run's validations of ``metric`` by step, and their mean from ``from_step`` on."""

    run: str
    metric: str
    steps: list[int]
    values: list[float]
    mean: float | None
    best: float | None
    finished: bool


def metric_of(event: dict[str, Any], metric: str) -> float | None:
    """``metric`` of one ``valid`` event (None when the run did not log it)."""
    value = event.get("score") if metric == "score" else (event.get("naming") or {}).get(metric)
    return None if value is None else float(value)


def run_validations(run: Path, metric: str = "f1", from_step: int = 1) -> RunValidations:
    """The validations of ``run`` (a run folder with ``log.jsonl``).  A resumed run may log a
    step twice (validated, interrupted before its checkpoint, validated again): the last wins."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    log = run / "log.jsonl"
    if not log.is_file():
        raise ValueError(f"{log} not found: is {run} a training run folder?")
    by_step: dict[int, float] = {}
    finished = False
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        if event.get("event") == "finished":
            finished = True
        if event.get("event") != "valid":
            continue
        value = metric_of(event, metric)
        if value is not None:
            by_step[int(event["step"])] = value
    steps = sorted(by_step)
    values = [by_step[s] for s in steps]
    chosen = [v for s, v in zip(steps, values, strict=True) if s >= from_step]
    mean = round(sum(chosen) / len(chosen), 4) if chosen else None
    return RunValidations(str(run), metric, steps, values, mean, max(values) if values else None, finished)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.run_validations",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (each with log.jsonl)")
    parser.add_argument("--metric", default="f1", choices=METRICS)
    parser.add_argument("--from-step", type=int, default=1,
                        help="the mean covers validations at this step and later (default: %(default)s, "
                             "all but the start)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        rows = [run_validations(run, args.metric, args.from_step) for run in args.runs]
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"run_validations: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=1))
        return 0
    for row in rows:
        curve = ", ".join(f"{s}: {v:.4f}" for s, v in zip(row.steps, row.values, strict=True))
        state = "finished" if row.finished else "not finished"
        mean = "–" if row.mean is None else f"{row.mean:.4f}"
        print(f"{row.run}  ({state})  mean {row.metric} from step {args.from_step}: {mean}\n    {curve}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
