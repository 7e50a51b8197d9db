"""The fusion pipeline end to end on a small synthetic embedding cache: train (query encoder
selection + variants) → export (fp32 parity, compact graphs, manifest) → the torch-free
runtime (server/fusion.py) → ``pathfusion eval`` and hover-style suggestions."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pathfusion.model_export import evaluate, export_fusion, train_fusion
from pathfusion.model_export.embed_corpus import CHUNK, Unit, selection_path
from pathfusion.server.code2vec import Code2VecModel, suggest_for_document
from pathfusion.server.embedder import OnnxEmbedder
from pathfusion.server.fusion import FusionPredictor, FusionRuntime
from pathfusion.server.models import ModelError
from pathfusion.server.parsing import Document

WORDS = ["read", "write", "parse", "config", "file", "url", "json", "cache", "user", "token", "list", "sort"]
SIZES = {("train", "naming"): 800, ("valid", "naming"): 300, ("test", "naming"): 300,
         ("train", "search"): 1200, ("valid", "search"): 1000, ("test", "search"): 1000}


def _write_cache(root: Path, targets: list[str]) -> None:
    """Selections and vectors where the query words determine the code's LLM vector and the
    label determines the naming LLM vector, so that training has something to learn."""
    rng = np.random.default_rng(0)
    word_vectors = rng.standard_normal((len(WORDS), 384)).astype(np.float32)
    label_vectors = rng.standard_normal((8, 384)).astype(np.float32)
    for (split, task), n in SIZES.items():
        rows, fields = [], {"code": [], "query": [], "anon": []}
        for i in range(n):
            if task == "naming":
                k = int(rng.integers(0, 8))
                rows.append({"id": f"{split}{i}", "label": targets[2 + k], "contexts": [], "code": "def METHOD_NAME(): pass"})
                fields["code"].append(label_vectors[k] + 0.3 * rng.standard_normal(384))
            else:
                chosen = rng.choice(len(WORDS), size=3, replace=False)
                rows.append({"id": f"{split}{i}", "label": "x", "contexts": [], "anon_contexts": [],
                             "query": " ".join(WORDS[j] for j in chosen), "code": "def f(): pass"})
                vector = word_vectors[chosen].sum(axis=0) + 0.3 * rng.standard_normal(384)
                fields["code"].append(vector)
                fields["query"].append(word_vectors[chosen].sum(axis=0) + 0.3 * rng.standard_normal(384))
                fields["anon"].append(vector + 0.5 * rng.standard_normal(384))
        path = selection_path(root, split, task)
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in rows)
        np.save(root / f"{split}-{task}-c2v.npy", np.tanh(rng.standard_normal((n, 384))).astype(np.float32))
        if (split, task) == ("test", "search"):
            np.save(root / f"{split}-{task}-c2v-anon.npy", np.tanh(rng.standard_normal((n, 384))).astype(np.float32))
        for field, values in fields.items():
            if not values:
                continue
            data = np.asarray(values, dtype=np.float32)
            data /= np.linalg.norm(data, axis=1, keepdims=True)
            for chunk in range(0, n, CHUNK):
                target = Unit(split, task, field, chunk // CHUNK).path(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, data[chunk:chunk + CHUNK])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, search_models: Path) -> tuple[Path, Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("fusion")
    cache, runs, models = root / "embeddings", root / "runs", root / "models"
    cache.mkdir()
    targets = json.loads((search_models / "code2vec" / "targets.json").read_text())
    _write_cache(cache, targets)
    torch.set_num_threads(1)
    assert train_fusion.main(["--embeddings", str(cache), "--models", str(search_models), "--runs", str(runs),
                              "--results", str(root / "fusion.json"), "--query-grid", "nbow-mean,llm-linear",
                              "--naming-epochs", "3", "--search-epochs", "3",
                              "--variants", "code2vec", "llm", "attention"]) == 0
    shutil.copytree(search_models, models)
    manifest = export_fusion.export(runs, models, ["code2vec", "llm", "attention"])
    summary = json.loads((root / "fusion.json").read_text())
    return runs, models, {"manifest": manifest, "summary": summary}


def test_training_selects_a_query_encoder_on_validation_and_scores_every_variant(exported) -> None:  # type: ignore[no-untyped-def]
    _, _, info = exported
    summary = info["summary"]
    selection = summary["query_selection"]
    assert set(selection["runs"]) == {"nbow-mean", "llm-linear"}
    assert selection["best"] == max(selection["runs"], key=lambda k: selection["runs"][k]["mrr"])
    for variant in ("code2vec", "llm", "attention"):
        test = summary["variants"][variant]["test"]
        assert 0.0 <= test["naming"]["f1"] <= 1.0 and 0.0 < test["mrr"] <= 1.0
        assert "mrr_anonymised" in test
    # the LLM vectors carry the labels and the query words; code2vec's here are noise
    llm, code = summary["variants"]["llm"]["test"], summary["variants"]["code2vec"]["test"]
    assert llm["naming"]["f1"] > code["naming"]["f1"] + 0.3
    assert llm["mrr"] > 5 * code["mrr"]
    assert summary["llm_zero_shot"]["mrr"] > 0.1


def test_export_writes_compact_graphs_with_parity_and_a_default(exported) -> None:  # type: ignore[no-untyped-def]
    _, models, info = exported
    entry = info["manifest"]["models"]["fusion"]
    assert entry["default"] in ("code2vec", "llm", "attention")
    for item in entry["variants"].values():
        assert max(item["parity_fp32"].values()) <= 1e-4
        assert (models / item["onnx"]).is_file() and (models / item["query_onnx"]).is_file()
        assert item["metrics"]["mrr"] > 0
    assert "code2vec" in info["manifest"]["models"] and "embedder" in info["manifest"]["models"]
    # code2vec's names come from its own head: its fusion graph ships the search part only.
    searching = entry["variants"]["code2vec"]
    assert searching["outputs"] == ["search_vector"]
    runtime = FusionRuntime.load(OnnxEmbedder.load(models), Code2VecModel.load(models), models, "code2vec", "cpu")
    assert runtime.search_vectors(np.zeros((1, 384), np.float32), np.zeros((1, 384), np.float32)).shape == (1, 256)
    with pytest.raises(ModelError, match="search only"):
        runtime.naming(np.zeros((1, 384), np.float32), np.zeros((1, 384), np.float32), 3)


def test_export_keep_default_ships_the_best_variant_and_code2vec(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs, models, info = exported
    small = tmp_path / "models"
    shutil.copytree(models, small)
    manifest = export_fusion.export(runs, small, ["code2vec", "llm", "attention"], keep="default")
    entry = manifest["models"]["fusion"]
    best = info["manifest"]["models"]["fusion"]["default"]
    assert entry["default"] == best and set(entry["variants"]) == {best, "code2vec"}
    shipped = {p.name for p in (small / "fusion").glob("*.onnx")}
    assert shipped == {f"{v}.onnx" for v in entry["variants"]} | {f"{v}.query.onnx" for v in entry["variants"]}
    assert set(entry["files"]) == {f"fusion/{name}" for name in shipped}


def test_runtime_matches_torch_and_serves_suggestions_and_queries(exported) -> None:  # type: ignore[no-untyped-def]
    runs, models, _ = exported
    embedder = OnnxEmbedder.load(models)
    code2vec = Code2VecModel.load(models)
    model, query, _ = export_fusion.load_variant(runs / "attention")
    runtime = FusionRuntime.load(embedder, code2vec, models, "attention", "cpu")
    rng = np.random.default_rng(1)
    llm = rng.standard_normal((4, 384)).astype(np.float32)
    code = np.tanh(rng.standard_normal((4, 384))).astype(np.float32)
    with torch.no_grad():
        expected = model.search_vector(torch.from_numpy(llm), torch.from_numpy(code)).numpy()
    got = runtime.search_vectors(llm, code)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 0.05          # int8 weights; fp32 parity is ≤ 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    texts = ["read the config file", "sort a list"]
    queries = runtime.query_vectors(texts)
    with torch.no_grad():
        expected_queries = query(texts, torch.from_numpy(embedder.embed(texts))).numpy()
    assert queries.shape == (2, runtime.dim)
    assert np.abs(queries - expected_queries).max() < 0.05
    doc = Document("def load(path):\n    with open(path) as f:\n        return f.read()\n")
    (suggestion,) = suggest_for_document(doc, FusionPredictor(runtime), top_k=3)
    assert len(suggestion.suggestions) == 3
    assert all(0 < p <= 1 for _, _, p in suggestion.suggestions)
    vectors = runtime.encode_functions(doc.functions())
    assert vectors.shape == (1, runtime.dim)
    with pytest.raises(ModelError, match="not in the models folder"):
        FusionRuntime.load(embedder, code2vec, models, "weighted", "cpu")


def test_eval_search_and_naming_on_project_folders(exported, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _, models, _ = exported
    project = tmp_path / "projects" / "demo"
    project.mkdir(parents=True)
    (project / "mod.py").write_text(
        'def read_config(path):\n    """Read the configuration file at path."""\n    return open(path).read()\n\n'
        'def sort_users(users):\n    """Sort the users by their name."""\n    return sorted(users, key=lambda u: u.name)\n\n'
        'def fetch_url(url):\n    """Download the page at the given url."""\n    import urllib.request\n'
        '    return urllib.request.urlopen(url).read()\n')
    for anonymise in ([], ["--anonymise"]):
        assert evaluate.main(["search", "--projects", str(tmp_path / "projects"), "--models", str(models),
                              "--variant", "attention", "--device", "cpu", "--json", *anonymise]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["pairs"] == 3 and result["group"] == 3 and result["groups"] == 1
        assert 1 / 3 <= result["mrr"] <= 1.0
        assert result["anonymised"] is bool(anonymise)
    assert evaluate.main(["naming", "--projects", str(tmp_path / "projects"), "--models", str(models),
                          "--variant", "code2vec", "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 3
    # naming variants are the generative head's: a folder without one says what to export
    assert evaluate.main(["naming", "--projects", str(tmp_path / "projects"), "--models", str(models),
                          "--variant", "llm", "--device", "cpu", "--json"]) == 1
    assert "has no naming head" in capsys.readouterr().err


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: OnnxEmbedder) -> None:
        self.inner, self.texts = inner, 0
        self.dim, self.model_id = inner.dim, inner.model_id

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts, batch_size)


def test_predictor_embeds_each_masked_source_once(exported) -> None:  # type: ignore[no-untyped-def]
    _, models, _ = exported
    embedder = CountingEmbedder(OnnxEmbedder.load(models))
    runtime = FusionRuntime.load(embedder, Code2VecModel.load(models), models, "llm", "cpu")  # type: ignore[arg-type]
    predictor = FusionPredictor(runtime)
    doc = Document("def a(x):\n    return x + 1\n\ndef b(y):\n    return y * 2\n")
    first = suggest_for_document(doc, predictor, top_k=3)
    assert embedder.texts == 2
    again = suggest_for_document(doc, predictor, top_k=3)   # a second hover: no new embedding
    assert embedder.texts == 2
    assert [s.suggestions for s in again] == [s.suggestions for s in first]
    doc.replace("def a(x):\n    return x - 1\n\ndef b(y):\n    return y * 2\n")
    suggest_for_document(doc, predictor, top_k=3)            # only the edited function
    assert embedder.texts == 3


def test_prefetched_sources_make_hovers_embedding_free(exported) -> None:  # type: ignore[no-untyped-def]
    from pathfusion.server.lsp import naming_sources

    _, models, _ = exported
    embedder = CountingEmbedder(OnnxEmbedder.load(models))
    predictor = FusionPredictor(FusionRuntime.load(embedder, Code2VecModel.load(models), models, "llm", "cpu"))
    text = "class A:\n    def __init__(self):\n        self.x = 1\n\n    def get(self):\n        return self.x\n"
    sources = naming_sources(text)
    assert sources == ["def METHOD_NAME(self):\n        return self.x"]   # dunders get no suggestions
    predictor.prefetch(sources)
    assert embedder.texts == 1
    suggest_for_document(Document(text), predictor, top_k=3)
    assert embedder.texts == 1
