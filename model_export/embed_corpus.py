"""Embed a fixed sample of the corpus once, so that every fusion is trained and evaluated
on the same cached inputs (docs/design.md §4–5).

Why a cache: the LLM embedder is by far the most expensive part (the shipped int8 MiniLM
does ≈ 25–40 functions/s per CPU core), while the fusions, heads and query encoders train in
minutes once ``l`` (LLM embedding) and ``c`` (code2vec code vector) are on disk.  The job is
cut into chunks of :data:`CHUNK` texts written atomically, so it can run in the background,
be stopped at any time and resume; training uses whatever train chunks exist.

Selections (fixed seeds, written once to ``<out>/<split>-<task>.jsonl.gz``):

* ``naming``: functions with ``naming=True``; the LLM sees ``masked_code`` (docs/design.md §2);
* ``search``: docstring/code pairs; the LLM sees ``code_without_docstring`` as the server's
  search does (under its class's header, :func:`pathfusion.server.parsing.search_text`) and
  the query is ``docstring_summary``; for the test split also the anonymised code
  (:mod:`pathfusion.model_export.anonymise`).  Test pairs follow the CodeSearchNet protocol: all test
  pairs in :func:`~pathfusion.model_export.metrics.protocol_order` (shuffled with the protocol's
  seed, the first ``groups × 1000`` kept), so that every group of 1,000 is one consecutive
  slice and the same as ``pathfusion eval search`` scores.

Texts are embedded with the *shipped* embedder (``models/``, int8 by default) because that is
what the server computes at run time; ``--fp32 DIR`` embeds with another export to measure
the effect of quantisation.

Layout: ``<out>/<split>-<task>-<field>/<chunk:05d>.npy`` (float32 [≤ CHUNK, dim]) with
fields ``code`` (masked for naming), ``query``, ``anon``; ``<out>/<split>-<task>-c2v.npy``
(and ``-c2v-anon.npy``) hold the code2vec vectors of the same rows.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.atomic import write_atomic
from pathfusion.server.parsing import search_text
from pathfusion.server.paths import contexts_of_text

from .anonymise import anonymise
from .corpus import read_jsonl_gz
from .metrics import protocol_pairs

CHUNK = 500
SAMPLE_SEED = 20251
GROUP = 1000

DEFAULT_SIZES = {
    ("test", "naming"): 6000, ("test", "search"): 5 * GROUP,
    ("valid", "naming"): 3000, ("valid", "search"): 2 * GROUP,
    ("train", "naming"): 60000, ("train", "search"): 60000,
}
FIELDS = {"naming": ("code",), "search": ("code", "query")}
KEEP = ("id", "project", "qualname", "name", "label", "contexts")


@dataclass(frozen=True)
class Unit:
    """One chunk of one field of one selection: the job's unit of work and of resumption."""

    split: str
    task: str
    field: str
    chunk: int

    def path(self, out: Path) -> Path:
        return out / f"{self.split}-{self.task}-{self.field}" / f"{self.chunk:05d}.npy"


def selection_path(out: Path, split: str, task: str) -> Path:
    return out / f"{split}-{task}.jsonl.gz"


def _records(corpus: Path, split: str) -> Iterator[dict[str, Any]]:
    return read_jsonl_gz(corpus / f"{split}.jsonl.gz")


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through :func:`pathfusion.server.atomic.write_atomic`: a chunk is whole or absent."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue(), mode=0o644)


def select(records: Sequence[dict[str, Any]], split: str, task: str, size: int,
           anonymised: Sequence[str] = ("test",)) -> list[dict[str, Any]]:
    """The fixed sample of ``split``'s ``records`` for ``task`` (see the module docstring);
    search rows of the ``anonymised`` splits carry their anonymised code too."""
    flag = "naming" if task == "naming" else "search"
    rows = [r for r in records if r.get(flag)]
    if task == "search" and split == "test":
        rows = protocol_pairs(rows, size, group=GROUP, short_group=False)
    else:
        random.Random(f"{SAMPLE_SEED}-{split}-{task}").shuffle(rows)
        rows = rows[:size]
    out: list[dict[str, Any]] = []
    for r in rows:
        item = {key: r.get(key) for key in KEEP}
        if task == "naming":
            item["code"] = r["masked_code"]
        else:
            item["code"] = search_text(r["code_without_docstring"], r["qualname"])
            item["query"] = r["docstring_summary"]
            if split in anonymised:
                anonymous = anonymise(r["code_without_docstring"])
                item["anon"] = anonymous
                item["anon_contexts"] = contexts_of_text(anonymous)
        out.append(item)
    return out


