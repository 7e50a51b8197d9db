"""code2vec at run time: ``models/code2vec/code2vec.onnx`` in onnxruntime (no torch).

Why functions with no path context get no suggestion: the exported graph gives such a row a
zero code vector and therefore a *uniform* distribution over the names, which is not a
prediction.  :meth:`Code2VecModel.predict` returns an empty list for them (and, as a
safeguard, for any row whose output is not finite); :meth:`Code2VecModel.code_vectors`
returns zeros.

``<PAD>`` and ``<UNK>`` are never suggested: they are dropped from the graph's top-k before
the first ``top_k`` names are kept (the graph returns more names than are usually asked
for, see the manifest's ``top_k``).  Probabilities are the model's softmax, not
renormalised, so a list sums to at most 1.

Dunder methods (``__init__``…) get no suggestions: Python fixes their names and the corpus
leaves them out of the naming task.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .context_vocab import ContextVocab
from .models import ModelError, load_manifest, model_entry, model_file, providers
from .onnx_session import create_session
from .overloads import listed_functions, stand_ins
from .parsing import Document, FunctionInfo
from .paths import (
    MAX_CONTEXTS,
    Context,
    context_space,
    mask_source,
    name_label,
    render_name,
    sample_indices,
)

BATCH_SIZE = 64
SPECIAL_TARGETS = frozenset({0, 1})
"""``<PAD>`` and ``<UNK>``."""

ContextLike = Context | tuple[str, str, str] | str
"""A path context: a :class:`Context`, any (start, path, end) triple, or ``"tok,path,tok"``."""


def read_vocab_text(path: Path) -> str:
    """A vocabulary file's JSON text; ``*.gz`` files are gzip-compressed (the 30,000 path
    strings shrink 15×, which keeps ``models/`` inside its size budget)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8")


