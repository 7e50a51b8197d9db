"""The language server (design §8): hover name suggestions and rename code actions.

Why the handlers are thin and the work is elsewhere: the event loop only keeps the
documents in sync and answers; every model call, parse for a request and jedi refactoring
runs in a thread pool on an immutable :class:`Snapshot` (uri, version, text), and a result
computed for a version that is no longer the document's is dropped.  The loop's
:class:`~server.parsing.Document` objects are never touched by a worker thread.

Models are loaded lazily, on the first request that needs one, and again when
``modelsDir`` or ``device`` change.  A folder that cannot be used is reported once with
``window/showMessage``; the features then answer nothing until the settings change.

Positions are UTF-16 (the LSP default): the server removes the client's other position
encodings from ``initialize`` so that it never negotiates another one.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import keyword
import logging
import os
import re
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.uris import from_fs_path, to_fs_path

from .code2vec import Code2VecModel, Suggestion, suggest_for_document
from .models import ModelError, default_models_dir
from .parsing import Document, Position
from .settings import SECTION, Settings

log = logging.getLogger(__name__)

NAME = "pathfusion"
VERSION = "0.1.0"
STATUS_COMMAND = "pathfusion.status"
RENAME_KIND = types.CodeActionKind.RefactorRewrite


@dataclass(frozen=True)
class Snapshot:
    """What a worker thread may see of a document."""

    uri: str
    version: int
    text: str


# -- pure functions run in worker threads ---------------------------------------------------
def suggestion_at(
    snapshot: Snapshot, position: Position, model: Code2VecModel, top_k: int
) -> tuple[Suggestion, types.Range] | None:
    """The suggestions for the function whose name or ``def`` line holds ``position``,
    with the range of its name; None elsewhere, for dunders and without contexts."""
    doc = Document(snapshot.text, uri=snapshot.uri, version=snapshot.version)
    func = doc.function_at(position)
    if func is None:
        return None
    line = func.name_span.start.line + 1
    for suggestion in suggest_for_document(doc, model, top_k=top_k, line=line):
        if suggestion.qualname == func.qualname and suggestion.suggestions:
            span = func.name_span
            return suggestion, types.Range(
                start=types.Position(line=span.start.line, character=span.start.character),
                end=types.Position(line=span.end.line, character=span.end.character),
            )
    return None


def hover_markdown(suggestion: Suggestion, min_confidence: float) -> str | None:
    """The hover text, or None when the current name is the confident top suggestion."""
    if not suggestion.suggestions:
        return None
    top_prob = suggestion.suggestions[0][2]
    if suggestion.current_rank == 1 and top_prob >= min_confidence:
        return None
    lines = [f"**pathfusion** — suggested names for `{suggestion.name}`", ""]
    for rank, (name, label, prob) in enumerate(suggestion.suggestions, start=1):
        mark = " ← current" if label == suggestion.current_label else ""
        lines.append(f"{rank}. `{name}` — {prob * 100:.1f}%{mark}")
    lines.append("")
    if suggestion.current_rank is None:
        lines.append(f"Current name `{suggestion.name}`: not in the top {len(suggestion.suggestions)}.")
    else:
        lines.append(f"Current name `{suggestion.name}`: rank {suggestion.current_rank}.")
    return "\n".join(lines)


def _utf16_to_index(line: str, character: int) -> int:
    """Code point index in ``line`` of a UTF-16 offset (clamped to the line)."""
    units = 0
    for index, char in enumerate(line):
        if units >= character:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(line)


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


_LINE_RE = re.compile(r"[^\n]*\n|[^\n]+\Z")


def _lines(text: str) -> list[str]:
    return _LINE_RE.findall(text)


def _line_position(lines: list[str], index: int) -> types.Position:
    """The position of the start of line ``index`` (the end of the text past the end)."""
    if index < len(lines):
        return types.Position(line=index, character=0)
    if not lines:
        return types.Position(line=0, character=0)
    last = lines[-1]
    if last.endswith("\n"):
        return types.Position(line=len(lines), character=0)
    return types.Position(line=len(lines) - 1, character=_utf16_len(last))


def text_edits(old: str, new: str) -> list[types.TextEdit]:
    """Minimal line-level edits turning ``old`` into ``new`` (non-overlapping, in order)."""
    a, b = _lines(old), _lines(new)
    edits: list[types.TextEdit] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        edits.append(types.TextEdit(
            range=types.Range(start=_line_position(a, i1), end=_line_position(a, i2)),
            new_text="".join(b[j1:j2]),
        ))
    return edits


class RenameRefused(Exception):
    """The rename cannot be computed; the message is the action's disabled reason."""


