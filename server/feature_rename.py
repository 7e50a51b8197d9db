"""Rename code actions (docs/design.md §8, "Code actions"): one ``refactor.rewrite`` action
per suggested name, whose workspace edit is computed only when the client resolves it.

Why resolved lazily: a rename is a jedi refactoring over the workspace (definition and
every reference), far too slow to compute for every offered name.  It runs on its own
thread (never the pool's, so hovers and searches go on meanwhile), bounded by
:data:`RENAME_TIMEOUT_S`, on the snapshot of the version the action was offered for; a
result for a version that is no longer the document's is refused.  The name is checked
against the document's bindings first, jedi renames over the workspace's mirror
(:mod:`pathfusion.server.rename_files`), and the other files it edits are checked last
(:mod:`pathfusion.server.rename_safety`).
"""

from __future__ import annotations

import asyncio
import keyword
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.uris import from_fs_path

from .base_classes import origin_of
from .lsp_convert import code_point_column, text_edits, uri_path
from .lsp_worker import Snapshot, WorkerDocuments, WorkersClosed, locate_function
from .parsing import Position
from .rename_files import MIRRORS, RenameFiles, RenameFilesError, read_text, regular_file_problem
from .rename_safety import clashes, compiles, identifiers, name_problem
from .settings import Settings
from .workspace import is_inside

if TYPE_CHECKING:
    from .lsp_server import PathfusionServer

RENAME_KIND = types.CodeActionKind.RefactorRewrite
RENAME_TIMEOUT_S = 20.0
"""How long a code action resolve waits for its rename.  Why a bound: jedi runs on its own
thread (never the pool's, so hovers and searches go on meanwhile), and a rename that hangs
all the same — a file swapped for a FIFO after it was checked — must still be answered."""
_JEDI_LOCK = threading.Lock()


class RenameRefused(Exception):
    """The rename cannot be computed; the message is the action's disabled reason."""


# -- the handlers' work -----------------------------------------------------------------------
def wants_rename(only: Sequence[str] | None) -> bool:
    """Whether a ``codeAction`` request limited to the kinds ``only`` asks for renames."""
    if not only:
        return True
    wanted = [str(getattr(kind, "value", kind)) for kind in only]
    return any(RENAME_KIND.value == kind or RENAME_KIND.value.startswith(f"{kind}.") for kind in wanted)


