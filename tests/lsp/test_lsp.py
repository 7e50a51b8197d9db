"""The language server end to end (pytest-lsp, real subprocess) and its settings.

Why one file of ~510 lines: every test here drives the same real server process through
the same client fixture; the features with their own concerns (rename safety, search,
reliability, fuzzing, memory bounds) have their own files."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from pathfusion.server.feature_hover import hover_markdown
from pathfusion.server.feature_rename import compute_rename
from pathfusion.server.lsp_convert import text_edits
from pathfusion.server.lsp_server import PathfusionServer
from pathfusion.server.lsp_worker import Snapshot
from pathfusion.server.parsing import Document, Position
from pathfusion.server.settings import Settings
from tests.helpers.lsp import (
    APP,
    LIB,
    NAME_END,
    NAME_LINE,
    NAME_START,
    apply_edits,
    code_actions,
    hover,
    initialize,
    open_doc,
    options,
    status,
)
from tests.rename_checks import assert_clean_rename


def current_name_line(value: str) -> str:
    return next(line for line in value.splitlines() if line.startswith("Current name"))


# -- end to end ------------------------------------------------------------------------------
async def test_hover_and_incremental_change(client: LanguageClient, models_dir: Path, workspace: Path) -> None:
    result = await initialize(client, workspace, options(models_dir))
    assert result.capabilities.text_document_sync is not None
    assert result.capabilities.position_encoding in (None, types.PositionEncodingKind.Utf16)
    uri = open_doc(client, workspace / "lib.py")

    found = await hover(client, uri, NAME_LINE, NAME_START + 3)
    assert found is not None and isinstance(found.contents, types.MarkupContent)
    assert found.contents.kind == types.MarkupKind.Markdown
    value = found.contents.value
    assert "`load_config`" in value and "%" in value and "1. `" in value
    assert value.count("%") == 5
    assert "Current name `load_config`" in value
    assert found.range == types.Range(start=types.Position(line=NAME_LINE, character=NAME_START),
                                      end=types.Position(line=NAME_LINE, character=NAME_END))
    # anywhere on the def line, not inside the body, not outside functions
    assert await hover(client, uri, NAME_LINE, 0) is not None
    assert await hover(client, uri, NAME_LINE + 1, 8) is None
    assert await hover(client, uri, 0, 3) is None

    # incremental change: rename the def by a ranged edit
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=NAME_LINE, character=NAME_START),
                              end=types.Position(line=NAME_LINE, character=NAME_END)),
            text="read_settings")]))
    found = await hover(client, uri, NAME_LINE, NAME_START + 1)
    assert found is not None and isinstance(found.contents, types.MarkupContent)
    assert "Current name `read_settings`" in current_name_line(found.contents.value)
    assert found.range is not None and found.range.end.character == NAME_START + len("read_settings")

    # whole-document change
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=3),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text="\n" + LIB)]))
    found = await hover(client, uri, NAME_LINE + 1, NAME_START)
    assert found is not None and isinstance(found.contents, types.MarkupContent)
    assert "Current name `load_config`" in found.contents.value
    assert (await status(client))["documents"] == [{"uri": uri, "version": 3}]

    client.text_document_did_close(types.DidCloseTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=uri)))
    assert await hover(client, uri, NAME_LINE + 1, NAME_START) is None
    assert (await status(client))["documents"] == []


async def test_rename_actions_resolve_across_files(
    client: LanguageClient, models_dir: Path, workspace: Path
) -> None:
    await initialize(client, workspace, options(models_dir))
    uri = open_doc(client, workspace / "lib.py", version=7)
    assert await code_actions(client, uri, NAME_LINE + 1, 4) == []  # inside the body

    actions = await code_actions(client, uri, NAME_LINE, NAME_START + 2)
    assert actions, "the tiny model suggests at least one other name"
    for action in actions:
        assert action.kind == types.CodeActionKind.RefactorRewrite
        assert action.title.startswith("Rename `load_config` → `") and action.title.endswith("`")
        assert action.edit is None
        assert isinstance(action.data, dict)
        assert action.data["version"] == 7 and action.data["uri"] == uri
        assert set(action.data) >= {"line", "character", "new_name"}
    titles = [a.title for a in actions]
    assert len(set(titles)) == len(titles) and "Rename `load_config` → `load_config`" not in titles

    action = actions[0]
    assert isinstance(action.data, dict)
    new_name = action.data["new_name"]
    resolved = await client.code_action_resolve_async(action)
    assert resolved.disabled is None, resolved.disabled
    assert resolved.edit is not None and resolved.edit.document_changes
    by_uri: dict[str, types.TextDocumentEdit] = {}
    for change in resolved.edit.document_changes:
        assert isinstance(change, types.TextDocumentEdit)
        by_uri[change.text_document.uri] = change
    app_uri = (workspace / "app.py").as_uri()
    assert set(by_uri) == {uri, app_uri}
    assert by_uri[uri].text_document.version == 7      # open document
    assert by_uri[app_uri].text_document.version is None  # file on disk
    new_lib = apply_edits(LIB, by_uri[uri].edits)
    new_app = apply_edits(APP, by_uri[app_uri].edits)
    assert new_lib == LIB.replace("def load_config(", f"def {new_name}(")
    assert new_app == APP.replace("load_config", new_name)
    assert_clean_rename({"lib.py": LIB, "app.py": APP}, {"lib.py": new_lib, "app.py": new_app},
                        "load_config", new_name)
    assert all(e.range.start.line in (0, 4) for e in by_uri[app_uri].edits)  # minimal edits

    # the document changes: the old action resolves to no edit
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=8),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=0, character=0),
                              end=types.Position(line=0, character=0)),
            text="# edited\n")]))
    stale = await client.code_action_resolve_async(actions[0])
    assert stale.edit is None
    assert stale.disabled is not None and "changed" in stale.disabled.reason


async def test_status_and_configuration_pull(client: LanguageClient, models_dir: Path, workspace: Path) -> None:
    client.set_configuration({"topK": 2, "device": "cpu"}, section="pathfusion")
    await initialize(client, workspace, options(models_dir))
    uri = open_doc(client, workspace / "lib.py")
    info = await wait_for_settings(client, lambda s: s["topK"] == 2)
    assert info["model_loaded"] is True and info["model"]["name"] == "code2vec"
    assert info["model_error"] is None
    assert info["settings"]["modelsDir"] == str(models_dir)  # from initializationOptions
    assert info["settings"]["device"] == "cpu"
    assert info["documents"] == [{"uri": uri, "version": 1}]
    found = await hover(client, uri, NAME_LINE, NAME_START)
    assert found is not None and isinstance(found.contents, types.MarkupContent)
    assert found.contents.value.count("%") == 2

    # re-pulled on didChangeConfiguration
    client.set_configuration({"topK": 3, "device": "cpu", "hoverMinConfidence": 7}, section="pathfusion")
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
    info = await wait_for_settings(client, lambda s: s["topK"] == 3)
    assert info["settings"]["hoverMinConfidence"] == 1.0  # bad value: the previous one kept
    assert any("hoverMinConfidence" in m.message for m in client.messages)


async def wait_for_settings(client: LanguageClient, ready: Any) -> dict[str, Any]:
    for _ in range(100):
        info = await status(client)
        if ready(info["settings"]):
            return info
        await asyncio.sleep(0.05)
    raise AssertionError(f"settings never became ready: {info['settings']}")


async def test_bad_model_dir_answers_nothing(client: LanguageClient, workspace: Path) -> None:
    await initialize(client, workspace, options(workspace / "no-models"))
    uri = open_doc(client, workspace / "lib.py")
    assert await hover(client, uri, NAME_LINE, NAME_START) is None
    assert await hover(client, uri, NAME_LINE, NAME_START) is None
    assert await code_actions(client, uri, NAME_LINE, NAME_START) == []
    info = await status(client)
    assert info["model_loaded"] is False and "not found" in info["model_error"]
    warnings = [m for m in client.messages if "name suggestions are off" in m.message]
    assert len(warnings) == 1 and warnings[0].type == types.MessageType.Warning


async def test_syntax_error_document_still_hovers(
    client: LanguageClient, models_dir: Path, workspace: Path
) -> None:
    await initialize(client, workspace, options(models_dir))
    broken = LIB.replace("fh.read())", "fh.read(") + "\ndef other(:\n"
    uri = open_doc(client, workspace / "broken.py", text=broken)
    found = await hover(client, uri, NAME_LINE, NAME_START)
    assert found is not None and isinstance(found.contents, types.MarkupContent)
    assert "Current name `load_config`" in found.contents.value
    assert (await status(client))["model_loaded"] is True


# -- in-process units --------------------------------------------------------------------------
class BumpingModel:
    """A fake model whose prediction edits the document meanwhile."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc

    def predict(self, functions: Sequence[Any], top_k: int = 5,
                sources: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        self.doc.version += 1
        return [[("read|config", 0.6), ("load|config", 0.3)] for _ in functions]


async def test_result_for_old_version_is_dropped() -> None:
    ls = PathfusionServer()
    doc = Document(LIB, uri="file:///x/lib.py", version=1)
    ls.documents[doc.uri] = doc
    model = BumpingModel(doc)

    async def get_model() -> Any:
        return model

    ls.get_model = get_model  # type: ignore[method-assign]
    position = types.Position(line=NAME_LINE, character=NAME_START)
    assert await ls.suggestion_for(doc.uri, position) is None
    model.predict = lambda functions, top_k=5, sources=None: [[("read|config", 0.6)] for _ in functions]  # type: ignore[method-assign]
    found = await ls.suggestion_for(doc.uri, position)
    assert found is not None
    snapshot, suggestion, _ = found
    assert snapshot == Snapshot(doc.uri, doc.version, LIB)
    assert suggestion.suggestions == [("read_config", "read|config", 0.6)]
    ls.executor.shutdown()


def test_hover_markdown_suppression() -> None:
    from pathfusion.server.code2vec import Suggestion

    confident = Suggestion("f", "load_config", 1, "load|config",
                           [("load_config", "load|config", 0.8), ("read_config", "read|config", 0.1)], 1)
    assert hover_markdown(confident, 0.5) is None
    text = hover_markdown(confident, 0.9)
    assert text is not None and "1. `load_config` — 80.0% ← current" in text and "rank 1" in text
    missing = Suggestion("f", "foo", 1, "foo", [("read_config", "read|config", 0.1)], None)
    assert "not in the top 1" in (hover_markdown(missing, 0.5) or "")
    assert hover_markdown(Suggestion("f", "foo", 1, "foo", [], None), 0.5) is None


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("a\nb\nc\n", "a\nB\nc\n", [((1, 0), (2, 0), "B\n")]),
    ("a\nb\nc", "a\nb\nC", [((2, 0), (2, 1), "C")]),
    ("a\nb", "a\nb\nc\n", [((1, 0), (1, 1), "b\nc\n")]),
    ("", "x\n", [((0, 0), (0, 0), "x\n")]),
    ("x\ny\n", "", [((0, 0), (2, 0), "")]),
    # characters outside the BMP are two UTF-16 code units: a range that ends within a line
    # counts them twice (the end of a last line without a line end)
    ("é😀\nb", "é😀\nb2", [((1, 0), (1, 1), "b2")]),
    ("a😀", "b😀", [((0, 0), (0, 3), "b😀")]),
    ("x\n😀😀", "x\n😀😀!", [((1, 0), (1, 4), "😀😀!")]),
    ("😀😀😀", "😀😀😀\n", [((0, 0), (0, 6), "😀😀😀\n")]),
    ('s = "𝔘"\rdef f(): pass', 's = "𝔘"\rdef g(): pass', [((1, 0), (1, 13), "def g(): pass")]),
    ("𝔘\r\n😀 = 1\r\n", "𝔘\r\n😀 = 2\r\n", [((1, 0), (2, 0), "😀 = 2\r\n")]),
])
def test_text_edits_are_minimal_and_exact(old: str, new: str,
                                          expected: list[tuple[tuple[int, int], tuple[int, int], str]]) -> None:
    edits = text_edits(old, new)
    got = [((e.range.start.line, e.range.start.character), (e.range.end.line, e.range.end.character), e.new_text)
           for e in edits]
    assert got == expected
    assert apply_edits(old, edits) == new  # as an editor applies them: UTF-16 columns


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_rename_edits_count_utf16_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename asked for at a UTF-16 column after astral characters renames the name there,
    and its edits end at UTF-16 columns in both files (each 😀 is two units, one character)."""
    monkeypatch.chdir(tmp_path)
    ws = tmp_path / "ws"
    ws.mkdir()
    lib = 'def load_config(path="😀"):\n    return path\n'
    call = 'x = ("😀😀😀😀😀😀😀😀😀😀😀😀", load_config("𝔘.json"))'  # the last line: no line end
    app = f"from lib import load_config\n\n\n{call}"
    (ws / "lib.py").write_text(lib, encoding="utf-8")
    (ws / "app.py").write_text(app, encoding="utf-8")
    column = utf16_length(call[: call.index("load_config")])
    assert column == call.index("load_config") + 12  # read as code points, it is past the name
    app_uri = (ws / "app.py").as_uri()
    edit = compute_rename(Snapshot(app_uri, 3, app), Position(3, column), "read_settings", [str(ws)],
                          Settings(), {os.path.realpath(ws / "app.py"): (app, 3)})
    changes = {c.text_document.uri: c for c in edit.document_changes or [] if isinstance(c, types.TextDocumentEdit)}
    assert set(changes) == {app_uri, (ws / "lib.py").as_uri()}

    def spans(change: types.TextDocumentEdit) -> list[tuple[tuple[int, int], tuple[int, int], str]]:
        return [((e.range.start.line, e.range.start.character), (e.range.end.line, e.range.end.character),
                 e.new_text) for e in change.edits]

    new_call = call.replace("load_config", "read_settings")
    assert spans(changes[app_uri]) == [((0, 0), (1, 0), "from lib import read_settings\n"),
                                       ((3, 0), (3, utf16_length(call)), new_call)]
    assert utf16_length(call) == len(call) + 13
    assert spans(changes[(ws / "lib.py").as_uri()]) == [((0, 0), (1, 0), 'def read_settings(path="😀"):\n')]
    assert apply_edits(app, changes[app_uri].edits) == app.replace("load_config", "read_settings")
    assert apply_edits(lib, changes[(ws / "lib.py").as_uri()].edits) == lib.replace("load_config", "read_settings")


# -- settings ----------------------------------------------------------------------------------
def test_settings_defaults_and_shapes() -> None:
    assert Settings.from_dict(None) == Settings()
    assert Settings.from_dict({}).warnings == ()
    assert Settings.from_dict({"topK": 3}).top_k == 3
    assert Settings.from_dict({"pathfusion": {"topK": 4}}).top_k == 4
    assert Settings.from_dict({"pathfusion.topK": 6}).top_k == 6
    assert Settings.from_dict({"top_k": 7, "max-file-size": 10}).max_file_size == 10
    both = Settings.from_dict({"topK": 1, "pathfusion": {"topK": 2}, "pathfusion.topK": 3})
    assert both.top_k == 3
    full = Settings.from_dict({"pathfusion": {
        "modelsDir": " /m ", "llmBackend": "ONNX", "llmModelPath": "", "fusionVariant": "attention",
        "device": "cuda", "topK": 2.0, "exclude": ["build/**", ""], "maxFileSize": 2048,
        "hoverMinConfidence": 0}})
    assert full == Settings(models_dir="/m", llm_backend="onnx", llm_model_path=None,
                            fusion_variant="attention", device="cuda", top_k=2, exclude=("build/**",),
                            max_file_size=2048, hover_min_confidence=0.0)
    assert full.warnings == ()
    assert full.to_dict()["topK"] == 2 and full.to_dict()["exclude"] == ["build/**"]
    assert Settings.from_dict(full.to_dict()) == full


def test_settings_bad_values_fall_back_with_warnings() -> None:
    s = Settings.from_dict({"topK": 0, "device": "tpu", "exclude": [1], "hoverMinConfidence": 1.5,
                            "maxFileSize": True, "modelsDir": 3, "fusionVariant": "sum",
                            "llmBackend": None, "colour": "red", "topk2": 1})
    assert s == Settings()
    text = "\n".join(s.warnings)
    assert len(s.warnings) == 10
    for needle in ("pathfusion.topK", "between 1 and 50", "pathfusion.device", "auto, cpu, cuda",
                   "pathfusion.exclude", "hoverMinConfidence", "maxFileSize", "modelsDir",
                   "fusionVariant", "llmBackend", "unknown setting pathfusion.colour"):
        assert needle in text, needle
    assert Settings.from_dict({"topK": 2.5}).top_k == 5
    assert Settings.from_dict({"hoverMinConfidence": float("nan")}).hover_min_confidence == 0.5


def test_settings_base_and_odd_input() -> None:
    base = Settings(top_k=9, device="cpu")
    s = Settings.from_dict({"topK": -1, "device": "auto"}, base=base)
    assert s.top_k == 9 and s.device == "auto" and len(s.warnings) == 1 and "using 9" in s.warnings[0]
    assert Settings.from_dict(None, base=s).warnings == ()
    assert Settings.from_dict([1, 2]).warnings and Settings.from_dict([1, 2]) == Settings()
    assert Settings.from_dict({"pathfusion": 3}).warnings
    assert Settings.from_dict({"exclude": "*.pyi"}).exclude == ("*.pyi",)


NESTED = '''import functools


@functools.lru_cache()
def outer(a, b):
    def inner(x):
        return x + a
    return inner(b)


class Store:
    """A store."""

    @property
    def size(self):
        return 0

    async def fetch(self, key):
        def helper():
            return key
        return helper()
'''


def test_snapshot_document_matches_a_fresh_parse() -> None:
    """A worker's view over the loop's tree (no parse, functions listed once) answers
    exactly as a freshly parsed Document, also after incremental edits of the loop's."""
    from pathfusion.server.lsp_worker import SnapshotDocument, WorkerDocuments

    loop_doc = Document(NESTED, uri="file:///x/nested.py", version=1)
    loop_doc.apply_change(Position(5, 14), Position(5, 15), "value")  # def inner(value):
    assert "def inner(value):" in loop_doc.text
    snapshot = Snapshot(loop_doc.uri, loop_doc.version, loop_doc.text, loop_doc.tree.copy())
    view, fresh = SnapshotDocument(snapshot), Document(loop_doc.text)
    assert [(f.qualname, f.span, f.source) for f in view.functions()] == \
        [(f.qualname, f.span, f.source) for f in fresh.functions()]
    lines = loop_doc.text.splitlines()
    for line, text in enumerate(lines):
        for character in range(0, len(text) + 1, 3):
            got, want = view.function_at(Position(line, character)), fresh.function_at(Position(line, character))
            assert (got and got.qualname) == (want and want.qualname), (line, character)
    with pytest.raises(TypeError):
        view.replace("x = 1\n")
    documents = WorkerDocuments(size=2)
    first = documents.get(snapshot)
    assert documents.get(Snapshot(snapshot.uri, 1, snapshot.text)) is first  # same version: shared
    newer = Snapshot(snapshot.uri, 2, snapshot.text + "\ndef added():\n    pass\n")
    assert documents.get(newer) is not first and documents.get(newer).functions()[-1].name == "added"
    documents.get(Snapshot("file:///x/a.py", 1, "")), documents.get(Snapshot("file:///x/b.py", 1, ""))
    assert documents.get(newer).version == 2 and len(documents._docs) == 2  # least recently used left


