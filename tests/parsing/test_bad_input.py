"""Design §10 inputs that reach parsing and extraction: a result or a clear error."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pathfusion.server.cli import main as cli_main
from pathfusion.server.parsing import BinaryFileError, Document, EncodingError, decode_source
from pathfusion.server.paths import all_contexts, extract_contexts


def test_empty_file() -> None:
    assert Document("").functions() == []
    assert decode_source(b"") == ""


def test_binary_file_is_refused() -> None:
    with pytest.raises(BinaryFileError, match="binary"):
        decode_source(b"\x7fELF\x00\x01\x02", origin="a.py")


def test_non_utf8_without_cookie_is_refused_with_position() -> None:
    with pytest.raises(EncodingError, match="not valid utf-8"):
        decode_source("x = 'café'\n".encode("latin-1"), origin="latin.py")


def test_pep263_cookie_and_bom_are_honoured() -> None:
    data = "# -*- coding: latin-1 -*-\ndef café():\n    return 'é'\n".encode("latin-1")
    text = decode_source(data)
    assert [f.name for f in Document(text).functions()] == ["café"]
    assert decode_source(b"\xef\xbb\xbfdef f():\n    pass\n").startswith("def f")
    with pytest.raises(EncodingError, match="unknown encoding"):
        decode_source(b"# coding: no-such-codec\nx = 1\n")


def test_five_megabyte_file() -> None:
    block = "".join(
        f"def function_{i}(a, b):\n    total = a + b * {i}\n    return helper(total, '{i}')\n\n"
        for i in range(200)
    )
    text = block * (5_000_000 // len(block) + 1)
    assert len(text) > 5_000_000
    doc = Document(text)
    funcs = doc.functions()
    assert len(funcs) > 40_000
    last = funcs[-1]
    assert last.span.end.line == text.count("\n") - 2  # the text ends with a blank line
    assert extract_contexts(last.node, doc.source, last.name)


def test_deep_nesting_does_not_recurse() -> None:
    depth = 3000
    nested_expr = "def deep():\n    return " + "(" * depth + "x" + ")" * depth + "\n"
    doc = Document(nested_expr)
    func = doc.functions()[0]
    assert isinstance(all_contexts(func.node, doc.source, func.name), list)
    nested_defs = "".join("    " * i + f"def f{i}():\n" for i in range(400)) + "    " * 400 + "pass\n"
    assert sys.getrecursionlimit() < 5000
    funcs = Document(nested_defs).functions()
    assert len(funcs) == 400
    assert funcs[-1].qualname.count("<locals>") == 399
    nested_ifs = "def g(x):\n" + "".join("    " * (i + 1) + "if x:\n" for i in range(500)) + "    " * 501 + "return x\n"
    doc = Document(nested_ifs)
    func = doc.functions()[0]
    assert extract_contexts(func.node, doc.source, func.name)


def test_garbage_text_never_crashes() -> None:
    garbage = "def (((:\n\t\t  ]]] class def def\n @@@ lambda ::: \x0c\n" * 50
    doc = Document(garbage)
    for func in doc.functions():
        extract_contexts(func.node, doc.source, func.name)


def test_cli_reports_bad_files_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "b.py"
    binary.write_bytes(b"\x00\x01\x02")
    assert cli_main(["extract", str(binary)]) == 1
    assert "binary file" in capsys.readouterr().err
    latin = tmp_path / "l.py"
    latin.write_bytes("x = 'é'\n".encode("latin-1"))
    assert cli_main(["extract", str(latin)]) == 1
    assert "not valid utf-8" in capsys.readouterr().err
    assert cli_main(["extract", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err


def test_cli_reports_an_unreadable_file(tmp_path: Path, unreadable: Callable[[Path], None],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "u.py"
    source.write_text("def f():\n    pass\n")
    unreadable(source)
    assert cli_main(["extract", str(source)]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"pathfusion extract: error: {source}: permission denied\n"
    assert captured.out == ""
