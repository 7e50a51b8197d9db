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
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathfusion.server.atomic import write_atomic

PAD, UNK = "<PAD>", "<UNK>"


@dataclass
class Vocab:
    """A frequency-capped vocabulary; id 0 is ``<PAD>``, 1 is ``<UNK>``."""

    items: list[str]

    def __post_init__(self) -> None:
        self.index = {item: i for i, item in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def get(self, item: str) -> int:
        return self.index.get(item, 1)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.items, ensure_ascii=False).encode("utf-8"), mode=0o644)

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


def iter_naming(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(label, context strings) of the naming examples of a split's JSONL."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if record["naming"]:
                yield record["label"], record["contexts"]


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
        np.savez(tmp, labels=self.labels, gold=np.array(self.gold, dtype=str),
                 offsets=self.offsets, contexts=self.contexts)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> EncodedSplit:
        data = np.load(path, allow_pickle=False)
        return cls(data["labels"], data["gold"].tolist(), data["offsets"], data["contexts"])


class RawEncoder:
    """First pass: every distinct token, path and target gets a raw id as it is seen.

    Why raw ids: reading the corpus JSON is the slow part, so each split is read once;
    the capped vocabularies are then chosen from the train counts and applied to the raw
    arrays with a numpy look-up table (:meth:`remap`).
    """

    def __init__(self) -> None:
        self.tokens: dict[str, int] = {}
        self.paths: dict[str, int] = {}
        self.targets: dict[str, int] = {}

    def encode(self, path: Path) -> EncodedSplit:
        tokens, paths, targets = self.tokens, self.paths, self.targets
        labels: list[int] = []
        gold: list[str] = []
        offsets = [0]
        flat = array("i")  # 4 bytes an id: the train split holds ~10⁸ of them
        extend = flat.extend
        for label, contexts in iter_naming(path):
            labels.append(targets.setdefault(label, len(targets)))
            gold.append(label)
            for context in contexts:
                start, path_, end = context.split(",")
                extend((
                    tokens.setdefault(start, len(tokens)),
                    paths.setdefault(path_, len(paths)),
                    tokens.setdefault(end, len(tokens)),
                ))
            offsets.append(len(flat) // 3)
        return EncodedSplit(
            np.asarray(labels, dtype=np.int32),
            gold,
            np.asarray(offsets, dtype=np.int64),
            np.frombuffer(flat, dtype=np.int32).reshape(-1, 3).copy(),
        )

    def vocabs(
        self, train: EncodedSplit, max_tokens: int, max_paths: int, max_targets: int, min_count: int = 2
    ) -> tuple[Vocabs, dict[str, float]]:
        """Capped vocabularies from the raw train counts, and their coverage of train."""
        token_counts = np.bincount(train.contexts[:, [0, 2]].ravel(), minlength=len(self.tokens))
        path_counts = np.bincount(train.contexts[:, 1], minlength=len(self.paths))
        target_counts = np.bincount(train.labels, minlength=len(self.targets))

        def capped(names: dict[str, int], counts: np.ndarray, size: int) -> tuple[Vocab, float]:
            by_id = list(names)
            order = sorted((i for i in range(len(by_id)) if counts[i] >= min_count),
                           key=lambda i: (-int(counts[i]), by_id[i]))[: size - 2]
            covered = float(counts[order].sum()) / max(1, int(counts.sum()))
            return Vocab([PAD, UNK, *(by_id[i] for i in order)]), round(covered, 4)

        tokens, token_cov = capped(self.tokens, token_counts, max_tokens)
        paths, path_cov = capped(self.paths, path_counts, max_paths)
        targets, target_cov = capped(self.targets, target_counts, max_targets)
        stats = {
            "distinct_tokens": int((token_counts > 0).sum()),
            "distinct_paths": int((path_counts > 0).sum()),
            "distinct_targets": int((target_counts > 0).sum()),
            "token_coverage": token_cov,
            "path_coverage": path_cov,
            "target_coverage": target_cov,
        }
        return Vocabs(tokens, paths, targets), stats

    def remap(self, split: EncodedSplit, vocabs: Vocabs) -> EncodedSplit:
        """Raw ids → vocabulary ids (``<UNK>`` = 1 for everything outside the caps)."""

        def table(names: dict[str, int], vocab: Vocab) -> np.ndarray:
            lut = np.ones(max(1, len(names)), dtype=np.int32)
            for name, raw in names.items():
                lut[raw] = vocab.index.get(name, 1)
            return lut

        tokens = table(self.tokens, vocabs.tokens)
        paths = table(self.paths, vocabs.paths)
        targets = table(self.targets, vocabs.targets)
        contexts = np.empty_like(split.contexts)
        if len(contexts):
            contexts[:, 0] = tokens[split.contexts[:, 0]]
            contexts[:, 1] = paths[split.contexts[:, 1]]
            contexts[:, 2] = tokens[split.contexts[:, 2]]
        labels = targets[split.labels] if len(split.labels) else split.labels
        return EncodedSplit(labels.astype(np.int32), split.gold, split.offsets, contexts)


def encode_corpus(
    corpus: Path, max_tokens: int, max_paths: int, max_targets: int, min_count: int = 2
) -> tuple[Vocabs, dict[str, float], dict[str, EncodedSplit]]:
    """Read train/valid/test once each; vocabularies from train only."""
    encoder = RawEncoder()
    raw = {split: encoder.encode(corpus / f"{split}.jsonl.gz") for split in ("train", "valid", "test")}
    vocabs, stats = encoder.vocabs(raw["train"], max_tokens, max_paths, max_targets, min_count)
    return vocabs, stats, {split: encoder.remap(data, vocabs) for split, data in raw.items()}


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
