"""The hubness penalty measurement (``model_export/hub_penalty.py``): a code vector close to
every reference query loses the searches it wins only by being central."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathfusion.model_export.hub_penalty import (
    group_cosines,
    nearest_mean,
    penalty_grid,
    train_queries,
)
from pathfusion.model_export.metrics import SEARCH_GROUP


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_nearest_mean_is_the_mean_of_the_k_closest() -> None:
    codes = _unit(np.array([[1.0, 0.0], [0.0, 1.0]]))
    references = _unit(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]]))
    got = nearest_mean(codes, references, 2)
    assert got == pytest.approx([(1.0 + 0.5 ** 0.5) / 2, (1.0 + 0.5 ** 0.5) / 2])
    assert nearest_mean(codes, references, 1) == pytest.approx([1.0, 1.0])


def test_a_central_code_loses_what_it_won_by_being_central() -> None:
    """Every query leans towards one direction (``e0``) that the references share; the code
    along ``e0`` wins every query until the penalty lowers it."""
    rng = np.random.default_rng(0)
    dim, groups = 8, 2
    own = _unit(np.concatenate([np.zeros((groups * SEARCH_GROUP, 1)),
                                rng.normal(size=(groups * SEARCH_GROUP, dim - 1))], axis=1))
    hub = np.eye(dim)[0]
    codes = own.copy()
    codes[::SEARCH_GROUP] = hub  # each group's first code is the hub (and its own query's answer)
    queries = _unit(0.6 * own + 0.8 * hub)
    queries[::SEARCH_GROUP] = hub
    references = _unit(hub + 0.05 * rng.normal(size=(50, dim)))
    zero = [np.zeros((SEARCH_GROUP, SEARCH_GROUP)) for _ in range(groups)]
    rows = penalty_grid(codes, group_cosines(queries, codes), zero, {"refs": lambda g: references}, [5], [0.0, 0.5])
    none, unchanged, penalised = rows
    assert none["references"] == "none" and unchanged["dense"] == none["dense"] == none["hybrid"]
    assert penalised["dense"] > none["dense"] + 0.2
    lifted = [np.full((SEARCH_GROUP, SEARCH_GROUP), 0.0) for _ in range(groups)]
    for block in lifted:
        np.fill_diagonal(block, 1.0)  # the served terms alone already rank every answer first
    assert penalty_grid(codes, group_cosines(queries, codes), lifted, {}, [5], [0.5])[0]["hybrid"] == 1.0


def test_train_queries_need_the_corpus(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="make corpus"):
        train_queries(tmp_path, 10)