_JEDI_LOCK = threading.Lock()


def jedi_rename(
    snapshot: Snapshot,
    position: Position,
    new_name: str,
    workspace_root: str | None,
    open_documents: dict[str, tuple[str, int]],
) -> types.WorkspaceEdit:
    """The workspace edit renaming the symbol at ``position`` (jedi: definition and every
    reference in the project).  ``open_documents`` maps the real paths of open documents
    to (text, version)."""
    import jedi

    path = to_fs_path(snapshot.uri) if snapshot.uri.startswith("file:") else None
    root = workspace_root or (os.path.dirname(path) if path else None)
    project = jedi.Project(root) if root else None
    lines = _lines(snapshot.text)
    line_text = lines[position.line] if position.line < len(lines) else ""
    column = _utf16_to_index(line_text.rstrip("\r\n"), position.character)
    try:
        with _JEDI_LOCK:
            script = jedi.Script(code=snapshot.text, path=path, project=project)
            refactoring = script.rename(position.line + 1, column, new_name=new_name)
            changed = {Path(p): c.get_new_code() for p, c in refactoring.get_changed_files().items()}
    except Exception as exc:  # jedi raises RefactoringError and, on odd code, others
        raise RenameRefused(f"jedi cannot rename here: {exc}") from exc
    own = os.path.realpath(path) if path else None
    changes: list[types.TextDocumentEdit] = []
    for file, new_code in sorted(changed.items()):
        real = os.path.realpath(file)
        version: int | None
        if own is not None and real == own:
            uri, old, version = snapshot.uri, snapshot.text, snapshot.version
        else:
            uri = from_fs_path(str(file)) or file.as_uri()
            try:
                old = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise RenameRefused(f"cannot read {file}: {exc}") from exc
            version = None
            if real in open_documents:
                open_text, version = open_documents[real]
                if open_text != old:
                    raise RenameRefused(f"{file.name} has unsaved changes; save it and retry")
        edits = text_edits(old, new_code)
        if edits:
            changes.append(types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                edits=list(edits),
            ))
    if not changes:
        raise RenameRefused("jedi found nothing to rename")
    return types.WorkspaceEdit(document_changes=changes)


# -- the server ------------------------------------------------------------------------------
class PathfusionProtocol(LanguageServerProtocol):
    """Speaks UTF-16 positions only (what :class:`~server.parsing.Document` uses)."""

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        if params.capabilities.general is not None:
            params.capabilities.general.position_encodings = None
        return (yield from super().lsp_initialize(params))


