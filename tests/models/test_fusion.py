"""Fusions, their training loop, metrics and the pieces of the comparison (docs/design.md §4)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pathfusion.model_export.anonymise import anonymise
from pathfusion.model_export.compact_onnx import compact
from pathfusion.model_export.embed_corpus import (
    CHUNK,
    GROUP,
    Unit,
    grow_selection,
    load_field,
    plan,
    read_selection,
    select,
    selection_path,
    write_selection,
)
from pathfusion.model_export.fusion import VARIANTS, FusionConfig, FusionExport, FusionModel
from pathfusion.model_export.metrics import mrr
from pathfusion.model_export.train_fusion import (
    NamingData,
    TrainConfig,
    naming_scores,
    train_naming,
)
from pathfusion.server.parsing import Document, parse_bytes

# -- anonymisation ---------------------------------------------------------------------------

SAMPLE = '''@cache
def load_config(path, *args, mode="r", **options) -> dict:
    data = {}
    for key, value in read(path, mode=mode):
        data[key] = value
    with open(path) as handle:
        lines = [line for line in handle]
    try:
        pass
    except ValueError as error:
        raise
    if (count := len(lines)):
        self.path = path
    return load_config(data.items, options)
'''


def test_anonymise_renames_the_function_and_every_local_name() -> None:
    out = anonymise(SAMPLE)
    assert "def func(var1, *var2, var3=\"r\", **var4) -> dict:" in out
    assert "return func(var5.items, var4)" in out          # recursive call and locals renamed
    for name in ("load_config", "path", "data", "key", "value", "handle", "lines", "line", "error", "count"):
        assert f" {name} " not in out.replace("(", " ").replace(")", " ").replace(",", " ")
    assert "mode=var3" in out                              # keyword names belong to the callee
    assert "self.path" in out                              # attributes are kept
    for kept in ("read(", "open(", "len(", "ValueError", "@cache", "dict"):
        assert kept in out                                 # builtins, globals, decorators kept
    assert out.count("\n") == SAMPLE.count("\n")
    assert not parse_bytes(out.encode()).root_node.has_error


def test_anonymise_numbers_names_in_order_of_first_binding_and_is_stable() -> None:
    code = "def f(b, a):\n    c = a + b\n    return c\n"
    assert anonymise(code) == "def func(var1, var2):\n    var3 = var2 + var1\n    return var3\n"
    assert anonymise("x = 1\n") == "x = 1\n"               # no function: unchanged


def test_anonymise_keeps_the_function_extractable() -> None:
    out = anonymise(SAMPLE)
    functions = Document(out).functions()
    assert [f.name for f in functions] == ["func"]


# -- fusion modules --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gives_naming_logits_and_unit_search_vectors(variant: str) -> None:
    torch.manual_seed(0)
    model = FusionModel(FusionConfig(variant, targets=50, width=32, search_dim=16, heads=4)).eval()
    llm, code = torch.randn(5, 384), torch.randn(5, 384)
    assert model.naming_logits(llm, code).shape == (5, 50)
    vectors = model.search_vector(llm, code)
    assert vectors.shape == (5, 16)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(5), atol=1e-5)
    top_ids, top_probs, search = FusionExport(model)(llm, code)
    assert top_ids.shape == top_probs.shape == (5, 10)
    assert torch.allclose(search, vectors)
    assert torch.all(top_probs[:, :-1] >= top_probs[:, 1:])


def test_single_source_variants_ignore_the_other_source() -> None:
    torch.manual_seed(0)
    llm, code = torch.randn(3, 384), torch.randn(3, 384)
    only_llm = FusionModel(FusionConfig("llm", targets=20, width=16, search_dim=8)).eval()
    assert torch.equal(only_llm.search_vector(llm, code), only_llm.search_vector(llm, torch.randn(3, 384)))
    only_code = FusionModel(FusionConfig("code2vec", targets=20, width=16, search_dim=8)).eval()
    assert torch.equal(only_code.search_vector(llm, code), only_code.search_vector(torch.randn(3, 384), code))
    fused = FusionModel(FusionConfig("attention", targets=20, width=16, search_dim=8)).eval()
    assert not torch.allclose(fused.search_vector(llm, code), fused.search_vector(llm, torch.randn(3, 384)))


def test_weighted_fusion_weights_are_a_distribution() -> None:
    model = FusionModel(FusionConfig("weighted", targets=10, width=8, search_dim=4))
    weights = model.naming_fusion.weights().detach()
    assert weights.shape == (2,) and torch.all(weights > 0)
    assert float(weights.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown fusion variant"):
        FusionConfig("sum")


def test_naming_training_learns_a_separable_task_and_keeps_the_best_epoch(tmp_path: Path) -> None:
    """Labels determined by the sign pattern of two LLM coordinates: a fusion must learn it
    from the llm input (code is noise), and validation F1 must end far above chance."""
    torch.manual_seed(0)
    targets = ["<PAD>", "<UNK>", "get|name", "set|value", "load|file", "save|data"]

    def make(n: int) -> NamingData:
        llm = torch.randn(n, 384) * 0.1
        llm[:, :2] *= 30
        cls = (llm[:, 0] > 0).long() * 2 + (llm[:, 1] > 0).long() + 2
        return NamingData(llm, torch.randn(n, 384) * 0.1, [targets[int(c)] for c in cls], cls)

    model = FusionModel(FusionConfig("concat", targets=len(targets), width=32, search_dim=8, dropout=0.0))
    cfg = TrainConfig(batch_size=64, naming_epochs=15, patience=3, lr=3e-3)
    valid = make(300)
    best = train_naming(model, make(1200), valid, targets, cfg, tmp_path / "log.jsonl")
    assert best["f1"] > 0.8                                # chance is 0.25
    assert (tmp_path / "log.jsonl").read_text().count("\n") >= best["epoch"]
    model.eval()
    with torch.no_grad():                                  # the best epoch's state is kept
        again = naming_scores(model.naming_logits(valid.llm, valid.code), valid.labels, targets)
    assert again["f1"] == pytest.approx(best["f1"])


# -- metrics ---------------------------------------------------------------------------------


def test_mrr_ranks_each_query_within_its_group_only() -> None:
    codes = np.eye(4)
    queries = np.array([[1.0, 0, 0, 0],      # rank 1
                            [1.0, 0.5, 0, 0],    # correct (index 1) scores 0.5 < 1.0 → rank 2
                            [0, 0, 1.0, 0],      # rank 1
                            [0, 0, 0.9, 0.1]])   # rank 2
    assert mrr(queries, codes, group=2) == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    # as one group, the 4th query's distractors include index 2 (0.9) → still rank 2
    assert mrr(queries, codes, group=4) == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    # an incomplete trailing group is not scored (CodeSearchNet uses whole groups)
    assert mrr(queries[:3], codes[:3], group=2) == pytest.approx((1 + 0.5) / 2)


def test_mrr_counts_ties_against_the_query() -> None:
    codes = np.array([[1.0, 0], [1.0, 0]])
    assert mrr(np.array([[1.0, 0], [1.0, 0]]), codes, group=2) == pytest.approx(0.5)


def test_naming_scores_use_the_first_legal_candidate() -> None:
    targets = ["<PAD>", "<UNK>", "get|name", "name"]
    logits = torch.tensor([[0.0, 9.0, 5.0, 1.0]])  # <UNK> first → skipped, get|name predicted
    result = naming_scores(logits, ["get|name"], targets)
    assert result["exact_match"] == 1.0 and result["f1"] == 1.0


# -- compact storage -------------------------------------------------------------------------


def test_compact_stores_large_matrices_in_int8_and_stays_close(tmp_path: Path) -> None:
    import onnxruntime as ort

    from pathfusion.model_export.export_code2vec import legacy_onnx_export

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(384, 512), torch.nn.Tanh(), torch.nn.Linear(512, 300)).eval()
    full, small = tmp_path / "full.onnx", tmp_path / "small.onnx"
    legacy_onnx_export(module, (torch.randn(2, 384),), full, ["x"], ["y"], {"x": {0: "b"}, "y": {0: "b"}})
    info = compact(full, small)
    assert info["matrices"] == 2
    assert info["bytes_after"] < 0.35 * info["bytes_before"]
    x = np.random.default_rng(0).standard_normal((7, 384)).astype(np.float32)
    (a,) = ort.InferenceSession(str(full)).run(None, {"x": x})
    (b,) = ort.InferenceSession(str(small)).run(None, {"x": x})
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    assert np.abs(a - expected).max() < 1e-4
    assert 0 < np.abs(b - a).max() < 0.05 * np.abs(a).max()


# -- the embedding cache ---------------------------------------------------------------------


def _records(n: int) -> list[dict[str, object]]:
    return [{"id": str(i), "project": "p", "qualname": f"f{i}", "name": f"f{i}", "label": f"f|{i}",
             "naming": i % 2 == 0, "search": True, "contexts": [], "masked_code": "def METHOD_NAME(): pass",
             "code_without_docstring": f"def f{i}(x):\n    return x\n", "docstring_summary": f"query {i}"}
            for i in range(n)]


def test_test_search_selection_is_whole_groups_of_a_seeded_shuffle() -> None:
    records = _records(2 * GROUP + 300)
    rows = select(records, "test", "search", 10 * GROUP)
    assert len(rows) == 2 * GROUP                      # whole groups only
    assert [r["id"] for r in rows] == [r["id"] for r in select(records, "test", "search", 10 * GROUP)]
    assert [r["id"] for r in rows[:50]] != [str(i) for i in range(50)]  # shuffled
    assert rows[0]["anon"].startswith("def func(var1)")
    naming = select(records, "train", "naming", 100)
    assert len(naming) == 100 and all(int(r["id"]) % 2 == 0 for r in naming)
    assert naming[0]["code"] == "def METHOD_NAME(): pass"  # naming sees the masked code


def test_plan_puts_evaluation_first_and_interleaves_train_tasks() -> None:
    lengths = {("test", "naming"): 10, ("test", "search"): GROUP, ("valid", "naming"): 10,
               ("valid", "search"): 10, ("train", "naming"): 3 * CHUNK, ("train", "search"): CHUNK}
    units = plan({}, lengths)
    first_train = next(i for i, u in enumerate(units) if u.split == "train")
    assert all(u.split != "train" for u in units[:first_train])
    assert {u.field for u in units if (u.split, u.task) == ("test", "search")} == {"code", "query", "anon"}
    train = [(u.task, u.field, u.chunk) for u in units[first_train:]]
    assert train[:3] == [("naming", "code", 0), ("search", "code", 0), ("search", "query", 0)]
    assert train[3:] == [("naming", "code", 1), ("naming", "code", 2)]
    everywhere = plan({}, lengths, anonymised=("train", "valid", "test"))
    assert {u.field for u in everywhere if (u.split, u.task) == ("train", "search")} == {"code", "query", "anon"}
    assert {u.field for u in everywhere if u.task == "naming"} == {"code"}


def test_search_rows_of_the_anonymised_splits_carry_their_anonymised_code() -> None:
    records = _records(40)
    assert "anon" not in select(records, "train", "search", 10)[0]
    rows = select(records, "train", "search", 10, anonymised=("train",))
    assert all(r["anon"] == anonymise(r["code"]) and r["anon"] != r["code"] for r in rows)


def test_load_field_stops_at_the_first_missing_chunk(tmp_path: Path) -> None:
    for chunk in (0, 1, 3):
        path = Unit("train", "naming", "code", chunk).path(tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((2, 3), chunk, dtype=np.float32))
    data = load_field(tmp_path, "train", "naming", "code")
    assert data.shape == (4, 3) and data[:, 0].tolist() == [0, 0, 1, 1]
    assert load_field(tmp_path, "valid", "naming", "code").shape[0] == 0


def test_growing_a_selection_keeps_its_embedded_chunks(tmp_path: Path) -> None:
    records = _records(3 * CHUNK)
    short = select(records, "valid", "search", CHUNK + CHUNK // 2, anonymised=("valid",))
    write_selection(selection_path(tmp_path, "valid", "search"), short)
    fields = ("code", "query", "anon")
    for field in fields:
        for chunk in (0, 1):  # chunk 1 is partial: it holds half a chunk of rows
            path = Unit("valid", "search", field, chunk).path(tmp_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.zeros((2, 3), dtype=np.float32))
    longer = select(records, "valid", "search", 3 * CHUNK, anonymised=("valid",))
    assert [r["id"] for r in longer[:len(short)]] == [r["id"] for r in short]  # the same shuffle, more of it
    # The same pairs embedded from other texts (e.g. before methods had their class header): refused.
    retexted = [dict(r, code="class Other:\n    " + r["code"]) for r in longer]
    assert not grow_selection(tmp_path, "valid", "search", retexted, ("valid",))
    assert grow_selection(tmp_path, "valid", "search", longer, ("valid",))
    assert [r["id"] for r in read_selection(selection_path(tmp_path, "valid", "search"))] == [r["id"] for r in longer]
    for field in fields:
        assert Unit("valid", "search", field, 0).path(tmp_path).exists()
        assert not Unit("valid", "search", field, 1).path(tmp_path).exists()  # its rows changed
    # Not a prefix (another shuffle): nothing is touched.
    other = select(records, "train", "search", 3 * CHUNK, anonymised=("valid",))
    assert not grow_selection(tmp_path, "valid", "search", other, ("valid",))
    assert not grow_selection(tmp_path, "valid", "search", longer[:CHUNK], ("valid",))
    assert Unit("valid", "search", "code", 0).path(tmp_path).exists()


def test_random_module_is_not_touched_by_selection() -> None:
    state = random.getstate()
    select(_records(20), "train", "search", 5)
    assert random.getstate() == state


def test_heldout_rows_are_the_pairs_eval_search_takes_from_projects(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import random as _random

    from pathfusion.model_export import embed_corpus
    from pathfusion.model_export.evaluate import iter_project_pairs
    from pathfusion.model_export.metrics import SEARCH_SEED

    project = tmp_path / "projects"
    (project / "one").mkdir(parents=True)
    (project / "one" / "mod.py").write_text("".join(
        f'def task_{i}(value):\n    """Compute the value number {i} of the series."""\n    return value + {i}\n\n\n'
        for i in range(7)) + 'class Series:\n    def step(self, value):\n'
        '        """Compute the value number 7 of the series."""\n        return value + 7\n')
    monkeypatch.setattr(embed_corpus, "GROUP", 3)
    rows = embed_corpus.heldout_rows(project, 100)
    pairs = iter_project_pairs(project)
    order = list(range(len(pairs)))
    _random.Random(SEARCH_SEED).shuffle(order)
    assert len(pairs) == 8 and len(rows) == 6  # whole groups only
    assert any(r["code"].startswith("class Series:\n    def step(self, value):") for r in rows)  # the header
    assert [r["code"] for r in rows] == [pairs[i].code for i in order[:6]]
    assert [r["anon"] for r in rows] == [p.code for p in (iter_project_pairs(project, anonymised=True)[i]
                                                          for i in order[:6])]
    assert all('"""' not in r["code"] and r["query"].startswith("Compute the value") for r in rows)
