"""BM25 (SQLite FTS5) cost per query against the number of functions, in the worst case.

Why a worst case: FTS5 finds matches cheaply but scores each one in microseconds, so the
cost follows how many functions a query's words occur in.  Here every function's body draws
10–60 words from one small vocabulary (``benchmarks/search_index.py``'s ``WORDS``), so each
query word occurs in about a quarter of all functions — far more than in real code.  Each
query is timed through :func:`pathfusion.server.lexical.bm25_bonuses` (with its
``BM25_MAX_MATCHES`` bound) and, for comparison, scoring every match unbounded.

    .venv/bin/python benchmarks/bm25_cost.py [--sizes 10000,100000] [--json benchmarks/results/bm25_cost.json]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import print_rows, save_json  # noqa: E402
from benchmarks.search_index import WORDS  # noqa: E402
from pathfusion.server.lexical import (  # noqa: E402
    LEXICON_SQL,
    NAME_TERMS_WEIGHT,
    bm25_bonuses,
    function_terms,
    match_expression,
    name_terms,
    query_features,
)

QUERIES = ["validate the user session", "sort the table rows by column", "encode text as json", "read a file",
           "open a socket to the server and send the request", "parse_json", "copy a directory tree recursively"]


def lexicon(size: int, seed: int = 0) -> sqlite3.Connection:
    rng = random.Random(seed)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE functions (label INTEGER PRIMARY KEY, name_terms TEXT NOT NULL, "
               "terms TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)")
    db.executescript(LEXICON_SQL)
    rows = []
    for label in range(size):
        name = "_".join(rng.sample(WORDS, rng.choice((1, 2, 2, 3))))
        body = " ".join(rng.choices(WORDS, k=rng.randint(10, 60)))
        rows.append((label, name_terms(name), function_terms(f"def {name}(value, other=None):\n    {body}")))
    db.executemany("INSERT INTO functions (label, name_terms, terms) VALUES (?, ?, ?)", rows)
    db.commit()
    return db


def median_ms(fn: Any, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - started))
    return round(statistics.median(times), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bm25_cost.json")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"benchmark": "bm25_cost", "sizes": {}}
    rows = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        db = lexicon(size)
        per_query = {}
        for query in QUERIES:
            tokens = query_features(query)[1]
            expression = match_expression(tokens)
            matches = db.execute("SELECT count(*) FROM lexicon WHERE lexicon MATCH ?", (expression,)).fetchone()[0]
            unbounded = median_ms(lambda e=expression, db=db: db.execute(
                "SELECT rowid, -bm25(lexicon, ?, 1.0) FROM lexicon WHERE lexicon MATCH ?",
                (NAME_TERMS_WEIGHT, e)).fetchall())
            bounded = median_ms(lambda t=tokens, db=db: bm25_bonuses(db, t, None))
            scored = len(bm25_bonuses(db, tokens, None)[0])
            per_query[query] = {"matches": matches, "unbounded_ms": unbounded, "bounded_ms": bounded,
                                "scored": scored}
            rows.append((f"{size}: {query[:32]}", f"{matches} matches; unbounded {unbounded} ms, "
                                                   f"bounded {bounded} ms ({scored} scored)"))
        result["sizes"][str(size)] = per_query
        db.close()
    print_rows(rows, width=46)
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