class PathfusionServer(LanguageServer):
    """Documents, settings and the model of one editor session."""

    def __init__(self, models_dir: str | None = None, max_workers: int = 2) -> None:
        super().__init__(NAME, VERSION, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=PathfusionProtocol)
        self.documents: dict[str, Document] = {}
        self.base_settings = Settings(models_dir=models_dir)
        self.settings = self.base_settings
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="pathfusion")
        self.model: Code2VecModel | None = None
        self.model_key: tuple[str, str] | None = None
        self.model_error: str | None = None
        self._model_lock: asyncio.Lock | None = None
        self._reported: set[str] = set()

    # -- messages & settings ---------------------------------------------------------------
    def warn_once(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        if message in self._reported:
            return
        self._reported.add(message)
        log.warning("%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"pathfusion: {message}"))

    def apply_settings(self, data: Any, base: Settings | None = None) -> None:
        self.settings = Settings.from_dict(data, base=base or self.base_settings)
        for warning in self.settings.warnings:
            self.warn_once(warning)

    def supports_configuration(self) -> bool:
        caps = self.client_capabilities.workspace
        return bool(caps is not None and caps.configuration)

    async def pull_settings(self) -> None:
        if not self.supports_configuration():
            return
        try:
            result = await self.workspace_configuration_async(types.ConfigurationParams(
                items=[types.ConfigurationItem(section=SECTION)]))
        except Exception as exc:  # a client error must not stop the server
            log.warning("workspace/configuration failed: %s", exc)
            return
        value = result[0] if result else None
        if value is not None:
            self.apply_settings(value)

    # -- model -------------------------------------------------------------------------------
    def _models_dir(self) -> str:
        return str(Path(self.settings.models_dir).expanduser()) if self.settings.models_dir \
            else str(default_models_dir())

    async def get_model(self) -> Code2VecModel | None:
        """The model for the current settings (loaded off the loop), or None."""
        key = (self._models_dir(), self.settings.device)
        if key == self.model_key:
            return self.model
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        async with self._model_lock:
            if key == self.model_key:
                return self.model
            loop = asyncio.get_running_loop()
            try:
                model: Code2VecModel | None = await loop.run_in_executor(
                    self.executor, lambda: Code2VecModel.load(key[0], device=key[1]))
                error = None
            except ModelError as exc:
                model, error = None, str(exc)
            except Exception as exc:  # onnxruntime and the file system raise their own types
                model, error = None, f"cannot load the models in {key[0]}: {exc}"
            self.model, self.model_key, self.model_error = model, key, error
            if error is not None:
                self.warn_once(f"name suggestions are off: {error}")
            return model

    # -- documents ---------------------------------------------------------------------------
    def snapshot(self, uri: str) -> Snapshot | None:
        doc = self.documents.get(uri)
        if doc is None or len(doc.source) > self.settings.max_file_size:
            return None
        return Snapshot(uri, doc.version, doc.text)

    def is_current(self, snapshot: Snapshot) -> bool:
        doc = self.documents.get(snapshot.uri)
        return doc is not None and doc.version == snapshot.version

    async def suggestion_for(
        self, uri: str, position: types.Position
    ) -> tuple[Snapshot, Suggestion, types.Range] | None:
        """Suggestions at ``position``, computed off the loop; None if the document changed
        meanwhile, or without a model."""
        snapshot = self.snapshot(uri)
        if snapshot is None:
            return None
        model = await self.get_model()
        if model is None:
            return None
        pos = Position(position.line, position.character)
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self.executor, suggestion_at, snapshot, pos, model, self.settings.top_k)
        except ModelError as exc:
            self.warn_once(f"name suggestions failed: {exc}")
            return None
        if found is None or not self.is_current(snapshot):
            return None
        return snapshot, found[0], found[1]

    def status(self) -> dict[str, Any]:
        return {
            "name": NAME,
            "version": VERSION,
            "model_loaded": self.model is not None,
            "model": self.model.info if self.model is not None else None,
            "models_dir": self.model_key[0] if self.model_key else self._models_dir(),
            "model_error": self.model_error,
            "settings": self.settings.to_dict(),
            "documents": [{"uri": uri, "version": doc.version} for uri, doc in sorted(self.documents.items())],
        }


server = PathfusionServer()


# -- lifecycle & settings ----------------------------------------------------------------------
@server.feature(types.INITIALIZE)
def initialize(ls: PathfusionServer, params: types.InitializeParams) -> None:
    ls.apply_settings(params.initialization_options)
    ls.base_settings = ls.settings


@server.feature(types.INITIALIZED)
async def initialized(ls: PathfusionServer, params: types.InitializedParams) -> None:
    await ls.pull_settings()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(ls: PathfusionServer, params: types.DidChangeConfigurationParams) -> None:
    if ls.supports_configuration():
        await ls.pull_settings()
    elif params.settings is not None:
        ls.apply_settings(params.settings)


@server.feature(types.SHUTDOWN)
def shutdown(ls: PathfusionServer, params: None) -> None:
    ls.executor.shutdown(wait=False, cancel_futures=True)


# -- document sync -----------------------------------------------------------------------------
@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: PathfusionServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    ls.documents[item.uri] = Document(item.text, uri=item.uri, version=item.version)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: PathfusionServer, params: types.DidChangeTextDocumentParams) -> None:
    doc = ls.documents.get(params.text_document.uri)
    if doc is None:
        return
    for change in params.content_changes:
        if isinstance(change, types.TextDocumentContentChangePartial):
            start, end = change.range.start, change.range.end
            doc.apply_change(Position(start.line, start.character), Position(end.line, end.character),
                             change.text)
        else:
            doc.replace(change.text)
    doc.version = params.text_document.version


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: PathfusionServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.documents.pop(params.text_document.uri, None)


