"""The command line: extract output formats and commands that are not built yet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pathfusion.server.cli import main
from pathfusion.server.paths import EXTRACTOR_VERSION, parse_code2vec_line

CODE = "def load_config(path):\n    with open(path) as fh:\n        return parse(fh.read())\n\n\ndef other():\n    return 1\n"


def test_extract_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.py"
    source.write_text(CODE)
    assert main(["extract", str(source), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["extractor_version"] == EXTRACTOR_VERSION
    first = data["functions"][0]
    assert first["qualname"] == "load_config" and first["label"] == "load|config"
    assert first["contexts"] and all(c.count(",") == 2 for c in first["contexts"])
    assert "load" not in " ".join(first["contexts"])


def test_extract_line_and_c2v(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.py"
    source.write_text(CODE)
    assert main(["extract", str(source), "--line", "7", "--format", "c2v"]) == 0
    label, contexts = parse_code2vec_line(capsys.readouterr().out.strip())
    assert label == "other" and contexts
    assert main(["extract", str(source), "--line", "4"]) == 1
    assert "no function there" in capsys.readouterr().err


def test_every_command_answers_help_without_traceback() -> None:
    for command in ("extract", "suggest", "serve", "index", "search", "eval", "train", "export", "corpus"):
        proc = subprocess.run([sys.executable, "-m", "pathfusion", command, "--help"], capture_output=True, text=True)
        assert "Traceback" not in proc.stderr, command
        assert proc.returncode == 0, (command, proc.stderr)
        assert "usage" in proc.stdout.lower(), command


def test_python_m_server_serves_with_only_serve_options() -> None:
    """Editors start language servers as ``python -m pathfusion --stdio``: that must serve (and
    exit cleanly when the client closes stdin), not fail on a missing command."""
    for args in ([], ["--stdio"]):
        done = subprocess.run([sys.executable, "-m", "pathfusion", *args], input=b"", capture_output=True,
                              timeout=60, cwd=Path(__file__).resolve().parents[2])
        assert done.returncode == 0, done.stderr.decode()
        assert b"Traceback" not in done.stderr
