"""The name look-up that narrows the lexical ranking never drops a function with a bonus."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.index import STOP_WORDS, _NameLookup, lexical_bonus
from server.paths import split_subtokens

PARTS = ["load", "loads", "loader", "parse", "parsing", "json", "get", "http", "Request", "scan",
         "scanstring", "encode", "basestring", "py", "to", "dict", "_", "X", "data", "file"]
names = st.lists(st.sampled_from(PARTS), min_size=1, max_size=4).map(lambda p: "".join(p) or "f")
queries = st.one_of(names, st.lists(st.sampled_from(PARTS), min_size=1, max_size=4).map(" ".join))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names, names), min_size=1, max_size=30), queries)
def test_candidates_cover_every_nonzero_bonus(pairs: list[tuple[str, str]], query: str) -> None:
    import re

    table = {i: (name, f"{cls}.{name}", split_subtokens(name)) for i, (cls, name) in enumerate(pairs)}
    words = re.findall(r"[A-Za-z_][\w.]*|\d+", query)
    exact_form = re.fullmatch(r"[A-Za-z_][\w.]*", query) is not None
    query_tokens = {t for w in words for t in split_subtokens(w)} - STOP_WORDS
    expected = {label for label, row in table.items() if lexical_bonus(query, exact_form, query_tokens, *row)}
    assert expected <= _NameLookup(table).candidates(query, exact_form, query_tokens)