# -- features ----------------------------------------------------------------------------------
@server.feature(types.TEXT_DOCUMENT_HOVER)
async def hover(ls: PathfusionServer, params: types.HoverParams) -> types.Hover | None:
    found = await ls.suggestion_for(params.text_document.uri, params.position)
    if found is None:
        return None
    _, suggestion, name_range = found
    text = hover_markdown(suggestion, ls.settings.hover_min_confidence)
    if text is None:
        return None
    return types.Hover(
        contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text), range=name_range)


def _wants_rename(only: Sequence[str] | None) -> bool:
    if not only:
        return True
    wanted = [str(getattr(kind, "value", kind)) for kind in only]
    return any(RENAME_KIND.value == kind or RENAME_KIND.value.startswith(f"{kind}.") for kind in wanted)


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(code_action_kinds=[RENAME_KIND], resolve_provider=True),
)
async def code_action(ls: PathfusionServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
    if not _wants_rename(params.context.only):
        return None
    found = await ls.suggestion_for(params.text_document.uri, params.range.start)
    if found is None:
        return None
    snapshot, suggestion, name_range = found
    actions: list[types.CodeAction] = []
    seen = {suggestion.name}
    for new_name, _label, prob in suggestion.suggestions:
        if new_name in seen or not new_name.isidentifier() or keyword.iskeyword(new_name):
            continue
        seen.add(new_name)
        actions.append(types.CodeAction(
            title=f"Rename `{suggestion.name}` → `{new_name}`",
            kind=RENAME_KIND,
            data={"uri": snapshot.uri, "version": snapshot.version, "line": name_range.start.line,
                  "character": name_range.start.character, "new_name": new_name,
                  "probability": round(prob, 6)},
        ))
    return actions


@server.feature(types.CODE_ACTION_RESOLVE)
async def resolve_code_action(ls: PathfusionServer, action: types.CodeAction) -> types.CodeAction:
    data = action.data if isinstance(action.data, dict) else {}
    try:
        uri, version = str(data["uri"]), int(data["version"])
        position = Position(int(data["line"]), int(data["character"]))
        new_name = str(data["new_name"])
    except (KeyError, TypeError, ValueError):
        action.disabled = types.CodeActionDisabled(reason="not a pathfusion rename action")
        return action
    snapshot = ls.snapshot(uri)
    if snapshot is None or snapshot.version != version:
        action.disabled = types.CodeActionDisabled(
            reason="the document changed since this action was offered; ask again")
        return action
    open_documents = {}
    for doc_uri, doc in ls.documents.items():
        if doc_uri.startswith("file:"):
            open_documents[os.path.realpath(to_fs_path(doc_uri) or "")] = (doc.text, doc.version)
    root = ls.workspace.root_path
    loop = asyncio.get_running_loop()
    try:
        edit = await loop.run_in_executor(
            ls.executor, jedi_rename, snapshot, position, new_name, root, open_documents)
    except RenameRefused as exc:
        action.disabled = types.CodeActionDisabled(reason=str(exc))
        return action
    if not ls.is_current(snapshot):
        action.disabled = types.CodeActionDisabled(
            reason="the document changed while the rename was computed; ask again")
        return action
    action.edit = edit
    return action


@server.command(STATUS_COMMAND)
async def status_command(ls: PathfusionServer, *args: Any) -> dict[str, Any]:
    await ls.get_model()
    return ls.status()


# -- entry -------------------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> int:
    """Run the server until the client disconnects (``exit``)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="pathfusion %(levelname)s %(name)s: %(message)s")
    if args.models is not None:
        server.base_settings = server.settings = Settings(models_dir=str(args.models))
    if args.tcp is not None:
        server.start_tcp(*args.tcp)
    else:
        server.start_io()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import add_serve_arguments

    parser = argparse.ArgumentParser(prog="pathfusion serve", description="the pathfusion language server")
    add_serve_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
