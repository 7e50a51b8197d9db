"""The model hub: which models a :class:`~pathfusion.server.settings.Settings` means, each loaded once.

Why one place: the naming predictor, the LLM embedder and the search model are needed by
the server's lazy loader, ``pathfusion suggest``, ``pathfusion index``/``search`` and the
index's choice of search model; assembled in each, every caller would have its own idea of
which graph a setting means and how many threads it gets.  The server
(:mod:`pathfusion.server.lsp_models`, :mod:`pathfusion.server.feature_index`) and the CLI (:mod:`pathfusion.server.cli`) all
ask a :class:`ModelHub`, so that the editor and the command line use the same models — and
index and query in the same space — for the same settings.

What a setting means (``pathfusion.*``):

* **naming** (:meth:`ModelHub.naming`): ``fusionVariant`` ``code2vec``, or a models folder
  without a fusion export, is code2vec's own model (its softmax head, trained on the whole
  corpus); any other variant is that variant's fusion graph (:mod:`pathfusion.server.fusion`) fed by
  the LLM embedder.  ``default`` is the manifest's default variant.
* **the LLM embedder** (:meth:`ModelHub.embedder`): ``llmBackend`` ``onnx`` is the exported
  graph of the models folder; ``transformers`` is the Hugging Face folder
  ``llmModelPath`` (an optional backend: torch comes with the ``train`` extra and is
  imported only then, :mod:`pathfusion.server.embedder_transformers`).
* **search** (:meth:`ModelHub.search_model`): the variant's fusion graph and query encoder;
  the LLM embedding alone (:class:`~pathfusion.server.search_model.EmbedderSearchModel`) for a folder
  without a fusion export, or when the fusion cannot serve this embedder (logged).

**Caching.**  One slot per kind of model keeps the model loaded for the last settings key
it was asked for — or, for a model that cannot be loaded, the error, so that a broken
models folder is not reloaded on every request; a new key replaces it, which frees the
previous model.  Only what a model depends on is in its key (code2vec: the folder and the
device), so a change of ``exclude`` reloads nothing, and naming and search share one
code2vec model, one embedder and one fusion runtime; what is built over a model is
forgotten when that model is replaced.  Thread-safe: the server asks from its pool and from
its indexing thread; a load holds its slot's lock, so two threads asking for the same model
load it once (loads only nest downwards: naming or search → fusion → code2vec / embedder,
so the locks cannot deadlock).

**Threads** (:data:`THREADS`, passed to every loader; the one place they are chosen): the
server shares two cores between hovers, indexing and the editor.  code2vec, the fusion
graphs and the query encoder get one intra-op thread each: they are small (≈ 1 ms for
code2vec, ≈ 1.6 ms for a fusion graph, a few dozen ids for a query), a second thread costs
more in synchronisation than it saves, and one thread leaves the other core free.  The LLM
embedder keeps onnxruntime's default (one thread per physical core): it is what indexing
spends its time on, and it was measured at 122 functions/s on an idle 2-core machine
against 60 with the other core busy.  Under heavier contention the default falls below the
one-thread rate; docs/performance.md, "Threads of the onnxruntime sessions", has the
measurements and what to try next.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from .code2vec import Code2VecModel, Predictor
from .embedder import Embedder, EmbedderError, load_embedder
from .fusion import FusionPredictor, FusionRuntime, fusion_variant
from .models import ModelError, default_models_dir
from .name_generator import NameGenerator, has_naming_head
from .search_model import EmbedderSearchModel, SearchModel
from .settings import Settings

log = logging.getLogger("pathfusion.server.index")  # the index's logger: its search-model fallback is logged there

T = TypeVar("T")


@dataclass(frozen=True)
class Threads:
    """onnxruntime intra-op threads of each graph (None: onnxruntime's default, one per
    physical core); see the module docstring for why these values."""

    code2vec: int = 1
    fusion: int = 1
    """The fusion graph of a variant (naming and search vectors)."""
    query: int = 1
    """A variant's query encoder (over tokens or over the query's LLM embedding)."""
    naming: int = 1
    """The generative naming head's decoder-step graph (small: a few ms per beam step)."""
    embedder: int | None = None
    """The LLM embedder (for the ``transformers`` backend: torch's threads; None leaves
    torch's default)."""


THREADS = Threads()
"""What the server and the CLI run with."""


def models_dir(settings: Settings) -> str:
    """The models folder that ``settings`` name (``~`` expanded), else the default one."""
    return str(Path(settings.models_dir).expanduser()) if settings.models_dir else str(default_models_dir())