class Code2VecModel:
    """The exported code2vec graph with its vocabularies."""

    def __init__(
        self,
        session: Any,
        tokens: list[str],
        paths: list[str],
        targets: list[str],
        entry: dict[str, Any],
        models_dir: Path,
        extractor_version: str,
    ) -> None:
        self.session = session
        self.targets = targets
        self.entry = entry
        self.models_dir = models_dir
        self.extractor_version = extractor_version
        self.graph_top_k = int(entry.get("top_k", 10))
        self.max_contexts = int(entry.get("max_contexts", MAX_CONTEXTS))
        # code2vec's lists start with <PAD> (id 0) and <UNK> (id 1), the ids ContextVocab gives too
        self.vocab = ContextVocab(tuple(tokens[2:]), tuple(paths[2:]), self.max_contexts)
        self.code_dim = int(entry.get("dims", {}).get("code", 384))

    @classmethod
    def load(
        cls, models_dir: Path | str | None = None, device: str = "auto", *, threads: int = 1
    ) -> Code2VecModel:
        """Verify the manifest of ``models_dir`` (default: :func:`default_models_dir`) and
        open the graph on ``device`` (``auto``, ``cpu`` or ``cuda``)."""

        from .models import default_models_dir

        folder = Path(models_dir) if models_dir is not None else default_models_dir()
        manifest = load_manifest(folder, models=("code2vec",))
        entry = model_entry(manifest, "code2vec", folder)
        vocab = entry.get("vocab") or {k: f"code2vec/{k}.json" for k in ("tokens", "paths", "targets")}
        lists: dict[str, list[str]] = {}
        for kind in ("tokens", "paths", "targets"):
            path = model_file(folder, vocab[kind])
            try:
                items = json.loads(read_vocab_text(path))
            except (OSError, ValueError) as exc:
                raise ModelError(f"{path}: unreadable vocabulary ({exc}); re-export the models") from exc
            if not isinstance(items, list) or len(items) < 2 or not all(isinstance(x, str) for x in items):
                raise ModelError(f"{path} is not a vocabulary (a JSON list of strings); re-export the models")
            expected = entry.get("vocab_sizes", {}).get(kind)
            if expected is not None and expected != len(items):
                raise ModelError(f"{path} has {len(items)} entries, the manifest says {expected}; "
                                 f"re-export the models")
            lists[kind] = items
        onnx_path = model_file(folder, entry.get("onnx", "code2vec/code2vec.onnx"))
        session = create_session(onnx_path, providers(device), threads, fix="re-export the models")
        names = {i.name for i in session.get_inputs()}
        if names != {"starts", "paths", "ends", "mask"}:
            raise ModelError(f"{onnx_path} has inputs {sorted(names)}, expected starts, paths, ends, mask")
        return cls(session, lists["tokens"], lists["paths"], lists["targets"], entry, folder,
                   str(manifest["extractor_version"]))

    @property
    def tokens(self) -> Mapping[str, int]:
        """Each known token's id (``<PAD>`` 0 and ``<UNK>`` 1 aside)."""
        return self.vocab.token_ids

    @property
    def paths(self) -> Mapping[str, int]:
        """Each known path's id."""
        return self.vocab.path_ids

    @property
    def info(self) -> dict[str, Any]:
        """What the CLI and the server report about the model."""
        onnx_name = self.entry.get("onnx", "code2vec/code2vec.onnx")
        return {
            "name": "code2vec",
            "extractor_version": self.extractor_version,
            "sha256": self.entry.get("files", {}).get(onnx_name),
            "vocab_sizes": {"tokens": self.vocab.table_sizes()[0], "paths": self.vocab.table_sizes()[1],
                            "targets": len(self.targets)},
            "providers": list(self.session.get_providers()),
        }

    # -- encoding -----------------------------------------------------------------------
    def _ids(self, contexts: Sequence[ContextLike]) -> np.ndarray:
        if len(contexts) > self.max_contexts:
            contexts = [contexts[i] for i in sample_indices(len(contexts), self.max_contexts)]
        return self.vocab.encode(contexts, np.int64)

    def encode(self, functions: Sequence[Sequence[ContextLike]]) -> dict[str, np.ndarray]:
        """The graph's feeds for ``functions``: ids padded to the longest (at least 1)
        with 0, unknown items → 1 (``<UNK>``), ``mask`` 1 on real contexts."""
        encoded = [self._ids(contexts) for contexts in functions]
        width = max([1, *(len(rows) for rows in encoded)])
        ids = np.zeros((len(encoded), width, 3), dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.float32)
        for row, rows in enumerate(encoded):
            ids[row, : len(rows)] = rows
            mask[row, : len(rows)] = 1.0
        return {"starts": ids[..., 0].copy(), "paths": ids[..., 1].copy(), "ends": ids[..., 2].copy(),
                "mask": mask}

    def _run(
        self, functions: Sequence[Sequence[ContextLike]], outputs: list[str]
    ) -> Iterator[tuple[int, list[np.ndarray], np.ndarray]]:
        """(offset, outputs, mask) of each batch of at most :data:`BATCH_SIZE` functions."""
        for offset in range(0, len(functions), BATCH_SIZE):
            feeds = self.encode(functions[offset : offset + BATCH_SIZE])
            try:
                result = self.session.run(outputs, feeds)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ModelError(f"code2vec inference failed: {exc}") from exc
            yield offset, result, feeds["mask"]

    # -- outputs ------------------------------------------------------------------------
    def predict(
        self, functions: Sequence[Sequence[ContextLike]], top_k: int = 5,
        sources: Sequence[str] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """For each function, up to ``top_k`` (label, probability), most probable first.
        (``sources`` is part of the :class:`Predictor` interface; code2vec needs only paths.)

        ``top_k`` is capped by the graph's own k (the manifest's ``top_k``); a function
        without contexts gets ``[]``.
        """
        out: list[list[tuple[str, float]]] = []
        for _, (ids, probs), mask in self._run(functions, ["top_ids", "top_probs"]):
            for row in range(len(ids)):
                if not mask[row].any() or not np.all(np.isfinite(probs[row])):
                    out.append([])
                    continue
                names = [(self.targets[int(i)], float(p)) for i, p in zip(ids[row], probs[row], strict=True)
                         if int(i) not in SPECIAL_TARGETS and 0 <= int(i) < len(self.targets)]
                out.append(names[: max(0, top_k)])
        return out

    def code_vectors(self, functions: Sequence[Sequence[ContextLike]]) -> np.ndarray:
        """float32 [N, code dim]; zeros for a function without contexts."""
        parts: list[np.ndarray] = []
        for _, (code,), mask in self._run(functions, ["code_vector"]):
            code = np.asarray(code, dtype=np.float32)
            code[~mask.any(axis=1)] = 0.0
            code[~np.all(np.isfinite(code), axis=1)] = 0.0
            parts.append(code)
        if not parts:
            return np.zeros((0, self.code_dim), dtype=np.float32)
        return np.concatenate(parts)


class Predictor(Protocol):
    """What suggests names: code2vec itself, or a fusion variant
    (:class:`pathfusion.server.fusion.FusionPredictor`), which also needs the masked sources."""

    def predict(
        self, functions: Sequence[Sequence[ContextLike]], top_k: int = 5,
        sources: Sequence[str] | None = None,
    ) -> list[list[tuple[str, float]]]: ...


UNLIKELY_CURRENT_NAME = -5.0
"""A model that scores the current name suggests another only when the current name is
unlikely: its mean log-probability per wordpiece below this (a geometric-mean wordpiece
probability under e^-5 ≈ 0.7 %); on validation, with ``pathfusion-namer-attention-1``, 13 % of
real names and 87 % of wrong ones (another function's name) fall below it (−4.5 for the
previous head).  Per wordpiece, so that a long precise name is not held
against a short common one.  Chosen on validation, maximising (wrong names caught − good
names flagged): ``python -m pathfusion.model_export.naming_policy`` (docs/results.md)."""

LEAST_OFFERED_CONFIDENCE = 0.05
"""A name is offered (listed as the reason for a hover, or as a rename action) only with at
least this calibrated probability (:mod:`pathfusion.server.name_confidence`).  Why: once the
current name is unlikely, every beam name more likely than it used to be offered — `onerror`
→ `q` at 0.3 %, `_copyxattr` → `_call` at 2.9 % — noise a user learns to ignore, and renames
nobody should take.  Chosen on validation (``python -m pathfusion.model_export.naming_policy``,
docs/results.md): the smallest floor at which the name offered for a wrong current name (another
function's) is helpful — subtoken F1 ≥ 0.5 with the real name — at least half the time; with
``pathfusion-namer-attention-g128`` it halves the suggestions shown for good names (12 % → 6 %)
and keeps 84 % of the helpful ones."""


def names_above(suggestions: Sequence[tuple[str, str, float]], current_label: str, current: float,
                least: float = LEAST_OFFERED_CONFIDENCE) -> list[tuple[str, str, float]]:
    """Of (name, label, calibrated probability) ``suggestions``, those offered in place of a
    flagged current name: another name, more likely than it (``current``, on the same scale),
    and at least ``least`` likely itself.  One rule for the editor
    (:meth:`Suggestion.worth_offering`) and for what ``naming_policy`` measures of it."""
    return [s for s in suggestions if s[1] != current_label and s[2] > current and s[2] >= least]


@dataclass(frozen=True)
class CurrentName:
    """How likely the model finds the name a function has now."""

    probability: float
    """The model's own probability of the name."""
    wordpieces: int
    """Wordpieces scored, the end of the name included."""
    confidence: float | None = None
    """Its calibrated probability, on the scale of the suggestions beside it
    (:mod:`pathfusion.server.name_confidence`); None where the model's own is that scale."""

    @property
    def shown(self) -> float:
        """The number to compare with the suggestions' and to show beside them."""
        return self.probability if self.confidence is None else self.confidence

    @property
    def per_wordpiece(self) -> float:
        """Mean log-probability per wordpiece."""
        return math.log(max(self.probability, 1e-300)) / max(1, self.wordpieces)


@runtime_checkable
class ScoresCurrentName(Protocol):
    """A predictor that also scores the name a function has now (the generative head,
    :class:`pathfusion.server.name_generator.NameGenerator`), in the same pass."""

    def predict_with_current(self, sources: Sequence[str], current: Sequence[str], top_k: int = 5
                             ) -> tuple[list[list[tuple[str, float]]], list[CurrentName | None]]: ...


@dataclass
class Suggestion:
    """Name suggestions for one function."""

    qualname: str
    name: str
    line: int
    """1-based line of the definition (its first decorator when decorated)."""
    current_label: str
    suggestions: list[tuple[str, str, float]] = field(default_factory=list)
    """(rendered name, label, probability), most probable first."""
    current_rank: int | None = None
    """1-based rank of ``current_label`` among the suggestions, else None."""
    contexts: int = 0
    current: CurrentName | None = None
    """How likely the model finds the current name, where it can score any name (the
    generative head); None for a closed-vocabulary model."""
    kept: str | None = None
    """Why the name stays whatever the model prefers (its class hierarchy fixes it:
    :func:`pathfusion.server.rename_safety.safe_suggestion`); None otherwise."""

    def worth_offering(self, floor: float = UNLIKELY_CURRENT_NAME,
                       least: float = LEAST_OFFERED_CONFIDENCE) -> list[tuple[str, str, float]]:
        """The suggestions to offer: all of them, for a model that cannot score the current
        name; else none while the current name is likely enough (per wordpiece at least
        ``floor``, :data:`UNLIKELY_CURRENT_NAME`), and otherwise those more likely than it
        with a calibrated probability of at least ``least`` (:data:`LEAST_OFFERED_CONFIDENCE`)."""
        if self.current is None:
            return list(self.suggestions)
        if self.current.per_wordpiece >= floor:
            return []
        return names_above(self.suggestions, self.current_label, self.current.shown, least)

    def to_json(self) -> dict[str, Any]:
        return {
            "qualname": self.qualname,
            "name": self.name,
            "line": self.line,
            "label": self.current_label,
            "contexts": self.contexts,
            "suggestions": [{"name": name, "label": label, "probability": round(prob, 6)}
                            for name, label, prob in self.suggestions],
            "current_rank": self.current_rank,
            "current_probability": None if self.current is None else round(self.current.shown, 9),
        }


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def functions_at(doc: Document, line: int | None = None) -> list[FunctionInfo]:
    """The functions of ``doc`` that get names, or only the one that the innermost function
    enclosing 1-based ``line`` stands for (an ``@overload`` stub: its implementation,
    :mod:`pathfusion.server.overloads`)."""
    functions = doc.functions()
    if line is None:
        return listed_functions(functions)
    row = line - 1
    return [stand_in for f, stand_in in zip(functions, stand_ins(functions), strict=True)
            if f.span.start.line <= row <= f.span.end.line][-1:]


def suggest_for_document(
    doc: Document, model: Predictor, top_k: int = 5, line: int | None = None
) -> list[Suggestion]:
    """Suggestions for every function of ``doc`` (or the one enclosing ``line``, 1-based),
    dunder methods excepted, in source order."""
    functions = [f for f in functions_at(doc, line) if not is_dunder(f.name)]
    contexts = [context_space(f.node, doc.source, f.name).sample(MAX_CONTEXTS) for f in functions]
    sources = [mask_source(f.source, f.name) for f in functions]
    labels_now = [name_label(f.name) for f in functions]
    current: list[CurrentName | None] = [None] * len(functions)
    if not functions:
        predictions: list[list[tuple[str, float]]] = []
    elif isinstance(model, ScoresCurrentName):
        predictions, current = model.predict_with_current(sources, labels_now, top_k=top_k)
    else:
        predictions = model.predict(contexts, top_k=top_k, sources=sources)
    result: list[Suggestion] = []
    for func, ctx, predicted, probability in zip(functions, contexts, predictions, current, strict=True):
        label = name_label(func.name)
        labels = [lab for lab, _ in predicted]
        result.append(Suggestion(
            qualname=func.qualname,
            name=func.name,
            line=func.span.start.line + 1,
            current_label=label,
            suggestions=[(render_name(lab, func.name), lab, prob) for lab, prob in predicted],
            current_rank=labels.index(label) + 1 if label in labels else None,
            contexts=len(ctx),
            current=probability,
        ))
    return result
