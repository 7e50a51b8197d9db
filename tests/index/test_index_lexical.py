"""The name look-up computes exactly :func:`lexical_bonus` for every name (vectorised, kept
up to date label by label), and the pruned search ranks like scoring every function."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pathfusion.server.lexical import (
    BM25_WEIGHT,
    STOP_WORDS,
    bm25_bonuses,
    lexical_bonus,
    query_features,
)
from pathfusion.server.name_lookup import _NameLookup
from pathfusion.server.paths import split_subtokens

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
    neither must widening the k-NN set (to 120 here) when many candidates qualify."""
    # Bonuses large enough that names outside the k-NN set compete (the mechanism under
    # test, whatever weights validation picked for the shipped model).
    monkeypatch.setattr("pathfusion.server.lexical.SUBTOKEN_BONUS", 0.5)
    monkeypatch.setattr("pathfusion.server.lexical.BM25_WEIGHT", 0.2)
    monkeypatch.setattr("pathfusion.server.lexical.BM25_CANDIDATES", 60)  # BM25 for the 60 nearest of 240
    if widen:
        monkeypatch.setattr("pathfusion.server.ranking.EXPAND_CANDIDATES", 0)
        monkeypatch.setattr("pathfusion.server.ranking.EXPAND_FACTOR", 2)
    import random as _random

    import numpy as np

    from pathfusion.server.index import EmbedderSearchModel, WorkspaceIndex
    from tests.helpers.index import FakeEmbedder

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
        cosines = vectors @ vector
        nearest = [labels[i] for i in np.lexsort((labels, -cosines))[:60]]
        bm25 = dict(zip(*(array.tolist() for array in bm25_bonuses(index.store.db, tokens, nearest)), strict=True))
        assert bm25 and max(bm25.values()) == pytest.approx(0.2) and set(bm25) <= set(nearest)
        full = sorted(
            ((float(vectors[i] @ vector) + lexical_bonus(query, exact_form, tokens, *table[label])
              + bm25.get(label, 0.0), label)
             for i, label in enumerate(labels)),
            key=lambda item: (-item[0], item[1]),
        )[:5]
        got = index.search(query, k=5)
        assert [r.label for r in got] == [label for _, label in full], query
    assert (120 in widths) == widen  # the k-NN set of 60 widened twice


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


@pytest.mark.parametrize("penalty,first", [(0.0, "_copytree"), (0.02, "copytree"), (None, "copytree")])
def test_private_helpers_rank_below_their_public_twin(tmp_path, monkeypatch, penalty, first) -> None:  # type: ignore[no-untyped-def]
    """``None``: the shipped penalty, which must put the public twin first."""
    from pathfusion.server import lexical
    from pathfusion.server.index import EmbedderSearchModel, WorkspaceIndex
    from pathfusion.server.lexical import is_private

    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(tmp_path / "cache"))
    if penalty is None:
        penalty = lexical.PRIVATE_PENALTY
    else:
        monkeypatch.setattr("pathfusion.server.lexical.PRIVATE_PENALTY", penalty)
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


