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


def test_pruned_search_ranks_like_full_scoring(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With 240 functions (k-NN set of 50 < live), pruning must not change the top k."""
    import random as _random

    import numpy as np

    from server.index import WorkspaceIndex
    from tests.test_index import FakeEmbedder

    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(tmp_path / "cache"))
    rng = _random.Random(3)
    words = ["get", "load", "parse", "data", "config", "file", "user", "save", "json", "item"]
    folder = tmp_path / "ws"
    folder.mkdir()
    for f in range(12):
        body = ""
        for i in range(20):
            name = "_".join(rng.sample(words, rng.randint(1, 3))) + f"_{f}_{i}"
            body += f"def {name}(x):\n    return x + {i}\n\n"
        (folder / f"m{f}.py").write_text(body)
    index = WorkspaceIndex.open(folder, FakeEmbedder())
    index.sync()
    table = index._name_table()
    labels = sorted(table)
    vectors = np.asarray(index._hnsw.get_items(labels), dtype=np.float32)
    for query in ["get data", "load config file", "parse_json", "user", "save item data"]:
        import re

        vector = index.embed_query(query)
        exact_form = re.fullmatch(r"[A-Za-z_][\w.]*", query) is not None
        tokens = {t for w in re.findall(r"[A-Za-z_][\w.]*|\d+", query) for t in split_subtokens(w)} - STOP_WORDS
        full = sorted(
            ((float(vectors[i] @ vector) + lexical_bonus(query, exact_form, tokens, *table[label]), label)
             for i, label in enumerate(labels)),
            key=lambda item: (-item[0], item[1]),
        )[:5]
        got = index.search(query, k=5)
        assert [r.label for r in got] == [label for _, label in full], query
