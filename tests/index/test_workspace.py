"""Workspace file discovery (docs/design.md §8 "Index"; §10: symlink loops and unreadable
files)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pathfusion.server.workspace import GitIgnore, WorkspaceError, WorkspaceFilter, discover


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


def test_unreadable_file_and_dir(tmp_path: Path, unreadable: Callable[[Path], None]) -> None:
    write(tmp_path, "ok.py")
    secret = write(tmp_path, "secret.py")
    locked = tmp_path / "locked"
    write(tmp_path, "locked/x.py")
    unreadable(secret)
    unreadable(locked)
    found = discover(tmp_path)
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


# -- symlinks that leave the workspace, linear-time .gitignore patterns -----------------------


def test_symlinks_leaving_the_workspace_are_not_followed(tmp_path: Path) -> None:
    """A link to ``/`` followed would keep the indexer walking the file system for minutes."""
    root = tmp_path / "ws"
    write(root, "a.py")
    write(root, "pkg/b.py")
    outside = tmp_path / "outside"
    write(outside, "secret.py")
    os.symlink(outside, root / "linked")  # a folder outside
    os.symlink(outside / "secret.py", root / "secret_link.py")  # a file outside
    os.symlink("/", root / "slash")  # the whole file system
    os.symlink(root / "pkg", root / "zlink")  # inside: followed (to a folder already walked)
    os.symlink(root / "pkg" / "b.py", root / "b_link.py")  # inside: followed (to a file already found)
    start = time.monotonic()
    found = discover(root)
    assert time.monotonic() - start < 2
    assert rels(root, found.files) == ["a.py", "pkg/b.py"]
    reasons = {p.relative_to(root).as_posix(): r for p, r in found.skipped}
    for name in ("linked", "secret_link.py", "slash"):
        assert reasons[name] == "symlink to outside the workspace"
    assert reasons["zlink"].startswith("symlink loop or second link")
    assert reasons["b_link.py"] == "second link to an indexed file"
    rules = WorkspaceFilter(root)
    assert (rules.check(root / "secret_link.py") or "").startswith("outside the workspace")
    assert (rules.check(root / "linked" / "secret.py") or "").startswith("outside the workspace")
    assert rules.check(root / "pkg" / "b.py") is None
    # the setting that says otherwise
    assert "linked/secret.py" in rels(root, discover(root, exclude=["slash/"], follow_external_symlinks=True).files)
    assert WorkspaceFilter(root, follow_external_symlinks=True).check(root / "secret_link.py") is None


def test_symlink_setting() -> None:
    from pathfusion.server.settings import Settings

    assert Settings().follow_external_symlinks is False
    assert Settings.from_dict({"followExternalSymlinks": True}).follow_external_symlinks is True
    bad = Settings.from_dict({"followExternalSymlinks": "yes"})
    assert bad.follow_external_symlinks is False and "followExternalSymlinks" in bad.warnings[0]


def _timed_discover(root: Path, **kwargs: object) -> tuple[list[str], float]:
    """discover() in a child process, killed after 10 s (a backtracking regex holds the GIL)."""
    code = ("import sys, time, json\nfrom pathfusion.server.workspace import discover\n"
            "start = time.monotonic()\n"
            f"found = discover(sys.argv[1], **{kwargs!r})\n"
            "print(json.dumps([str(p) for p in found.files]), time.monotonic() - start)\n")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True,
                             timeout=10, check=True, cwd=Path(__file__).resolve().parents[2]).stdout
    except subprocess.TimeoutExpired:
        return [], float("inf")
    files, seconds = out.rsplit(" ", 1)
    return [Path(p).relative_to(root).as_posix() for p in json.loads(files)], float(seconds)


def test_gitignore_patterns_match_in_linear_time(tmp_path: Path) -> None:
    """``*a`` x 12 + ``*b`` against a 36-character name: past 60 s with a backtracking regex."""
    pattern = "*a" * 12 + "*b"
    name = "a" * 33 + ".py"
    write(tmp_path, ".gitignore", pattern + "\n")
    write(tmp_path, name)
    write(tmp_path, "ab.py")
    files, seconds = _timed_discover(tmp_path)
    assert seconds < 1 and files == [name, "ab.py"]
    # the exclude globs use the same matcher; so do deep "**" chains
    files, seconds = _timed_discover(tmp_path, exclude=["**/a/**/a/**/a/**/a/**/a/**/a/**/b"])
    assert seconds < 1 and files == [name, "ab.py"]
    rules = GitIgnore([pattern, "**/a" * 12 + "/**/b"])
    start = time.monotonic()
    assert rules.check("a" * 36, False) is None
    assert rules.check("/".join("a" * 40), False) is None
    assert rules.check("a" * 35 + "b", False) is True
    assert rules.check("/".join("a" * 13) + "/b", False) is True
    assert time.monotonic() - start < 1


GITIGNORE_CASES = [
    ("*.py", "a.py", False, True), ("*.py", "x/a.py", False, True), ("*.py", "a.pyc", False, None),
    ("/a.py", "a.py", False, True), ("/a.py", "x/a.py", False, None), ("x/a.py", "x/a.py", False, True),
    ("x/a.py", "y/x/a.py", False, None), ("build/", "build", True, True), ("build/", "build", False, None),
    ("build/", "src/build", True, True), ("**/cache", "cache", True, True), ("**/cache", "a/b/cache", True, True),
    ("a/**/b", "a/b", True, True), ("a/**/b", "a/x/y/b", False, True), ("a/**/b", "a/xb", False, None),
    ("a/**", "a/x/y.py", False, True), ("a/**", "a", True, None), ("a/*", "a/x", False, True),
    ("a/*", "a/x/y", False, None), ("a?c.py", "abc.py", False, True), ("a?c.py", "a/c.py", False, None),
    ("[a-c]*.py", "b1.py", False, True), ("[!a-c]*.py", "b1.py", False, None), ("[!a-c]*.py", "d1.py", False, True),
    ("[[:digit:]]x", "7x", False, True), ("[]]", "]", False, True), ("a\\*b", "a*b", False, True),
    ("a\\*b", "axb", False, None), ("\\#x", "#x", False, True), ("#x", "#x", False, None),
    ("\\!x", "!x", False, True), ("x\\ ", "x ", False, True), ("x  ", "x", False, True),
    ("*a*b*c", "xaybzc", False, True), ("*a*b*c", "xaybzcd", False, None), ("*a*b*c", "cba", False, None),
    ("a**b", "axyzb", False, True), ("a/**/**/b", "a/b", False, True), ("[a-", "[a-", False, None),
    ("a\\", "a", False, None), ("*", "anything", False, True), ("**", "a", False, True),
    ("/**", "a/b", False, True), ("*/b/*", "a/b/c", False, True), ("*/b/*", "a/b", False, None),
]
"""(pattern, path, is_dir, what git says: True ignored, None no match)."""


@pytest.mark.parametrize(("pattern", "path", "is_dir", "expected"), GITIGNORE_CASES)
def test_gitignore_semantics(pattern: str, path: str, is_dir: bool, expected: bool | None) -> None:
    """git's rules (gitignore(5), wildmatch), checked against ``git check-ignore`` where
    git is installed (test below)."""
    assert GitIgnore([pattern]).check(path, is_dir) is expected


def test_gitignore_negation_and_last_line_wins() -> None:
    rules = GitIgnore(["*.gen.py", "!keep.gen.py", "# comment", "", "  "])
    assert rules.check("x.gen.py", False) is True
    assert rules.check("keep.gen.py", False) is False
    assert rules.check("other.py", False) is None
    assert GitIgnore(["!keep.gen.py", "*.gen.py"]).check("keep.gen.py", False) is True


def _walk_answer(rules: GitIgnore, path: str, is_dir: bool) -> bool | None:
    """What the walk decides for ``path``: an ignored parent directory hides it (the walk
    never enters it), else the path's own match."""
    parts = path.split("/")
    for depth in range(1, len(parts)):
        if rules.check("/".join(parts[:depth]), True):
            return True
    return rules.check(path, is_dir)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_gitignore_semantics_agree_with_git(tmp_path: Path) -> None:
    """Every case of :func:`test_gitignore_semantics` that git can express, asked of
    ``git check-ignore`` itself (one repository per pattern; git also answers for what
    lies inside an ignored directory, as the walk does)."""
    cases = [case for case in GITIGNORE_CASES if case[0] != "#x" and not case[0].endswith("\\")]
    for number, (pattern, path, is_dir, _expected) in enumerate(cases):
        repo = tmp_path / f"r{number}"
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        (repo / ".gitignore").write_text(pattern + "\n")
        target = repo / path
        try:
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("")
        except OSError:
            continue
        result = subprocess.run(["git", "-C", str(repo), "check-ignore", "-v", "--no-index", path],
                                capture_output=True, text=True)
        ignored = result.returncode == 0 and not result.stdout.split("\t")[0].split(":", 2)[2].startswith("!")
        negated = result.returncode == 0 and not ignored
        git_answer = True if ignored else (False if negated else None)
        mine = _walk_answer(GitIgnore([pattern]), path, is_dir)
        assert git_answer is mine, (pattern, path, is_dir, result.stdout, result.stderr)
