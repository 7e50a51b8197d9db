"""The def line and docstring line a search result shows (server/snippets.py)."""

from __future__ import annotations

import pytest

from pathfusion.server.index import snippet_of
from pathfusion.server.snippets import snippet_parts


@pytest.mark.parametrize("source,signature,summary", [
    ('def copytree(src, dst):\n    """Recursively copy a directory tree."""\n    pass\n',
     "def copytree(src, dst)", "Recursively copy a directory tree."),
    ('def copytree(\n    src,\n    dst,\n    symlinks=False,\n) -> str:\n    """Recursively copy a\n    tree."""\n',
     "def copytree(src, dst, symlinks=False) -> str", "Recursively copy a"),
    ('@cache\nasync def fetch(url: str = "a(b",\n          retries: int = 3):\n    """\n    Fetch the page.\n    """\n',
     'async def fetch(url: str = "a(b", retries: int = 3)', "Fetch the page."),
    ("def f(x):  # a comment: with a colon\n    return x\n", "def f(x)", ""),
    ("def g(d={'a': (1, 2)}):\n    r'''Raw doc.'''\n", "def g(d={'a': (1, 2)})", "Raw doc."),
    ("lambda x: x", "lambda x: x", ""),
])
def test_signature_and_docstring_line(source: str, signature: str, summary: str) -> None:
    assert snippet_parts(snippet_of(source)) == (signature, summary)


def test_results_carry_signature_and_summary() -> None:
    from pathfusion.server.index import SearchResult

    result = SearchResult(uri="file:///a.py", range={"start": {"line": 0, "character": 0},
                                                     "end": {"line": 3, "character": 0}},
                          name="copytree", qualname="copytree", score=0.5, path="/a.py", label=1,
                          snippet='def copytree(\n    src, dst):\n    """Copy a tree."""')
    data = result.to_json()
    assert data["signature"] == "def copytree(src, dst)" and data["summary"] == "Copy a tree."
