"""The lexical bonus of every live function name at once (:class:`_NameLookup`).

Why a module of its own: :func:`~pathfusion.server.lexical.lexical_bonus` defines the bonus for one
name; scoring every name with it on every query cost ≈ 7 µs per function (0.7 s at 100k),
so the index keeps this vectorised form of the same rules, kept up to date label by label.
Its weights are read from :mod:`pathfusion.server.lexical` at each query (``lexical.SUBTOKEN_BONUS``,
not a copy made at import), so that there is one value of each, wherever it is tuned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from . import lexical
from .lexical import is_private
from .paths import split_subtokens
from .vector_space import GROWTH


class _NameLookup:
    """:func:`~pathfusion.server.lexical.lexical_bonus` for every live name at once, kept up to date
    label by label.

    Why: testing every name on every query cost ≈ 7 µs per function (0.7 s at 100k), and
    scoring the ≈ 10k names that share a common subtoken with a query one by one still
    cost ≈ 100 ms.  Here exact and case-insensitive names and qualnames are dict look-ups,
    substrings one ``re`` pass over every lower-cased name joined by newlines, and the
    subtoken bonus is numpy over inverted lists (subtoken → {label: occurrences}): the
    name-side hits are a weighted ``bincount`` over the lists of the subtokens that match a
    query token, the query-side hits one ``bincount`` per query token.  The arithmetic is
    that of :func:`~pathfusion.server.lexical.lexical_bonus`, in the same order, so the numbers are
    identical (``tests/index/test_index_lexical.py`` checks it).

    Updates are incremental (an edit must not cost a rebuild at 100k functions): a removed
    label leaves the dicts and lists at once; its line in the joined names stays as a dead
    entry (skipped when found) until dead entries outnumber the live ones.
    """

    def __init__(self, table: dict[int, tuple[str, str, tuple[str, ...]]] | None = None) -> None:
        table = table or {}
        self.table: dict[int, tuple[str, str, tuple[str, ...]]] = dict(table)
        self.exact: dict[str, set[int]] = {}
        self.caseless: dict[str, set[int]] = {}
        self.postings: dict[str, dict[int, int]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        size = max(table, default=-1) + 65
        self.n_tokens = np.zeros(size, dtype=np.float64)
        self.name_len = np.zeros(size, dtype=np.float64)
        self.private = np.zeros(size, dtype=np.float64)
        # The bulk of a 100k-function index is built here in one pass (≈ 3x faster than
        # add() per label: no per-label array writes, prefixes once per distinct subtoken).
        exact, caseless, postings = self.exact, self.caseless, self.postings
        for label, (name, qualname, tokens) in table.items():
            exact.setdefault(name, set()).add(label)
            if qualname != name:
                exact.setdefault(qualname, set()).add(label)
            lowered, lowered_qualname = name.lower(), qualname.lower()
            caseless.setdefault(lowered, set()).add(label)
            if lowered_qualname != lowered:
                caseless.setdefault(lowered_qualname, set()).add(label)
            for token in tokens:
                posting = postings.setdefault(token, {})
                posting[label] = posting.get(label, 0) + 1
        if table:
            labels = np.fromiter(table, dtype=np.int64, count=len(table))
            self.n_tokens[labels] = np.fromiter((len(row[2]) for row in table.values()), dtype=np.float64,
                                                count=len(table))
            self.name_len[labels] = np.fromiter((len(row[0]) for row in table.values()), dtype=np.float64,
                                                count=len(table))
            self.private[labels] = np.fromiter((is_private(row[0]) for row in table.values()), dtype=np.float64,
                                               count=len(table))
        self.by_prefix: dict[str, set[str]] = {}
        for token in postings:
            if len(token) >= 4:
                self.by_prefix.setdefault(token[:4], set()).add(token)
        # the joined names: entry i starts at starts[i] and belongs to label order[i];
        # entry_of[label] is its live entry (-1: none)
        self._haystack = ""
        self._starts = np.zeros(0, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)
        self._entry_of = np.full(size, -1, dtype=np.int64)
        self._alive = 0
        self._pending: dict[int, str] = {label: row[0].lower() for label, row in table.items()}

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, str, str]]) -> _NameLookup:
        """From ``(label, name, qualname)`` rows."""
        return cls({label: (name, qualname, split_subtokens(name)) for label, name, qualname in rows})

    def _grow(self, size: int) -> None:
        if size > len(self.n_tokens):
            capacity = max(size, int(len(self.n_tokens) * GROWTH) + 64)
            for attr, fill in (("n_tokens", 0), ("name_len", 0), ("private", 0), ("_entry_of", -1)):
                old = getattr(self, attr)
                new = np.full(capacity, fill, dtype=old.dtype)
                new[: len(old)] = old
                setattr(self, attr, new)

    # -- updates ---------------------------------------------------------------------------------
    def add(self, label: int, name: str, qualname: str, tokens: tuple[str, ...] | None = None) -> None:
        """Add ``label`` (or replace what it was)."""
        if label in self.table:
            self.remove(label)
        tokens = split_subtokens(name) if tokens is None else tokens
        self.table[label] = (name, qualname, tokens)
        for key in {name, qualname}:
            self.exact.setdefault(key, set()).add(label)
        for key in {name.lower(), qualname.lower()}:
            self.caseless.setdefault(key, set()).add(label)
        counts: dict[str, int] = {}
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
        for token, count in counts.items():
            self.postings.setdefault(token, {})[label] = count
            self._arrays.pop(token, None)
            if len(token) >= 4:
                self.by_prefix.setdefault(token[:4], set()).add(token)
        self._grow(label + 1)
        self.n_tokens[label] = len(tokens)
        self.name_len[label] = len(name)
        self.private[label] = float(is_private(name))
        self._pending[label] = name.lower()

    def remove(self, label: int) -> None:
        row = self.table.pop(label, None)
        if row is None:
            return
        name, qualname, tokens = row
        for index, keys in ((self.exact, {name, qualname}), (self.caseless, {name.lower(), qualname.lower()})):
            for key in keys:
                labels = index.get(key)
                if labels is not None:
                    labels.discard(label)
                    if not labels:
                        del index[key]
        for token in set(tokens):
            posting = self.postings.get(token)
            if posting is not None:
                posting.pop(label, None)
                if not posting:
                    del self.postings[token]
            self._arrays.pop(token, None)
        if self._entry_of[label] >= 0:
            self._entry_of[label] = -1
            self._alive -= 1
        self.private[label] = 0.0
        self._pending.pop(label, None)

    def priors(self, labels: np.ndarray) -> np.ndarray:
        """:func:`~pathfusion.server.lexical.name_prior` of ``labels`` (live labels of the table)."""
        return -lexical.PRIVATE_PENALTY * self.private[labels]

    def _names_text(self) -> str:
        """The joined lower-cased names, with the pending additions appended (or rebuilt
        when dead entries outnumber the live ones)."""
        if len(self._order) - self._alive > max(len(self.table), 1024):
            self._haystack, self._alive = "", 0
            self._starts, self._order = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            self._entry_of[:] = -1
            self._pending = {label: row[0].lower() for label, row in self.table.items()}
        if self._pending:
            labels = np.fromiter(self._pending, dtype=np.int64, count=len(self._pending))
            lengths = np.fromiter((len(part) + 1 for part in self._pending.values()), dtype=np.int64,
                                  count=len(self._pending))
            first = len(self._haystack) + 1 if self._haystack else 0
            starts = first + np.concatenate([[0], np.cumsum(lengths)[:-1]])
            joined = "\n".join(self._pending.values())
            self._haystack = f"{self._haystack}\n{joined}" if self._haystack else joined
            self._entry_of[labels] = len(self._order) + np.arange(len(labels))
            self._starts = np.concatenate([self._starts, starts])
            self._order = np.concatenate([self._order, labels])
            self._alive += len(labels)
            self._pending = {}
        return self._haystack

    def warm(self) -> None:
        """Do now what the first query would (join the names)."""
        self._names_text()

    # -- look-ups --------------------------------------------------------------------------------
    def _substring_labels(self, needle: str) -> np.ndarray:
        """Live labels whose lower-cased name contains ``needle`` (no newline in it, so a
        match never spans two names; ``re`` finds them in C, numpy maps them to labels)."""
        haystack = self._names_text()
        positions = np.fromiter((match.start() for match in re.finditer(re.escape(needle), haystack)),
                                dtype=np.int64)
        if positions.size == 0:
            return positions
        entries = np.unique(np.searchsorted(self._starts, positions, side="right") - 1)
        labels = self._order[entries]
        return labels[self._entry_of[labels] == entries]

    def _matching_tokens(self, query_token: str) -> list[str]:
        """Indexed subtokens that :func:`~pathfusion.server.lexical._token_match` pairs with
        ``query_token`` (equal, or ≥ 4 letters, a prefix of one another, lengths within 3;
        such pairs share their first 4 letters)."""
        found = [query_token] if query_token in self.postings else []
        if len(query_token) >= 4:
            for token in self.by_prefix.get(query_token[:4], ()):
                if token != query_token and token in self.postings and abs(len(token) - len(query_token)) <= 3 \
                        and (token.startswith(query_token) or query_token.startswith(token)):
                    found.append(token)
        return found

    def _posting(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, occurrences as float64) of ``token``, cached until it changes."""
        arrays = self._arrays.get(token)
        if arrays is None:
            posting = self.postings[token]
            arrays = (np.fromiter(posting.keys(), dtype=np.int64, count=len(posting)),
                      np.fromiter(posting.values(), dtype=np.float64, count=len(posting)))
            self._arrays[token] = arrays
        return arrays

    def token_bonuses(self, query_tokens: set[str]) -> tuple[np.ndarray, np.ndarray]:
        """(labels, bonus) of the subtoken rule of :func:`~pathfusion.server.lexical.lexical_bonus` for
        every name sharing a (prefix-)matching subtoken with the query."""
        per_query = {q: self._matching_tokens(q) for q in query_tokens}
        matched = {token for tokens in per_query.values() for token in tokens}
        if not matched:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        postings = [self._posting(token) for token in matched]
        size = len(self.n_tokens)
        name_hits = np.bincount(np.concatenate([labels for labels, _ in postings]),
                                weights=np.concatenate([counts for _, counts in postings]), minlength=size)
        per_token = [np.unique(np.concatenate([self._posting(t)[0] for t in tokens]))
                     for tokens in per_query.values() if tokens]
        query_hits = np.bincount(np.concatenate(per_token), minlength=size)
        labels = np.flatnonzero(name_hits)
        bonus = lexical.SUBTOKEN_BONUS * (name_hits[labels] / self.n_tokens[labels]) \
            * (query_hits[labels] / len(query_tokens))
        return labels.astype(np.int64), bonus

    def bonuses(self, query: str, exact_form: bool, query_tokens: set[str]) -> tuple[np.ndarray, np.ndarray]:
        """(labels, bonus) of every live name with a non-zero
        :func:`~pathfusion.server.lexical.lexical_bonus`, each label once; the rules apply in its order (a
        later, stronger rule replaces an earlier one's value)."""
        labels = np.zeros(0, dtype=np.int64)
        bonus = np.zeros(0, dtype=np.float64)
        if query_tokens:
            labels, bonus = self.token_bonuses(query_tokens)
        if not exact_form:
            return labels, bonus
        lowered = query.lower()
        if len(query) >= 4:
            found = self._substring_labels(lowered)
            if found.size:
                keep = ~np.isin(labels, found)
                labels = np.concatenate([labels[keep], found])
                bonus = np.concatenate([bonus[keep], lexical.SUBTOKEN_BONUS * len(query) / self.name_len[found]])
        exact = self.exact.get(query, set())
        override = {label: lexical.EXACT_BONUS for label in exact}
        override.update({label: lexical.CASELESS_BONUS for label in self.caseless.get(lowered, ())
                         if label not in exact})
        if override:
            found = np.fromiter(override, dtype=np.int64, count=len(override))
            keep = ~np.isin(labels, found)
            labels = np.concatenate([labels[keep], found])
            bonus = np.concatenate([bonus[keep], np.fromiter(override.values(), dtype=np.float64,
                                                              count=len(override))])
        return labels, bonus

    def candidates(self, query: str, exact_form: bool, query_tokens: set[str]) -> set[int]:
        """Every label with a non-zero bonus for the query."""
        labels, _ = self.bonuses(query, exact_form, query_tokens)
        return {int(label) for label in labels}
