"""Name suggestions (docs/design.md §8 "Hover"): the hover over a function's name or
``def`` line, the suggestions that the rename code actions offer, and their prefetch.

A hover makes one worker hop (:func:`hover_at` through
:func:`~pathfusion.server.lsp_worker.run_on_snapshot`): the function at the cursor is found once, the
model is asked about that function only, and — when its folder's index is ready — the
index for the functions most similar to it; the loop then renders what came back, or
drops it when the document changed meanwhile.

Why more candidates than ``topK`` are asked of the model: names that the rename would make
clash with a binding of the module are left out (:mod:`pathfusion.server.rename_safety`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lsprotocol import types

from .base_classes import origin_of
from .code2vec import Predictor, Suggestion, is_dunder, suggest_for_document
from .feature_search import similar_finder, similar_markdown
from .fusion import FusionPredictor
from .index import SearchResult
from .lsp_convert import code_span, span_range, to_position, uri_path
from .lsp_worker import Snapshot, SnapshotDocument, WorkerDocuments, locate_function
from .models import ModelError
from .name_generator import NameGenerator
from .overloads import listed_functions, stand_in_for
from .parsing import Document, FunctionInfo, Position
from .paths import mask_source, name_label
from .rename_safety import candidate_count, safe_suggestion, start_module_names

if TYPE_CHECKING:
    from .lsp_server import PathfusionServer

SUBCLASS_WAIT_S = 0.01
"""How long a hover waits for the subclasses of a method's class in the project's other files
(:mod:`pathfusion.server.subclasses`: read in the background from the file's first analysis,
then cached; a check takes 0.33 ms at p95 in transformers' 2,912 files).  Not read by then: the
method is offered nothing on this hover.  Why 10 ms: a warm hover's p95 is ≈ 10 ms of its
30 ms budget."""
PREFETCH_LIMIT = 500
"""Functions of one opened document whose naming embeddings are computed ahead of hovers."""
PREFETCH_BATCH = 8
PREFETCH_SETTLE_S = 0.05
"""How long an opened document's prefetch waits before its first function: an editor sends
the hover that comes with opening a file (a click on a definition, a file opened under the
mouse) right after ``didOpen``, and a prefetch already running would share the two cores
with it (:mod:`pathfusion.server.foreground` makes later prefetch steps wait)."""


# -- worker thread ----------------------------------------------------------------------------
def suggest_for(doc: SnapshotDocument, func: FunctionInfo, model: Predictor, top_k: int) -> Suggestion | None:
    """The safe suggestions for ``func`` of ``doc`` (for an ``@overload`` stub: its
    implementation's, :mod:`pathfusion.server.overloads`); None for dunders, without contexts
    and when every candidate was left out (unless the class hierarchy keeps the name: then
    the suggestion says why, ``kept``)."""
    origin = origin_of(uri_path(doc.uri))  # where the module's imports are read from (base_classes)
    start_module_names(doc.text, origin)  # the rename rules' analysis, beside the model (rename_safety)
    with doc.lock:
        func = stand_in_for(func, doc.functions())
        line = func.name_span.start.line + 1
        suggestions = suggest_for_document(doc, model, top_k=candidate_count(top_k), line=line)
    for suggestion in suggestions:
        if suggestion.qualname == func.qualname:
            suggestion = safe_suggestion(suggestion, doc.text, func, top_k, origin, SUBCLASS_WAIT_S)
        if suggestion.qualname == func.qualname and (suggestion.suggestions or suggestion.kept):
            return suggestion
    return None


def suggestion_at(
    snapshot: Snapshot, position: Position, model: Predictor, top_k: int,
    documents: WorkerDocuments | None = None,
) -> tuple[Suggestion, types.Range] | None:
    """The suggestions for the function whose name or ``def`` line holds ``position``,
    with the range of its name; None elsewhere (and as :func:`suggest_for`)."""
    doc, func = locate_function(snapshot, position, documents)
    if func is None:
        return None
    suggestion = suggest_for(doc, func, model, top_k)
    return (suggestion, span_range(func.name_span)) if suggestion is not None else None


@dataclass(frozen=True)
class HoverAnswer:
    """What the hover's worker hop found about the function at the cursor."""

    name_range: types.Range
    suggestion: Suggestion | None
    similar: list[SearchResult]
    model_error: str | None = None


def hover_at(
    snapshot: Snapshot, position: Position, model: Predictor | None, top_k: int,
    similar: Callable[[str], list[SearchResult]] | None, documents: WorkerDocuments | None = None,
) -> HoverAnswer | None:
    """The suggestions (with ``model``) and the similar functions (with ``similar``) of the
    function whose name or ``def`` line holds ``position``; None elsewhere."""
    doc, func = locate_function(snapshot, position, documents)
    if func is None:
        return None
    suggestion, error = None, None
    if model is not None:
        try:
            suggestion = suggest_for(doc, func, model, top_k)
        except ModelError as exc:
            error = str(exc)
    found = similar(func.qualname) if similar is not None else []
    return HoverAnswer(span_range(func.name_span), suggestion, found, error)


def naming_sources(text: str) -> list[str]:
    """The masked sources (what a fusion's LLM sees) of the functions of ``text`` that get
    suggestions (dunder methods never do)."""
    return [source for source, _ in naming_work(text)]


def naming_work(text: str) -> list[tuple[str, str]]:
    """(masked source, current name as a label) of the functions of ``text`` that get
    suggestions — exactly what a hover asks the naming model for."""
    return [(mask_source(f.source, f.name), name_label(f.name)) for f in listed_functions(Document(text).functions())
            if not is_dunder(f.name)]


# -- the loop ---------------------------------------------------------------------------------
def _percent(probability: float) -> str:
    return f"{probability * 100:.1f}%" if probability >= 0.001 else "< 0.1%"


def hover_markdown(suggestion: Suggestion, min_confidence: float) -> str | None:
    """The hover text, or None when there is nothing better to say than the current name:
    for a model that scores the current name, when it offers no name — the current one likely
    enough, or no name both more likely and likely enough (:meth:`Suggestion.worth_offering`);
    else when the current name is the top suggestion with at least ``min_confidence``
    (``pathfusion.hoverMinConfidence``).  A name that the
    class hierarchy keeps gets one line saying why, instead of names that cannot be given."""
    if suggestion.kept is not None:
        return f"**pathfusion** — {code_span(suggestion.name)} keeps its name: {suggestion.kept}."
    if not suggestion.suggestions:
        return None
    top_prob = suggestion.suggestions[0][2]
    if suggestion.current is not None:
        if not suggestion.worth_offering():
            return None
    elif suggestion.current_rank == 1 and top_prob >= min_confidence:
        return None
    current = code_span(suggestion.name)
    lines = [f"**pathfusion** — suggested names for {current}", ""]
    for rank, (name, label, prob) in enumerate(suggestion.suggestions, start=1):
        mark = " ← current" if label == suggestion.current_label else ""
        lines.append(f"{rank}. {code_span(name)} — {prob * 100:.1f}%{mark}")
    lines.append("")
    if suggestion.current_rank is None:
        lines.append(f"Current name {current}: not in the top {len(suggestion.suggestions)}.")
    else:
        lines.append(f"Current name {current}: rank {suggestion.current_rank}.")
    if suggestion.current is not None:
        lines[-1] = lines[-1][:-1] + f" ({_percent(suggestion.current.shown)})."
    return "\n".join(lines)


async def hover(ls: PathfusionServer, params: types.HoverParams) -> types.Hover | None:
    """Name suggestions, then (when the index is ready) the most similar functions."""
    snapshot = ls.snapshot(params.text_document.uri)
    if snapshot is None:
        return None
    model = await ls.get_model()
    answer = await ls.on_snapshot(snapshot, hover_at, to_position(params.position), model, ls.settings.top_k,
                                  similar_finder(ls.indexes, snapshot.uri), ls.documents_for_workers)
    if answer is None:
        return None
    if answer.model_error is not None:
        ls.warn_once(f"name suggestions failed: {answer.model_error}")
    parts: list[str] = []
    text = hover_markdown(answer.suggestion, ls.settings.hover_min_confidence) if answer.suggestion is not None else None
    if text is not None:
        parts.append(text)
    if answer.similar:
        parts.append(similar_markdown(answer.similar))
    if not parts:
        return None
    return types.Hover(contents=types.MarkupContent(
        kind=types.MarkupKind.Markdown, value="\n\n---\n\n".join(parts)), range=answer.name_range)


async def suggestion_for(
    ls: PathfusionServer, uri: str, position: types.Position
) -> tuple[Snapshot, Suggestion, types.Range] | None:
    """Suggestions at ``position``, computed off the loop; None if the document changed
    meanwhile, or without a model."""
    snapshot = ls.snapshot(uri)
    if snapshot is None:
        return None
    model = await ls.get_model()
    if model is None:
        return None
    try:
        found = await ls.on_snapshot(snapshot, suggestion_at, to_position(position), model, ls.settings.top_k,
                                     ls.documents_for_workers)
    except ModelError as exc:
        ls.warn_once(f"name suggestions failed: {exc}")
        return None
    if found is None:
        return None
    return snapshot, found[0], found[1]


async def prefetch_naming(ls: PathfusionServer, uri: str) -> None:
    """Compute ahead what the hovers of an opened document's functions will need: the
    naming head's names (cached per function), or a fusion variant's embeddings of the
    masked sources (code2vec needs nothing ahead).  Batches of :data:`PREFETCH_BATCH` on
    the shared pool leave the other worker to hovers meanwhile."""
    snapshot = ls.snapshot(uri)
    model = await ls.get_model()
    if snapshot is None or not isinstance(model, FusionPredictor | NameGenerator):
        return
    await asyncio.sleep(PREFETCH_SETTLE_S)
    await ls.foreground.idle()
    loop = asyncio.get_running_loop()
    work = await loop.run_in_executor(ls.executor, naming_work, snapshot.text)
    count = candidate_count(ls.settings.top_k)
    # One function per task for the naming head (≈ 50 ms each): a hover queued behind the
    # prefetch waits for one function, not for eight.
    step = 1 if isinstance(model, NameGenerator) else PREFETCH_BATCH
    for start in range(0, min(len(work), PREFETCH_LIMIT), step):
        await ls.foreground.idle()  # a hover or code action first
        if ls.closing.is_set() or not ls.is_current(snapshot):
            return
        batch = work[start:start + step]
        sources = [source for source, _ in batch]
        if isinstance(model, NameGenerator):
            await loop.run_in_executor(ls.executor, model.prefetch, sources, [label for _, label in batch], count)
        else:
            await loop.run_in_executor(ls.executor, model.prefetch, sources)
