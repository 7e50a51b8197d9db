"""``python -m pathfusion.model_export.encoder_probe``: a frozen Hugging Face encoder on the search protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathfusion.model_export.encoder_probe import FrozenEncoder, main
from pathfusion.model_export.export_embedder import (
    load_reference,
    packaged_model_dir,
    reference_embeddings,
)

from .test_eval_search import FUNCTIONS, projects  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def stock() -> Path:
    return packaged_model_dir()


def test_batches_sorted_by_length_come_back_in_order(stock: Path) -> None:
    """The probe batches texts by length; each vector must still be its own text's,
    as sentence-transformers embeds it one at a time."""
    texts = [query for query, _ in FUNCTIONS.values()] + ["x", "a much longer text " * 20, "mid length words"] * 12
    vectors = FrozenEncoder(stock).embed(texts)
    model, tokenizer = load_reference(stock)
    for index in (0, 3, 7, 8, len(texts) - 1):
        alone = reference_embeddings(model, tokenizer, [texts[index]], 256)[0]
        assert np.allclose(vectors[index], alone, atol=1e-5), index
    assert vectors.shape == (len(texts), 384)


def test_the_stock_encoder_finds_distinct_functions(projects: Path, stock: Path,  # noqa: F811
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--projects", str(projects), "--folder", str(stock), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pairs"] == len(FUNCTIONS) and result["texts_embedded"] == 2 * len(FUNCTIONS)
    # six unrelated descriptions of six unrelated functions: each ranks its own first
    assert result["by_ranking"]["dense"] == 1.0 and result["by_ranking"]["hybrid"] == 1.0
    assert result["model_ms_per_text"] > 0


def test_a_folder_that_is_no_encoder_is_refused(projects: Path, tmp_path: Path,  # noqa: F811
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--projects", str(projects), "--folder", str(tmp_path)]) == 1
    assert "not a Hugging Face encoder folder" in capsys.readouterr().err
    assert main(["--split", "valid", "--corpus", str(tmp_path), "--folder", str(tmp_path)]) == 1
