"""What the BM25 bound (``BM25_MAX_MATCHES``) costs in retrieval and saves in time, at scale.

Why: the bound caps how many functions one query BM25-scores (FTS5 scores a match in
microseconds, so sentence queries over 100k functions cost several ms), but groups of 1,000
— the evaluation protocol — never reach it, so its effect on ranking is invisible there.
Here: ``N`` real corpus functions (test, valid, then train split, docstrings stripped, as
``benchmarks/search_index.py --bodies corpus`` indexes them) in one lexicon, and for a seeded
sample of them with a docstring summary, the summary as the query.  For each bound, through
the server's own :func:`pathfusion.server.lexical.bm25_bonuses` with remembered counts (a
fresh count cache per bound, queries in the same order): the time of each query's BM25 part
(p50/p95), and where the function the summary describes ranks by its BM25 bonus alone
(MRR, share in the top 10, share with no bonus at all).  BM25 alone, because the hybrid adds
it to the vector score: a bound that keeps the lexical evidence for the right function
keeps the hybrid's ranking.

    .venv/bin/python benchmarks/bm25_bound.py [--size 100000] [--queries 1000] [--bounds 5000,3000,2000,1000]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import save_json  # noqa: E402
from benchmarks.search_index import corpus_functions  # noqa: E402
from pathfusion.server import lexical  # noqa: E402


def lexicon(functions: list[dict[str, str]]) -> sqlite3.Connection:
    """An in-memory lexicon of ``functions`` (label = position), as the index stores one."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE functions (label INTEGER PRIMARY KEY, name_terms TEXT NOT NULL, "
               "terms TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)")
    db.executescript(lexical.LEXICON_SQL)
    db.executemany("INSERT INTO functions (label, name_terms, terms) VALUES (?, ?, ?)",
                   [(i, lexical.name_terms(f["name"]), lexical.function_terms(f["code"]))
                    for i, f in enumerate(functions)])
    db.commit()
    return db


def run_bound(db: sqlite3.Connection, bound: int, queries: list[tuple[int, str]]) -> dict[str, Any]:
    lexical.BM25_MAX_MATCHES = bound
    counts: dict[str, int] = {}
    seconds, ranks, scored = [], [], []
    for target, query in queries:
        tokens = lexical.query_features(query.strip())[1]
        started = time.perf_counter()
        labels, bonus = lexical.bm25_bonuses(db, tokens, None, counts=counts)
        seconds.append(time.perf_counter() - started)
        scored.append(len(labels))
        where = np.nonzero(labels == target)[0]
        if len(where) == 0:
            ranks.append(None)
            continue
        mine = bonus[where[0]]
        ranks.append(1 + int(np.sum(bonus > mine)))
    ms = np.asarray(seconds) * 1000
    found = [r for r in ranks if r is not None]
    return {"bound": bound, "queries": len(queries), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "mean_scored": round(float(np.mean(scored)), 1),
            "mrr_bm25_alone": round(sum(1 / r for r in found) / len(queries), 4),
            "top10": round(sum(r <= 10 for r in found) / len(queries), 4),
            "no_bonus": round(1 - len(found) / len(queries), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--bounds", default="5000,3000,2000,1000")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bm25_bound.json")
    args = parser.parse_args(argv)
    functions = corpus_functions(args.corpus, args.size)
    started = time.perf_counter()
    db = lexicon(functions)
    built = time.perf_counter() - started
    with_summary = [i for i, f in enumerate(functions) if f["summary"]]
    chosen = random.Random(args.seed).sample(with_summary, min(args.queries, len(with_summary)))
    queries = [(i, functions[i]["summary"]) for i in chosen]
    shipped = lexical.BM25_MAX_MATCHES
    bounds = [int(b) for b in args.bounds.split(",")]
    rows = []
    for _ in range(2):  # twice, alternating: the machine's noise shows in the spread
        for bound in bounds:
            rows.append(run_bound(db, bound, queries))
            print(json.dumps(rows[-1]))
    lexical.BM25_MAX_MATCHES = shipped
    save_json({"size": args.size, "build_s": round(built, 1), "shipped_bound": shipped, "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