class _Slot(Generic[T]):
    """One cached model: the key it was loaded for and what loading gave (the model, or
    the :class:`ModelError` that explains why not).  ``dependents`` are the slots of what
    is built over this model: they are emptied when it is replaced, so that nothing keeps
    a previous model alive beside the new one."""

    def __init__(self, *dependents: _Slot[Any]) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[Hashable, T | None, ModelError | None] | None = None
        self._dependents = dependents

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The model for ``key``, loading it (once, under the lock) when the slot holds
        another key; raises the cached error of a model that cannot be loaded."""
        entry = self._entry  # one read: another thread may replace it meanwhile
        if entry is None or entry[0] != key:
            with self._lock:
                entry = self._entry
                if entry is None or entry[0] != key:
                    try:
                        entry = (key, load(), None)
                    except ModelError as exc:
                        entry = (key, None, exc)
                    self._entry = entry
                    self._forget_dependents()
        _, value, error = entry
        if error is not None:
            raise error.with_traceback(None)
        return cast(T, value)  # None only where T allows it (a folder without a fusion export)

    def put(self, key: Hashable, value: T) -> None:
        """Hold ``value`` for ``key`` (a model the caller loaded)."""
        with self._lock:
            self._entry = (key, value, None)
        self._forget_dependents()

    def _forget_dependents(self) -> None:
        for slot in self._dependents:
            slot._entry = None  # one assignment: a reader sees the old entry or none
            slot._forget_dependents()


class ModelHub:
    """The models of one process for any :class:`~pathfusion.server.settings.Settings` (see the module
    docstring).  Every method may be called from any thread; errors are
    :class:`~pathfusion.server.models.ModelError` (an :class:`~pathfusion.server.embedder.EmbedderError` for the
    embedder) with a message that says what to do."""

    def __init__(self, threads: Threads = THREADS) -> None:
        self.threads = threads
        self._naming: _Slot[Predictor] = _Slot()
        self._search: _Slot[SearchModel] = _Slot()
        self._fusion: _Slot[FusionRuntime | None] = _Slot(self._naming, self._search)
        self._code2vec: _Slot[Code2VecModel] = _Slot(self._fusion, self._naming, self._search)
        self._embedder: _Slot[Embedder] = _Slot(self._fusion, self._naming, self._search)

    # -- keys: what each model depends on --------------------------------------------------
    @staticmethod
    def _code2vec_key(s: Settings) -> tuple[Any, ...]:
        return (models_dir(s), s.device)

    @staticmethod
    def _embedder_key(s: Settings) -> tuple[Any, ...]:
        return (models_dir(s), s.llm_backend, s.llm_model_path, s.device)

    @staticmethod
    def _variant_key(s: Settings) -> tuple[Any, ...]:
        return (models_dir(s), s.device, s.fusion_variant, s.llm_backend, s.llm_model_path)

    # -- the models ------------------------------------------------------------------------
    def code2vec(self, settings: Settings) -> Code2VecModel:
        """code2vec of the models folder (naming, and the code vectors of the fusions)."""
        folder = models_dir(settings)

        def load() -> Code2VecModel:
            try:
                return Code2VecModel.load(folder, device=settings.device, threads=self.threads.code2vec)
            except ModelError:
                raise
            except Exception as exc:  # onnxruntime and the file system raise their own types
                raise ModelError(f"cannot load the models in {folder}: {exc}") from exc

        return self._code2vec.get(self._code2vec_key(settings), load)

    def embedder(self, settings: Settings) -> Embedder:
        """The LLM embedder of ``llmBackend`` (raises :class:`EmbedderError`)."""
        s = settings

        def load() -> Embedder:
            try:
                return load_embedder(s.llm_backend, models_dir(s), s.llm_model_path, s.device,
                                     threads=self.threads.embedder)
            except ModelError:
                raise
            except Exception as exc:  # onnxruntime's, tokenizers' and the file system's own
                raise EmbedderError(str(exc)) from exc

        return self._embedder.get(self._embedder_key(s), load)

    def fusion(self, settings: Settings) -> FusionRuntime | None:
        """The graphs of the variant ``fusionVariant`` names, shared by naming and search;
        None for a models folder without a fusion export."""
        s = settings
        folder = models_dir(s)

        def load() -> FusionRuntime | None:
            name = fusion_variant(folder, s.fusion_variant)
            if name is None:  # no fusion export: nothing to load (code2vec may be absent too)
                return None
            code2vec = self.code2vec(s)
            return FusionRuntime.load(self.embedder(s), code2vec, folder, name, s.device,
                                      threads=self.threads.fusion, query_threads=self.threads.query)

        return self._fusion.get(self._variant_key(s), load)

    def naming(self, settings: Settings) -> Predictor:
        """What suggests names: for ``default``, the generative naming head over the LLM
        embedder when the folder has one (:mod:`pathfusion.server.name_generator`); code2vec itself for
        ``code2vec`` or a folder with neither; else the variant's fusion graph fed by the
        LLM embedder."""
        s = settings

        def load() -> Predictor:
            if s.fusion_variant == "default" and has_naming_head(Path(models_dir(s))):
                return NameGenerator.load(Path(models_dir(s)), self.embedder(s), s.device, threads=self.threads.naming)
            code2vec = self.code2vec(s)
            if s.fusion_variant == "code2vec":
                return code2vec
            name = fusion_variant(models_dir(s), s.fusion_variant)
            if name is None or name == "code2vec":
                return code2vec
            runtime = self.fusion(s)
            assert runtime is not None  # the folder has a fusion export: fusion_variant said so
            return FusionPredictor(runtime)

        return self._naming.get(self._variant_key(s), load)

    def naming_or_code2vec(self, settings: Settings) -> tuple[Predictor, str | None]:
        """The server's naming: :meth:`naming`, or code2vec alone with the reason when the
        variant cannot be loaded (no fusion export, another embedder, an embedder that
        cannot be loaded) — hovers still get code2vec's names.  The LLM embedder is loaded
        first for a variant whose fusion graph needs it; when code2vec serves the variant
        (``code2vec``, or a folder without a fusion export) it is not waited for — the index
        loads it on its own thread, and the first hover of a cold start does not pay for it.
        Raises when neither the variant's model nor code2vec can be loaded."""
        if settings.fusion_variant == "default" and has_naming_head(Path(models_dir(settings))):
            try:
                return self.naming(settings), None
            except Exception as exc:  # ModelError, EmbedderError, onnxruntime's own
                try:
                    return self.code2vec(settings), str(exc)
                except ModelError:
                    raise ModelError(str(exc)) from exc
        code2vec = self.code2vec(settings)
        if settings.fusion_variant == "code2vec":
            return code2vec, None
        try:
            if fusion_variant(models_dir(settings), settings.fusion_variant) in (None, "code2vec"):
                return code2vec, None
            try:
                self.embedder(settings)
            except ModelError as exc:
                raise ModelError(f"the LLM embedder cannot be loaded: {exc}") from exc
            return self.naming(settings), None
        except Exception as exc:  # ModelError, EmbedderError, onnxruntime's own
            return code2vec, str(exc)

    def search_model(self, settings: Settings) -> SearchModel:
        """What the index embeds functions and queries with (raises only when the LLM
        embedder cannot be loaded: without it there is no search)."""
        s = settings

        def load() -> SearchModel:
            embedder = self.embedder(s)
            try:
                runtime = self.fusion(s)
            except ModelError as exc:
                log.warning("search uses the LLM embedder alone: %s", exc)
                return EmbedderSearchModel(embedder)
            return runtime if runtime is not None else EmbedderSearchModel(embedder)

        return self._search.get(self._variant_key(s), load)

    def provide(self, settings: Settings, *, code2vec: Code2VecModel | None = None,
                embedder: Embedder | None = None) -> None:
        """Use these already loaded models for ``settings`` (a caller that holds its own
        embedder, e.g. ``pathfusion eval`` with the fp32 graph).  What was built over the
        models they replace (fusion, naming, search) is forgotten."""
        if code2vec is not None:
            self._code2vec.put(self._code2vec_key(settings), code2vec)
        if embedder is not None:
            self._embedder.put(self._embedder_key(settings), embedder)


_SHARED: ModelHub | None = None
_SHARED_LOCK = threading.Lock()


def shared_hub() -> ModelHub:
    """The process's hub (the language server's): models loaded by :func:`preload` before
    the server was built are the ones it then uses."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = ModelHub()
        return _SHARED


def preload(settings: Settings) -> threading.Thread:
    """Load code2vec for ``settings`` on a daemon thread, now.

    Why: a cold start spends most of its time importing the LSP machinery, and the first
    hover then waits for the naming model.  Started before those imports, the model's load
    (reading and checking its files, building the onnxruntime session — partly outside the
    GIL) overlaps them.  A failure is kept by the hub and reported when the server asks,
    exactly as if the server had loaded it; settings that name another folder simply load
    that one later."""

    def load() -> None:
        try:
            if settings.fusion_variant == "default" and has_naming_head(Path(models_dir(settings))):
                shared_hub().naming(settings)
            else:
                shared_hub().code2vec(settings)
        except Exception:
            log.debug("preloading the naming model failed", exc_info=True)

    thread = threading.Thread(target=load, name="pathfusion-preload", daemon=True)
    thread.start()
    return thread
