"""Packed naming examples for the generative naming head (``pathfusion train naming``).

One example per corpus function marked ``naming``: the *source* is the function's text with
its own name masked everywhere (the corpus' ``masked_code``, the extractor's
:func:`pathfusion.server.paths.mask_source`), ``METHOD_NAME`` written as the tokenizer's ``[MASK]``
token, cut to ``max_source_tokens`` wordpieces; the *target* is the gold name as wordpieces,
one subtoken after another, then ``[SEP]``.  A subtoken's first wordpiece has no ``##``
prefix and its continuations do, so the wordpieces alone say where subtokens begin
(:func:`pathfusion.server.name_generator.label_of_pieces`): no separator token is needed, and any name whose wordpieces the
decoder can emit or copy is producible (``docs/design.md`` §5).

Why wordpieces of the embedder's own tokenizer: the decoder reads the embedder's token
states and copies from the source's wordpieces, so source, copy and output share one id
space; the output layer is tied to a subset of the embedder's word embeddings.

Packs are compressed ``.npz`` files of :class:`~pathfusion.model_export.search_pairs.Ragged` uint16
arrays, small enough for a remote GPU job to carry (``pathfusion.model_export.gpu_job``).
"""

from __future__ import annotations

import io
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathfusion.server.name_generator import label_of_pieces, label_pieces, source_text

from .corpus import read_jsonl_gz, write_atomic
from .search_pairs import Ragged, load_tokenizer, pack_meta

PACK_VERSION = 1


@dataclass(frozen=True)
class NamingPackSpec:
    """What a pack was cut with; a run refuses a pack cut otherwise."""

    tokenizer_sha256: str
    max_source_tokens: int = 256
    max_target_tokens: int = 12




class NameTokens:
    """Gold names → target wordpiece ids, and generated ids → names (``a|b`` labels)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.sep_id = int(tokenizer.token_to_id("[SEP]"))
        self.cls_id = int(tokenizer.token_to_id("[CLS]"))
        self.unk_id = int(tokenizer.token_to_id("[UNK]"))

    def target_ids(self, label: str, limit: int) -> list[int]:
        """``a|b`` → wordpieces of ``a`` then ``b``, then ``[SEP]`` (cut to ``limit``): the
        runtime's :func:`pathfusion.server.name_generator.label_pieces`, which scores current names."""
        return [*label_pieces(self.tokenizer, label)[:limit - 1], self.sep_id]

    def name_of_ids(self, ids: Sequence[int]) -> str:
        pieces = []
        for i in ids:
            if i == self.sep_id:
                break
            pieces.append(self.tokenizer.id_to_token(int(i)) or "[UNK]")
        return label_of_pieces(pieces)


def seeded_choice(count: int, take: int, seed: int, first: int = 0) -> np.ndarray:
    """Positions ``first … first + take`` of a seeded permutation of ``range(count)``, sorted:
    how a run picks its validation functions and a GPU job the train functions it carries
    (a later job takes the positions after an earlier one's, so the two never overlap)."""
    return np.sort(np.random.default_rng(seed).permutation(count)[first:first + take])


@dataclass
class NamingExamples:
    """One split of a naming pack, in memory."""

    source: Ragged
    target: Ragged
    project: np.ndarray
    labels: list[str]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.source)

    def take(self, indices: np.ndarray) -> NamingExamples:
        """The examples at ``indices``, in that order (a random subset a GPU job can carry)."""
        def pick(ragged: Ragged) -> Ragged:
            return Ragged.build([ragged[int(i)] for i in indices])

        return NamingExamples(pick(self.source), pick(self.target), self.project[indices],
                              [self.labels[int(i)] for i in indices],
                              {**self.meta, "examples": len(indices), "cut_from": self.meta.get("examples")})

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, source_ids=self.source.ids, source_offsets=self.source.offsets,
                            target_ids=self.target.ids, target_offsets=self.target.offsets,
                            project=self.project, labels=np.asarray("\n".join(self.labels)),
                            meta=np.asarray(json.dumps(self.meta)))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> NamingExamples:
        meta = pack_meta(path, PACK_VERSION, "naming pack",
                         "pack the naming examples first (pathfusion train naming --only pack)")
        with np.load(path, allow_pickle=False) as data:
            labels = str(data["labels"]).split("\n") if meta["examples"] else []
            return cls(Ragged(data["source_ids"], data["source_offsets"]),
                       Ragged(data["target_ids"], data["target_offsets"]), data["project"], labels, meta)


