"""``pathfusion eval search``: CodeSearchNet MRR of the shipped models, dense and hybrid,
with the hybrid score computed exactly as the server's index ranks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathfusion.model_export.evaluate import (
    SearchExample,
    SearchSpace,
    evaluate_search,
    iter_project_pairs,
    lexical_matrix,
)
from pathfusion.model_export.evaluate import main as eval_main
from pathfusion.server.embedder import OnnxEmbedder
from pathfusion.server.lexical import query_features
from pathfusion.server.name_lookup import _NameLookup

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"

FUNCTIONS = {
    "load_config": ("Read the settings file and return a dictionary of options.",
                    "    with open(path) as fh:\n        return json.load(fh)\n"),
    "send_email": ("Deliver a message to the given address over SMTP.",
                   "    server = smtplib.SMTP(host)\n    pathfusion.server.sendmail(sender, [address], body)\n"),
    "resize_image": ("Scale a picture to the requested width and height.",
                     "    return image.resize((width, height))\n"),
    "parse_date": ("Turn an ISO formatted string into a date object.",
                   "    return datetime.date.fromisoformat(text)\n"),
    "sum_column": ("Add up every value of one column of a table.",
                   "    return sum(row[index] for row in rows)\n"),
    "compress_file": ("Write a gzip compressed copy of a file next to it.",
                      "    with open(path, 'rb') as src, gzip.open(path + '.gz', 'wb') as dst:\n"
                      "        dst.write(src.read())\n"),
}


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("projects")
    for project, names in (("alpha", list(FUNCTIONS)[:3]), ("beta", list(FUNCTIONS)[3:])):
        folder = root / project / project
        folder.mkdir(parents=True)
        source = "".join(f'def {name}(path, host, sender, address, body, image, width, height, text, rows, index):\n'
                         f'    """{FUNCTIONS[name][0]}"""\n{FUNCTIONS[name][1]}\n\n' for name in names)
        (folder / "core.py").write_text(source)
    return root


def test_pairs_strip_docstrings_and_anonymise_names(projects: Path) -> None:
    plain = iter_project_pairs(projects)
    assert sorted(p.name for p in plain) == sorted(FUNCTIONS)
    assert all('"""' not in p.code and p.query in {q for q, _ in FUNCTIONS.values()} for p in plain)
    anonymous = iter_project_pairs(projects, anonymised=True)
    assert {p.name for p in anonymous} == {"func"} and all("def func(" in p.code for p in anonymous)


def test_a_method_is_scored_as_the_server_embeds_it(tmp_path: Path) -> None:
    """Under its class's header (the server's search text); anonymised without it, since the
    class name is an identifier too."""
    folder = tmp_path / "gamma" / "gamma"
    folder.mkdir(parents=True)
    (folder / "queue.py").write_text('class Queue:\n    def get_nowait(self):\n'
                                     '        """Remove and return an item without blocking."""\n'
                                     '        return self.get(block=False)\n')
    (plain,) = iter_project_pairs(tmp_path)
    assert plain.code == "class Queue:\n    def get_nowait(self):\n        return self.get(block=False)"
    assert plain.qualname == "Queue.get_nowait" and plain.contexts and "Queue" not in " ".join(plain.contexts)
    (anonymous,) = iter_project_pairs(tmp_path, anonymised=True)
    assert anonymous.code == "def func(self):\n        return self.get(block=False)"


def test_lexical_matrix_is_the_index_ranking(projects: Path) -> None:
    """The hybrid bonus of each (query, function) equals what the index's name lookup gives."""
    pairs = iter_project_pairs(projects)
    queries = ["load_config", "LOAD_CONFIG", "config", "send the email", "resize image width", "nothing here"]
    matrix = lexical_matrix(queries, pairs)
    lookup = _NameLookup.from_rows((i, p.name, p.qualname) for i, p in enumerate(pairs))
    for row, query in enumerate(queries):
        exact_form, tokens = query_features(query)
        labels, bonus = lookup.bonuses(query, exact_form, tokens)
        expected = np.zeros(len(pairs))
        expected[labels] = bonus
        np.testing.assert_allclose(matrix[row], expected)
    assert matrix[0].argmax() == [p.name for p in pairs].index("load_config") and matrix[0].max() == 2.0
    assert not matrix[-1].any()


def test_hybrid_adds_the_names_to_dense_ranking(projects: Path) -> None:
    embedder = OnnxEmbedder.load(REPO_MODELS, device="cpu")
    space = SearchSpace("embedder", None, embedder)
    pairs = iter_project_pairs(projects)
    dense = evaluate_search(pairs, space, ranking="dense")
    assert dense["pairs"] == 6 and dense["groups"] == 1 and dense["group"] == 6
    # Queries that name the function: the lexical part puts the right one first.
    named = [SearchExample(p.name.replace("_", " "), p.code, p.contexts, p.name, p.qualname) for p in pairs]
    hybrid = evaluate_search(named, space, ranking="hybrid")
    assert hybrid["mrr"] == 1.0 >= evaluate_search(named, space, ranking="dense")["mrr"]
    with pytest.raises(ValueError, match="ranking"):
        evaluate_search(pairs, space, ranking="bm25")


