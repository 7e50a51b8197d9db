"""The naming head's lexicon: the subtokens that the train split's names use in enough projects.

Why: the runtime keeps a generated name only if each subtoken is a word
(:mod:`pathfusion.server.name_words`), and "a word" is what real names are made of.  Counting
*projects* rather than names keeps one project's private coinages (repeated across its
own functions) out, while a project's own vocabulary stays allowed at run time through the
function's own identifiers.  Built from the train split only; the threshold
(:data:`MIN_PROJECTS`) was chosen on validation (docs/results.md, "Names made of words").

``pathfusion export naming`` ships it with every head it exports (``--corpus``);
``python -m pathfusion.model_export.name_lexicon --models DIR`` adds it to a head already
exported, without touching its graphs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pathfusion.server.models import sha256_file

from .export_embedder import write_manifest_entry
from .naming_pack import naming_records

MIN_PROJECTS = 2
"""A subtoken is a word when the names of at least this many train projects use it."""
LEXICON_FILE = "lexicon.txt.gz"
DEFAULT_CORPUS = Path("data/corpus")


@dataclass(frozen=True)
class Lexicon:
    """The words and the threshold that chose them (recorded in the manifest together, so
    that what the manifest says is what the words are)."""

    words: tuple[str, ...]
    min_projects: int


def lexicon_of(records: Iterable[dict[str, Any]], min_projects: int = MIN_PROJECTS) -> list[str]:
    """The sorted subtokens of the records' labels (``a|b``) used by ≥ ``min_projects`` projects."""
    projects: defaultdict[str, set[str]] = defaultdict(set)
    for record in records:
        for part in str(record["label"]).split("|"):
            if part:
                projects[part].add(str(record["project"]))
    return sorted(word for word, users in projects.items() if len(users) >= min_projects)


def build_lexicon(corpus: Path, min_projects: int = MIN_PROJECTS) -> Lexicon:
    """The lexicon of ``corpus``'s train split (the naming records, as the naming pack reads them)."""
    if min_projects < 1:
        raise ValueError(f"min_projects must be at least 1, not {min_projects}")
    words = lexicon_of(naming_records(corpus, "train"), min_projects)
    if not words:
        raise ValueError(f"{corpus}: no subtoken of the train split's names is used by {min_projects} or more "
                         "projects, so there is no name lexicon to build")
    return Lexicon(tuple(words), min_projects)


def write_lexicon(words: Sequence[str], path: Path) -> None:
    """One word a line, gzip, with a fixed timestamp so that the same words give the same bytes."""
    data = ("\n".join(words) + "\n").encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as fh:
        fh.write(data)


def lexicon_fields(folder: str, lexicon: Lexicon) -> dict[str, Any]:
    """The naming manifest entry's fields that describe ``lexicon`` shipped in ``folder``
    (its file's hash and size are listed with the head's other files)."""
    return {"lexicon": f"{folder}/{LEXICON_FILE}", "lexicon_min_projects": lexicon.min_projects,
            "lexicon_words": len(lexicon.words)}


def with_lexicon(entry: dict[str, Any], models: Path, folder: str, lexicon: Lexicon) -> dict[str, Any]:
    """Write ``lexicon`` into ``models/folder`` (the head's own folder, beside its graphs) and
    return the naming manifest ``entry`` that lists it."""
    path = models / folder / LEXICON_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_lexicon(lexicon.words, path)
    name = f"{folder}/{LEXICON_FILE}"
    return {**entry, **lexicon_fields(folder, lexicon),
            "files": {**entry.get("files", {}), name: sha256_file(path)},
            "sizes": {**entry.get("sizes", {}), name: path.stat().st_size}}


def add_to_models(models: Path, corpus: Path, min_projects: int = MIN_PROJECTS) -> dict[str, Any]:
    """Give the naming head already exported in ``models`` the lexicon of ``corpus``."""
    manifest_path = models / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found")
    entry = json.loads(manifest_path.read_text(encoding="utf-8"))["models"].get("naming")
    if entry is None:
        raise ValueError(f"{manifest_path} has no naming head: export one first (pathfusion export naming)")
    folder = PurePosixPath(entry["onnx"]).parent.as_posix()
    entry = with_lexicon(entry, models, folder, build_lexicon(corpus, min_projects))
    write_manifest_entry(models, entry, name="naming")
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="models folder (default: %(default)s)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus folder (default: %(default)s)")
    parser.add_argument("--min-projects", type=int, default=MIN_PROJECTS,
                        help="a subtoken is a word when this many train projects' names use it (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        entry = add_to_models(args.models, args.corpus, args.min_projects)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{entry['lexicon']}: {entry['lexicon_words']} words (≥ {args.min_projects} train projects) "
          f"for the naming head {entry['id']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
