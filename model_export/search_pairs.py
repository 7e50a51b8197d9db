"""Search pairs for fine-tuning the embedder, packed once as token ids.

Why packed token ids rather than text: tokenising ~190k pairs costs minutes on every resumed
CPU run, and a remote GPU job can carry only ~20 MiB of data (``docs/training.md``).  A pack
holds, per pair, the docstring summary (the *query*) and the function without its docstring
under its class's header (the *code*, :func:`pathfusion.server.parsing.search_text`, as the
server embeds it) as ``uint16`` ids of the embedder's own tokenizer, cut at fixed lengths, plus the
project id (batches draw same-project negatives) — the same file drives the CPU and the GPU
route, so both train on exactly the same data.

Anonymisation: a fixed, seeded share of the *train* pairs has its code replaced by the
anonymised code (:mod:`pathfusion.model_export.anonymise`: bound identifiers become ``var1``…, the
function name ``func``), so that the model learns to read structure as well as names.  The
share is chosen by a hash of the pair's id, so it does not depend on the order of the corpus
files.  Validation and test packs keep *both* versions of every pair (``code`` and ``anon``)
so that plain and anonymised MRR are measured on the same queries.

Layout of ``<pack>/<split>.npz`` (ragged arrays as flat ids + offsets)::

    query_ids, query_offsets, code_ids, code_offsets[, anon_ids, anon_offsets]
    project (int32 per pair), anonymised (bool per pair), meta (JSON string)
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.atomic import write_atomic
from pathfusion.server.embedder import read_tokenizer
from pathfusion.server.parsing import search_text

from .anonymise import anonymise
from .corpus import read_jsonl_gz

PACK_VERSION = 2
"""2: code under its class's header (:func:`pathfusion.server.parsing.search_text`), as served."""
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class PackSpec:
    """What a pack was cut with; a training run refuses a pack that does not match."""

    tokenizer_sha256: str
    max_query_tokens: int = 64
    max_code_tokens: int = 128
    """Train code length; validation and test packs use ``eval_code_tokens`` (served length)."""
    eval_code_tokens: int = 256
    anonymise_share: float = 0.2
    seed: int = 2025

    def code_tokens(self, split: str) -> int:
        return self.max_code_tokens if split == "train" else self.eval_code_tokens


class Ragged:
    """Token-id sequences of different lengths stored as one flat array plus offsets."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        self.ids = ids
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index]:self.offsets[index + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def head(self, count: int) -> Ragged:
        """The first ``count`` sequences (no copy of their ids)."""
        return Ragged(self.ids[:self.offsets[count]], self.offsets[:count + 1].copy())

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]] | Sequence[np.ndarray]) -> Ragged:
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in sequences])
        flat = np.fromiter((t for s in sequences for t in s), dtype=np.uint16, count=int(offsets[-1]))
        return cls(flat, offsets)

    def batch(self, indices: Sequence[int] | np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention mask) of ``indices``, right-padded to the longest of them (int64)."""
        rows = [self[i] for i in indices]
        width = max(1, max(len(r) for r in rows))
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for row, seq in enumerate(rows):
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        return ids, mask


