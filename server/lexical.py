"""The lexical half of the hybrid search score: how much a function's *name* matches a query.

**Search** is hybrid (:mod:`pathfusion.server.ranking`): the query's vector k-NN (cosine in [-1, 1])
plus a lexical score: a query that *is* a function's name or qualified name (exactly, or
ignoring case) adds :data:`EXACT_BONUS` (so exact identifier matches always rank first); an
identifier query inside a longer name (``scanstring`` in ``py_scanstring``) adds
:data:`SUBTOKEN_BONUS` × the share of the name it covers; otherwise query words that match
subtokens of a function's name (``load config`` ↔ ``load_config``; ``parsing`` ↔
``parse``, prefixes differing by ≤ 3 letters) add :data:`SUBTOKEN_BONUS` × (share of the
name's subtokens matched) × (share of the query's words, stop words left out, matched) — so
a long natural-language query that merely mentions ``json`` does not promote every
``json_*`` function.  A small prior (:func:`name_prior`) can rank private helpers below
their public twins.

**BM25 over the whole function** adds what the name alone misses: the query's words against
the identifier subtokens of the function's text (body, parameters, calls, docstring and
comments as the server indexes them; evaluation strips docstrings).  Scoring is SQLite's
FTS5 ``bm25()`` — a maintained implementation that updates incrementally inside the index's
own transactions — over the ``lexicon`` table (:data:`LEXICON_SQL`, kept in step with the
``functions`` table by triggers, Porter-stemmed so ``copying`` meets ``copy``).  BM25 scores
the query's :data:`BM25_CANDIDATES` nearest functions by cosine only; their scores are
divided by their maximum (so the weight means the same in a 100-function workspace and a
100k-function one) and weighted by :data:`BM25_WEIGHT`.

:func:`lexical_bonus` is the definition; :class:`~pathfusion.server.name_lookup._NameLookup` computes
the same numbers for all names at once, which is what makes search fast at 100k functions.
Why a module of its own: ``pathfusion eval search`` and ``model_export`` (tuning the
weights) score exactly as the server does by importing these functions, without the index.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

import numpy as np

from .paths import split_subtokens

EXACT_BONUS = 2.0
CASELESS_BONUS = 1.5
SUBTOKEN_BONUS = 0.1
"""Weight of the share of name subtokens a query mentions.  Chosen on validation together
with :data:`BM25_WEIGHT` over the shipped embedder (`python -m pathfusion.model_export.tune_ranking`,
docs/results.md): BM25 carries most of the lexical signal, the name bonus adds a little."""
PRIVATE_PENALTY = 0.005
"""Subtracted from the score of a private helper (``_name``, not a dunder): when a public
function and its private helper score alike, the public one is what a query describes (a user
looking for "copy a directory tree" wants ``copytree``, not ``_copytree``).  A tie-break, not a
demotion: it reorders only scores within 0.005 of each other.  Chosen on validation by
``python -m pathfusion.model_export.tune_ranking --groups 10 --private ...`` over the shipped
encoder (0.005 and 0.01 best, 0.02 lower; docs/results.md)."""

BM25_WEIGHT = 0.1
"""Weight of a function's BM25 score divided by the query's best BM25 score; chosen on
validation with :data:`SUBTOKEN_BONUS` and :data:`NAME_TERMS_WEIGHT`
(`python -m pathfusion.model_export.tune_ranking`, docs/results.md)."""
BM25_CANDIDATES = 200
"""BM25 scores only the query's this many nearest functions by cosine (normalised over them).
Why: FTS5 scores a match in ≈ 2 µs, so scoring every match of a sentence query cost 7–14 ms
at 100k functions, while a function far down the vector ranking is not lifted into the top
results by a bonus of at most :data:`BM25_WEIGHT` anyway.  On validation
(``python -m pathfusion.model_export.bm25_candidates``, docs/results.md) hybrid MRR with 20 /
50 / 100 / 200 / 400 candidates is 0.8624 / 0.8622 / 0.8616 / 0.8616 / 0.8616 (anonymised
0.6911 / 0.6921 / 0.6920 / 0.6916 / 0.6921) against 0.8616 (0.6918) scoring every function
of the group: all within two pairs of 2,000.  200 keeps a margin for workspaces a hundred
times larger than a group of 1,000, where the described function sits further down the
vector ranking, for ≈ 0.4 ms more than 20."""
NAME_TERMS_WEIGHT = 1.0
"""FTS5 column weight of the name's subtokens relative to the rest of the function's text."""
BM25_MAX_MATCHES = 5000
"""At most this many functions are BM25-scored for one query.  Why: FTS5 scores a match in
≈ 5 µs, so a query whose words occur in half of a 100k-function workspace would cost
hundreds of milliseconds.  Past the limit the query's most common words are left out, rarest
kept first: they have the lowest IDF, so they move BM25 the least (a query made only of
such words gets no BM25 bonus).  Groups of 1,000 (the
evaluation protocol) never reach it, so evaluation and the server rank alike there."""

LEXICON_SQL = """
CREATE VIRTUAL TABLE IF NOT EXISTS lexicon USING fts5(
    name_terms, terms, content='functions', content_rowid='label', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS lexicon_insert AFTER INSERT ON functions WHEN new.deleted = 0 BEGIN
    INSERT INTO lexicon(rowid, name_terms, terms) VALUES (new.label, new.name_terms, new.terms);
END;
CREATE TRIGGER IF NOT EXISTS lexicon_delete AFTER DELETE ON functions WHEN old.deleted = 0 BEGIN
    INSERT INTO lexicon(lexicon, rowid, name_terms, terms)
        VALUES ('delete', old.label, old.name_terms, old.terms);
END;
CREATE TRIGGER IF NOT EXISTS lexicon_update AFTER UPDATE ON functions BEGIN
    INSERT INTO lexicon(lexicon, rowid, name_terms, terms)
        SELECT 'delete', old.label, old.name_terms, old.terms WHERE old.deleted = 0;
    INSERT INTO lexicon(rowid, name_terms, terms)
        SELECT new.label, new.name_terms, new.terms WHERE new.deleted = 0;
END;
"""
"""The BM25 index: an FTS5 table over the ``name_terms`` and ``terms`` columns of
``functions`` (external content: the text is stored once), indexed for live functions only
(``deleted = 0``) so that its statistics describe what can be found."""

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

STOP_WORDS = frozenset({
    "a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "from", "with", "by", "is",
    "it", "its", "this", "that", "as", "at", "be", "into", "all", "each", "every", "given",
})
"""Query words that never count as name matches."""


def query_features(query: str) -> tuple[bool, set[str]]:
    """What the lexical ranking reads from a query: whether it is spelled like an identifier
    (``exact_form``: exact and substring name matches apply) and its subtokens minus stop
    words.  Shared by :meth:`pathfusion.server.index.WorkspaceIndex.search` and ``pathfusion eval search``."""
    words = re.findall(r"[A-Za-z_][\w.]*|\d+", query)
    exact_form = re.fullmatch(r"[A-Za-z_][\w.]*", query) is not None
    return exact_form, {token for word in words for token in split_subtokens(word)} - STOP_WORDS


def is_private(name: str) -> bool:
    """A private helper's name: one leading underscore or more, not a dunder."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__") and len(name) > 4)


def name_prior(name: str) -> float:
    """The ranking's prior for a function by its name (:data:`PRIVATE_PENALTY`)."""
    return -PRIVATE_PENALTY if is_private(name) else 0.0


def lexical_bonus(query: str, exact_form: bool, query_tokens: set[str],
                  name: str, qualname: str, tokens: tuple[str, ...]) -> float:
    """The lexical part of a function's score for a query (module docstring)."""
    if exact_form and query in (name, qualname):
        return EXACT_BONUS
    if exact_form and query.lower() in (name.lower(), qualname.lower()):
        return CASELESS_BONUS
    if exact_form and len(query) >= 4 and query.lower() in name.lower():
        return SUBTOKEN_BONUS * len(query) / len(name)
    if query_tokens and tokens:
        name_hits = sum(1 for token in tokens if _token_match(token, query_tokens))
        if name_hits:
            query_hits = sum(1 for token in query_tokens if _token_match(token, set(tokens)))
            return SUBTOKEN_BONUS * (name_hits / len(tokens)) * (query_hits / len(query_tokens))
    return 0.0


def _token_match(token: str, others: set[str]) -> bool:
    """Equal, or one a prefix of the other differing by ≤ 3 letters (``parse`` ~ ``parsing``,
    ``load`` ~ ``loads``/``loader``, not ``scan`` ~ ``scanstring``)."""
    if token in others:
        return True
    if len(token) < 4:
        return False
    return any(len(q) >= 4 and abs(len(q) - len(token)) <= 3
               and (q.startswith(token) or token.startswith(q)) for q in others)


def function_terms(source: str) -> str:
    """The text BM25 sees of a function: the lowercase subtokens of every identifier-like
    word of its source, space-separated (``self.loadConfig(path)`` → ``self load config path``)."""
    return " ".join(token for word in _WORD.findall(source) for token in split_subtokens(word))


def name_terms(name: str) -> str:
    """The name's subtokens as BM25 sees them."""
    return " ".join(split_subtokens(name))


def match_expression(query_tokens: set[str]) -> str | None:
    """The FTS5 query of a query's subtokens: any of them (``"load" OR "config"``), or None
    when none can be matched.  Tokens are quoted, so no query text is FTS5 syntax."""
    tokens = sorted(token for token in query_tokens if token.isalnum() and token.isascii())
    return " OR ".join(f'"{token}"' for token in tokens) if tokens else None


def bm25_bonuses(db: sqlite3.Connection, query_tokens: set[str], candidates: Sequence[int] | np.ndarray | None, *,
                 weight: float | None = None, name_weight: float | None = None, counts: dict[str, int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(labels, bonus) of the ``candidates`` (labels: the query's nearest functions,
    :data:`BM25_CANDIDATES` of them; None: every function, for benchmarks of BM25 alone) that
    match the query: each one's BM25 score over the best of them, × ``weight`` (module
    docstring).  IDF and document lengths are the whole lexicon's, as FTS5 computes them.  ``weight`` and
    ``name_weight`` default to :data:`BM25_WEIGHT` and :data:`NAME_TERMS_WEIGHT` (read at
    call time; ``pathfusion.model_export.tune_ranking`` passes its grid's values).
    ``counts`` remembers how many functions each expression matches, for as long as the
    lexicon does not change (the caller clears it; :class:`~pathfusion.server.index_store.IndexStore`
    does so with every generation): at 100k functions counting a common word walks its
    whole posting list, ≈ 8 ms a sentence query, and a session's queries share their words."""
    weight = BM25_WEIGHT if weight is None else weight
    name_weight = NAME_TERMS_WEIGHT if name_weight is None else name_weight
    expression = match_expression(query_tokens)
    wanted = None if candidates is None else [int(label) for label in candidates]
    if expression is None or weight == 0 or wanted == []:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    expression = _bounded_expression(db, query_tokens, expression, counts)
    if expression is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    sql = "SELECT rowid, -bm25(lexicon, ?, 1.0) FROM lexicon WHERE lexicon MATCH ?"
    if wanted is not None:  # ``+rowid``: filtered after the match (FTS5 would run it once per label)
        sql += f" AND +rowid IN ({','.join('?' * len(wanted))})"
    rows = db.execute(sql, (name_weight, expression, *(wanted or ()))).fetchall()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    labels = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    scores = np.fromiter((row[1] for row in rows), dtype=np.float64, count=len(rows))
    best = float(scores.max())
    return labels, (weight / best) * scores if best > 0 else np.zeros(len(rows))


COUNTS_KEPT = 4096
"""Expressions whose match counts one lexicon keeps (all are dropped past it)."""


def _count(db: sqlite3.Connection, expression: str, counts: dict[str, int] | None = None) -> int:
    if counts is not None and expression in counts:
        return counts[expression]
    found = int(db.execute("SELECT count(*) FROM lexicon WHERE lexicon MATCH ?", (expression,)).fetchone()[0])
    if counts is not None:
        if len(counts) >= COUNTS_KEPT:
            counts.clear()
        counts[expression] = found
    return found


def _bounded_expression(db: sqlite3.Connection, query_tokens: set[str], expression: str,
                        counts: dict[str, int] | None = None) -> str | None:
    """``expression``, or — when it matches more than :data:`BM25_MAX_MATCHES` functions —
    the OR of the query's rarest words whose matches add up to at most that many; None when
    even the rarest word is that common (then it barely discriminates: no BM25 for this
    query).  Counting walks posting lists (≈ 0.5 ms a word at 10k functions, several ms for a
    common word at 100k), so with remembered ``counts`` the words are counted first — mostly
    known already — and the union only when they cannot decide: one word over the bound puts
    the union over it, words whose counts add up to at most the bound keep it under; the
    decision is the same either way."""
    if counts is None:  # nothing remembered (evaluation): one count of the union first
        if _count(db, expression) <= BM25_MAX_MATCHES:
            return expression
        words = _word_counts(db, query_tokens, None)
    else:
        words = _word_counts(db, query_tokens, counts)
        largest = max((count for count, _ in words), default=0)
        if largest <= BM25_MAX_MATCHES and (sum(count for count, _ in words) <= BM25_MAX_MATCHES
                                            or _count(db, expression, counts) <= BM25_MAX_MATCHES):
            return expression
    kept, total = [], 0
    for count, token in words:
        if count == 0:
            continue
        if total + count > BM25_MAX_MATCHES:
            break
        kept.append(token)
        total += count
    return match_expression(set(kept)) if kept else None


def _word_counts(db: sqlite3.Connection, query_tokens: set[str], counts: dict[str, int] | None
                 ) -> list[tuple[int, str]]:
    """(matches, word) of each matchable query word, rarest first."""
    return sorted((_count(db, alone, counts), token) for token in query_tokens
                  if (alone := match_expression({token})) is not None)


def nearest(dense: np.ndarray, count: int = 0) -> np.ndarray:
    """Per row of ``dense`` (``[queries, functions]`` cosines), the columns of the ``count``
    (default :data:`BM25_CANDIDATES`) highest, best first, ties by column: the functions
    BM25 scores for that query, as the server takes them from its k-NN."""
    count = count or BM25_CANDIDATES  # read at call time (tests lower it)
    columns = np.arange(dense.shape[1])
    return np.stack([np.lexsort((columns, -row))[:count] for row in dense]) if len(dense) else \
        np.zeros((0, min(count, dense.shape[1])), dtype=np.int64)


def bm25_matrix(queries: list[str], names: list[str], sources: list[str], dense: np.ndarray, *,
                weight: float | None = None, name_weight: float | None = None, count: int = 0) -> np.ndarray:
    """``[len(queries), len(sources)]`` BM25 bonuses over the collection of these functions
    alone, computed as the server computes them (for ``pathfusion eval search``): each
    query's candidates are its ``count`` (default :data:`BM25_CANDIDATES`) :func:`nearest`
    by ``dense`` (its cosines with the functions)."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE functions (label INTEGER PRIMARY KEY, name_terms TEXT NOT NULL, "
                   "terms TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)")
        db.executescript(LEXICON_SQL)
        db.executemany("INSERT INTO functions (label, name_terms, terms) VALUES (?, ?, ?)",
                       [(i, name_terms(name), function_terms(source))
                        for i, (name, source) in enumerate(zip(names, sources, strict=True))])
        out = np.zeros((len(queries), len(sources)), dtype=np.float64)
        candidates = nearest(np.asarray(dense, dtype=np.float64), count)
        for row, query in enumerate(queries):
            labels, bonus = bm25_bonuses(db, query_features(query.strip())[1], candidates[row], weight=weight,
                                         name_weight=name_weight)
            out[row, labels] = bonus
        return out
    finally:
        db.close()
