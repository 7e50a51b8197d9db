"""Names made of words (server/name_words.py, model_export/name_lexicon.py): the lexicon of
the train split's name subtokens, shipped with the naming head, and the served head dropping
generated names with a made-up subtoken."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from pathfusion.model_export.name_lexicon import (
    add_to_models,
    build_lexicon,
    lexicon_of,
    write_lexicon,
)
from pathfusion.server.embedder import OnnxEmbedder
from pathfusion.server.models import ModelError
from pathfusion.server.name_generator import NameGenerator
from pathfusion.server.name_words import NameWords, own_subtokens, repeats_a_word
from tests.helpers.corpus import TEMPLATES, write_corpus

SOURCE = '''def METHOD_NAME(self, path):
    """Read the configurationFile at path."""
    with open(path) as fh:
        return json.load(fh)
'''


def test_a_name_is_kept_when_each_subtoken_is_a_word() -> None:
    own = own_subtokens(SOURCE)
    assert {"self", "path", "read", "configuration", "file", "open", "fh", "json", "load"} <= own
    assert "method" not in own and "name" not in own  # the masked name is not the function's text
    words = NameWords(frozenset({"get", "value", "load"}))
    assert words.admits("get|value") and words.admits("load|json", own) and words.admits("get|value|2")
    assert not words.admits("get|valuee") and not words.admits("routeer|json", own)
    assert not words.admits("load|json")  # without the function's text, json is not a word here
    assert not words.admits("get|value|get") and not words.admits("load|json|load", own)  # a word comes back
    assert words.admits("get|2|value|2")  # numbers may
    assert words.kept(["load|json", "routeer", "get|value", "get|valuee"], SOURCE) == ["load|json", "get|value"]
    assert words.kept(["get|value", "load"], "def METHOD_NAME(: not even Python") == ["get|value", "load"]


def test_the_lexicon_counts_projects_not_names(tmp_path: Path) -> None:
    records = [{"label": "get|value", "project": "a"}, {"label": "get|valuee", "project": "a"},
               {"label": "get|valuee", "project": "a"}, {"label": "set|value", "project": "b"}]
    assert lexicon_of(records, min_projects=2) == ["value"]
    assert lexicon_of(records, min_projects=1) == ["get", "set", "value", "valuee"]
    first, second = tmp_path / "a.txt.gz", tmp_path / "b.txt.gz"
    write_lexicon(["get", "value"], first)
    write_lexicon(["get", "value"], second)
    assert first.read_bytes() == second.read_bytes()  # the same words, the same bytes (no timestamp)
    assert NameWords.load(first).words == {"get", "value"}
    with gzip.open(second, "wt") as fh:
        fh.write("\n\n")
    with pytest.raises(ValueError, match="no words"):
        NameWords.load(second)


def test_the_served_head_drops_names_with_made_up_subtokens(naming_models: Path, tmp_path: Path) -> None:
    """The tiny random head writes names of arbitrary wordpieces; with the lexicon of a corpus
    whose names use six words, only names of those words and of the function's own text are
    left — and the lexicon is a manifest file like any other (hashed, checked)."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, per_label=3)
    models = tmp_path / "models"
    shutil.copytree(naming_models, models)
    embedder = OnnxEmbedder.load(models, device="cpu", threads=1)
    allowed = {w for label in TEMPLATES for w in label.split("|")} | own_subtokens(SOURCE)

    def words_ok(label: str) -> bool:
        return all(w in allowed or w.isdigit() for w in label.split("|")) and not repeats_a_word(label.split("|"))

    plain = NameGenerator.load(models, embedder, "cpu")
    before, _ = plain.names(SOURCE, top_k=10)
    assert plain.info["lexicon"] is None and any(not words_ok(label) for label, _ in before)

    with pytest.raises(ValueError, match="2 or more projects"):  # one train project: no word in two
        build_lexicon(corpus)
    with pytest.raises(ValueError, match="at least 1"):
        build_lexicon(corpus, min_projects=0)
    entry = add_to_models(models, corpus, min_projects=1)
    assert entry["lexicon_words"] == 6  # get, value, set, is, empty, close
    manifest = json.loads((models / "manifest.json").read_text())["models"]["naming"]
    assert manifest["lexicon"] == "naming/lexicon.txt.gz" and "naming/lexicon.txt.gz" in manifest["files"]
    assert manifest["lexicon_min_projects"] == 1  # the threshold that chose these words, not the default
    filtered = NameGenerator.load(models, embedder, "cpu")
    after, _ = filtered.names(SOURCE, top_k=10)
    assert filtered.info["lexicon"] == entry["lexicon_words"]
    assert all(words_ok(label) for label, _ in after)
    kept = [label for label, _ in before if words_ok(label)]
    assert [label for label, _ in after][:len(kept)] == kept  # the rest in the same order

    write_lexicon(["tampered"], models / "naming" / "lexicon.txt.gz")
    with pytest.raises(ModelError, match="lexicon"):
        NameGenerator.load(models, embedder, "cpu")