@dataclass
class Pairs:
    """One split of a pack, in memory."""

    query: Ragged
    code: Ragged
    project: np.ndarray
    anonymised: np.ndarray
    anon: Ragged | None
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.query)

    def head(self, count: int) -> Pairs:
        """The first ``count`` pairs (a smaller pack for a job that cannot carry them all)."""
        count = max(0, min(count, len(self)))
        return Pairs(self.query.head(count), self.code.head(count), self.project[:count], self.anonymised[:count],
                     self.anon.head(count) if self.anon is not None else None,
                     {**self.meta, "pairs": count, "cut_from": self.meta.get("pairs")})

    def cut_code(self, limit: int) -> Pairs:
        """The pack as if packed with ``max_code_tokens=limit`` (≤ the one it was packed with):
        in a train pack each longer code keeps its first ``limit - 1`` ids and its final [SEP],
        exactly what packing at ``limit`` gives (:func:`_encode`); a validation or test pack
        (cut at ``eval_code_tokens``) only changes its spec — so a job carries one pack for
        several code lengths."""
        spec = dict(self.meta["spec"])
        if not 2 <= limit <= spec["max_code_tokens"]:
            raise ValueError(f"cut_code({limit}): a pack cuts only down from its {spec['max_code_tokens']}")
        spec["max_code_tokens"] = limit
        if self.meta.get("split") != "train":
            return replace(self, meta={**self.meta, "spec": spec})
        offsets, lengths = self.code.offsets, self.code.lengths()
        keep = np.minimum(lengths, limit)
        cut = np.zeros_like(offsets)
        cut[1:] = np.cumsum(keep)
        source = np.repeat(offsets[:-1], keep) + (np.arange(cut[-1]) - np.repeat(cut[:-1], keep))
        longer = lengths > limit
        source[cut[1:][longer] - 1] = offsets[1:][longer] - 1  # the final [SEP]
        return Pairs(self.query, Ragged(self.code.ids[source], cut), self.project, self.anonymised, self.anon,
                     {**self.meta, "spec": spec, "code_tokens": limit})

    def save(self, path: Path) -> None:
        """Write the pack atomically (compressed ``.npz``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.npz_bytes())

    def npz_bytes(self, compressed: bool = True) -> bytes:
        """The pack as ``.npz`` bytes (uncompressed for a job that compresses it better)."""
        arrays: dict[str, Any] = {
            "query_ids": self.query.ids, "query_offsets": self.query.offsets,
            "code_ids": self.code.ids, "code_offsets": self.code.offsets,
            "project": self.project, "anonymised": self.anonymised,
            "meta": np.asarray(json.dumps(self.meta)),
        }
        if self.anon is not None:
            arrays |= {"anon_ids": self.anon.ids, "anon_offsets": self.anon.offsets}
        buffer = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
        return buffer.getvalue()

    @staticmethod
    def meta_of(path: Path) -> dict[str, Any]:
        """A pack's meta alone, checked for its version (the arrays of an ``.npz`` are read
        only when asked for)."""
        return pack_meta(path, PACK_VERSION, "pack", "pack the pairs first (pathfusion train embedder --only pack)")

    @classmethod
    def load(cls, path: Path) -> Pairs:
        meta = cls.meta_of(path)
        with np.load(path, allow_pickle=False) as data:
            anon = Ragged(data["anon_ids"], data["anon_offsets"]) if "anon_ids" in data else None
            return cls(Ragged(data["query_ids"], data["query_offsets"]),
                       Ragged(data["code_ids"], data["code_offsets"]),
                       data["project"], data["anonymised"], anon, meta)


def pack_meta(path: Path, version: int, kind: str, how: str) -> dict[str, Any]:
    """The ``meta`` of the packed ``.npz`` at ``path`` (its arrays are not read), refused when
    the file is missing (``how`` says what makes it) or of another ``version`` than ``kind``
    this code writes."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {how}")
    with np.load(path, allow_pickle=False) as data:
        meta = dict(json.loads(str(data["meta"])))
    if meta.get("version") != version:
        raise ValueError(f"{path}: {kind} version {meta.get('version')}, expected {version}; delete it to repack")
    return meta