def test_bm25_follows_the_functions_through_edits_deletes_and_compaction(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The FTS5 lexicon holds exactly the live functions: a word only in a body finds its
    function, an edit or a deleted file takes it out, a compaction keeps it right."""
    from pathfusion.server.index import EmbedderSearchModel, WorkspaceIndex
    from pathfusion.server.index_graph import rebuild_graph
    from tests.helpers.index import FakeEmbedder

    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "a.py").write_text("def fetch(url):\n    return urllib.request.urlopen(url)\n\n\n"
                                 "def total(values):\n    return sum(values)\n")
    (folder / "b.py").write_text("def render(page):\n    # draw the sidebar widgets\n    return page\n")
    index = WorkspaceIndex.open(folder, EmbedderSearchModel(FakeEmbedder()))
    index.sync()

    def matched(*words: str) -> set[str]:
        labels, bonus = bm25_bonuses(index.store.db, set(words), None)
        table = index.ranker.name_table()
        assert (bonus > 0).all()
        return {table[int(label)][0] for label in labels}

    assert matched("urlopen") == {"fetch"}  # a call in the body, not the name
    assert matched("sidebar") == {"render"}  # a comment
    assert matched("widget") == {"render"}  # Porter stemming: widgets ~ widget
    assert index.search("open a url with urllib", k=1)[0].name == "fetch"
    (folder / "a.py").write_text("def fetch(url):\n    return requests.get(url)\n\n\n"
                                 "def total(values):\n    return sum(values)\n")
    index.update_files([folder / "a.py"])
    assert matched("urlopen") == set() and matched("requests") == {"fetch"}
    (folder / "b.py").unlink()
    index.sync()
    assert matched("sidebar") == set()
    with index.store.lock:
        rebuild_graph(index.store)  # renumbers the labels
    assert matched("requests") == {"fetch"} and matched("values") == {"total"}
    live = index.store.db.execute("SELECT count(*) FROM functions WHERE deleted = 0").fetchone()[0]
    indexed = index.store.db.execute("SELECT count(*) FROM lexicon").fetchone()[0]
    assert live == indexed == 2
    index.close()


def test_eval_scores_bm25_exactly_as_the_server_does(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``pathfusion eval search`` (bm25_matrix over a group) and the index (bm25_bonuses over
    the workspace) give the same numbers for the same functions."""
    import numpy as np

    from pathfusion.server.index import EmbedderSearchModel, WorkspaceIndex
    from pathfusion.server.lexical import bm25_matrix
    from pathfusion.server.parsing import Document
    from tests.helpers.index import FILES, FakeEmbedder, write_workspace

    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(tmp_path / "cache"))
    folder = write_workspace(tmp_path / "ws")
    index = WorkspaceIndex.open(folder, EmbedderSearchModel(FakeEmbedder()))
    index.sync()
    functions = [f for text in FILES.values() for f in Document(text.lstrip("\n")).functions()]
    queries = ["read the settings file", "fetch a url and write the response", "mean of values", "prime"]
    names, sources = [f.name for f in functions], [f.source for f in functions]
    monkeypatch.setattr("pathfusion.server.lexical.BM25_CANDIDATES", len(functions))
    every = bm25_matrix(queries, names, sources, np.zeros((len(queries), len(functions))))
    weaker = np.where((every > 0) & (every < every.max(axis=1, keepdims=True)))
    assert len(weaker[0])  # a query matching two functions, one less than the other
    dense = 0.05 * np.random.default_rng(0).random((len(queries), len(functions)))
    dense[weaker] = 1.0  # the weaker match nearest: BM25 scores it alone and normalises over it
    monkeypatch.setattr("pathfusion.server.lexical.BM25_CANDIDATES", 1)
    want = bm25_matrix(queries, names, sources, dense)
    assert ((want > 0).sum(axis=1) <= 1).all()
    assert (want[weaker] == pytest.approx(BM25_WEIGHT)) and (want[weaker[0]] > 0).sum() == 1
    table = index.ranker.name_table()
    column = {f.qualname: i for i, f in enumerate(functions)}
    label_of = {column[qualname]: label for label, (_, qualname, _) in table.items()}
    for row, query in enumerate(queries):
        got = np.zeros(len(functions))
        nearest = [label_of[int(c)] for c in np.argsort(-dense[row])[:1]]
        labels, bonus = bm25_bonuses(index.store.db, query_features(query)[1], nearest)
        for label, value in zip(labels.tolist(), bonus.tolist(), strict=True):
            got[column[table[label][1]]] = value
        np.testing.assert_allclose(got, want[row], atol=1e-9)
        assert want[row].max() in (0.0, pytest.approx(BM25_WEIGHT))
    index.close()


def test_query_text_is_never_fts5_syntax() -> None:
    from pathfusion.server.lexical import match_expression

    assert match_expression({"load", "config"}) == '"config" OR "load"'
    assert match_expression({'a"b', "near", "*", "and"}) == '"and" OR "near"'  # only plain words, quoted
    assert match_expression(set()) is None


@pytest.mark.parametrize("remembered", [False, True])
def test_bm25_scores_at_most_the_bounded_number_of_matches(monkeypatch, remembered) -> None:  # type: ignore[no-untyped-def]
    """A query whose words are everywhere keeps only its rarest words for BM25 (their
    matches within the bound); below the bound nothing changes.  The same decisions with
    remembered counts (the server's way: words counted first, the union only when they
    cannot decide) as without (evaluation's: the union first)."""
    import sqlite3

    from pathfusion.server.lexical import LEXICON_SQL

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE functions (label INTEGER PRIMARY KEY, name_terms TEXT NOT NULL, "
               "terms TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)")
    db.executescript(LEXICON_SQL)
    rows = [(i, "f", "value common" + (" rare" if i % 10 == 0 else "") + (" scarce" if i % 25 == 0 else ""))
            for i in range(100)]
    db.executemany("INSERT INTO functions (label, name_terms, terms) VALUES (?, ?, ?)", rows)
    tokens = {"common", "rare", "scarce"}
    everything, _ = bm25_bonuses(db, tokens, None, counts={} if remembered else None)
    assert len(everything) == 100  # "common" is in every function
    monkeypatch.setattr("pathfusion.server.lexical.BM25_MAX_MATCHES", 15)
    bounded, bonus = bm25_bonuses(db, tokens, None, counts={} if remembered else None)
    assert sorted(bounded.tolist()) == [i for i in range(100) if i % 10 == 0 or i % 25 == 0]  # rare + scarce: 14
    assert bonus.max() == pytest.approx(BM25_WEIGHT)
    monkeypatch.setattr("pathfusion.server.lexical.BM25_MAX_MATCHES", 5)
    assert sorted(bm25_bonuses(db, tokens | {"absent"}, None, counts={} if remembered else None)[0].tolist()) == [0, 25, 50, 75]  # the rarest word alone
    monkeypatch.setattr("pathfusion.server.lexical.BM25_MAX_MATCHES", 3)
    assert bm25_bonuses(db, tokens, None, counts={} if remembered else None)[0].size == 0  # every word too common: no BM25 bonus


