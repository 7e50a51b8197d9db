"""Bounded mutation fuzzing of the real server process (docs/reliability.md): a few hundred mutated
standard-library buffers, random incremental edits, hovers, code actions, searches and
undecodable bodies through a real LSP client (:mod:`tests.fuzzing`).  Every request must be
answered (a result, or the error its invalid params call for) within the timeout, the
server must never die, and its copy of each document must match the client's.

``PATHFUSION_FUZZ_SEED`` picks another seed; ``benchmarks/fuzz.py`` runs the same fuzzer for
10,000 buffers and keeps failing inputs for replay.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fuzzing import Case, FuzzConfig, Fuzzer
from tests.helpers.lsp import APP, LIB
from tests.lsp_driver import ROOT, RawLspClient

BUFFERS = 250
BUDGET_S = 150.0
"""A safety valve, not the expected time (about 60 s on two busy cores)."""
SHIPPED = ROOT / "models"


@pytest.fixture
def fuzz_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The shipped models (the naming head and the embedder's index, so that hovers and
    searches run for real), else the tiny test model (searches then answer empty)."""
    if (SHIPPED / "naming").is_dir() and (SHIPPED / "embedder").is_dir():
        return {"modelsDir": str(SHIPPED), "device": "cpu", "hoverMinConfidence": 1.0}
    folder = str(request.getfixturevalue("models_dir"))
    return {"modelsDir": folder, "fusionVariant": "code2vec", "device": "cpu", "hoverMinConfidence": 1.0}


async def test_fuzzed_buffers_always_get_an_answer(tmp_path: Path, fuzz_settings: dict[str, Any]) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "lib.py").write_text(LIB)
    (ws / "app.py").write_text(APP)
    log = tmp_path / "server.log"

    async def start() -> RawLspClient:
        return await RawLspClient.start(settings=fuzz_settings, stderr_path=log, env={
            "PATHFUSION_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})

    seed = int(os.environ.get("PATHFUSION_FUZZ_SEED", "12"))
    fuzzer = Fuzzer(FuzzConfig(buffers=BUFFERS, seed=seed, timeout=30.0), ws, start)
    failures: list[Case] = []
    stats = await fuzzer.run(on_case=failures.append, deadline=time.monotonic() + BUDGET_S)
    summary = json.dumps({k: v for k, v in vars(stats).items()}, indent=1)
    shown = "\n".join(f"buffer {c.index} ({c.source}): {c.failures[:3]}" for c in failures[:5])
    assert stats.ok(), f"{summary}\n{shown}\n--- server log ---\n{log.read_text(errors='replace')[-3000:]}"
    assert stats.buffers >= 100, summary
    assert stats.undecodable_bodies > 0 and stats.errors.get("-32602", 0) > 0, summary