def test_export_without_a_corpus_says_how_and_writes_nothing(naming_models: Path, naming_run_best: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pathfusion.model_export.export_naming import main as export_main

    models = tmp_path / "models"
    shutil.copytree(naming_models, models)
    before = {p: p.read_bytes() for p in models.rglob("*") if p.is_file()}
    code = export_main(["--run-best", str(naming_run_best), "--out", str(models), "--corpus", str(tmp_path / "none")])
    assert code == 1 and "--no-lexicon" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in models.rglob("*") if p.is_file()} == before


def test_export_of_a_wrong_folder_fails_before_reading_the_corpus(naming_models: Path, naming_run_best: Path,
                                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped --run-best (or --out) is refused at once: the lexicon, built from the whole
    train split, is not read first."""
    from pathfusion.model_export import export_naming as module

    def no_lexicon(corpus: Path) -> None:
        raise AssertionError("the lexicon was built before the folders were checked")

    monkeypatch.setattr(module, "build_lexicon", no_lexicon)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.jsonl.gz").write_bytes(b"")
    models = tmp_path / "models"
    shutil.copytree(naming_models, models)
    before = {p: p.read_bytes() for p in models.rglob("*") if p.is_file()}
    for run_best, out, says in ((tmp_path / "nope", models, "no such folder"),
                                (tmp_path, models, "no decoder.json there"),
                                (naming_run_best, tmp_path / "empty", "export the embedder first")):
        code = module.main(["--run-best", str(run_best), "--out", str(out), "--corpus", str(corpus)])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("pathfusion export naming: error:") and says in err
    assert {p: p.read_bytes() for p in models.rglob("*") if p.is_file()} == before


def test_an_export_records_the_lexicon_it_was_given(naming_models: Path, naming_run_best: Path,
                                                    tmp_path: Path) -> None:
    from pathfusion.model_export.export_naming import export_naming
    from pathfusion.model_export.name_lexicon import Lexicon

    models = tmp_path / "models"
    shutil.copytree(naming_models, models)
    entry = export_naming(naming_run_best, models, "with-words", lexicon=Lexicon(("get", "value"), 3))
    assert entry["lexicon"] == "naming/lexicon.txt.gz" and entry["lexicon_min_projects"] == 3
    assert entry["lexicon_words"] == 2 and "naming/lexicon.txt.gz" in entry["files"]
    assert NameWords.load(models / entry["lexicon"]).words == {"get", "value"}
    assert sorted(p.name for p in (models / "naming").iterdir()) == sorted(Path(f).name for f in entry["files"])

    # Exported again without words: the folder is swapped whole, so the old lexicon goes with it.
    again = export_naming(naming_run_best, models, "without-words")
    assert "lexicon" not in again and not (models / "naming" / "lexicon.txt.gz").exists()
    assert sorted(p.name for p in (models / "naming").iterdir()) == sorted(Path(f).name for f in again["files"])


def test_a_failed_export_leaves_the_previous_head_as_it_was(naming_models: Path, naming_run_best: Path,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathfusion.model_export import export_naming as module
    from pathfusion.model_export.name_lexicon import Lexicon

    models = tmp_path / "models"
    shutil.copytree(naming_models, models)
    before = {p: p.read_bytes() for p in models.rglob("*") if p.is_file()}

    def disk_full(words: object, path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "write_lexicon", disk_full)
    with pytest.raises(OSError, match="No space"):
        module.export_naming(naming_run_best, models, "never", lexicon=Lexicon(("get",), 2))
    assert {p: p.read_bytes() for p in models.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in models.iterdir()) == sorted(p.name for p in naming_models.iterdir())