def heldout_rows(projects: Path, size: int) -> list[dict[str, Any]]:
    """The docstring/code pairs of ``projects`` as ``pathfusion eval search --projects`` takes
    them (shuffled with the protocol's seed, whole groups of 1,000, at most ``size``), with
    their anonymised code: a held-out split for the cache."""
    from .evaluate import project_pair_sources

    chosen = protocol_pairs(project_pair_sources(projects), size, group=GROUP, short_group=False)
    return [{"id": f"heldout{i}", "project": projects.name, "name": name, "qualname": qualname,
             "code": search_text(code, qualname), "query": query, "anon": anonymise(code)}
            for i, (query, code, name, qualname) in enumerate(chosen)]


def grow_selection(out: Path, split: str, task: str, rows: Sequence[dict[str, Any]],
                   anonymised: Sequence[str]) -> bool:
    """Replace a cached selection by the longer ``rows`` when the cached one is their prefix
    (a larger ``--valid-size``: the same seeded shuffle, more of it), keeping every embedded
    chunk whose rows did not change; a trailing partial chunk is dropped to be embedded again.
    ``False`` (nothing touched) when the cached selection is not a prefix of ``rows`` — rows
    compared whole, texts included, so that a cache embedded from other texts (the search
    text before a method's class header) is never extended with rows of the new kind."""
    path = selection_path(out, split, task)
    cached = read_selection(path)
    if len(rows) <= len(cached) or json.loads(json.dumps(list(rows[:len(cached)]))) != cached:
        return False
    if len(cached) % CHUNK:
        for field in fields_of(split, task, anonymised):
            Unit(split, task, field, len(cached) // CHUNK).path(out).unlink(missing_ok=True)
    write_selection(path, rows)
    return True


def write_selection(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    write_atomic(path, gzip.compress(data, 6))


def read_selection(path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl_gz(path))


def fields_of(split: str, task: str, anonymised: Sequence[str] = ("test",)) -> tuple[str, ...]:
    extra = ("anon",) if task == "search" and split in anonymised else ()
    return FIELDS[task] + extra


def plan(sizes: dict[tuple[str, str], int], lengths: dict[tuple[str, str], int],
         anonymised: Sequence[str] = ("test",)) -> list[Unit]:
    """Every unit in priority order: held-out (if selected), test and valid first (needed by any evaluation), then
    the train chunks interleaved across tasks so that both grow together."""
    units: list[Unit] = []
    for split in ("heldout", "test", "valid"):
        for task in ("naming", "search"):
            n = lengths.get((split, task), 0)
            for field in fields_of(split, task, anonymised):
                units += [Unit(split, task, field, i) for i in range((n + CHUNK - 1) // CHUNK)]
    train = {task: lengths[("train", task)] for task in ("naming", "search")}
    most = max((n + CHUNK - 1) // CHUNK for n in train.values())
    for i in range(most):
        for task in ("naming", "search"):
            if i * CHUNK < train[task]:
                units += [Unit("train", task, field, i) for field in fields_of("train", task, anonymised)]
    return units


def _embed_units(out: str, models: str, quantized: bool, units: list[Unit]) -> int:
    """Worker: embed ``units`` with one single-threaded embedder (two such processes beat one
    two-threaded one for one-text-at-a-time int8 inference)."""
    from pathfusion.server.embedder import OnnxEmbedder

    embedder = OnnxEmbedder.load(models, quantized=quantized, threads=1)
    root = Path(out)
    cache: dict[tuple[str, str], list[dict[str, Any]]] = {}
    done = 0
    for unit in units:
        target = unit.path(root)
        if target.exists():
            continue
        key = (unit.split, unit.task)
        if key not in cache:
            cache[key] = read_selection(selection_path(root, *key))
        rows = cache[key][unit.chunk * CHUNK:(unit.chunk + 1) * CHUNK]
        save_npy(target, embedder.embed([r[unit.field] or "" for r in rows]).astype(np.float32))
        done += 1
        print(f"{time.strftime('%H:%M:%S')} {unit.split}-{unit.task}-{unit.field} chunk {unit.chunk} "
              f"({len(rows)} texts)", flush=True)
    return done


def load_field(out: Path, split: str, task: str, field: str, rows: int | None = None) -> np.ndarray:
    """The embedded rows of one field, chunks concatenated in order, stopping at the first
    missing chunk (so a partial train set is a prefix of the selection)."""
    parts: list[np.ndarray] = []
    chunk = 0
    while True:
        path = Unit(split, task, field, chunk).path(out)
        if not path.exists():
            break
        parts.append(np.load(path))
        chunk += 1
    data = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    return data[:rows] if rows is not None else data


def code2vec_vectors(out: Path, models: Path) -> None:
    """code2vec code vectors of every selection (and of the anonymised test code)."""
    from pathfusion.server.code2vec import Code2VecModel

    model = Code2VecModel.load(models, threads=1)
    for split in ("train", "valid", "test"):
        for task in ("naming", "search"):
            rows = read_selection(selection_path(out, split, task))
            for suffix, key in (("", "contexts"), ("-anon", "anon_contexts")):
                if key == "anon_contexts" and (split, task) != ("test", "search"):
                    continue
                path = out / f"{split}-{task}-c2v{suffix}.npy"
                if path.exists():
                    continue
                vectors = model.code_vectors([r[key] or [] for r in rows])
                save_npy(path, vectors)
                print(f"code2vec vectors {path.name}: {vectors.shape}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathfusion.model_export.embed_corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--out", type=Path, default=Path("data/embeddings"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--fp32", action="store_true", help="use the fp32 graph of --models")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=None, help="functions per train task")
    parser.add_argument("--valid-size", type=int, default=None,
                        help="validation search pairs (default 2,000); a larger size grows a cached selection "
                             "(the same shuffle, more of it: the embedded chunks are kept)")
    parser.add_argument("--only", choices=("select", "code2vec", "embed"), default=None)
    parser.add_argument("--tasks", default="naming,search",
                        help="which selections to embed (default: %(default)s; another task's size becomes 0)")
    parser.add_argument("--anonymised", default="test",
                        help="splits whose search rows are also embedded anonymised (default: %(default)s)")
    parser.add_argument("--heldout", type=Path, default=None,
                        help="also embed the search pairs of these projects (e.g. data/heldout/stdlib) as the "
                             "split 'heldout', in `pathfusion eval search --projects` order, anonymised too")
    args = parser.parse_args(argv)
    sizes = dict(DEFAULT_SIZES)
    if args.train_size is not None:
        sizes[("train", "naming")] = sizes[("train", "search")] = args.train_size
    if args.valid_size is not None:
        sizes[("valid", "search")] = args.valid_size
    tasks = {t for t in args.tasks.split(",") if t}
    if not tasks <= {"naming", "search"}:
        parser.error(f"--tasks: naming and/or search, not {args.tasks!r}")
    sizes = {(split, task): (size if task in tasks else 0) for (split, task), size in sizes.items()}
    args.anonymised = tuple(s for s in args.anonymised.split(",") if s)
    args.out.mkdir(parents=True, exist_ok=True)
    lengths: dict[tuple[str, str], int] = {}
    for split in ("test", "valid", "train"):
        missing = [t for t in ("naming", "search") if not selection_path(args.out, split, t).exists()]
        grow = (split == "valid" and args.valid_size is not None and "search" not in missing
                and len(read_selection(selection_path(args.out, split, "search"))) < args.valid_size)
        records = list(_records(args.corpus, split)) if missing or grow else []
        for task in missing:
            rows = select(records, split, task, sizes[(split, task)], args.anonymised)
            write_selection(selection_path(args.out, split, task), rows)
            print(f"selected {len(rows)} {split} {task} rows", flush=True)
        if grow:
            rows = select(records, split, "search", sizes[(split, "search")], args.anonymised)
            if grow_selection(args.out, split, "search", rows, args.anonymised):
                print(f"grew the {split} search selection to {len(rows)} rows", flush=True)
        del records
        for task in ("naming", "search"):
            lengths[(split, task)] = len(read_selection(selection_path(args.out, split, task)))
    if args.heldout is not None:
        path = selection_path(args.out, "heldout", "search")
        if not path.exists():
            write_selection(path, heldout_rows(args.heldout, sizes[("test", "search")]))
        lengths[("heldout", "search")] = len(read_selection(path))
        print(f"{lengths[('heldout', 'search')]} held-out search rows ({args.heldout})", flush=True)
        args.anonymised = (*args.anonymised, "heldout")
    if args.only == "select":
        return 0
    if args.only in (None, "code2vec"):
        code2vec_vectors(args.out, args.models)
    if args.only == "code2vec":
        return 0
    units = [u for u in plan(sizes, lengths, args.anonymised) if not u.path(args.out).exists()]
    print(f"{len(units)} chunks to embed", flush=True)
    shares = [units[w::args.workers] for w in range(args.workers)]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(_embed_units, str(args.out), str(args.models), not args.fp32, share)
                   for share in shares]
        total = sum(f.result() for f in futures)
    print(f"done: {total} chunks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
