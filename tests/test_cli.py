"""The command line: extract output formats and commands that are not built yet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server.cli import NOT_YET, main
from server.paths import EXTRACTOR_VERSION, parse_code2vec_line

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


@pytest.mark.parametrize("command", sorted(NOT_YET))
def test_unbuilt_commands_say_so(command: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "server", command, "x"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "not available yet" in proc.stderr and "Traceback" not in proc.stderr