def test_cli_prints_mrr_pairs_groups(projects: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for ranking in ("dense", "hybrid"):
        assert eval_main(["search", "--projects", str(projects), "--variant", "embedder", "--ranking", ranking,
                          "--json", "--models", str(REPO_MODELS)]) == 0
        result = json.loads(capsys.readouterr().out)
        assert {"mrr", "pairs", "groups"} <= set(result) and result["ranking"] == ranking
        assert 0 < result["mrr"] <= 1 and result["pairs"] == 6
    assert eval_main(["search", "--projects", str(projects), "--variant", "embedder", "--ranking", "dense",
                      "hybrid", "--json", "--models", str(REPO_MODELS)]) == 0
    both = json.loads(capsys.readouterr().out)
    assert set(both["by_ranking"]) == {"dense", "hybrid"} and both["mrr"] == both["by_ranking"]["dense"]
    assert eval_main(["search", "--projects", str(projects), "--anonymise", "--json",
                      "--models", str(REPO_MODELS)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["anonymised"] is True and result["variant"] == "default"
    assert eval_main(["naming", "--projects", str(projects), "--variant", "embedder",
                      "--models", str(REPO_MODELS)]) == 1
    assert "no variant 'embedder'" in capsys.readouterr().err


def test_cli_lists_each_pairs_rank(projects: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--ranks FILE``: one line per scored pair, whose reciprocal ranks average to the MRR
    printed; the function ranked first is the pair's own exactly when its rank is 1, and the
    names are the functions' own even when the code was anonymised."""
    import shutil

    folder = tmp_path / "projects"
    shutil.copytree(projects, folder)
    twins = folder / "delta" / "delta"
    twins.mkdir(parents=True)
    # Anonymised, the two are the same code: a tie, which counts against the model.
    twins.joinpath("twins.py").write_text(
        'def read_settings(path):\n    """Load the options stored in a file."""\n    return open(path).read()\n\n\n'
        'def fetch_page(path):\n    """Download a web page and return its text."""\n    return open(path).read()\n')
    out = tmp_path / "ranks" / "anonymised.jsonl"
    assert eval_main(["search", "--projects", str(folder), "--ranking", "dense", "hybrid", "--anonymise", "--json",
                      "--ranks", str(out), "--models", str(REPO_MODELS)]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {row["qualname"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert "ranks" not in result and len(rows) == result["pairs"] == 8
    assert set(rows) == {*FUNCTIONS, "read_settings", "fetch_page"}
    assert rows["read_settings"]["rank"] >= 2 and rows["read_settings"]["first"] != "read_settings"
    assert rows["fetch_page"]["rank"] >= 2 and rows["fetch_page"]["first"] != "fetch_page"
    assert all(1 <= row["rank"] <= 8 and (row["first"] == name) == (row["rank"] == 1) for name, row in rows.items())
    assert np.mean([1 / row["rank"] for row in rows.values()]) == pytest.approx(result["mrr"], abs=5e-5)
    assert not list(out.parent.glob("*.partial"))


def test_corpus_split_is_scored_like_the_same_functions_as_projects(projects: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``eval search --corpus DIR --split S`` reads the split's docstring/code pairs (as the
    corpus builder stored them) and scores them exactly as ``--projects`` scores the same
    functions — plain and anonymised."""
    import gzip
    from dataclasses import asdict

    from pathfusion.model_export.corpus import extract_file
    from pathfusion.model_export.evaluate import iter_split_pairs

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with gzip.open(corpus / "test.jsonl.gz", "wt") as fh:
        for project in sorted(p for p in projects.iterdir()):
            core = project / project.name / "core.py"
            for record in extract_file(project.name, f"{project.name}/core.py", core.read_bytes()):
                fh.write(json.dumps(asdict(record)) + "\n")
    for anonymised in (False, True):
        from_split = sorted((p.query, p.code, p.name) for p in iter_split_pairs(corpus, "test", anonymised))
        from_projects = sorted((p.query, p.code, p.name) for p in iter_project_pairs(projects, anonymised))
        assert from_split == from_projects and len(from_split) == 6
        results = []
        for source in (["--corpus", str(corpus), "--split", "test"], ["--projects", str(projects)]):
            flags = ["--anonymise"] if anonymised else []
            assert eval_main(["search", *source, *flags, "--variant", "embedder", "--ranking", "hybrid", "dense",
                              "--json", "--models", str(REPO_MODELS)]) == 0
            results.append(json.loads(capsys.readouterr().out))
        assert results[0]["by_ranking"] == results[1]["by_ranking"] and results[0]["pairs"] == 6
        assert results[0]["source"].endswith(":test")
    assert eval_main(["search", "--corpus", str(tmp_path / "none"), "--split", "test", "--json",
                      "--models", str(REPO_MODELS)]) == 1
    assert "not found; build the corpus first" in capsys.readouterr().err


def test_search_code_length_cuts_the_code_only_and_restores_the_tokenizer(projects: Path) -> None:
    """The measurement behind "How much of a function search reads": codes cut at N
    wordpieces (exactly as a tokenizer truncating there would read them), queries whole."""
    from pathfusion.model_export.search_code_length import CutSearchSpace

    embedder = OnnxEmbedder.load(REPO_MODELS, device="cpu")
    pairs = iter_project_pairs(projects)
    served = embedder.tokenizer.truncation
    cut = CutSearchSpace("embedder", None, embedder, 8)
    codes = cut.codes(pairs)
    assert embedder.tokenizer.truncation == served                  # the shared tokenizer as it was
    whole = SearchSpace("embedder", None, embedder).codes(pairs)
    short = OnnxEmbedder.load(REPO_MODELS, device="cpu")
    short.tokenizer.enable_truncation(8)
    np.testing.assert_array_equal(codes, SearchSpace("embedder", None, short).codes(pairs))
    assert np.all(np.sum(codes * whole, axis=1) < 0.999)            # every function here is longer than 8
    queries = [p.query for p in pairs]
    np.testing.assert_array_equal(cut.queries(queries), SearchSpace("embedder", None, embedder).queries(queries))
    assert CutSearchSpace("embedder", None, embedder, 256).codes(pairs).tolist() == whole.tolist()
