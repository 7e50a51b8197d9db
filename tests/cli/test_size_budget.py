"""The repository's size budget (issue 10, docs/design.md §6): the tracked tree, ``models/``
included, stays ≤ 40 MiB, so that a lent GPU job (64 MiB in all) can carry ≥ 24 MiB of data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 40 * 2**20


def test_the_tracked_tree_fits_the_budget() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    files = [ROOT / name for name in listing.decode().split("\0") if name]
    total = sum(path.stat().st_size for path in files if path.is_file() and not path.is_symlink())
    models = sum(path.stat().st_size for path in files if path.is_file() and "models" in path.relative_to(ROOT).parts[:1])
    assert models > 20 * 2**20  # the shipped models are there (a checkout without them measures nothing)
    assert total <= BUDGET, f"tracked tree {total / 2**20:.2f} MiB > 40 MiB (models/ {models / 2**20:.2f} MiB)"
