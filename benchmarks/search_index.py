"""Workspace-index search, build, reopen and memory on synthetic indexes (docs/performance.md).

No embedding cost: the functions of a generated workspace (``N`` small functions with
made-up names, 100 per file) are "embedded" by :class:`FakeEmbedder`, which turns each
text into a hash-seeded vector of dim 384 — either uniformly random on the sphere
(``--vectors random``, the hardest case for an HNSW graph) or clustered around 256 random
centres (``--vectors clustered``, closer to real sentence embeddings).  Everything else is
the real code path: ``WorkspaceIndex.open`` + ``sync`` (parsing, SQLite metadata and
vector cache, hnswlib index, atomic saves), then, **in a fresh child process** so that the
memory numbers are those of a server that just opened the index:

* reopen time (``WorkspaceIndex.open`` of the stored index: SQLite quick_check, sha256 of
  ``index.bin``, hnswlib load, every vector into the in-memory matrix) and the process RSS
  after it and after the searches;
* ``WorkspaceIndex.search`` latency (hybrid: query "embedding" by the fake embedder, k-NN,
  lexical bonuses of every name, candidate scores from the matrix, one SQLite look-up of
  the results) over identifier, two-word and natural-language queries, p50/p95, plus the
  k-NN alone (``_knn``); the first search is timed apart;
* recall@10 of the vector part exactly as ``search`` runs it (``_knn`` with the ef the
  module picks) against exact brute force (numpy dot products) over ``--recall-queries``
  query vectors, and recall/latency of plain hnswlib ``knn_query`` at several ef values on
  the same data;
* ``update_files`` after editing one function of one file (p50 of 5; the fake embedder
  makes this the index's own cost: reading and parsing the file of 100 functions, SQLite,
  hnswlib — the graph itself is saved lazily), then what that laziness costs elsewhere:
  the deferred save (``flush``: write + sha256 of ``index.bin``) and a reopen that finds
  the saved graph 5 updates behind and repairs it (what a crash before the save costs);
* the hnswlib build time of all the vectors at once (``add_items``, the module's M and
  ef_construction, 1 thread as in the module), measured separately from ``sync``.

``--bodies corpus`` replaces the generated functions with real ones from ``data/corpus``
(test, valid, then train split; their docstring summaries become the natural-language
queries), so that BM25 runs over real identifier vocabularies: the realistic case for the
lexical half of the hybrid search (the synthetic bodies are one line).

Nothing in ``server/`` is tuned; M, ef_construction come from ``pathfusion.server.index``.
Optionally ``--real-query-embedder`` loads the shipped int8 MiniLM (``models/``) and times
the query embedding that a real search adds on top.

    python benchmarks/search_index.py --sizes 10000,50000,100000 \\
        [--vectors clustered|random] [--bodies synthetic|corpus] [--queries 300] [--recall-queries 500] \\
        [--real-query-embedder] [--search-budget-s 60] [--json benchmarks/results/search_index.json]

Why one script of ~410 lines: building the synthetic index, timing the searches and
measuring recall share one child-process protocol (each size runs in its own process).

Runtime on the 2-core dev machine: ≈ 1 min per 10k functions (build dominates).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import save_json  # noqa: E402
from pathfusion.server import index as index_module  # noqa: E402
from pathfusion.server.index import EmbedderSearchModel, WorkspaceIndex  # noqa: E402

DIM = 384
FUNCS_PER_FILE = 100
CENTRES = 256
K = 10
EF_GRID = (10, 20, 50, 100, 200, 400, 1000)

WORDS = ["load", "save", "parse", "read", "write", "get", "set", "make", "build", "open", "close", "find", "search", "index", "update", "delete", "remove", "add", "insert", "create", "init", "config", "file", "path", "name", "node", "tree", "token", "list", "dict", "value", "key", "item", "data", "buffer", "stream", "request", "response", "header", "body", "json", "xml", "http", "url", "socket", "server", "client", "user", "session", "cache", "entry", "record", "field", "column", "row", "table", "query", "result", "error", "message", "log", "event", "handler", "callback", "thread", "lock", "queue", "task", "job", "worker", "process", "child", "parent", "root", "source", "target", "string", "bytes", "text", "line", "char", "number", "count", "size", "length", "format", "encode", "decode", "compress", "split", "join", "merge", "sort", "filter", "map", "reduce", "check", "validate", "verify", "test", "run", "start", "stop", "reset", "flush", "sync", "copy", "move", "rename", "walk", "visit", "scan", "match", "replace", "quote", "escape", "render", "draw", "paint", "image", "color", "font"]

QUERIES_NL = ("read the configuration file from disk", "parse an http request header",
              "split a string into tokens", "compress the data buffer", "open a socket to the server",
              "validate the user session", "sort the table rows by column", "encode text as json",
              "walk the tree and visit every node", "flush the log queue to a file",
              "merge two dicts of values", "count the lines of a stream", "find an entry in the cache",
              "render the image with a font", "retry the request after an error")


def rss_mb() -> dict[str, float]:
    """VmRSS and VmHWM (peak) of this process in MB, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


