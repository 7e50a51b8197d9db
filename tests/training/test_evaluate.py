"""Train → export → evaluate end to end: the exported model scores like the torch one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pathfusion.model_export import train_code2vec
from pathfusion.model_export.code2vec import Code2VecConfig
from pathfusion.model_export.evaluate import main as eval_main
from pathfusion.model_export.export_code2vec import export
from tests.helpers.corpus import TEMPLATES, write_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("e2e")
    write_corpus(root / "corpus", 40)
    config = Code2VecConfig(token_vocab=500, path_vocab=2000, target_vocab=50, min_count=1, batch_size=16,
                            epochs=3, lr=0.01, dropout=0.0, threads=1)
    final = train_code2vec.train(root / "corpus", root / "run", config)
    export(root / "run", root / "models", top_k=5)
    return root, root / "models", final


def test_eval_on_corpus_split_matches_training(trained, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    root, models, final = trained
    assert eval_main(["naming", "--corpus", str(root / "corpus"), "--split", "test", "--models", str(models), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("f1", "precision", "recall", "code2seq_f1", "exact_match", "top5_accuracy"):
        assert result[key] == pytest.approx(final["test"][key], abs=1e-3), key
    assert result["examples"] == final["test"]["examples"] == 24
    assert result["model_ms_per_function"] > 0
    # --predictions: each function's name and the model's first five, which give the exact match scored.
    out = root / "predictions" / "test.jsonl"
    assert eval_main(["naming", "--corpus", str(root / "corpus"), "--split", "test", "--models", str(models),
                      "--json", "--predictions", str(out)]) == 0
    again = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert "predictions" not in again and len(rows) == again["examples"] == 24
    assert all(1 <= len(row["predicted"]) <= 5 and row["gold"] for row in rows)
    assert sum(row["predicted"][0] == row["gold"] for row in rows) / len(rows) == pytest.approx(
        again["exact_match"], abs=1e-4)
    assert sum(row["gold"] in row["predicted"] for row in rows) / len(rows) == pytest.approx(
        again["top5_accuracy"], abs=1e-4)


def test_eval_on_project_folders(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    _, models, _ = trained
    for project in ("alpha", "beta"):
        folder = tmp_path / "projects" / project / project
        folder.mkdir(parents=True)
        (folder / "core.py").write_text("\n\n".join(t.format(k=f"{project}{i}") for i, t in enumerate(TEMPLATES.values())))
        (folder / "test_core.py").write_text(TEMPLATES["close"].format(k="t"))  # skipped: a test file
    assert eval_main(["naming", "--projects", str(tmp_path / "projects"), "--models", str(models), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == 8
    assert result["f1"] >= 0.8


def test_eval_errors_are_clear(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    _, models, _ = trained
    assert eval_main(["naming", "--projects", str(tmp_path / "missing"), "--models", str(models)]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert eval_main(["naming", "--projects", str(tmp_path), "--models", str(tmp_path / "nomodels")]) == 1
    assert "error" in capsys.readouterr().err
    # a models folder without the fusion export cannot rank queries: say what to export
    assert eval_main(["search", "--projects", str(tmp_path), "--models", str(models)]) == 1
    assert "export" in capsys.readouterr().err
    # a corpus split is searched too (tests/training/test_eval_search.py); here the models fail first
    assert eval_main(["search", "--corpus", str(tmp_path), "--models", str(models)]) == 1
    assert "export" in capsys.readouterr().err
    # Each task's per-item listing belongs to it: the other one's flag is refused before any work.
    assert eval_main(["naming", "--projects", str(tmp_path), "--ranks", str(tmp_path / "r.jsonl")]) == 1
    assert "--predictions" in capsys.readouterr().err
    assert eval_main(["search", "--projects", str(tmp_path), "--predictions", str(tmp_path / "p.jsonl")]) == 1
    assert "--ranks" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists() and not (tmp_path / "p.jsonl").exists()
