"""The lexical half of the hybrid search score: how much a function's *name* matches a query.

**Search** is hybrid (:mod:`server.ranking`): the query's vector k-NN (cosine in [-1, 1])
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

:func:`lexical_bonus` is the definition; :class:`~server.name_lookup._NameLookup` computes
the same numbers for all names at once, which is what makes search fast at 100k functions.
Why a module of its own: ``pathfusion eval search`` and ``model_export`` (tuning the
weights) score exactly as the server does by importing these functions, without the index.
"""

from __future__ import annotations

import re

from .paths import split_subtokens

EXACT_BONUS = 2.0
CASELESS_BONUS = 1.5
SUBTOKEN_BONUS = 0.5
"""Weight of the share of name subtokens a query mentions; 0.5 has the best validation MRR
of {0, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2} (`python -m model_export.tune_ranking`,
docs/results.md)."""
PRIVATE_PENALTY = 0.0
"""Subtracted from the score of a private helper (``_name``, not a dunder): when a public
function and its private helper score alike, the public one is what a query describes.
Chosen on validation by ``python -m model_export.tune_ranking`` (docs/results.md)."""

STOP_WORDS = frozenset({
    "a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "from", "with", "by", "is",
    "it", "its", "this", "that", "as", "at", "be", "into", "all", "each", "every", "given",
})
"""Query words that never count as name matches."""


def query_features(query: str) -> tuple[bool, set[str]]:
    """What the lexical ranking reads from a query: whether it is spelled like an identifier
    (``exact_form``: exact and substring name matches apply) and its subtokens minus stop
    words.  Shared by :meth:`server.index.WorkspaceIndex.search` and ``pathfusion eval search``."""
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