def naming_records(corpus: Path, split: str) -> Iterator[dict[str, Any]]:
    """The records of ``split`` that a naming pack holds, in the pack's order."""
    path = corpus / f"{split}.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `make corpus` first")
    for record in read_jsonl_gz(path):
        if record.get("naming") and record.get("label") and record.get("masked_code"):
            yield record


def pack_records(records: Iterable[dict[str, Any]], spec: NamingPackSpec, tokenizer_path: Path,
                 meta: dict[str, Any], chunk: int = 2048, desc: str | None = None) -> NamingExamples:
    """Naming examples of ``records`` (``masked_code``, ``label``, ``project``), in their order:
    how a split of the corpus and the records a GPU job carries are packed alike."""
    tokenizer = load_tokenizer(tokenizer_path)
    names = NameTokens(tokenizer)
    projects: dict[str, int] = {}
    sources: list[np.ndarray] = []
    targets: list[list[int]] = []
    project_ids: list[int] = []
    labels: list[str] = []
    pending: list[dict[str, Any]] = []
    bar = None
    if desc is not None:
        from tqdm import tqdm
        bar = tqdm(desc=desc, unit="fn", file=sys.stderr)

    def flush() -> None:
        for encoding in tokenizer.encode_batch([source_text(r["masked_code"]) for r in pending]):
            ids = encoding.ids
            if len(ids) > spec.max_source_tokens:
                ids = [*ids[:spec.max_source_tokens - 1], ids[-1]]
            sources.append(np.asarray(ids, dtype=np.uint16))
        for r in pending:
            targets.append(names.target_ids(r["label"], spec.max_target_tokens))
            project_ids.append(projects.setdefault(r["project"], len(projects)))
            labels.append(r["label"])
        if bar is not None:
            bar.update(len(pending))
        pending.clear()

    for record in records:
        pending.append(record)
        if len(pending) >= chunk:
            flush()
    if pending:
        flush()
    if bar is not None:
        bar.close()
    meta = {"version": PACK_VERSION, **meta, "examples": len(labels), "projects": len(projects),
            "spec": spec.__dict__}
    return NamingExamples(Ragged.build(sources), Ragged.build(targets), np.asarray(project_ids, dtype=np.int32),
                          labels, meta)


def pack_split(corpus: Path, split: str, spec: NamingPackSpec, tokenizer_path: Path, out: Path,
               limit: int | None = None, chunk: int = 2048, progress: bool = True) -> dict[str, Any]:
    """Tokenise ``split``'s naming examples (the first ``limit``) into ``out``; returns its meta."""
    records = naming_records(corpus, split)
    if limit is not None:
        records = itertools.islice(records, limit)
    examples = pack_records(records, spec, tokenizer_path, {"split": split}, chunk,
                            f"naming pack {split}" if progress else None)
    examples.save(out)
    return examples.meta


def ensure_pack(corpus: Path, pack_dir: Path, split: str, spec: NamingPackSpec, tokenizer_path: Path,
                limit: int | None = None, progress: bool = True) -> Path:
    """``pack_dir/<split>.npz``, packed once; a pack cut with another spec is refused."""
    path = pack_dir / f"{split}.npz"
    if path.is_file():
        meta = pack_meta(path, PACK_VERSION, "naming pack", "")
        if meta.get("spec") != spec.__dict__:
            raise ValueError(f"{path} was packed with {meta.get('spec')}, not {spec.__dict__}; delete it to repack")
        return path
    pack_split(corpus, split, spec, tokenizer_path, path, limit=limit, progress=progress)
    return path
