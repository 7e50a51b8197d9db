"""Path-context ids of a naming pack's functions: the code2vec source of the fusions (issue 11).

A context pack ``<split>.contexts.npz`` sits beside the naming pack ``<split>.npz`` and holds,
for the same functions in the same order, the ids of each function's path contexts
(:class:`pathfusion.server.context_vocab.ContextVocab`; ``[C, 3]`` uint16 rows stored flat, with
offsets counted in contexts), extracted from the masked source the LLM reads — the
extractor the server runs on a hovered function.

Why derived from the sources and not carried: 170,000 functions × ~100 contexts × 3 ids are
~100 MB, while the masked sources are ~100 bytes a function xz-compressed; a GPU job's 16
cores extract them in seconds (:func:`contexts_of_sources`, a process pool).
"""

from __future__ import annotations

import io
import json
import lzma
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.context_vocab import VOCAB_FILE, ContextCounts, ContextVocab

from .corpus import write_atomic

CONTEXT_PACK_VERSION = 1


def vocab_sha256(vocab: ContextVocab) -> str:
    return sha256(json.dumps(vocab.to_json(), sort_keys=True).encode("utf-8")).hexdigest()


def context_pack_path(naming_pack: Path, split: str) -> Path:
    return naming_pack / f"{split}.contexts.npz"


@dataclass
class ContextPack:
    """``ids`` ``[N, 3]`` uint16 and ``offsets`` ``[F + 1]``: function ``i``'s contexts are
    rows ``offsets[i]:offsets[i+1]``."""

    ids: np.ndarray
    offsets: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(``[B, C, 3]`` int64 ids, ``[B, C]`` int64 mask) of ``indices``, padded to the most
        contexts among them (at least one column, so a batch without contexts keeps a shape)."""
        rows = [self.ids[self.offsets[i]:self.offsets[i + 1]] for i in indices]
        width = max(1, max((len(r) for r in rows), default=0))
        ids = np.zeros((len(rows), width, 3), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for row, contexts in enumerate(rows):
            ids[row, :len(contexts)] = contexts
            mask[row, :len(contexts)] = 1
        return ids, mask

    def take(self, indices: Sequence[int] | np.ndarray) -> ContextPack:
        """The functions at ``indices``, in that order (the subset a run trains on)."""
        rows = [self.ids[self.offsets[i]:self.offsets[i + 1]] for i in indices]
        offsets = np.zeros(len(rows) + 1, dtype=self.offsets.dtype)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        ids = np.concatenate(rows) if rows else self.ids[:0]
        return ContextPack(ids, offsets, {**self.meta, "examples": len(rows), "contexts": int(offsets[-1])})

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, ids=self.ids, offsets=self.offsets, meta=np.asarray(json.dumps(self.meta)))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path, vocab: ContextVocab | None = None, examples: int | None = None) -> ContextPack:
        """The pack at ``path``; refused when cut with another vocabulary or for another
        number of functions than its naming pack holds."""
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: build the context pack first "
                                    "(python -m pathfusion.model_export.context_pack)")
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            pack = cls(data["ids"], data["offsets"], meta)
        if meta.get("version") != CONTEXT_PACK_VERSION:
            raise ValueError(f"{path}: context pack version {meta.get('version')}, expected {CONTEXT_PACK_VERSION}")
        if vocab is not None and meta.get("vocab_sha256") != vocab_sha256(vocab):
            raise ValueError(f"{path} was cut with another context vocabulary; delete it to rebuild")
        if examples is not None and len(pack) != examples:
            raise ValueError(f"{path} holds {len(pack)} functions, its naming pack {examples}; delete it to rebuild")
        return pack


def _encode_chunk(args: tuple[ContextVocab, list[str]]) -> list[np.ndarray]:
    vocab, sources = args
    return [vocab.of_source(source) for source in sources]


def contexts_of_sources(sources: Sequence[str], vocab: ContextVocab, processes: int | None = None,
                        chunk: int = 500) -> ContextPack:
    """The contexts of every masked source, extracted by ``processes`` workers (all cores by default)."""
    chunks = [list(sources[i:i + chunk]) for i in range(0, len(sources), chunk)]
    workers = processes or os.cpu_count() or 1
    if workers == 1 or len(chunks) <= 1:
        encoded = [_encode_chunk((vocab, c)) for c in chunks]
    else:
        with ProcessPoolExecutor(workers) as pool:
            encoded = list(pool.map(_encode_chunk, [(vocab, c) for c in chunks]))
    rows = [array for part in encoded for array in part]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    ids = np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.uint16)
    meta = {"version": CONTEXT_PACK_VERSION, "examples": len(rows), "vocab_sha256": vocab_sha256(vocab),
            "max_contexts": vocab.max_contexts, "contexts": int(offsets[-1])}
    return ContextPack(ids.astype(np.uint16).reshape(-1, 3), offsets, meta)


def ensure_context_pack(naming_pack: Path, split: str, sources: Callable[[], Iterable[str]], vocab: ContextVocab,
                        examples: int, processes: int | None = None) -> ContextPack:
    """``naming_pack/<split>.contexts.npz``, built once from ``sources()`` (the split's masked
    sources, in the naming pack's order) and checked against the naming pack's ``examples``."""
    path = context_pack_path(naming_pack, split)
    if not path.is_file():
        contexts_of_sources(list(sources()), vocab, processes).save(path)
    return ContextPack.load(path, vocab, examples)


def ensure_vocab(naming_pack: Path, corpus: Path, tokens: int, paths: int) -> ContextVocab:
    """``naming_pack/contexts.json.gz``, built once from the train split's path contexts."""
    path = naming_pack / VOCAB_FILE
    if not path.is_file():
        from .naming_pack import naming_records

        counts = ContextCounts()
        for record in naming_records(corpus, "train"):
            counts.add(record["contexts"])
        ContextVocab.build(counts, tokens, paths).save(path)
    return ContextVocab.load(path)


# -- records carried to a GPU job -------------------------------------------------------------
RECORD_FIELDS = ("masked_code", "label", "project")


def save_records(records: Iterable[dict[str, Any]], path: Path) -> int:
    """``records`` (their :data:`RECORD_FIELDS`) as xz-compressed JSON lines; returns how many."""
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with lzma.open(tmp, "wt", encoding="utf-8", preset=9) as fh:
        for record in records:
            fh.write(json.dumps({k: record[k] for k in RECORD_FIELDS}, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def load_records(path: Path) -> Iterator[dict[str, Any]]:
    with lzma.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)