async def test_hovers_on_one_version_agree_and_an_edit_is_seen() -> None:
    """Hovers on an unchanged document give the same answer each time (the worker keeps its
    parsed copy between them), and the first hover after an edit describes the edited text,
    not that copy: the model sees the new body, the suggestion the new name and range."""
    from pathfusion.server.lsp import did_change

    ls = PathfusionServer()
    doc = Document(LIB, uri="file:///x/lib.py", version=1)
    ls.documents[doc.uri] = doc
    asked: list[list[str]] = []

    class Model:
        """Suggests ``parse|json`` for a body that decodes JSON, else ``read|file``."""

        def predict(self, functions: Sequence[Any], top_k: int = 5,
                    sources: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
            assert sources is not None
            asked.append(list(sources))
            return [[("parse|json", 0.7) if "json.loads" in source else ("read|file", 0.6)] for source in sources]

    async def get_model() -> Any:
        return Model()

    ls.get_model = get_model  # type: ignore[method-assign]
    position = types.Position(line=NAME_LINE, character=NAME_START)
    answers = [await ls.suggestion_for(doc.uri, position) for _ in range(3)]
    first = answers[0]
    assert first is not None and answers == [first] * 3
    snapshot, suggestion, name_range = first
    assert snapshot == Snapshot(doc.uri, 1, LIB)
    assert (suggestion.qualname, suggestion.name, suggestion.line) == ("load_config", "load_config", NAME_LINE + 1)
    assert suggestion.suggestions == [("parse_json", "parse|json", 0.7)]
    assert name_range == types.Range(start=types.Position(line=NAME_LINE, character=NAME_START),
                                     end=types.Position(line=NAME_LINE, character=NAME_END))
    assert len(asked) == 3 and asked[0] == asked[1] == asked[2]

    # version 2: the def renamed and the body no longer decodes JSON
    def change(start: tuple[int, int], end: tuple[int, int], text: str, version: int) -> None:
        did_change(ls, types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=doc.uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(
                start=types.Position(line=start[0], character=start[1]),
                end=types.Position(line=end[0], character=end[1])), text=text)]))

    body_line = LIB.splitlines()[NAME_LINE + 2]
    assert body_line == "        return json.loads(fh.read())"
    change((NAME_LINE + 2, 15), (NAME_LINE + 2, len(body_line)), "fh.read()", version=2)
    change((NAME_LINE, NAME_START), (NAME_LINE, NAME_END), "read_text", version=2)
    edited = LIB.replace("load_config", "read_text").replace("json.loads(fh.read())", "fh.read()")
    found = await ls.suggestion_for(doc.uri, position)
    assert found is not None
    snapshot, suggestion, name_range = found
    assert snapshot == Snapshot(doc.uri, 2, edited)
    assert (suggestion.qualname, suggestion.name) == ("read_text", "read_text")
    assert suggestion.suggestions == [("read_file", "read|file", 0.6)]
    assert name_range.end == types.Position(line=NAME_LINE, character=NAME_START + len("read_text"))
    assert "json.loads" not in asked[-1][0] and "fh.read()" in asked[-1][0]
    ls.executor.shutdown()


