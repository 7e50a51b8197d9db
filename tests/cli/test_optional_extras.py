"""The server without the training package: nothing under ``server/`` loads torch or
``model_export`` on import, the training verbs are registered only where the ``train`` extra
is installed, and the transformers embedder backend says which extra it needs.

How the extra is made unavailable: ``sys.modules[name] = None`` (``monkeypatch.setitem``),
the import system's own way to mark a module as not importable — ``import`` raises
ImportError and :func:`importlib.util.find_spec` returns None for it — so the CLI's check
and the backend's import both see a machine without torch, in this process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pathfusion.server import cli_train
from pathfusion.server.cli import build_parser, main
from pathfusion.server.embedder import EmbedderError, load_embedder

ROOT = Path(__file__).resolve().parents[2]


def commands() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


def test_server_modules_import_neither_torch_nor_model_export() -> None:
    code = (
        "import sys\n"
        "import pathfusion.server.lsp, pathfusion.server.cli, pathfusion.server.runtime, pathfusion.server.lsp_models, pathfusion.server.embedder\n"
        "pathfusion.server.cli.build_parser()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'onnx')\n"
        "               or m.startswith('pathfusion.model_export'))\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_server_does_not_import_the_cli() -> None:
    code = "import sys, pathfusion.server.lsp; assert 'pathfusion.server.cli' not in sys.modules, 'pathfusion.server.lsp imported pathfusion.server.cli'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_every_verb_is_registered_with_the_train_extra() -> None:
    if any(cli_train.missing(verb) for verb in cli_train.NEEDS):
        pytest.skip("the train extra is not installed here")
    assert commands() == {"extract", "suggest", "index", "search", "serve", "export", "corpus", "eval", "train"}


@pytest.mark.parametrize("hidden", ["torch", "onnx"])
def test_without_the_train_extra_training_verbs_say_what_to_install(
        hidden: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)
    # corpus and eval read the corpus and run the exported models: no torch needed
    assert commands() == {"extract", "suggest", "index", "search", "serve", "corpus", "eval"}
    for argv in (["train", "code2vec"], ["export", "fusion", "--run", "x"], ["train", "--help"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"pathfusion {argv[0]}: error: `pathfusion {argv[0]}` needs the train extra ({hidden} is not installed)" in err
        assert "pip install 'pathfusion[train]'" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "Not available here: train, export" in capsys.readouterr().out


def test_without_model_export_its_verbs_are_left_out(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "pathfusion.model_export", None)
    assert commands() == {"extract", "suggest", "index", "search", "serve"}
    assert main(["eval", "naming"]) == 1
    assert "needs the train extra (pathfusion.model_export is not installed)" in capsys.readouterr().err


def test_transformers_backend_without_torch_names_the_extra(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(EmbedderError, match=r"train extra: pip install 'pathfusion\[train\]'"):
        load_embedder("transformers", model_path=tmp_path, device="cpu")