def tokenizer_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_tokenizer(path: Path) -> Any:
    """The fast tokenizer with truncation and padding off (lengths are cut per field here)."""
    tokenizer = read_tokenizer(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _encode(tokenizer: Any, texts: Sequence[str], limit: int) -> list[list[int]]:
    """Ids of ``texts`` with the special tokens, cut to ``limit`` keeping the final [SEP]."""
    out = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids = encoding.ids
        if len(ids) > limit:
            ids = [*ids[:limit - 1], ids[-1]]
        out.append(ids)
    return out


def chosen_for_anonymisation(pair_id: str, share: float, seed: int) -> bool:
    """Whether a train pair's code is anonymised: a seeded hash, independent of file order."""
    digest = hashlib.blake2b(f"{seed}:{pair_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def _records(corpus: Path, split: str) -> Iterator[dict[str, Any]]:
    path = corpus / f"{split}.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `make corpus` first")
    for record in read_jsonl_gz(path):
        if record.get("search") and record.get("docstring_summary"):
            yield record


def _safe_anonymise(code: str) -> str:
    try:
        return anonymise(code)
    except Exception:
        return code


def pack_split(corpus: Path, split: str, spec: PackSpec, tokenizer_path: Path, out: Path,
               chunk: int = 2048, progress: bool = True) -> dict[str, Any]:
    """Tokenise ``split``'s search pairs into ``out`` (atomically); returns the pack's meta."""
    tokenizer = load_tokenizer(tokenizer_path)
    projects: dict[str, int] = {}
    queries: list[list[int]] = []
    codes: list[list[int]] = []
    anons: list[list[int]] = []
    project_ids: list[int] = []
    flags: list[bool] = []
    code_limit = spec.code_tokens(split)
    pending: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(desc=f"pack {split}", unit="pair", file=sys.stderr)

    def flush() -> None:
        query_texts = [r["docstring_summary"] for r in pending]
        code_texts = []
        for r in pending:
            anonymised = split == "train" and chosen_for_anonymisation(r["id"], spec.anonymise_share, spec.seed)
            flags.append(anonymised)
            code = r["code_without_docstring"]
            code_texts.append(_safe_anonymise(code) if anonymised else search_text(code, r["qualname"]))
            project_ids.append(projects.setdefault(r["project"], len(projects)))
        queries.extend(_encode(tokenizer, query_texts, spec.max_query_tokens))
        codes.extend(_encode(tokenizer, code_texts, code_limit))
        if split != "train":
            anon_texts = [_safe_anonymise(r["code_without_docstring"]) for r in pending]
            anons.extend(_encode(tokenizer, anon_texts, code_limit))
        if bar is not None:
            bar.update(len(pending))
        pending.clear()

    for record in _records(corpus, split):
        pending.append(record)
        if len(pending) >= chunk:
            flush()
    if pending:
        flush()
    if bar is not None:
        bar.close()
    meta = {"version": PACK_VERSION, "split": split, "pairs": len(queries), "projects": len(projects),
            "spec": spec.__dict__, "code_tokens": code_limit, "anonymised": int(sum(flags))}
    Pairs(Ragged.build(queries), Ragged.build(codes), np.asarray(project_ids, dtype=np.int32),
          np.asarray(flags, dtype=bool), Ragged.build(anons) if anons else None, meta).save(out)
    return meta


def ensure_packs(corpus: Path, pack_dir: Path, spec: PackSpec, tokenizer_path: Path,
                 splits: Sequence[str] = SPLITS) -> dict[str, Path]:
    """Pack each split once; a pack cut with another spec is refused (delete it to repack)."""
    paths = {}
    for split in splits:
        path = pack_dir / f"{split}.npz"
        if path.is_file():
            meta = Pairs.meta_of(path)
            if meta.get("spec") != spec.__dict__:
                raise ValueError(f"{path} was packed with {meta.get('spec')}, this run needs "
                                 f"{spec.__dict__}; delete {pack_dir} to repack")
        else:
            pack_split(corpus, split, spec, tokenizer_path, path)
        paths[split] = path
    return paths


def project_batches(project: np.ndarray, batch_size: int, chunk: int, seed: int) -> list[np.ndarray]:
    """One epoch's batches: pairs shuffled within their project, cut into chunks of ``chunk``,
    chunks shuffled, then cut into batches of ``batch_size`` (the last partial batch dropped).

    Why: a batch made of a few projects' chunks gives every query ``chunk - 1`` negatives from
    its own project (same vocabulary, same conventions: hard negatives) and the rest from
    elsewhere, at no extra forward pass.  ``chunk`` 1 is a uniform shuffle.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(project))
    if chunk > 1:
        by_project = order[np.argsort(project[order], kind="stable")]
        boundaries = np.flatnonzero(np.diff(project[by_project])) + 1
        chunks = [c for group in np.split(by_project, boundaries)
                  for c in np.array_split(group, max(1, int(np.ceil(len(group) / chunk))))]
        chunk_order = rng.permutation(len(chunks))
        order = np.concatenate([chunks[i] for i in chunk_order]) if chunks else order
    usable = (len(order) // batch_size) * batch_size
    return [order[start:start + batch_size] for start in range(0, usable, batch_size)]
