"""The second held-out set: installed packages the corpus does not pin
(``model_export/heldout_packages.py``), built from real installed-distribution metadata."""

from __future__ import annotations

import gzip
import json
from importlib import metadata
from pathlib import Path

import pytest

from pathfusion.model_export.heldout_packages import build, duplicated_projects, main, normalise


def _install(site: Path, name: str, version: str, files: dict[str, str]) -> metadata.Distribution:
    """A distribution as pip leaves it: its files, and a dist-info with METADATA and RECORD."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record = []
    for rel, text in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        record.append(f"{rel},,")
    record += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,", f"{name}/__pycache__/x.cpython-311.pyc,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")
    return metadata.PathDistribution(info)


FUNCTION = 'def {name}(value):\n    """Return the value doubled, or zero."""\n    return value * 2 if value else 0\n'


@pytest.fixture
def site(tmp_path: Path) -> tuple[list[metadata.Distribution], Path]:
    """Five installed distributions and a corpus manifest that pins one of them."""
    site = tmp_path / "site"
    dists = [
        _install(site, "Fresh_Pkg", "1.0", {"fresh_pkg/__init__.py": FUNCTION.format(name="double"),
                                              "fresh_pkg/sub/core.py": FUNCTION.format(name="twice")}),
        _install(site, "loose-module", "0.1", {"loose_module.py": FUNCTION.format(name="loose")}),
        _install(site, "requests", "2.0", {"requests/__init__.py": FUNCTION.format(name="get")}),  # pinned
        _install(site, "httpx2", "1.0", {"httpx2/__init__.py": FUNCTION.format(name="fork")}),  # a fork
        _install(site, "copycat", "3.0", {"copycat/__init__.py": FUNCTION.format(name="copied")}),
    ]
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("# pins\nRequests==2.0\n")
    return dists, manifest


def test_only_packages_outside_the_corpus_are_copied(site: tuple[list[metadata.Distribution], Path],
                                                     tmp_path: Path) -> None:
    dists, manifest = site
    out = tmp_path / "heldout"
    taken = build(out, dists, manifest)
    assert sorted(taken) == ["copycat", "fresh-pkg", "loose-module"]
    assert taken["fresh-pkg"] == {"version": "1.0", "top_level": ["fresh_pkg"], "files": 2}
    assert (out / "fresh-pkg" / "fresh_pkg" / "sub" / "core.py").read_text() == FUNCTION.format(name="twice")
    assert (out / "loose-module" / "loose_module.py").is_file()
    assert not list(out.rglob("*.pyc")) and json.loads((out / "packages.json").read_text()) == taken
    # a later build is whole: a project left out now does not stay from before
    assert sorted(build(out, dists, manifest, skip=["Fresh-Pkg"])) == ["copycat", "loose-module"]
    assert not (out / "fresh-pkg").exists()
    assert normalise("Typing_Extensions") == normalise("typing.extensions") == "typing-extensions"


def test_duplicated_projects_count_functions_equal_to_corpus_ones(site: tuple[list[metadata.Distribution], Path],
                                                                  tmp_path: Path) -> None:
    dists, manifest = site
    out = tmp_path / "heldout"
    build(out, dists, manifest)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    copied = "def copied(value):\n        return value * 2 if value else 0"  # same code, other layout
    for split in ("train", "valid", "test"):
        with gzip.open(corpus / f"{split}.jsonl.gz", "wt") as fh:
            if split == "train":
                fh.write(json.dumps({"code_without_docstring": copied}) + "\n")
    assert duplicated_projects(out, corpus) == {"fresh-pkg": (0, 2), "loose-module": (0, 1), "copycat": (1, 1)}


def test_the_command_refuses_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main([str(out)]) == 1
    assert "not empty" in capsys.readouterr().err and (out / "notes.txt").read_text() == "keep me"


def test_the_help_states_the_share_that_drops_a_project(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "at least 10% of the functions" in " ".join(capsys.readouterr().out.split())
