"""The language server through pytest-lsp: a two-file workspace (:data:`LIB`, :data:`APP`),
the requests the tests send, and :func:`apply_edits`, the client's side of a text edit
(written independently of the server's conversions)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities

LIB = '''import json


def load_config(path):
    with open(path) as fh:
        return json.loads(fh.read())


def empty():
    pass
'''

APP = '''from lib import load_config


def main():
    return load_config("x.json")
'''

NAME_LINE, NAME_START, NAME_END = 3, 4, 15  # `load_config` in LIB


async def initialize(client: LanguageClient, root: Path, options: dict[str, Any]) -> types.InitializeResult:
    return await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        root_uri=root.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="ws")],
        initialization_options=options,
    ))


def options(models_dir: Path | str, **extra: Any) -> dict[str, Any]:
    # hoverMinConfidence 1.0: the random tiny model's hover is never suppressed
    return {"modelsDir": str(models_dir), "topK": 5, "hoverMinConfidence": 1.0, **extra}


def open_doc(client: LanguageClient, path: Path, text: str | None = None, version: int = 1) -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=uri, language_id="python", version=version, text=path.read_text() if text is None else text)))
    return uri


async def hover(client: LanguageClient, uri: str, line: int, character: int) -> types.Hover | None:
    return await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character)))


async def code_actions(client: LanguageClient, uri: str, line: int, character: int) -> list[types.CodeAction]:
    pos = types.Position(line=line, character=character)
    result = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(start=pos, end=pos),
        context=types.CodeActionContext(diagnostics=[])))
    return [a for a in result or [] if isinstance(a, types.CodeAction)]


async def status(client: LanguageClient) -> dict[str, Any]:
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="pathfusion.status", arguments=[]))
    assert isinstance(result, dict)
    return result


# -- the client's side of an edit -------------------------------------------------------------
def lsp_lines(text: str) -> list[str]:
    """Lines with their ends, as LSP counts them: ``\\n``, ``\\r\\n`` and ``\\r`` end a line."""
    return re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", text)


def utf16_offset(line: str, character: int) -> int:
    """The index in ``line`` (no line end) of UTF-16 column ``character``; a column past the
    end is the end (LSP).  A column inside a surrogate pair is an error of the server."""
    units = 0
    for index, char in enumerate(line):
        if units >= character:
            assert units == character, f"column {character} falls inside a surrogate pair of {line!r}"
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    assert units <= character, f"column {character} falls inside a surrogate pair of {line!r}"
    return len(line)


def apply_edits(text: str, edits: Sequence[types.TextEdit | Any]) -> str:
    """Apply LSP text edits as an editor does, last first: positions count UTF-16 code units
    (a character outside the BMP is two), lines end at ``\\n``, ``\\r\\n`` or ``\\r``."""
    lines = lsp_lines(text)

    def offset(pos: types.Position) -> int:
        if pos.line >= len(lines):
            return len(text)
        content = lines[pos.line].rstrip("\r\n")
        return sum(len(line) for line in lines[: pos.line]) + utf16_offset(content, pos.character)

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end) :]
    return text