async def code_actions(ls: PathfusionServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
    """One unresolved rename action per suggested name of the function at the range's start."""
    if not wants_rename(params.context.only):
        return None
    found = await ls.suggestion_for(params.text_document.uri, params.range.start)
    if found is None:
        return None
    snapshot, suggestion, name_range = found
    actions: list[types.CodeAction] = []
    seen = {suggestion.name}
    for new_name, _label, prob in suggestion.worth_offering():
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


async def resolve(ls: PathfusionServer, action: types.CodeAction) -> types.CodeAction:
    """``action`` with its workspace edit, or disabled with the reason there is none."""
    data = action.data if isinstance(action.data, dict) else {}
    try:
        uri, version = str(data["uri"]), int(data["version"])
        position = Position(int(data["line"]), int(data["character"]))
        new_name = str(data["new_name"])
    except (KeyError, TypeError, ValueError):
        return disabled(action, "not a pathfusion rename action")
    snapshot = ls.snapshot(uri)
    if snapshot is None or snapshot.version != version:
        return disabled(action, "the document changed since this action was offered; ask again")
    open_documents = {}
    for doc_uri, doc in ls.documents.items():
        if doc_uri.startswith("file:"):
            open_documents[os.path.realpath(uri_path(doc_uri) or "")] = (doc.text, doc.version)
    try:
        edit = await ls.on_snapshot(
            snapshot, compute_rename, position, new_name, ls.workspace_roots(), ls.settings, open_documents,
            ls.documents_for_workers, executor=ls.rename_executor, timeout=RENAME_TIMEOUT_S)
    except WorkersClosed:
        return disabled(action, "the server is shutting down")
    except RenameRefused as exc:
        return disabled(action, str(exc))
    except asyncio.TimeoutError:
        return disabled(action, f"the rename took longer than {RENAME_TIMEOUT_S:.0f} s; try again later")
    if edit is None:
        return disabled(action, "the document changed while the rename was computed; ask again")
    action.edit = edit
    return action


def disabled(action: types.CodeAction, reason: str) -> types.CodeAction:
    action.disabled = types.CodeActionDisabled(reason=reason)
    return action


# -- the rename thread ------------------------------------------------------------------------
def rename_root(path: str | None, roots: Sequence[str]) -> str | None:
    """The folder a rename of the file ``path`` may touch: the innermost workspace folder
    that holds it, else the file's own directory (None for a document without a path)."""
    if path is None:
        return None
    absolute = os.path.abspath(path)
    inside = [root for root in roots if is_inside(absolute, os.path.abspath(root))]
    return max(inside, key=len) if inside else os.path.dirname(absolute)


def compute_rename(
    snapshot: Snapshot,
    position: Position,
    new_name: str,
    roots: Sequence[str],
    settings: Settings,
    open_documents: dict[str, tuple[str, int]],
    documents: WorkerDocuments | None = None,
) -> types.WorkspaceEdit:
    """The checked workspace edit of a rename code action (the rename thread).

    ``new_name`` is checked against the document's bindings first (the action may come from
    an older offer, or from a client that made it up: :mod:`pathfusion.server.rename_safety`), then
    jedi renames over the workspace's mirror (:mod:`pathfusion.server.rename_files`), and the other
    files it edits are checked for the name last."""
    problem = name_problem(new_name)
    if problem is not None:
        raise RenameRefused(f"cannot rename to `{new_name}`: it is {problem}")
    _, func = locate_function(snapshot, position, documents)
    if func is not None and new_name != func.name:
        reason = clashes(snapshot.text, func, [new_name], origin_of(uri_path(snapshot.uri))).get(new_name)
        if reason is not None:
            raise RenameRefused(f"cannot rename to `{new_name}`: it is {reason}")
    root = rename_root(uri_path(snapshot.uri), roots)
    try:
        files = MIRRORS.prepare(root, settings.exclude, settings.max_file_size) if root is not None \
            else MIRRORS.empty()
    except RenameFilesError as exc:
        raise RenameRefused(str(exc)) from exc
    return jedi_rename(snapshot, position, new_name, files, open_documents, settings.max_file_size)


def jedi_rename(
    snapshot: Snapshot,
    position: Position,
    new_name: str,
    files: RenameFiles,
    open_documents: dict[str, tuple[str, int]],
    max_file_size: int,
) -> types.WorkspaceEdit:
    """The workspace edit renaming the symbol at ``position`` (jedi: definition and every
    reference in the files of ``files``, which is all jedi may read).  ``open_documents``
    maps the real paths of open documents to (text, version)."""
    import jedi

    script_path = files.mirror_path(uri_path(snapshot.uri))
    column = code_point_column(snapshot.text, position)
    try:
        with _JEDI_LOCK:
            script = jedi.Script(code=snapshot.text, path=script_path, project=files.project(script_path))
            refactoring = script.rename(position.line + 1, column, new_name=new_name)
            changed = [(p, c.get_new_code()) for p, c in refactoring.get_changed_files().items()]
    except Exception as exc:  # jedi raises RefactoringError and, on odd code, others
        raise RenameRefused(f"jedi cannot rename here: {exc}") from exc
    real_root = os.path.realpath(files.root)
    changes: list[types.TextDocumentEdit] = []
    for file, new_code in sorted(changed, key=lambda item: str(item[0])):
        version: int | None
        if file is None or (script_path is not None and (
                os.path.abspath(file) == str(script_path)
                or os.path.realpath(file) == os.path.realpath(script_path))):
            uri, old, version, name = snapshot.uri, snapshot.text, snapshot.version, None
        else:
            target = files.workspace_path(file)
            if target is None:
                raise RenameRefused(f"the rename would edit {file}, which is not a file of the workspace")
            problem = regular_file_problem(target, real_root, max_file_size)
            if problem is not None:
                raise RenameRefused(f"the rename would edit {target.name}: {problem}")
            try:
                old = read_text(target, max_file_size)
            except (OSError, UnicodeDecodeError) as exc:
                raise RenameRefused(f"cannot read {target.name}: {exc}") from exc
            uri = from_fs_path(str(target)) or target.as_uri()
            name = os.path.relpath(target, files.root)
            version = None
            real = os.path.realpath(target)
            if real in open_documents:
                open_text, version = open_documents[real]
                if open_text != old:
                    raise RenameRefused(f"{target.name} has unsaved changes; save it and retry")
            if new_name in identifiers(old):  # what the rename does there: see rename_safety
                raise RenameRefused(f"cannot rename to `{new_name}`: it is already used in {name}, "
                                    "which the rename edits")
        if compiles(old) and not compiles(new_code):
            raise RenameRefused(f"the renamed {name or 'document'} would not compile")
        edits = text_edits(old, new_code)
        if edits:
            changes.append(types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                edits=list(edits),
            ))
    if not changes:
        raise RenameRefused("jedi found nothing to rename")
    return types.WorkspaceEdit(document_changes=changes)