async def test_a_hover_is_one_worker_hop() -> None:
    """The function at the cursor is found once, in the worker, and goes from there to the
    model and to the index (similar functions) in the same call; the loop only renders."""
    from types import SimpleNamespace

    from pathfusion.server.feature_hover import hover_at
    from pathfusion.server.feature_index import FolderIndex
    from pathfusion.server.lsp import hover

    ls = PathfusionServer()
    doc = Document(LIB, uri="file:///x/lib.py", version=1)
    ls.documents[doc.uri] = doc

    class Model:
        def predict(self, functions: Sequence[Any], top_k: int = 5,
                    sources: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
            return [[("read|config", 0.6)] for _ in functions]

    async def get_model() -> Any:
        return Model()

    asked: list[tuple[str, str]] = []

    class Index:
        def similar(self, key: tuple[str, str], k: int) -> list[Any]:
            asked.append(key)
            return [SimpleNamespace(path="/x/app.py", qualname="main", uri="file:///x/app.py", line=3, score=0.5)]

    ls.get_model = get_model  # type: ignore[method-assign]
    ls.indexes.folders["/x"] = FolderIndex("/x", index=Index(), state="ready")  # type: ignore[arg-type]
    hops: list[Any] = []
    submit = ls.executor.submit
    ls.executor.submit = lambda fn, *args, **kwargs: hops.append(fn) or submit(fn, *args, **kwargs)  # type: ignore[method-assign]
    params = types.HoverParams(text_document=types.TextDocumentIdentifier(uri=doc.uri),
                               position=types.Position(line=NAME_LINE, character=NAME_START))
    found = await hover(ls, params)
    assert hops == [hover_at] and asked == [("/x/lib.py", "load_config")]
    assert found is not None and isinstance(found.contents, types.MarkupContent)
    assert "`read_config` — 60.0%" in found.contents.value and "[main](file:///x/app.py#L3)" in found.contents.value
    assert found.range == types.Range(start=types.Position(line=NAME_LINE, character=NAME_START),
                                      end=types.Position(line=NAME_LINE, character=NAME_END))
    ls.executor.shutdown()


def test_similar_functions_below_the_floor_are_not_listed() -> None:
    """A workspace with nothing like the hovered function must not list its closest
    unrelated ones as "similar" (a three-function folder listed ``main`` at −0.01)."""
    from types import SimpleNamespace

    from pathfusion.server.feature_index import FolderIndex
    from pathfusion.server.feature_search import SIMILAR_FLOOR, similar_finder

    def result(qualname: str, score: float) -> Any:
        return SimpleNamespace(path="/x/app.py", qualname=qualname, uri="file:///x/app.py", line=3, score=score)

    class Index:
        def similar(self, key: tuple[str, str], k: int) -> list[Any]:
            return [result("close", SIMILAR_FLOOR + 0.01), result("at_floor", SIMILAR_FLOOR),
                    result("unrelated", SIMILAR_FLOOR - 0.01), result("main", -0.01)]

    ls = PathfusionServer()
    ls.indexes.folders["/x"] = FolderIndex("/x", index=Index(), state="ready")  # type: ignore[arg-type]
    similar = similar_finder(ls.indexes, "file:///x/lib.py")
    assert similar is not None
    assert [r.qualname for r in similar("load_config")] == ["close", "at_floor"]
    ls.executor.shutdown()
