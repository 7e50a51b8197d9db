"""Workspace file discovery (design §8 "Index", §10 symlink loops and unreadable files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.workspace import WorkspaceError, WorkspaceFilter, discover


def write(root: Path, rel: str, text: str = "def f():\n    pass\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rels(root: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_gitignore_root_nested_and_negation(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.gen.py\nout/\n")
    write(tmp_path, "a.py")
    write(tmp_path, "x.gen.py")
    write(tmp_path, "out/b.py")
    write(tmp_path, "pkg/.gitignore", "secret.py\n!keep.gen.py\n/local/\n")
    write(tmp_path, "pkg/secret.py")
    write(tmp_path, "pkg/keep.gen.py")
    write(tmp_path, "pkg/local/c.py")
    write(tmp_path, "pkg/sub/local/d.py")  # /local/ is anchored to pkg/
    write(tmp_path, "secret.py")  # pkg's .gitignore does not apply at the root
    write(tmp_path, "notes.txt", "x")
    found = discover(tmp_path)
    assert rels(tmp_path, found.files) == ["a.py", "pkg/keep.gen.py", "pkg/sub/local/d.py", "secret.py"]
    rules = WorkspaceFilter(tmp_path)
    assert rules.check(tmp_path / "pkg/secret.py") == "gitignored"
    assert rules.check(tmp_path / "out/b.py") == "inside a skipped directory (gitignored)"
    assert rules.check(tmp_path / "a.py") is None


def test_exclude_globs_and_default_skips(tmp_path: Path) -> None:
    write(tmp_path, "src/app.py")
    write(tmp_path, "src/app_pb2.py")
    write(tmp_path, "generated/g.py")
    for skipped in (".git/hooks/h.py", ".venv/lib/x.py", "venv/x.py", "node_modules/m/x.py",
                    "lib/site-packages/p.py", "src/__pycache__/c.py", ".tox/t.py", "build/b.py",
                    "dist/d.py", "myenv/lib/e.py"):
        write(tmp_path, skipped)
    write(tmp_path, "myenv/pyvenv.cfg", "home = /usr/bin\n")
    found = discover(tmp_path, exclude=["*_pb2.py", "generated/"])
    assert rels(tmp_path, found.files) == ["src/app.py"]
    assert found.skipped == []
    assert WorkspaceFilter(tmp_path).check(tmp_path / "myenv/lib/e.py") == \
        "inside a skipped directory (virtual environment)"


def test_size_limit(tmp_path: Path) -> None:
    write(tmp_path, "small.py")
    big = write(tmp_path, "big.py", "x = 1\n" * 100)
    found = discover(tmp_path, max_file_size=200)
    assert rels(tmp_path, found.files) == ["small.py"]
    assert [(p, r.split(" (")[0]) for p, r in found.skipped] == [(big, "larger than 200 bytes")]


def test_symlink_loop_and_duplicate_links(tmp_path: Path) -> None:
    write(tmp_path, "pkg/a.py")
    os.symlink(tmp_path, tmp_path / "pkg" / "loop")  # pkg/loop → root
    os.symlink(tmp_path / "pkg" / "a.py", tmp_path / "alias.py")
    os.symlink(tmp_path / "missing.py", tmp_path / "broken.py")
    found = discover(tmp_path)
    assert rels(tmp_path, found.files) == ["pkg/a.py"]
    reasons = {p.relative_to(tmp_path).as_posix(): r for p, r in found.skipped}
    assert reasons["pkg/loop"].startswith("symlink loop")
    assert reasons["alias.py"] == "second link to an indexed file"
    assert reasons["broken.py"] == "broken symlink"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read everything")
def test_unreadable_file_and_dir(tmp_path: Path) -> None:
    write(tmp_path, "ok.py")
    secret = write(tmp_path, "secret.py")
    locked = tmp_path / "locked"
    write(tmp_path, "locked/x.py")
    secret.chmod(0)
    locked.chmod(0)
    try:
        found = discover(tmp_path)
    finally:
        secret.chmod(0o644)
        locked.chmod(0o755)
    assert rels(tmp_path, found.files) == ["ok.py"]
    assert dict(found.skipped) == {secret: "permission denied", locked: "permission denied"}


def test_bad_root(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no such directory"):
        discover(tmp_path / "nope")
    write(tmp_path, "f.py")
    with pytest.raises(WorkspaceError, match="not a directory"):
        discover(tmp_path / "f.py")


def test_deep_tree_is_iterative(tmp_path: Path) -> None:
    folder = tmp_path
    for i in range(60):
        folder = folder / f"d{i}"
    write(folder, "deep.py")
    assert len(discover(tmp_path).files) == 1
