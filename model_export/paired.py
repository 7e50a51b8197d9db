"""Two evaluations of the same pairs or functions, compared pair by pair.

``python -m pathfusion.model_export.paired A B`` reads two listings of ``pathfusion eval``:
``--ranks`` files (search: one row per scored pair) or ``--predictions`` files (naming: one row
per function), and prints the metric of each, B − A, and a 95 % interval of that difference by a
paired bootstrap (the same resampled rows for both), with how many rows B wins and loses.

Why: candidates trained a few steps apart differ on validation by thousandths, which is about
what the choice of the scored rows moves.  Resampling the rows *together* measures the noise of
the difference itself (far smaller than each metric's own, since most rows rank alike under
both), so "a tie" and "a gain" are decided by a number, not by eye.  The listings must hold the
same rows in the same order (the same split, limit and seed); anything else is refused, since a
comparison of different rows would read as a difference of models.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import NamingScores

RESAMPLES = 2000
SEED = 2019


def read_listing(path: Path) -> list[dict[str, Any]]:
    """The rows of one ``--ranks`` / ``--predictions`` file; a file that is not one is refused."""
    rows: list[dict[str, Any]] = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON line ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected an object per line")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def listing_kind(rows: Sequence[dict[str, Any]], path: Path) -> str:
    """``search`` (rows with ``rank``) or ``naming`` (rows with ``gold`` and ``predicted``)."""
    if all("rank" in row and "query" in row and "qualname" in row for row in rows):
        return "search"
    if all("gold" in row and "predicted" in row for row in rows):
        return "naming"
    raise ValueError(f"{path}: neither an `eval search --ranks` nor an `eval naming --predictions` listing")


def _row_key(row: dict[str, Any], kind: str) -> tuple[str, ...]:
    return (row["query"], row["qualname"]) if kind == "search" else (row["gold"],)


def check_alignment(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], kind: str) -> None:
    """Refuse listings of different rows: a paired comparison needs row *i* to be the same
    pair (query and function) or the same function (gold name) in both."""
    if len(a) != len(b):
        raise ValueError(f"the listings hold {len(a)} and {len(b)} rows: not the same evaluation")
    for index, (left, right) in enumerate(zip(a, b, strict=True)):
        if _row_key(left, kind) != _row_key(right, kind):
            raise ValueError(f"row {index + 1} differs ({_row_key(left, kind)} vs {_row_key(right, kind)}): "
                             "not the same evaluation (same split, limit and seed?)")


def search_statistics(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per pair: the reciprocal rank (MRR's terms) and whether the described function came first."""
    ranks = np.array([int(row["rank"]) for row in rows], dtype=np.float64)
    if (ranks < 1).any():
        raise ValueError("a rank below 1 in a --ranks listing")
    return {"mrr": 1.0 / ranks, "top1": (ranks == 1).astype(np.float64)}


def naming_statistics(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per function: code2vec's subtoken counts (tp, fp, fn — F1 is micro-averaged, so it is
    resampled from summed counts, not averaged per function), exact match and top-5, scored by
    :class:`~pathfusion.model_export.metrics.NamingScores` so the numbers are ``eval naming``'s."""
    counts = np.zeros((len(rows), 3))
    exact = np.zeros(len(rows))
    top5 = np.zeros(len(rows))
    for index, row in enumerate(rows):
        scores = NamingScores()
        scores.add(row["gold"], list(row["predicted"]))
        counts[index] = (scores.tp, scores.fp, scores.fn)
        exact[index], top5[index] = scores.exact, scores.top5
    return {"f1": counts, "exact_match": exact, "top5_accuracy": top5}


def _f1(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from summed (tp, fp, fn) on the last axis (0 where undefined)."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (2 * tp + fp + fn)
    return np.nan_to_num(f1)


def _metric(name: str, values: np.ndarray, indices: np.ndarray | None) -> np.ndarray:
    """The metric over all rows (``indices`` None) or over each resample of rows."""
    picked = values if indices is None else values[indices]
    summed = picked.sum(axis=-2) if name == "f1" else picked.mean(axis=-1)
    return _f1(summed) if name == "f1" else summed


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], resamples: int = RESAMPLES,
            seed: int = SEED) -> dict[str, dict[str, float]]:
    """Each metric of A and B, B − A and its paired-bootstrap 95 % interval, and the rows where
    B's per-row value is above / below A's (for F1, the rows' own subtoken F1)."""
    rows = len(next(iter(a.values())))
    indices = np.random.default_rng(seed).integers(0, rows, size=(resamples, rows), dtype=np.int32)
    result: dict[str, dict[str, float]] = {}
    for name in a:
        diff = _metric(name, b[name], indices) - _metric(name, a[name], indices)
        low, high = np.percentile(diff, [2.5, 97.5])
        per_row_a = _f1(a[name]) if name == "f1" else a[name]
        per_row_b = _f1(b[name]) if name == "f1" else b[name]
        whole_a, whole_b = float(_metric(name, a[name], None)), float(_metric(name, b[name], None))
        result[name] = {
            "a": round(whole_a, 4),
            "b": round(whole_b, 4),
            "difference": round(whole_b - whole_a, 4),
            "interval_low": round(float(low), 4),
            "interval_high": round(float(high), 4),
            "rows_b_better": int((per_row_b > per_row_a).sum()),
            "rows_b_worse": int((per_row_b < per_row_a).sum()),
        }
    return result


def compare_files(path_a: Path, path_b: Path, resamples: int = RESAMPLES) -> dict[str, Any]:
    """Read, check and compare two listings of the same evaluation."""
    rows_a, rows_b = read_listing(path_a), read_listing(path_b)
    kind_a, kind_b = listing_kind(rows_a, path_a), listing_kind(rows_b, path_b)
    if kind_a != kind_b:
        raise ValueError(f"{path_a} is a {kind_a} listing and {path_b} a {kind_b} one")
    check_alignment(rows_a, rows_b, kind_a)
    statistics = search_statistics if kind_a == "search" else naming_statistics
    return {"task": kind_a, "a": str(path_a), "b": str(path_b), "rows": len(rows_a), "resamples": resamples,
            "metrics": compare(statistics(rows_a), statistics(rows_b), resamples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the baseline's listing (eval search --ranks / eval naming --predictions)")
    parser.add_argument("b", type=Path, help="the candidate's listing of the same rows")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default %(default)s)")
    args = parser.parse_args(argv)
    if args.resamples < 100:
        parser.error("--resamples must be at least 100")
    try:
        result = compare_files(args.a, args.b, args.resamples)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
