"""The name look-up computes exactly :func:`lexical_bonus` for every name (vectorised, kept
up to date label by label), and the pruned search ranks like scoring every function."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.lexical import STOP_WORDS, lexical_bonus
from server.name_lookup import _NameLookup
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


def _query_parts(query: str) -> tuple[bool, set[str]]:
    import re

    words = re.findall(r"[A-Za-z_][\w.]*|\d+", query)
    exact_form = re.fullmatch(r"[A-Za-z_][\w.]*", query) is not None
    return exact_form, {t for w in words for t in split_subtokens(w)} - STOP_WORDS


def _expected(table: dict[int, tuple[str, str, tuple[str, ...]]], query: str) -> dict[int, float]:
    exact_form, query_tokens = _query_parts(query)
    out = {label: lexical_bonus(query, exact_form, query_tokens, *row) for label, row in table.items()}
    return {label: bonus for label, bonus in out.items() if bonus}


def _got(lookup: _NameLookup, query: str) -> dict[int, float]:
    exact_form, query_tokens = _query_parts(query)
    labels, bonus = lookup.bonuses(query, exact_form, query_tokens)
    assert len(set(labels.tolist())) == len(labels)  # each label once
    return {int(label): float(value) for label, value in zip(labels, bonus, strict=True)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names, names), min_size=1, max_size=30), queries)
def test_vectorised_bonuses_equal_lexical_bonus_exactly(pairs: list[tuple[str, str]], query: str) -> None:
    table = {i: (name, f"{cls}.{name}", split_subtokens(name)) for i, (cls, name) in enumerate(pairs)}
    assert _got(_NameLookup(table), query) == _expected(table, query)  # same floats, not approx


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(names, names), min_size=2, max_size=30), st.data(), queries)
def test_incremental_updates_equal_a_fresh_lookup(pairs: list[tuple[str, str]], data: st.DataObject,
                                                  query: str) -> None:
    """Removing, re-adding (a new qualname) and adding labels, in any order, gives the
    bonuses of a look-up built from scratch — dead entries of the joined names included."""
    table = {i: (name, f"{cls}.{name}", split_subtokens(name)) for i, (cls, name) in enumerate(pairs)}
    lookup = _NameLookup(dict(table))
    lookup.bonuses(query, *_query_parts(query))  # joins the names before the updates
    removed = data.draw(st.sets(st.sampled_from(sorted(table))))
    for label in removed:
        lookup.remove(label)
        del table[label]
    for label in data.draw(st.sets(st.sampled_from(sorted(table)))) if table else ():
        name, _, tokens = table[label]
        table[label] = (name, "Moved." + name, tokens)
        lookup.add(label, name, "Moved." + name)
    extra = data.draw(st.lists(names, max_size=5))
    for offset, name in enumerate(extra):
        label = len(pairs) + 3 + offset
        table[label] = (name, name, split_subtokens(name))
        lookup.add(label, name, name)
    assert lookup.table == table
    assert _got(lookup, query) == _expected(table, query)
    for other in ("json", "Moved.load", "parse data", "loader"):
        assert _got(lookup, other) == _expected(table, other)


def test_dead_entries_are_compacted() -> None:
    lookup = _NameLookup({i: (f"load_{i}", f"load_{i}", ("load", str(i))) for i in range(3000)})
    assert len(_got(lookup, "load")) == 3000
    for i in range(2500):
        lookup.remove(i)
    assert set(_got(lookup, "load")) == set(range(2500, 3000))
    assert len(lookup._order) == 500  # rebuilt: more dead entries than live ones (and > 1024)


@pytest.mark.parametrize("widen", [False, True])
def test_pruned_search_ranks_like_full_scoring(tmp_path, monkeypatch, widen) -> None:  # type: ignore[no-untyped-def]
    """With 240 functions (k-NN set of 50 < live), pruning must not change the top k;
    neither must widening the k-NN set (to 100 here) when many candidates qualify."""
    if widen:
        monkeypatch.setattr("server.ranking.EXPAND_CANDIDATES", 0)
        monkeypatch.setattr("server.ranking.EXPAND_FACTOR", 2)
    import random as _random

    import numpy as np

    from server.index import EmbedderSearchModel, WorkspaceIndex
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
    index = WorkspaceIndex.open(folder, EmbedderSearchModel(FakeEmbedder()))
    index.sync()
    table = index.ranker.name_table()
    labels = sorted(table)
    vectors = np.asarray(index.store.space.graph.get_items(labels), dtype=np.float32)
    widths: list[int] = []
    knn_set = index.ranker.knn_set
    monkeypatch.setattr(index.ranker, "knn_set", lambda *a: widths.append(a[1]) or knn_set(*a))
    for query in ["get data", "load config file", "parse_json", "user", "save item data", "get", "load_data"]:
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
    assert (100 in widths) == widen


class NameBlindEmbedder:
    """Unit vectors from a hash of the text with ``_copytree`` read as ``copytree``: a public
    function and its private twin get the same vector (the prior alone can order them)."""

    dim = 16
    model_id = "name-blind"

    def embed(self, texts, batch_size: int = 32):  # type: ignore[no-untyped-def]
        import hashlib

        import numpy as np

        out = []
        for text in texts:
            seed = int(hashlib.sha256(text.replace("_copytree", "copytree").encode()).hexdigest()[:8], 16)
            vector = np.random.default_rng(seed).standard_normal(self.dim)
            out.append(vector / np.linalg.norm(vector))
        return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("penalty,first", [(0.0, "_copytree"), (0.02, "copytree")])
def test_private_helpers_rank_below_their_public_twin(tmp_path, monkeypatch, penalty, first) -> None:  # type: ignore[no-untyped-def]
    from server.index import EmbedderSearchModel, WorkspaceIndex, is_private

    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("server.lexical.PRIVATE_PENALTY", penalty)
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "a.py").write_text("def _copytree(src, dst):\n    return src\n\n\ndef copytree(src, dst):\n    return src\n")
    index = WorkspaceIndex.open(folder, EmbedderSearchModel(NameBlindEmbedder()))
    index.sync()
    results = index.search("copy a directory tree recursively", k=2)
    assert results[0].name == first
    assert abs(results[0].score - results[1].score) == pytest.approx(penalty, abs=1e-6)
    index.close()
    assert is_private("_x") and is_private("__mangled") and not is_private("__init__") and not is_private("x")