class FakeEmbedder:
    """Text → a hash-seeded unit vector (fast; same text → same vector)."""

    def __init__(self, kind: str = "clustered", dim: int = DIM) -> None:
        self.kind = kind
        self._dim = dim
        self.centres = np.random.default_rng(12345).standard_normal((CENTRES, dim)).astype(np.float32)
        self.centres /= np.linalg.norm(self.centres, axis=1, keepdims=True)
        self.real = None  # a real embedder used for queries, when set (timing only)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_id(self) -> str:
        return f"bench-fake-{self.kind}"

    def vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(self._dim).astype(np.float32)
        # clustered: a centre plus noise, cosine to its centre ≈ 0.7
        vec = noise if self.kind == "random" else self.centres[seed % CENTRES] + 0.05 * noise
        return vec / np.linalg.norm(vec)

    def embed(self, texts, batch_size: int = 32) -> np.ndarray:
        if self.real is not None:
            self.real.embed(list(texts))  # pay the real cost, keep the synthetic geometry
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self._dim), np.float32)


def make_workspace(root: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` functions in files of :data:`FUNCS_PER_FILE`; returns the function names."""
    rng = random.Random(seed)
    names: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    for f in range(0, n, FUNCS_PER_FILE):
        lines = []
        for i in range(f, min(n, f + FUNCS_PER_FILE)):
            name = "_".join(rng.sample(WORDS, rng.choice((1, 2, 2, 3))))
            names.append(name)
            lines.append(f"def {name}(value, other=None):\n"
                         f"    \"\"\"Do {name.replace('_', ' ')} number {i}.\"\"\"\n"
                         f"    return (value, other, {i})\n\n")
        (root / f"mod_{f // FUNCS_PER_FILE:05d}.py").write_text("".join(lines))
    return names


def corpus_workspace(root: Path, n: int, corpus: Path) -> tuple[list[str], list[str]]:
    """``n`` real functions of the corpus (test, valid, then train split; docstrings stripped
    as the corpus stores them) in files of :data:`FUNCS_PER_FILE`: BM25 then sees real
    identifier vocabularies and frequencies.  Returns the names and the docstring summaries
    (natural-language queries written by the functions' authors)."""
    names: list[str] = []
    summaries: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    chunk: list[str] = []

    def flush() -> None:
        (root / f"mod_{(len(names) - 1) // FUNCS_PER_FILE:05d}.py").write_text("\n\n".join(chunk) + "\n")
        chunk.clear()

    for function in corpus_functions(corpus, n):
        names.append(function["name"])
        if function["summary"]:
            summaries.append(function["summary"])
        chunk.append(function["code"].rstrip())
        if len(chunk) == FUNCS_PER_FILE:
            flush()
    if chunk:
        flush()
    return names, summaries


def corpus_functions(corpus: Path, n: int) -> list[dict[str, str]]:
    """The first ``n`` functions of the corpus with a ``def`` (test, valid, then train split):
    name, code without docstring, docstring summary (may be empty)."""
    import gzip

    out: list[dict[str, str]] = []
    for split in ("test", "valid", "train"):
        with gzip.open(corpus / f"{split}.jsonl.gz", "rt", encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                code = record.get("code_without_docstring") or ""
                if not record.get("name") or not code.startswith(("def ", "async def ")):
                    continue
                out.append({"name": record["name"], "code": code, "summary": record.get("docstring_summary") or ""})
                if len(out) == n:
                    return out
    raise SystemExit(f"the corpus at {corpus} holds only {len(out)} usable functions")


def queries_for(names: list[str], count: int, seed: int = 1, natural: list[str] | None = None
                ) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = ("identifier", "words", "natural")[i % 3]
        if kind == "identifier":
            q = rng.choice(names)
        elif kind == "words":
            q = " ".join(rng.sample(WORDS, 2))
        else:
            q = rng.choice(natural or QUERIES_NL)
        out.append((kind, q))
    return out


# --------------------------------------------------------------------------- build (parent)


def build(size: int, kind: str, workdir: Path, corpus: Path | None = None) -> dict:
    ws, idx_dir = workdir / f"ws{size}", workdir / f"idx{size}"
    t0 = time.perf_counter()
    natural: list[str] = []
    if corpus is None:
        names = make_workspace(ws, size)
    else:
        names, natural = corpus_workspace(ws, size, corpus)
    gen_s = time.perf_counter() - t0
    (workdir / f"names{size}.json").write_text(json.dumps(names))
    (workdir / f"natural{size}.json").write_text(json.dumps(natural))
    fake = FakeEmbedder(kind)
    t0 = time.perf_counter()
    index = WorkspaceIndex.open(ws, EmbedderSearchModel(fake), index_dir=idx_dir)
    stats = index.sync()
    sync_s = time.perf_counter() - t0
    files, functions = index.counts()
    index.close()
    disk = {p.name: round(p.stat().st_size / 1e6, 1) for p in idx_dir.iterdir() if p.is_file()}
    return {"generate_s": round(gen_s, 2), "sync_s": round(sync_s, 2), "files": files,
            "functions": functions, "sync_functions_per_s": round(functions / sync_s, 1),
            "disk_mb": disk, "embedded": stats.embedded}


# --------------------------------------------------------------------------- measure (child)


def measure(size: int, kind: str, workdir: Path, n_queries: int, n_recall: int,
            real_query: bool, direct_build: bool, search_budget_s: float = 60.0, real_queries: int = 100) -> dict:
    ws, idx_dir = workdir / f"ws{size}", workdir / f"idx{size}"
    names = json.loads((workdir / f"names{size}.json").read_text())
    natural = json.loads((workdir / f"natural{size}.json").read_text())
    out: dict = {"rss_before_open": rss_mb()}
    fake = FakeEmbedder(kind)
    t0 = time.perf_counter()
    index = WorkspaceIndex.open(ws, EmbedderSearchModel(fake), index_dir=idx_dir)
    out["reopen_s"] = round(time.perf_counter() - t0, 3)
    out["rebuild_reason_on_reopen"] = index.rebuild_reason
    out["rss_after_open"] = rss_mb()
    _, live = index.counts()

    # search latency (the first query builds the name table: timed apart)
    queries = queries_for(names, n_queries, natural=natural)
    t0 = time.perf_counter()
    index.search(queries[0][1], K)
    out["first_search_ms"] = round(1e3 * (time.perf_counter() - t0), 2)
    per_kind: dict[str, list[float]] = {}
    top1_exact = 0
    deadline = time.perf_counter() + search_budget_s
    for kind_q, q in queries:
        if time.perf_counter() > deadline and sum(map(len, per_kind.values())) >= 30:
            break  # bounded runtime: at least 30 queries (10 of each kind), then the budget
        t0 = time.perf_counter()
        results = index.search(q, K)
        per_kind.setdefault(kind_q, []).append(1e3 * (time.perf_counter() - t0))
        if kind_q == "identifier" and results and results[0].name == q:
            top1_exact += 1
    every = [v for vals in per_kind.values() for v in vals]
    out["search_ms"] = {"p50": round(pct(every, 50), 2), "p95": round(pct(every, 95), 2),
                        "max": round(max(every), 2), "n": len(every),
                        "by_kind": {k: {"p50": round(pct(v, 50), 2), "p95": round(pct(v, 95), 2)}
                                    for k, v in per_kind.items()}}
    out["identifier_queries_top1_exact"] = f"{top1_exact}/{len(per_kind.get('identifier', []))}"
    vecs = [fake.vector(q) for _, q in queries[:len(every)]]
    knn_ms = []
    for v in vecs:
        t0 = time.perf_counter()
        with index.store.lock:
            index.store.space.knn(v, max(4 * K, 50), live)
        knn_ms.append(1e3 * (time.perf_counter() - t0))
    out["knn_only_ms"] = {"p50": round(pct(knn_ms, 50), 2), "p95": round(pct(knn_ms, 95), 2)}
    out["module_ef"] = int(index.store.space.graph.ef)
    out["rss_after_searches"] = rss_mb()

    if real_query:
        from pathfusion.server.embedder import load_embedder

        real = load_embedder("onnx", ROOT / "models")
        real.embed(["warm up"])
        emb_ms = []
        for _, q in queries[:len(every)]:
            t0 = time.perf_counter()
            real.embed([q])
            emb_ms.append(1e3 * (time.perf_counter() - t0))
        out["real_query_embed_ms"] = {"p50": round(pct(emb_ms, 50), 2), "p95": round(pct(emb_ms, 95), 2)}
        fake.real = real
        # The whole search as the server runs it (the query embedded inside ``search``), each
        # query paying its own BM25 match counts, as a session's first query with its words does.
        whole: list[float] = []
        for _, q in queries[:min(len(every), real_queries)]:
            index.store.match_counts.clear()
            t0 = time.perf_counter()
            index.search(q, K)
            whole.append(1e3 * (time.perf_counter() - t0))
        fake.real = None
        out["search_with_real_query_embedding_ms"] = {"p50": round(pct(whole, 50), 2), "p95": round(pct(whole, 95), 2),
                                                      "max": round(max(whole), 2), "n": len(whole),
                                                      "counts": "cleared before each query"}
        out["rss_with_real_embedder"] = rss_mb()

    # update after editing one function of one file (fake embedding: the index's own cost)
    upd = []
    target = ws / "mod_00000.py"
    for n in range(5):
        lines = target.read_text().splitlines(keepends=True)
        defs = [i for i, line in enumerate(lines) if line.startswith("def ")]
        i = defs[n % len(defs)]
        lines[i] = lines[i].rstrip("\n") + f"  # edit {n}\n"
        target.write_text("".join(lines))
        t0 = time.perf_counter()
        st = index.update_files([target])
        upd.append(1e3 * (time.perf_counter() - t0))
    out["update_one_edit_ms"] = {"p50": round(pct(upd, 50), 1), "max": round(max(upd), 1),
                                 "embedded_last": st.embedded}
    t0 = time.perf_counter()
    behind = WorkspaceIndex.open(ws, EmbedderSearchModel(fake), index_dir=idx_dir, autosave_s=None)
    out["reopen_repair_s"] = round(time.perf_counter() - t0, 3)
    out["repaired"] = behind.repaired
    behind.close()
    t0 = time.perf_counter()
    out["flush_saved"] = index.flush()
    out["flush_ms"] = round(1e3 * (time.perf_counter() - t0), 1)

    # recall@10 against brute force
    rows = index.db.execute("SELECT f.label, v.vector FROM functions f JOIN vectors v "
                            "ON v.content_hash = f.content_hash WHERE f.deleted = 0").fetchall()
    labels = np.array([r[0] for r in rows], dtype=np.int64)
    matrix = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    rng = np.random.default_rng(7)
    qtexts = [f"recall query {i} {rng.integers(1 << 30)}" for i in range(n_recall)]
    qvecs = np.stack([fake.vector(t) for t in qtexts])
    exact_rows = []
    for start in range(0, n_recall, 50):
        scores = qvecs[start:start + 50] @ matrix.T
        part = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        exact_rows.append(np.take_along_axis(part, order, axis=1))
    exact = labels[np.concatenate(exact_rows)]
    hits = 0
    for qv, truth in zip(qvecs, exact, strict=True):
        with index.store.lock:
            got = index.store.space.knn(qv, max(4 * K, 50), live)
        top = sorted(got, key=lambda lab: -got[lab])[:K]
        hits += len(set(top) & set(truth.tolist()))
    out["recall_at_10_as_search_runs_it"] = round(hits / (K * n_recall), 4)
    grid = {}
    hnsw = index.store.space.graph
    for ef in EF_GRID:
        hnsw.set_ef(max(ef, K))
        t0 = time.perf_counter()
        found = [hnsw.knn_query(qv.reshape(1, -1), k=K)[0][0] for qv in qvecs]
        ms = 1e3 * (time.perf_counter() - t0) / n_recall
        rec = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, exact, strict=True)) / (K * n_recall)
        grid[str(ef)] = {"recall_at_10": round(rec, 4), "mean_query_ms": round(ms, 3)}
    out["hnswlib_ef_grid"] = grid
    t0 = time.perf_counter()
    for qv in qvecs[:100]:
        np.argpartition(-(matrix @ qv), K)[:K]
    out["brute_force_numpy_query_ms"] = round(1e3 * (time.perf_counter() - t0) / min(100, n_recall), 2)
    index.close()

    if direct_build:
        import hnswlib

        fresh = hnswlib.Index(space="ip", dim=DIM)
        fresh.init_index(max_elements=len(labels), ef_construction=index_module.HNSW_EF_CONSTRUCTION,
                         M=index_module.HNSW_M)
        fresh.set_num_threads(1)
        t0 = time.perf_counter()
        fresh.add_items(matrix, labels)
        out["hnswlib_build_s_1_thread"] = round(time.perf_counter() - t0, 2)
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--vectors", choices=("clustered", "random"), default="clustered")
    parser.add_argument("--bodies", choices=("synthetic", "corpus"), default="synthetic",
                        help="corpus: real functions of data/corpus (BM25 over real vocabularies; "
                             "natural queries are their docstring summaries)")
    parser.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--recall-queries", type=int, default=500)
    parser.add_argument("--real-query-embedder", action="store_true")
    parser.add_argument("--real-queries", type=int, default=100,
                        help="queries timed with the real embedder (default: %(default)s)")
    parser.add_argument("--search-budget-s", type=float, default=60.0,
                        help="stop timing searches after this long (at least 30 queries)")
    parser.add_argument("--no-direct-build", action="store_true", help="skip the separate hnswlib build")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated data here")
    parser.add_argument("--keep", action="store_true",
                        help="keep each size's workspace and index in --workdir (rerun with --child SIZE)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "search_index.json")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        result = measure(args.child, args.vectors, args.workdir, args.queries, args.recall_queries,
                         args.real_query_embedder, not args.no_direct_build, args.search_budget_s,
                         args.real_queries)
        print("CHILD-RESULT " + json.dumps(result))
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pf-bench-search-"))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    result: dict = {
        "benchmark": "search_index", "python": platform.python_version(), "cpus": os.cpu_count(),
        "vectors": args.vectors, "bodies": args.bodies, "dim": DIM, "hnsw_M": index_module.HNSW_M,
        "hnsw_ef_construction": index_module.HNSW_EF_CONSTRUCTION,
        "ef_rule": "search sets ef = max(2*k', 100, min(live, 200)) with k' = max(4*k, 50)",
        "queries": args.queries, "recall_queries": args.recall_queries,
        "command": "python benchmarks/search_index.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "sizes": {},
    }
    try:
        for size in sizes:
            print(f"[{time.strftime('%H:%M:%S')}] building {size} functions …", flush=True)
            entry = {"build": build(size, args.vectors, workdir,
                                    args.corpus if args.bodies == "corpus" else None)}
            print(f"  sync {entry['build']['sync_s']} s", flush=True)
            cmd = [sys.executable, __file__, "--child", str(size), "--vectors", args.vectors,
                   "--queries", str(args.queries), "--recall-queries", str(args.recall_queries),
                   "--workdir", str(workdir), "--search-budget-s", str(args.search_budget_s)]
            if args.real_query_embedder:
                cmd += ["--real-query-embedder", "--real-queries", str(args.real_queries)]
            if args.no_direct_build:
                cmd.append("--no-direct-build")
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD-RESULT ")]
            if proc.returncode != 0 or not lines:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                raise SystemExit(f"measuring size {size} failed")
            entry["measure"] = json.loads(lines[-1][len("CHILD-RESULT "):])
            result["sizes"][str(size)] = entry
            if not args.keep:
                shutil.rmtree(workdir / f"ws{size}", ignore_errors=True)
                shutil.rmtree(workdir / f"idx{size}", ignore_errors=True)
            m = entry["measure"]
            print(f"  reopen {m['reopen_s']} s, search p50/p95 {m['search_ms']['p50']}/{m['search_ms']['p95']} ms, "
                  f"recall@10 {m['recall_at_10_as_search_runs_it']} (ef {m['module_ef']}), "
                  f"RSS {m['rss_after_searches']['rss_mb']} MB", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    head = f"{'functions':>10} {'sync s':>8} {'update ms':>9} {'flush ms':>9} {'hnsw build s':>12} {'reopen s':>9} " \
           f"{'repair s':>9} {'search p50':>11} {'search p95':>11} {'knn p95':>8} {'recall@10':>10} {'ef':>5} {'RSS MB':>7}"
    print(head)
    for size, entry in result["sizes"].items():
        b, m = entry["build"], entry["measure"]
        print(f"{size:>10} {b['sync_s']:>8} {m['update_one_edit_ms']['p50']:>9} {m['flush_ms']:>9} "
              f"{m.get('hnswlib_build_s_1_thread', '-'):>12} {m['reopen_s']:>9} {m['reopen_repair_s']:>9} "
              f"{m['search_ms']['p50']:>11} {m['search_ms']['p95']:>11} {m['knn_only_ms']['p95']:>8} "
              f"{m['recall_at_10_as_search_runs_it']:>10} {m['module_ef']:>5} {m['rss_after_searches']['rss_mb']:>7}")
    for size, entry in result["sizes"].items():
        grid = entry["measure"]["hnswlib_ef_grid"]
        print(f"{size:>10} ef grid: " + ", ".join(f"ef={ef}: {g['recall_at_10']} ({g['mean_query_ms']} ms)"
                                                for ef, g in grid.items()))
    save_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
