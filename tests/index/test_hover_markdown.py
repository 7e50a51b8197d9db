"""Names in the hover's Markdown are shown as written: unescaped, ``__repr__`` in the
"Similar functions" list would render as a bold "repr", ``<locals>`` as an HTML tag."""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types
from pytest_lsp import LanguageClient

from pathfusion.server.code2vec import Suggestion
from pathfusion.server.feature_hover import hover_markdown
from pathfusion.server.feature_search import similar_markdown
from pathfusion.server.index import SearchResult
from pathfusion.server.lsp_convert import markdown_text
from tests.helpers.lsp_search import initialize, wait_indexed

SHAPES = '''class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __repr__(self):
        return f"Point({self.x!r}, {self.y!r})"


class Vector:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __repr__(self):
        return f"Vector({self.x!r}, {self.y!r})"

    def show(self):
        return f"Vector({self.x!r}, {self.y!r})"
'''
SHOW_LINE, SHOW_CHARACTER = 15, 8


def result(qualname: str, path: str = "/w/a b (1).py") -> SearchResult:
    return SearchResult(uri=Path(path).as_uri(), range={"start": {"line": 2, "character": 4},
                                                         "end": {"line": 2, "character": 12}},
                        name=qualname.rpartition(".")[2], qualname=qualname, score=0.5, snippet="",
                        path=path, label=0)


def test_similar_names_are_escaped() -> None:
    text = similar_markdown([result("Point.__repr__"), result("outer.<locals>.inner_*x*")])
    assert r"[Point.\_\_repr\_\_]" in text
    assert r"[outer.\<locals\>.inner\_\*x\*]" in text
    assert "__repr__" not in text and "<locals>" not in text
    # the link still leads to the file, whatever its path holds
    assert "(file:///w/a%20b%20%281%29.py#L3)" in text
    assert markdown_text("plain") == "plain"


def test_suggested_names_are_code_spans() -> None:
    suggestion = Suggestion("f", "__x", 1, "x", [("__init_db", "init|db", 0.5), ("odd`name", "odd", 0.1)], None)
    text = hover_markdown(suggestion, 0.5)
    assert text is not None
    assert "1. `__init_db` — 50.0%" in text
    assert "2. `` odd`name `` — 10.0%" in text
    assert "`__x`" in text


async def test_hover_shows_dunder_names_of_similar_functions(
    client: LanguageClient, search_models: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "shapes.py").write_text(SHAPES)
    await initialize(client, workspace, search_models)
    await wait_indexed(client)
    uri = (workspace / "shapes.py").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=SHAPES)))
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=SHOW_LINE, character=SHOW_CHARACTER)))
    assert hover is not None and isinstance(hover.contents, types.MarkupContent)
    similar = hover.contents.value.split("**Similar functions**", 1)[1]
    assert r"\_\_repr\_\_" in similar, similar
    assert "__repr__" not in similar, similar
