"""What turns functions and queries into the vectors the workspace index searches.

Why apart from the index (:mod:`pathfusion.server.index`): the index relies on nothing but the
:class:`SearchModel` protocol, so it neither knows nor cares whether a vector comes from the
LLM embedder alone (:class:`EmbedderSearchModel`) or from a fusion of it with code2vec
(:class:`pathfusion.server.fusion.FusionRuntime`).  Which one a setting means is decided in one place,
:meth:`pathfusion.server.runtime.ModelHub.search_model`, which the server and the CLI both use, so that
they index and query in the same space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .embedder import Embedder
from .parsing import FunctionInfo


@runtime_checkable
class SearchModel(Protocol):
    """What turns functions and queries into the vectors the index searches.

    Why a protocol of its own (not :class:`~pathfusion.server.embedder.Embedder`): a fusion model
    encodes a function from more than its text (its code2vec paths too), and encodes a
    query differently from a function.  The index only relies on this: both methods return
    float32 ``[n, dim]`` rows of unit length, and a function's vector depends on nothing but
    the function's own search text (:func:`pathfusion.server.parsing.search_text`: the definition
    and its class) — the vector cache is keyed by the hash of ``func.search_text``.
    """

    @property
    def model_id(self) -> str:
        """Identity of the vector space: stored vectors are reused only under the same id."""
        ...

    @property
    def dim(self) -> int: ...

    def encode_functions(self, functions: Sequence[FunctionInfo]) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


class EmbedderSearchModel:
    """The LLM embedder alone: a function is its search text (the definition as written, under
    its class's header), a query its text.

    A bare embedder is no search model: wrap it in this class to index with it.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    @property
    def dim(self) -> int:
        return int(self.embedder.dim)

    def encode_functions(self, functions: Sequence[FunctionInfo]) -> np.ndarray:
        if not functions:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self.embedder.embed([func.search_text for func in functions]), dtype=np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        return np.stack([row / max(float(np.linalg.norm(row)), 1e-12) for row in vectors])


def search_model_from_settings(settings: Any, embedder: Embedder, code2vec: Any = None) -> SearchModel:
    """The search model ``settings`` ask for, over an embedder the caller already holds (and
    its ``code2vec`` model, else the models folder's): :meth:`pathfusion.server.runtime.ModelHub.search_model`
    for callers outside the server and the CLI (``pathfusion eval``, tests, benchmarks).

    ``settings``: a :class:`pathfusion.server.settings.Settings`, or anything with ``models_dir``,
    ``device`` and ``fusion_variant``.  A folder without a fusion export, or an embedder of
    another width than the fusions were trained on (a ``transformers`` model), gives
    :class:`EmbedderSearchModel`: the LLM embedding of function and query alone.
    """
    from .runtime import ModelHub
    from .settings import Settings

    if not isinstance(settings, Settings):
        folder = getattr(settings, "models_dir", None)
        settings = Settings(models_dir=str(folder) if folder is not None else None,
                            device=getattr(settings, "device", "auto"),
                            fusion_variant=getattr(settings, "fusion_variant", "default"))
    hub = ModelHub()
    hub.provide(settings, embedder=embedder, code2vec=code2vec)
    return hub.search_model(settings)


def unit_rows(vectors: Any, count: int, dim: int, what: str) -> np.ndarray:
    """``vectors`` as float32 ``[count, dim]`` unit rows; raises ValueError on a wrong shape
    or non-finite values.  Rows already of unit length are left bit for bit as they are.

    Why: a model's output is checked before anything is stored or searched with it — a
    wrong shape would otherwise corrupt the matrix of every stored vector."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.shape != (count, dim):
        raise ValueError(f"{what} returned shape {array.shape}, expected {(count, dim)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} returned non-finite values")
    norms = np.linalg.norm(array, axis=1)
    off = np.abs(norms - 1.0) > 1e-3
    if off.any():
        array = array.copy()
        array[off] /= np.maximum(norms[off], 1e-12)[:, None]
    return array
