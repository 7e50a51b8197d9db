"""Hardening: the embedder config's file names stay inside the models folder, and
``serve --tcp`` (no authentication) refuses hosts other than loopback."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pathfusion.server.cli import build_parser, check_serve_arguments, is_loopback, parse_tcp
from pathfusion.server.embedder import EmbedderError, OnnxEmbedder
from pathfusion.server.paths import EXTRACTOR_VERSION

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "embedder"


# -- the embedder config ------------------------------------------------------------------------


def _models_with_config(root: Path, files: dict[str, str | None], tokenizer: str) -> Path:
    """A models folder whose embedder config names ``files`` and ``tokenizer``; the names
    inside the folder are links to the shipped embedder."""
    models = root / "models"
    (models / "embedder").mkdir(parents=True)
    for name in ("embedder.int8.onnx", "tokenizer.json.gz"):
        os.symlink(SHIPPED / name, models / "embedder" / name)
    config = json.loads((SHIPPED / "embedder.json").read_text())
    config.update(files=files, tokenizer=tokenizer)
    (models / "embedder" / "embedder.json").write_text(json.dumps(config))
    digest = hashlib.sha256((models / "embedder" / "embedder.json").read_bytes()).hexdigest()
    manifest = {"format": 1, "extractor_version": EXTRACTOR_VERSION, "models": {"embedder": {
        "files": {"embedder/embedder.json": digest}, "config": "embedder/embedder.json"}}}
    (models / "manifest.json").write_text(json.dumps(manifest))
    return models


@pytest.mark.skipif(not (SHIPPED / "embedder.int8.onnx").is_file(), reason="the shipped embedder is missing")
@pytest.mark.parametrize("escape", ["absolute graph", "graph above", "tokenizer above"])
def test_embedder_config_names_stay_inside_the_models_folder(tmp_path: Path, escape: str) -> None:
    """The config's file names are checked like the manifest's: joined as given, they would
    let a config make the server load (and hash, and feed text to) any file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("embedder.int8.onnx", "tokenizer.json.gz"):
        os.symlink(SHIPPED / name, outside / name)
    graph, tokenizer = "embedder.int8.onnx", "tokenizer.json.gz"
    if escape == "absolute graph":
        graph = str(outside / "embedder.int8.onnx")
    elif escape == "graph above":
        graph = "../../outside/embedder.int8.onnx"
    else:
        tokenizer = "../../outside/tokenizer.json.gz"
    models = _models_with_config(tmp_path, {"fp32": None, "int8": graph}, tokenizer)
    with pytest.raises(EmbedderError, match="not a path inside the models folder"):
        OnnxEmbedder.load(models, device="cpu")
    # the same folder with names inside it loads
    good = _models_with_config(tmp_path / "good", {"fp32": None, "int8": "embedder.int8.onnx"}, "tokenizer.json.gz")
    assert OnnxEmbedder.load(good, device="cpu").dim == 384


# -- serve --tcp --------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("::1", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("example.com", False), ("", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_parse_tcp_accepts_bracketed_ipv6() -> None:
    assert parse_tcp("[::1]:2087") == ("::1", 2087)
    assert parse_tcp(":2087") == ("127.0.0.1", 2087)


def test_tcp_refuses_remote_hosts_without_the_flag(tmp_path: Path) -> None:
    """``--tcp`` has no authentication, so ``--tcp 0.0.0.0:PORT`` would serve every network:
    it exits at once with a message instead (a server that listened would time out)."""
    for module, argv in (("pathfusion", ["serve", "--tcp", "0.0.0.0:48765"]), ("pathfusion", ["--tcp", "192.0.2.1:48765"]),
                         ("pathfusion.server.lsp", ["--tcp", "0.0.0.0:48765"])):
        result = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True,
                                timeout=30, cwd=REPO, env={**os.environ, "PATHFUSION_CACHE_DIR": str(tmp_path)})
        assert result.returncode == 1, result.stderr
        assert "--allow-remote" in result.stderr and "Traceback" not in result.stderr
    check_serve_arguments(argparse.Namespace(tcp=("127.0.0.1", 2087), allow_remote=False))
    check_serve_arguments(argparse.Namespace(tcp=("0.0.0.0", 2087), allow_remote=True))
    check_serve_arguments(argparse.Namespace(tcp=None, allow_remote=False))


def test_tcp_help_says_local_only() -> None:
    parser = build_parser()
    serve = next(action for action in parser._subparsers._group_actions  # type: ignore[union-attr]
                 if isinstance(action, argparse._SubParsersAction)).choices["serve"]
    text = " ".join(serve.format_help().split())
    assert "no authentication" in text and "--allow-remote" in text
    readme = (REPO / "README.md").read_text()
    assert "--allow-remote" in readme and "no authentication" in readme