def test_match_counts_are_remembered_until_the_lexicon_changes(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Counting a word's matches walks its posting list; the counts of one lexicon are kept
    (same bonuses, no second count) and dropped with every change of the index."""
    import sqlite3

    from pathfusion.server.index import EmbedderSearchModel, WorkspaceIndex
    from pathfusion.server.lexical import LEXICON_SQL
    from tests.helpers.index import FakeEmbedder

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE functions (label INTEGER PRIMARY KEY, name_terms TEXT NOT NULL, "
               "terms TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)")
    db.executescript(LEXICON_SQL)
    db.executemany("INSERT INTO functions (label, name_terms, terms) VALUES (?, ?, ?)",
                   [(i, "f", "value common" + (" rare" if i % 10 == 0 else "")) for i in range(100)])
    monkeypatch.setattr("pathfusion.server.lexical.BM25_MAX_MATCHES", 15)  # the per-word counts are needed
    tokens = {"common", "rare"}
    counts: dict[str, int] = {}
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    plain = bm25_bonuses(db, tokens, None)
    first = bm25_bonuses(db, tokens, None, counts=counts)
    assert counts == {'"common"': 100, '"rare"': 10}  # "common" alone passes the bound: no union counted
    statements.clear()
    again = bm25_bonuses(db, tokens, None, counts=counts)
    assert not [sql for sql in statements if "count(*)" in sql]  # nothing counted twice
    for got in (first, again):
        assert got[0].tolist() == plain[0].tolist() and got[1].tolist() == plain[1].tolist()
    db.set_trace_callback(None)
    db.executemany("INSERT INTO functions (label, name_terms, terms) VALUES (?, ?, ?)",
                   [(100 + i, "g", " ".join(["alpha", "beta", "gamma"][: 1 + i % 3])) for i in range(60)])
    for bound in (1, 5, 15, 40, 60, 110, 500):  # the same decisions as counting the union first
        monkeypatch.setattr("pathfusion.server.lexical.BM25_MAX_MATCHES", bound)
        remembered: dict[str, int] = {}
        for words in ({"alpha"}, {"alpha", "beta"}, {"beta", "gamma", "rare"}, {"gamma", "common"},
                      {"alpha", "beta", "gamma", "rare", "absent"}):
            want = bm25_bonuses(db, words, None)
            got = bm25_bonuses(db, words, None, counts=remembered)
            assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist(), (bound, words)

    monkeypatch.setenv("PATHFUSION_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "a.py").write_text("def fetch(url):\n    return urllib.request.urlopen(url)\n")
    index = WorkspaceIndex.open(folder, EmbedderSearchModel(FakeEmbedder()))
    index.sync()
    index.search("open a url", k=1)
    assert index.store.match_counts  # remembered for this generation
    (folder / "a.py").write_text("def fetch(url):\n    return requests.get(url)\n\n\n"
                                 "def get_url(url):\n    return requests.get(url)\n")
    index.update_files([folder / "a.py"])
    assert index.store.match_counts == {}  # the lexicon changed: every count dropped
    assert {r.name for r in index.search("requests get", k=5)} == {"fetch", "get_url"}
    index.close()



def test_bm25_candidate_counts_are_compared_on_the_ranking_eval_uses(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``bm25_candidates``: with uninformative vectors and queries whose words are in their
    function only, BM25 over every function finds each one; over the one nearest (random)
    function it rarely can; the shipped count is left as it was."""
    import numpy as np

    from pathfusion.model_export import bm25_candidates
    from pathfusion.model_export.evaluate import SearchExample
    from pathfusion.server import lexical

    monkeypatch.setattr(bm25_candidates, "SEARCH_GROUP", 20)
    words = ["".join("bcdfghjklmnpqrstvwxz"[(7 * i + 3 * j) % 20] for j in range(6)) for i in range(40)]
    pairs = [SearchExample(f"compute the {word} value", f"def run(x):\n    return {word}(x)\n", [], "run", "run")
             for word in words]
    rng = np.random.default_rng(0)
    codes, queries = 0.01 * rng.standard_normal((40, 8)), 0.01 * rng.standard_normal((40, 8))  # tiny, random
    shipped = lexical.BM25_CANDIDATES
    result = bm25_candidates.candidate_grid(pairs, codes, queries, [0, 1, 20])
    assert set(result) == {"all", "1", "20"} and result["20"] == result["all"]
    assert result["all"] > 0.9 > result["1"]
    assert shipped == lexical.BM25_CANDIDATES
