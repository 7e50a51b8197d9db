"""Vocabularies and integer-encoded datasets for code2vec (no torch).

Why integer arrays on disk: the corpus holds ~100 M context strings; turning them into ids
takes minutes, so it is done once per vocabulary and cached as ``.npz`` (atomically), and
every training run and evaluation reuses the cache.

Layout of an encoded split: ``labels`` (int32, target id per example, 0 = ``<UNK>``),
``gold`` (the label strings, kept for metrics when the gold name is out of vocabulary),
``offsets`` (int64, example *i*'s contexts are rows ``offsets[i]:offsets[i+1]``) and
``contexts`` (int32 rows of start token id, path id, end token id).
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD, UNK = "<PAD>", "<UNK>"


@dataclass
class Vocab:
    """A frequency-capped vocabulary; id 0 is ``<PAD>``, 1 is ``<UNK>``."""

    items: list[str]

    def __post_init__(self) -> None:
        self.index = {item: i for i, item in enumerate(self.items)}

    @classmethod
    def from_counts(cls, counts: Counter[str], max_size: int, min_count: int = 1) -> Vocab:
        ranked = sorted(((c, w) for w, c in counts.items() if c >= min_count), key=lambda x: (-x[0], x[1]))
        return cls([PAD, UNK, *(w for _, w in ranked[: max_size - 2])])

    def __len__(self) -> int:
        return len(self.items)

    def get(self, item: str) -> int:
        return self.index.get(item, 1)

    def save(self, path: Path) -> None:
        _atomic_text(path, json.dumps(self.items, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls(json.loads(path.read_text(encoding="utf-8")))


@dataclass
class Vocabs:
    tokens: Vocab
    paths: Vocab
    targets: Vocab

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.tokens.save(folder / "tokens.json")
        self.paths.save(folder / "paths.json")
        self.targets.save(folder / "targets.json")

    @classmethod
    def load(cls, folder: Path) -> Vocabs:
        return cls(
            Vocab.load(folder / "tokens.json"),
            Vocab.load(folder / "paths.json"),
            Vocab.load(folder / "targets.json"),
        )


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def iter_naming(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(label, context strings) of the naming examples of a split's JSONL."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if record["naming"]:
                yield record["label"], record["contexts"]


def count_vocab(path: Path) -> tuple[Counter[str], Counter[str], Counter[str]]:
    tokens: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    targets: Counter[str] = Counter()
    for label, contexts in iter_naming(path):
        targets[label] += 1
        for context in contexts:
            start, path_, end = context.split(",")
            tokens[start] += 1
            tokens[end] += 1
            paths[path_] += 1
    return tokens, paths, targets


def build_vocabs(
    train: Path, max_tokens: int, max_paths: int, max_targets: int, min_count: int = 2
) -> tuple[Vocabs, dict[str, float]]:
    """Vocabularies from the train split, plus their coverage of it."""
    tokens, paths, targets = count_vocab(train)
    vocabs = Vocabs(
        Vocab.from_counts(tokens, max_tokens, min_count),
        Vocab.from_counts(paths, max_paths, min_count),
        Vocab.from_counts(targets, max_targets, min_count),
    )

    def coverage(counts: Counter[str], vocab: Vocab) -> float:
        total = sum(counts.values())
        return round(sum(c for w, c in counts.items() if w in vocab.index) / max(1, total), 4)

    stats = {
        "distinct_tokens": len(tokens),
        "distinct_paths": len(paths),
        "distinct_targets": len(targets),
        "token_coverage": coverage(tokens, vocabs.tokens),
        "path_coverage": coverage(paths, vocabs.paths),
        "target_coverage": coverage(targets, vocabs.targets),
    }
    return vocabs, stats


@dataclass
class EncodedSplit:
    labels: np.ndarray
    gold: list[str]
    offsets: np.ndarray
    contexts: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, labels=self.labels, gold=np.array(self.gold, dtype=object).astype(str),
                 offsets=self.offsets, contexts=self.contexts)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> EncodedSplit:
        data = np.load(path, allow_pickle=False)
        return cls(data["labels"], data["gold"].tolist(), data["offsets"], data["contexts"])


def encode_contexts(contexts: list[str], vocabs: Vocabs) -> np.ndarray:
    """``tok,path,tok`` strings → int32 rows (unknown items map to ``<UNK>``)."""
    tok = vocabs.tokens.index
    pth = vocabs.paths.index
    rows = np.empty((len(contexts), 3), dtype=np.int32)
    for i, context in enumerate(contexts):
        start, path, end = context.split(",")
        rows[i, 0] = tok.get(start, 1)
        rows[i, 1] = pth.get(path, 1)
        rows[i, 2] = tok.get(end, 1)
    return rows


def encode_split(path: Path, vocabs: Vocabs) -> EncodedSplit:
    tok = vocabs.tokens.index
    pth = vocabs.paths.index
    labels: list[int] = []
    gold: list[str] = []
    offsets = [0]
    flat: list[int] = []
    for label, contexts in iter_naming(path):
        labels.append(vocabs.targets.get(label))
        gold.append(label)
        for context in contexts:
            start, path_, end = context.split(",")
            flat.append(tok.get(start, 1))
            flat.append(pth.get(path_, 1))
            flat.append(tok.get(end, 1))
        offsets.append(len(flat) // 3)
    return EncodedSplit(
        np.asarray(labels, dtype=np.int32),
        gold,
        np.asarray(offsets, dtype=np.int64),
        np.asarray(flat, dtype=np.int32).reshape(-1, 3),
    )


def batch_arrays(
    split: EncodedSplit,
    indices: np.ndarray,
    max_contexts: int,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(contexts [B, C, 3], mask [B, C], labels [B]) for the examples ``indices``.

    With ``rng`` each example's contexts are a fresh random subset (training); without it a
    fixed subset seeded by the example's index (evaluation: the same every run, and, like
    the extractor's own sample, uniform over the function's contexts).
    """
    lengths = np.minimum(split.offsets[indices + 1] - split.offsets[indices], max_contexts)
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    contexts = np.zeros((len(indices), width, 3), dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.float32)
    for row, example in enumerate(indices):
        start, end = split.offsets[example], split.offsets[example + 1]
        count = end - start
        if count == 0:
            continue
        if count > max_contexts:
            chooser = rng if rng is not None else np.random.default_rng(int(example))
            chosen = start + np.sort(chooser.choice(count, size=max_contexts, replace=False))
            block = split.contexts[chosen]
        else:
            block = split.contexts[start:end]
        contexts[row, : len(block)] = block
        mask[row, : len(block)] = 1.0
    return contexts, mask, split.labels[indices].astype(np.int64)
