"""Exact and near-duplicate detection (Allamanis 2019, "The adverse effects of code
duplication in machine learning models of code").

Why: PyPI projects copy code from each other (vendored helpers, forks, generated
boilerplate).  A test function whose twin is in train inflates every metric, so duplicates
are removed *before* the project split, keeping one member per cluster.

* exact: the same code after whitespace is collapsed (docstrings already removed);
* near: functions with at least :data:`MIN_IDENTIFIERS` identifiers whose identifier
  *sets* have Jaccard ≥ 0.8 **and** identifier *multisets* have Jaccard ≥ 0.7.

Candidates come from MinHash LSH over identifier sets (64 permutations, 16 bands of 4
rows: a pair at set-Jaccard 0.8 is a candidate with probability 1 − (1 − 0.8⁴)¹⁶ ≈ 0.9996);
every candidate is then checked exactly, so the thresholds are exact.  Which member of a
cluster survives is deterministic: the smallest (project, file, qualname).
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

MIN_IDENTIFIERS = 20
SET_THRESHOLD = 0.8
MULTISET_THRESHOLD = 0.7
PERMUTATIONS = 64
BANDS = 16
_PRIME = (1 << 31) - 1
_BUCKET_CAP = 64
"""In a bucket larger than this, members are compared with the first ``_BUCKET_CAP`` only
(huge buckets come from boilerplate families whose members are close to each other)."""


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        parent = self.parent
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:
            parent[item], item = root, parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Keep the smaller index as root: indices are in key order (see caller).
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


def jaccard_set(a: set[str], b: set[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def jaccard_multiset(a: Counter[str], b: Counter[str]) -> float:
    inter = sum((a & b).values())
    union = sum((a | b).values())
    return inter / union if union else 1.0


def is_near_duplicate(a: Sequence[str], b: Sequence[str]) -> bool:
    """Allamanis' criterion on two identifier sequences."""
    if len(a) < MIN_IDENTIFIERS or len(b) < MIN_IDENTIFIERS:
        return False
    if jaccard_set(set(a), set(b)) < SET_THRESHOLD:
        return False
    return jaccard_multiset(Counter(a), Counter(b)) >= MULTISET_THRESHOLD


def minhash_signatures(sets: Sequence[Sequence[int]], seed: int = 7) -> np.ndarray:
    """MinHash signatures (``len(sets)`` × :data:`PERMUTATIONS`) of sets of int ids."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=PERMUTATIONS, dtype=np.int64)
    b = rng.integers(0, _PRIME, size=PERMUTATIONS, dtype=np.int64)
    signatures = np.empty((len(sets), PERMUTATIONS), dtype=np.int64)
    chunk = 4096
    for start in range(0, len(sets), chunk):
        part = sets[start : start + chunk]
        lengths = np.fromiter((len(s) for s in part), dtype=np.int64, count=len(part))
        flat = np.fromiter((x for s in part for x in s), dtype=np.int64, count=int(lengths.sum()))
        hashed = (flat[:, None] * a[None, :] + b[None, :]) % _PRIME
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        signatures[start : start + len(part)] = np.minimum.reduceat(hashed, offsets, axis=0)
    return signatures


def candidate_pairs(signatures: np.ndarray) -> set[tuple[int, int]]:
    """Index pairs that share at least one LSH band bucket."""
    rows = PERMUTATIONS // BANDS
    pairs: set[tuple[int, int]] = set()
    for band in range(BANDS):
        part = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        keys = part.view(np.dtype((np.void, part.dtype.itemsize * rows))).ravel()
        buckets: dict[object, list[int]] = defaultdict(list)
        for index, key in enumerate(keys.tolist()):
            buckets[key].append(index)
        for members in buckets.values():
            if len(members) < 2:
                continue
            heads = members[:_BUCKET_CAP]
            for i, first in enumerate(members):
                for second in heads[: i if i < len(heads) else len(heads)]:
                    pairs.add((second, first) if second < first else (first, second))
    return pairs


def find_duplicates(
    ids: Sequence[str],
    keys: Sequence[tuple[str, str, str]],
    identifiers: Sequence[Sequence[str]],
    code_hashes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Ids to remove as exact and near duplicates (one survivor per cluster)."""
    order = sorted(range(len(ids)), key=lambda i: keys[i])
    # Exact duplicates: same code hash (or, without hashes, the same identifier sequence).
    seen: dict[Any, int] = {}
    exact: list[str] = []
    survivors: list[int] = []
    for i in order:
        fingerprint = code_hashes[i] if code_hashes is not None else tuple(identifiers[i])
        if fingerprint in seen:
            exact.append(ids[i])
        else:
            seen[fingerprint] = i
            survivors.append(i)
    # Near duplicates among survivors with enough identifiers.
    eligible = [i for i in survivors if len(identifiers[i]) >= MIN_IDENTIFIERS]
    vocabulary: dict[str, int] = {}
    sets = [
        sorted({vocabulary.setdefault(tok, zlib.crc32(tok.encode()) & 0x7FFFFFFF) for tok in identifiers[i]})
        for i in eligible
    ]
    near: list[str] = []
    clusters = 0
    if len(eligible) > 1:
        signatures = minhash_signatures(sets)
        uf = _UnionFind(len(eligible))
        cache_sets = [set(identifiers[i]) for i in eligible]
        cache_counts: dict[int, Counter[str]] = {}
        for a, b in sorted(candidate_pairs(signatures)):
            if jaccard_set(cache_sets[a], cache_sets[b]) < SET_THRESHOLD:
                continue
            ca = cache_counts.get(a) or cache_counts.setdefault(a, Counter(identifiers[eligible[a]]))
            cb = cache_counts.get(b) or cache_counts.setdefault(b, Counter(identifiers[eligible[b]]))
            if jaccard_multiset(ca, cb) >= MULTISET_THRESHOLD:
                uf.union(a, b)
        roots: Counter[int] = Counter()
        for local in range(len(eligible)):
            root = uf.find(local)
            roots[root] += 1
            if root != local:
                near.append(ids[eligible[local]])
        clusters = sum(1 for size in roots.values() if size > 1)
    return {"exact": exact, "near": near, "clusters": clusters}
